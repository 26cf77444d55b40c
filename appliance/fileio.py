"""Files shared with people and other programs: JSON read with errors that say which file and what is wrong, writes
that are atomic (a reader sees the old file or the new one, never half of one), and file hashes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# Patient data at rest (the database, the spool, quarantined images, SRs): owner and group only, whatever umask
# the service was started with (a systemd unit sets UMask; a container or a shell often leaves 022).
PRIVATE_UMASK = 0o027
PRIVATE_DIR_MODE = 0o750
PRIVATE_FILE_MODE = 0o640


def keep_private() -> None:
    """Every file and folder the process creates from now on is at most 0640 / 0750."""
    os.umask(PRIVATE_UMASK)


def private_folder(path: Path) -> Path:
    """Make `path` (and missing parents) and set it to 0750, also when an earlier run left it wider."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def read_json(path: Path, error: type[Exception], what: str) -> Any:
    """The parsed content of `path`; `error(...)` naming `what` if it is missing, unreadable or not JSON."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} cannot be read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc}") from None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (bundles and plans are hundreds of MB on some sites)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644, durable: bool = False) -> None:
    """`mode` 0644 by default: mkstemp makes 0600, and the service may run as another user than the builder.
    `durable` also syncs the folder, so the new name itself survives a power cut (needed when the caller then
    forgets its own copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that names just created or renamed in it survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot sync a folder: the file
            raise                                            # itself is synced, which is what they offer
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def remove_files(paths: Iterable[str]) -> None:
    """Delete files that may already be gone (a series' images once scored or skipped)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)

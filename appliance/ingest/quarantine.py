"""Setting bad files aside with the reason beside them, so an operator can see what happened and why."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from pathlib import Path

from appliance.fileio import PRIVATE_FILE_MODE, private_folder
from appliance.logsafe import RateLimitedLog

log = logging.getLogger(__name__)
_chmod_log = RateLimitedLog(log, seconds=3600.0)


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, path: str | os.PathLike[str], reason: str, detail: str) -> Path | None:
        """Move `path` to quarantine/<reason>/ with a `.reason.json` beside it. Returns the new path (None if the
        file vanished meanwhile: nothing to set aside)."""
        src = Path(path)
        folder = private_folder(self.root / reason)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = folder / f"{stamp}-{os.urandom(4).hex()}-{src.name}"
        try:
            move_file(src, dest)
        except FileNotFoundError:
            return None
        note = {"reason": reason, "detail": detail, "original_name": src.name, "quarantined_at": time.time()}
        tmp = dest.with_name(dest.name + ".reason.json.tmp")
        tmp.write_text(json.dumps(note, indent=2))
        os.replace(tmp, dest.with_name(dest.name + ".reason.json"))
        # The name and the detail may carry identifiers (they came from outside): the log gets the reason only,
        # the detail stays in the .reason.json beside the file.
        log.warning("quarantined a file: %s", reason)
        return dest


def move_file(src: Path, dest: Path) -> None:
    """Rename; across filesystems, copy to a temporary name, fsync, rename, then unlink the source, so the
    destination is never a partial file. The moved file is made 0640: a rename keeps the mode its writer gave it
    (scanners and copy tools write 0644), and what is moved here is patient data."""
    try:
        os.replace(src, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dest.with_name("." + dest.name + ".tmp")
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            os.fchmod(fout.fileno(), PRIVATE_FILE_MODE)
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dest)
        os.unlink(src)
        return
    try:
        os.chmod(dest, PRIVATE_FILE_MODE)
    except PermissionError:
        # Owned by the user who wrote it (a scanner's account on a shared export folder): this process may move
        # it but not change its mode. The spool and quarantine folders are 0750, which keeps others out anyway.
        _chmod_log.warning("chmod", "a file moved in keeps its writer's mode: it belongs to another user; the "
                           "0750 folder still keeps others out")



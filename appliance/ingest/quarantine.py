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


def take_file(src: str, dest: str) -> None:
    """Into the spool: a hard link at `dest`, then the watch folder's name removed, so that the watch folder sees
    a deletion (which the watcher does not subscribe to) rather than a move out. watchdog holds every unpaired
    IN_MOVED_FROM for its pairing delay and looks each IN_MOVED_TO's partner up in a linear queue, so a burst of
    thousands of moves out of the folder cost its threads more than the files' parsing. Where a link cannot be
    made (another filesystem; a file of another user under protected_hardlinks; a filesystem without links) it
    is `move_file`. A crash between the link and the unlink leaves the file in both places: the spool's copy is
    assembled at start-up and the watch folder's is then dropped as a duplicate. Made 0640 as `move_file` does."""
    try:
        os.link(src, dest)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        move_file(Path(src), Path(dest))
        return
    try:
        replaced = os.stat(src).st_ino != os.stat(dest).st_ino
    except FileNotFoundError:  # removed by its writer meanwhile: what was linked is taken
        replaced = False
    if replaced:
        # Its writer put a new file under the name since the link: that one has an event of its own, and must
        # not be unlinked here; the linked copy goes, as if the file had vanished before it was taken.
        os.unlink(dest)
        raise FileNotFoundError(src)
    try:
        os.unlink(src)
    except FileNotFoundError:
        pass
    _private(dest)


# link(2) failures that mean "this file cannot be hard-linked here", not "the file is gone".
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
                      errno.ENOSYS, errno.EEXIST})


def _private(dest: str | Path) -> None:
    try:
        os.chmod(dest, PRIVATE_FILE_MODE)
    except PermissionError:
        # Owned by the user who wrote it (a scanner's account on a shared export folder): this process may move
        # it but not change its mode. The spool and quarantine folders are 0750, which keeps others out anyway.
        _chmod_log.warning("chmod", "a file moved in keeps its writer's mode: it belongs to another user; the "
                           "0750 folder still keeps others out")


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
    _private(dest)



"""The watch folder: a watchdog observer feeding paths to the Ingestor, and the thread that drives it."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from appliance.ingest.ingestor import Ingestor
from appliance.logsafe import describe

log = logging.getLogger(__name__)

# watchdog 7 warns when a directory created inside a recursive watch is registered twice (once from the creation
# event, once from its own scan); the watch still works, and scanners create folders all the time.
warnings.filterwarnings("ignore", message="Callback with id .* already exists", category=RuntimeWarning)

# watchdog holds every inotify IN_MOVED_FROM for up to 0.5 s to pair it with its IN_MOVED_TO (gorakhargosh/watchdog
# #390, #649), and the reader thread sleeps out that delay even when the pair arrives at once. DICOM nodes write a
# temporary name and rename it, so each file would reach us half a second late, twice the scan-to-score budget.
# An unpaired move is as good as a creation for us (we only need the destination path), so pairing barely matters.
MOVE_PAIRING_DELAY_S = 0.005


def _shorten_move_pairing() -> None:
    try:
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper
    except ImportError:  # not Linux, or a watchdog without the grouper: nothing to shorten
        return
    InotifyMoveEventGrouper.delay = MOVE_PAIRING_DELAY_S


# Events that can mean "a file has (new) content at this path". Deletions and opens carry nothing to parse.
_CONTENT_EVENTS = frozenset({"created", "modified", "closed", "moved"})
# The same as watchdog's event filter, which also narrows the inotify mask: no IN_DELETE, so a file taken into the
# spool (a link, then its name here removed: ingest/quarantine.take_file) costs the observer's threads nothing, and
# no directory-modified event per file either. Directories created or moved in are still watched (watchdog keeps
# IN_CREATE and IN_MOVE on a recursive watch).
_WATCHED_EVENTS: list[type[FileSystemEvent]] = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, ingestor: Ingestor, root: str) -> None:
        self.ingestor = ingestor
        self.root = root

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in _CONTENT_EVENTS:
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        if isinstance(path, bytes):
            path = path.decode(errors="surrogateescape")
        self.ingestor.submit(path, root=self.root)


class IngestThread:
    """Owns the observer and the loop that calls `Ingestor.run_once`. Nothing it accepted is lost on stop: files
    stay in the watch folder or the spool, and the next start picks them up."""

    def __init__(self, ingestor: Ingestor, watch_dir: Path, poll_interval_s: float = 0.2,
                 rescan_on_start: bool = True) -> None:
        self.ingestor = ingestor
        self.watch_dir = Path(watch_dir)
        self.poll_interval_s = poll_interval_s
        self.rescan_on_start = rescan_on_start
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: BaseObserver | None = None

    def start(self) -> None:
        self.watch_dir.mkdir(parents=True, exist_ok=True)
        _shorten_move_pairing()  # before the observer makes its inotify queue
        self._observer = Observer()
        self._observer.schedule(_Handler(self.ingestor, str(self.watch_dir)), str(self.watch_dir), recursive=True,
                                event_filter=_WATCHED_EVENTS)
        self._observer.daemon = True
        self._observer.start()  # before the rescan, so a file landing in between is seen by one or the other
        if self.rescan_on_start:
            n = self.ingestor.rescan(self.watch_dir)
            if n:
                log.info("start-up rescan queued %d file(s) already in the watch folder", n)
        self._thread = threading.Thread(target=self._run, name="scanside-ingest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.ingestor.run_once(timeout=self.poll_interval_s)
            except Exception as exc:  # one bad step must not end ingest; the file involved is retried or set aside
                log.error("ingest step failed: %s", describe(exc))
                time.sleep(self.poll_interval_s)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

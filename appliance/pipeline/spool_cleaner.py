"""Deleting a finished series' images from the spool, on a thread of its own, after its outcome is stored.

Three hundred unlinks a series cost the inference thread (scored series) or the ingest thread (skipped ones)
milliseconds each time, on the path of the next series' score; here they wait their turn instead. Nothing depends
on them being gone: a series' outcome is in the database before its paths are queued here, so what a crash or a
shutdown leaves undeleted is removed at the next start by the spool recovery (Ingestor.recover_spool deletes the
images of series whose state is final).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence

from appliance.fileio import remove_files
from appliance.logsafe import describe

log = logging.getLogger(__name__)


class SpoolCleaner:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[str, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="scanside-spool-clean", daemon=True)
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def remove(self, paths: Sequence[str]) -> None:
        """Queue a finished series' images for deletion (their series' outcome is stored already); returns at once.
        Before `start` (or after `stop`) they are deleted here and now."""
        if not paths:
            return
        if not self._thread.is_alive():
            remove_files(paths)
            return
        with self._lock:
            self._pending += len(paths)
        self._queue.put(tuple(paths))

    @property
    def pending(self) -> int:
        """Images queued and not yet deleted."""
        with self._lock:
            return self._pending

    def wait_idle(self, timeout: float) -> bool:
        """True once everything queued is deleted (within `timeout` seconds)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Delete what is queued (up to `timeout`), then end; what is left, the next start's recovery deletes."""
        if not self._thread.is_alive():
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.info("%d spooled image(s) of finished series left for the next start to delete", self.pending)

    def _run(self) -> None:
        while True:
            paths = self._queue.get()
            if paths is None:
                return
            try:
                remove_files(paths)
            except Exception as exc:  # a read-only or failing disk: the files stay; recovery tries at next start
                log.warning("deleting a finished series' images from the spool failed: %s", describe(exc))
            with self._idle:
                self._pending -= len(paths)
                if self._pending == 0:
                    self._idle.notify_all()

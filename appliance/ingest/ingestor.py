"""From a path in the watch folder to an accepted instance in the spool, or a file set aside.

`Ingestor` holds no thread: `submit()` takes paths from anywhere (the watchdog thread, a rescan), `run_once()`
processes what is queued and re-checks growing files and quiet series. The loop that calls it lives in
`IngestThread`, so tests can drive the logic step by step.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.assembly import Assembler, series_key
from appliance.handovers import CompleteSeries, Instance, SeriesInfo, SeriesRole, SeriesState
from appliance.ingest.quarantine import Quarantine, take_file
from appliance.ingest.reader import DEFAULT_MAX_INSTANCE_BYTES, IncompleteFile, RejectedFile, read_instance
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.store import Store

log = logging.getLogger(__name__)

# Names that writers use while a file is not finished yet; the final rename brings the real name.
_TEMP_PREFIXES = (".",)
_TEMP_SUFFIXES = (".tmp", ".part", ".partial", "~", ".reason.json")


def is_candidate(path: str, root: str | None = None) -> bool:
    """Not a writer's temporary file: no dot-name (for the file, or any folder below `root`), no temp suffix."""
    name = os.path.basename(path)
    if not name or name.startswith(_TEMP_PREFIXES) or name.endswith(_TEMP_SUFFIXES):
        return False
    if root is not None:
        # The watcher's paths are joined under the root: cutting the prefix is relpath's answer for them, without
        # its normalising of both paths (called for every event of every file).
        prefix = root if root.endswith(os.sep) else root + os.sep
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
        if any(part.startswith(_TEMP_PREFIXES) for part in rel.split(os.sep)[:-1]):
            return False  # inside a hidden folder some writers fill before moving it into place
    return True


@dataclass
class _Growing:
    size: int
    mtime_ns: int
    unchanged_since: float
    seen_at: float


class Ingestor:
    def __init__(self, spool: Path, quarantine: Quarantine, store: Store, assembler: Assembler, metrics: Metrics,
                 on_complete: Callable[[CompleteSeries], None], settle_seconds: float = 2.0,
                 clock: Callable[[], float] = time.time,
                 max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES,
                 on_leftover_failed: Callable[[str, str], None] | None = None) -> None:
        """`on_leftover_failed(key, path)` takes a spooled image of a series that failed before a restart (the
        pipeline sets it aside with the rest of the series); by default the image is deleted."""
        self.spool = Path(os.path.abspath(spool))
        self.spool.mkdir(parents=True, exist_ok=True)
        self.quarantine = quarantine
        self.store = store
        self.assembler = assembler
        self.metrics = metrics
        self.on_complete = on_complete
        self.on_leftover_failed: Callable[[str, str], None] = on_leftover_failed or (lambda key, path: os.unlink(path))
        self.settle_seconds = settle_seconds
        self.max_instance_bytes = max_instance_bytes
        self.clock = clock
        self._queue: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self._queued: set[str] = set()
        self._queued_lock = threading.Lock()
        self._growing: dict[str, _Growing] = {}
        self._names = itertools.count()
        self._prefix = f"{time.time_ns():x}"
        self._spool_prefix = os.path.join(str(self.spool), self._prefix + "-")  # a str: no Path made per file
        self._parse_seconds = metrics.stage_seconds.labels(stage="parse")
        self.lock = threading.Lock()  # held while the assembler is touched, so status readers see a stable view

    # --- input ----------------------------------------------------------------------------------------------------

    def submit(self, path: str, seen_at: float | None = None, root: str | None = None) -> None:
        """Queue a path for a parse attempt; thread-safe, and a path already waiting is not queued twice."""
        if not is_candidate(path, root):
            return
        with self._queued_lock:
            if path in self._queued:
                return
            self._queued.add(path)
        self._queue.put((path, self.clock() if seen_at is None else seen_at))

    def rescan(self, folder: Path) -> int:
        """Queue every file already in `folder` (start-up: files that arrived while the service was down)."""
        n = 0
        for dirpath, dirs, files in os.walk(folder):
            dirs[:] = [d for d in dirs if not d.startswith(_TEMP_PREFIXES)]
            for name in sorted(files):
                self.submit(os.path.join(dirpath, name))
                n += 1
        return n

    def pending_files(self) -> int:
        return len(self._growing) + self._queue.qsize()

    # --- processing -----------------------------------------------------------------------------------------------

    def run_once(self, timeout: float = 0.0) -> int:
        """Process queued paths (waiting up to `timeout` for the first), then re-check growing files and quiet
        series. Returns how many paths were processed."""
        done = 0
        try:
            item = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            path, seen_at = item
            with self._queued_lock:
                self._queued.discard(path)
            self._attempt(path, seen_at)
            done += 1
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
        self.poll()
        return done

    def poll(self) -> None:
        now = self.clock()
        for path, g in list(self._growing.items()):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                del self._growing[path]  # renamed or removed by its writer; a new event brings the new name
                continue
            if (st.st_size, st.st_mtime_ns) != (g.size, g.mtime_ns):
                self._attempt(path, g.seen_at)
            elif now - g.unchanged_since >= self.settle_seconds:
                del self._growing[path]
                self._attempt(path, g.seen_at, final=True)
        with self.lock:
            due = self.assembler.due(now)
        for series in due:
            self._completed(series)

    def _attempt(self, path: str, seen_at: float, final: bool = False) -> None:
        spool_path = f"{self._spool_prefix}{next(self._names):08d}.dcm"
        started = time.perf_counter()
        try:
            inst = read_instance(path, spool_path, settled=final, max_bytes=self.max_instance_bytes)
        except FileNotFoundError:
            self._growing.pop(path, None)
            return
        except IncompleteFile as exc:
            self._note_growing(path, seen_at, exc, final)
            return
        except RejectedFile as exc:
            self._growing.pop(path, None)
            self._reject(path, exc.reason, exc.detail)
            return
        except Exception as exc:  # a reader bug on one odd file must not stop ingest or loop on every restart
            self._growing.pop(path, None)
            log.error("unexpected %s while reading a file; setting it aside", type(exc).__name__)
            self._reject(path, "unreadable", f"unexpected {type(exc).__name__} in the reader")
            return
        finally:
            self._parse_seconds.observe(time.perf_counter() - started)
        self._growing.pop(path, None)
        self._accept(path, spool_path, inst, seen_at)

    def _note_growing(self, path: str, seen_at: float, exc: IncompleteFile, final: bool) -> None:
        if final:
            self._reject(path, "truncated", f"still incomplete after {self.settle_seconds:g} s unchanged: {exc}")
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return
        self.metrics.file_retries.inc()
        g = self._growing.get(path)
        if g is None or (st.st_size, st.st_mtime_ns) != (g.size, g.mtime_ns):
            self._growing[path] = _Growing(st.st_size, st.st_mtime_ns, self.clock(), seen_at)

    def _reject(self, path: str, reason: str, detail: str) -> None:
        if self.quarantine.put(path, reason, detail) is not None:
            self.metrics.files_quarantined.labels(reason=reason).inc()

    def _accept(self, path: str, spool_path: str, inst: Instance, seen_at: float) -> None:
        # Only this (ingest) thread changes the assembler; the lock is for readers (gRPC status), so it is not held
        # across the move, which is a copy when the watch folder is on another filesystem.
        with self.lock:
            known = self.assembler.has_series(inst.series_uid)
            duplicate = known and self.assembler.has_instance(inst.series_uid, inst.sop_instance_uid)
        if duplicate:
            self._drop(path, "duplicate")
            return
        if not known:
            prior = self.store.series.seen(self._first_info(inst, seen_at))
            if prior is not None and prior is not SeriesState.RECEIVING:
                # Closed already (complete and waiting to be scored, or finished): a re-sent or late image must
                # not open a second, partial series under the same UID. A re-sent one is dropped; one the series
                # did not have (a scanner's late image, a series cut by the incomplete timeout) is set aside, not
                # lost, so the site sees what was not scored.
                if self.store.series.had_instance(inst.series_uid, inst.sop_instance_uid):
                    self._drop(path, "late_for_finished_series")
                else:
                    self._reject(path, "late", f"an image of a series already closed ({prior.value}): not scored")
                return
        if os.path.abspath(path) != spool_path:
            try:
                take_file(path, spool_path)
            except FileNotFoundError:
                if not known:
                    self.store.series.forget(inst.series_uid)
                return
        with self.lock:
            outcome = self.assembler.add(inst, spool_path, seen_at)
        self.metrics.files_ingested.inc()
        self.metrics.bytes_ingested.inc(inst.size_bytes)
        if outcome.complete is not None:
            self._completed(outcome.complete)

    def _drop(self, path: str, reason: str) -> None:
        self.metrics.files_ignored.labels(reason=reason).inc()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _first_info(self, inst: Instance, seen_at: float) -> SeriesInfo:
        return SeriesInfo(key=series_key(inst.series_uid), study_uid=inst.study_uid, series_uid=inst.series_uid,
                          role=SeriesRole.OTHER, manufacturer=inst.manufacturer,
                          description=inst.series_description or inst.protocol_name, received=0, expected=None,
                          completed_by="", last_file_at=seen_at, accession_number=inst.accession_number,
                          station_name=inst.station_name, patient_id=inst.patient_id,
                          patient_name=inst.patient_name)

    def _completed(self, series: CompleteSeries) -> None:
        try:
            self.store.series.record_instances(series.info.series_uid, (uid for _, uid in series.instances))
        except Exception as exc:  # without it a late re-send is set aside instead of dropped: nothing is lost
            log.warning("series %s: its image list not recorded: %s", series.info.key, describe(exc))
        try:
            self.on_complete(series)
        except Exception as exc:  # a failing consumer must not stop ingest; the series stays in the spool
            log.error("series %s: completion handler failed: %s", series.info.key, describe(exc))

    # --- recovery -------------------------------------------------------------------------------------------------

    def recover_spool(self) -> set[str]:
        """Re-read every file left in the spool by a previous run. Files of series already finished are removed
        (their result was committed before the crash); the rest are assembled again. Returns the series UIDs
        found."""
        seen: set[str] = set()
        for name in sorted(os.listdir(self.spool)):
            path = str(self.spool / name)
            if not is_candidate(path):
                os.unlink(path)
                continue
            try:
                inst = read_instance(path, settled=True, max_bytes=self.max_instance_bytes)
            except (IncompleteFile, RejectedFile) as exc:
                reason = exc.reason if isinstance(exc, RejectedFile) else "truncated"
                self._reject(path, reason, f"in the spool at start-up: {exc}")
                continue
            except Exception as exc:
                self._reject(path, "unreadable", f"in the spool at start-up: unexpected {type(exc).__name__}")
                continue
            row = self.store.series.get(inst.series_uid)
            if row is not None and row.state is SeriesState.FAILED:
                self.on_leftover_failed(row.key, path)  # set aside with the rest of its series, not deleted
                continue
            if row is not None and row.state.is_final:
                os.unlink(path)
                continue
            with self.lock:
                if self.assembler.has_instance(inst.series_uid, inst.sop_instance_uid):
                    os.unlink(path)
                    continue
                outcome = self.assembler.add(inst, path, self.clock())
            seen.add(inst.series_uid)
            if outcome.complete is not None:
                self._completed(outcome.complete)
        return seen


"""SQLite persistence: series states, results, and an event log with increasing ids.

WAL mode so the gRPC readers never block the pipeline's writer. A result, its series' state change and its event are
written in one transaction, which is what makes "nothing scored twice" hold across a crash: either all three are on
disk or none is, and recovery skips series already in a final state. When results go back to PACS, the same
transaction queues one export per destination, so a scored series cannot lose its SR to a crash either.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.fileio import PRIVATE_FILE_MODE
from appliance.handovers import ExportState, FindingScore, Scores, SeriesInfo, SeriesRole, SeriesState, StudyResult

SCHEMA_VERSION = 2
# Version 2 added sources, reports and exports; tables are only ever added, so older files upgrade in place.
_UPGRADABLE = (1,)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    key TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'other',
    state TEXT NOT NULL,
    received INTEGER NOT NULL DEFAULT 0,
    expected INTEGER,
    manufacturer TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    completed_by TEXT,
    detail TEXT,
    first_seen REAL NOT NULL,
    last_file_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL UNIQUE REFERENCES series(series_uid),
    study_uid TEXT NOT NULL,
    scored_at REAL NOT NULL,
    bundle_name TEXT NOT NULL,
    bundle_version TEXT NOT NULL,
    backend TEXT NOT NULL,
    precision TEXT NOT NULL,
    needs_review INTEGER NOT NULL,
    review_reasons TEXT NOT NULL,
    ood_distance REAL,
    findings TEXT NOT NULL,
    timings TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid);
CREATE INDEX IF NOT EXISTS results_time ON results(scored_at);
-- The header of one source instance (patient and study modules, no pixels) and the series' instance references,
-- kept for its SR: the images themselves leave the spool once scored.
CREATE TABLE IF NOT EXISTS sources (
    series_uid TEXT PRIMARY KEY REFERENCES series(series_uid),
    header BLOB NOT NULL,
    instances TEXT NOT NULL,
    captured_at REAL NOT NULL
);
-- Built once and kept, so every try (and every destination) sends the same SOP instance. Once every destination has
-- it, the document and the series' source are dropped (the patient data they carry is in PACS now); the SR's UID
-- stays, linking the result to the SR in PACS.
CREATE TABLE IF NOT EXISTS reports (
    series_uid TEXT PRIMARY KEY REFERENCES series(series_uid),
    sop_instance_uid TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    document BLOB
);
CREATE TABLE IF NOT EXISTS exports (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    destination TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (series_uid, destination)
);
CREATE INDEX IF NOT EXISTS exports_due ON exports(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL
);
"""


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class SeriesRow:
    series_uid: str
    study_uid: str
    key: str
    role: SeriesRole
    state: SeriesState
    received: int
    expected: int | None
    manufacturer: str
    description: str
    completed_by: str | None
    detail: str | None
    first_seen: float
    last_file_at: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class ExportItem:
    id: int
    series_uid: str
    study_uid: str
    key: str  # the series' log-safe key
    destination: str  # "pacs" | "folder"
    state: ExportState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StoredReport:
    sop_instance_uid: str
    document: bytes


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    created_at: float
    kind: str  # "scored" | "failed" | "sr" (an SR delivered or failed for good at one destination)
    series_uid: str
    study_uid: str


class Store:
    """One writer connection guarded by a lock; one reader connection per reading thread."""

    def __init__(self, path: Path, export_destinations: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.export_destinations = tuple(export_destinations)  # queued with every result saved
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._new_event = threading.Condition()
        self._writer = self._connect()
        for suffix in ("", "-wal", "-shm"):  # patient data; the WAL and its index take the database's mode
            sidecar = self.path.with_name(self.path.name + suffix)
            if sidecar.exists():
                os.chmod(sidecar, PRIVATE_FILE_MODE)
        with self._write_lock, self._writer:
            self._writer.executescript(_SCHEMA)
            row = self._writer.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._writer.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) in _UPGRADABLE:
                self._writer.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(f"{self.path} has schema version {row[0]}, this build expects {SCHEMA_VERSION}")

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random key kept in the database (made on first use): stable across restarts, private to this data
        folder."""
        key = f"secret:{name}"
        with self._tx() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
            if row is not None:
                return bytes.fromhex(row[0])
            value = os.urandom(size)
            conn.execute("INSERT INTO meta VALUES (?, ?)", (key, value.hex()))
            return value

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash (kill -9); only a power cut can lose the last
        # transactions, and then the spool still holds the images to score them again.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._write_lock:
                self._readers.append(conn)
        return conn

    def close(self) -> None:
        with self._write_lock:
            for conn in [self._writer, *self._readers]:
                conn.close()
            self._readers.clear()

    # --- writes ---------------------------------------------------------------------------------------------------

    def _tx(self) -> Any:
        return _Transaction(self._writer, self._write_lock)

    def series_seen(self, info: SeriesInfo) -> SeriesState | None:
        """Record a series on its first instance; returns its state if it was already known."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM series WHERE series_uid=?", (info.series_uid,)).fetchone()
            if row is not None:
                return SeriesState(row[0])
            db.execute(
                "INSERT INTO series (series_uid, study_uid, key, role, state, received, expected, manufacturer,"
                " description, first_seen, last_file_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (info.series_uid, info.study_uid, info.key, info.role.value, SeriesState.RECEIVING.value,
                 info.received, info.expected, info.manufacturer, info.description, now, info.last_file_at, now))
            return None

    def set_state(self, info: SeriesInfo, state: SeriesState, detail: str | None = None) -> SeriesState | None:
        """Move a series to `state` (creating the row if needed); returns the previous state. Failures are events.
        A finished series never moves again (StoreError): that would be a second outcome for one series."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT state FROM series WHERE series_uid=?", (info.series_uid,)).fetchone()
            previous = SeriesState(row[0]) if row else None
            if previous is not None and previous.is_final and previous is not state:
                raise StoreError(f"series {info.key} is {previous.value}; refusing to make it {state.value}")
            if row is None:
                db.execute(
                    "INSERT INTO series (series_uid, study_uid, key, role, state, first_seen, updated_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (info.series_uid, info.study_uid, info.key, info.role.value, state.value, now, now))
            db.execute(
                "UPDATE series SET state=?, role=?, received=?, expected=?, manufacturer=?, description=?,"
                " completed_by=?, detail=?, last_file_at=?, updated_at=? WHERE series_uid=?",
                (state.value, info.role.value, info.received, info.expected, info.manufacturer, info.description,
                 info.completed_by, detail, info.last_file_at, now, info.series_uid))
            if state is SeriesState.FAILED:
                db.execute("INSERT INTO events (created_at, kind, series_uid, study_uid) VALUES (?,?,?,?)",
                           (now, "failed", info.series_uid, info.study_uid))
                db.execute("DELETE FROM sources WHERE series_uid=?", (info.series_uid,))  # no SR will need it
        if state is SeriesState.FAILED:
            self._notify()
        return previous

    def forget_series(self, series_uid: str) -> None:
        """Drop a series row that holds nothing yet (no result, no event)."""
        with self._tx() as db:
            db.execute("DELETE FROM series WHERE series_uid=? AND state=? AND NOT EXISTS"
                       " (SELECT 1 FROM events WHERE events.series_uid=series.series_uid)",
                       (series_uid, SeriesState.RECEIVING.value))

    def save_result(self, result: StudyResult) -> int | None:
        """Store a result, mark the series scored and log the event, atomically. Returns the event id, or None if
        this series already had a result (it is never scored twice)."""
        info, scores = result.info, result.scores
        now = time.time()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM results WHERE series_uid=?", (info.series_uid,)).fetchone():
                return None
            exists = db.execute("SELECT state FROM series WHERE series_uid=?", (info.series_uid,)).fetchone()
            if exists and SeriesState(exists[0]).is_final:
                return None  # failed or skipped already: one outcome per series
            if not exists:
                db.execute(
                    "INSERT INTO series (series_uid, study_uid, key, role, state, first_seen, updated_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (info.series_uid, info.study_uid, info.key, info.role.value, SeriesState.COMPLETE.value, now,
                     now))
            db.execute(
                "UPDATE series SET state=?, received=?, expected=?, completed_by=?, last_file_at=?, updated_at=?"
                " WHERE series_uid=?",
                (SeriesState.SCORED.value, info.received, info.expected, info.completed_by, info.last_file_at, now,
                 info.series_uid))
            db.execute(
                "INSERT INTO results (series_uid, study_uid, scored_at, bundle_name, bundle_version, backend,"
                " precision, needs_review, review_reasons, ood_distance, findings, timings)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (info.series_uid, info.study_uid, result.scored_at, result.bundle_name, result.bundle_version,
                 result.backend, result.precision, int(scores.needs_review), json.dumps(list(scores.review_reasons)),
                 scores.ood_distance, json.dumps([_finding_to_dict(f) for f in scores.findings]),
                 json.dumps(result.timings_ms)))
            for destination in self.export_destinations:
                db.execute("INSERT OR IGNORE INTO exports (series_uid, destination, state, next_attempt_at, created_at,"
                           " updated_at) VALUES (?,?,?,?,?,?)",
                           (info.series_uid, destination, ExportState.PENDING.value, now, now, now))
            cur = db.execute("INSERT INTO events (created_at, kind, series_uid, study_uid) VALUES (?,?,?,?)",
                             (now, "scored", info.series_uid, info.study_uid))
            event_id = int(cur.lastrowid)
        self._notify()
        return event_id

    def save_source(self, series_uid: str, header: bytes, instances_json: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO sources (series_uid, header, instances, captured_at) VALUES (?,?,?,?)",
                       (series_uid, header, instances_json, time.time()))

    def save_report(self, series_uid: str, sop_instance_uid: str, document: bytes) -> StoredReport:
        """Keep a built SR; if one was kept already (a race, or a rebuild after a crash), that one wins. The source
        header has served its purpose then and goes: the document alone carries the patient data from here on."""
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO reports (series_uid, sop_instance_uid, created_at, document)"
                       " VALUES (?,?,?,?)", (series_uid, sop_instance_uid, time.time(), document))
            row = db.execute("SELECT sop_instance_uid, document FROM reports WHERE series_uid=?",
                             (series_uid,)).fetchone()
            if row[1] is None:
                raise StoreError("this series' SR was delivered everywhere and its document dropped")
            db.execute("DELETE FROM sources WHERE series_uid=?", (series_uid,))
        return StoredReport(row[0], bytes(row[1]))

    def record_export_try(self, export_id: int, delivered: bool, error: str | None,
                          next_attempt_at: float | None) -> ExportState:
        """Count one try. `next_attempt_at` None on a failure means no further try: the item is failed."""
        state = (ExportState.DELIVERED if delivered else
                 ExportState.PENDING if next_attempt_at is not None else ExportState.FAILED)
        now = time.time()
        with self._tx() as db:
            # Only a pending item takes a try: a late answer must not undo an outcome recorded meanwhile.
            cur = db.execute("UPDATE exports SET state=?, attempts=attempts+1, next_attempt_at=?, last_error=?,"
                             " updated_at=? WHERE id=? AND state=?",
                             (state.value, next_attempt_at if next_attempt_at is not None else now, error, now,
                              export_id, ExportState.PENDING.value))
            if cur.rowcount == 0:
                row = db.execute("SELECT state FROM exports WHERE id=?", (export_id,)).fetchone()
                return ExportState(row[0]) if row else state
            series_uid, study_uid = db.execute(
                "SELECT e.series_uid, s.study_uid FROM exports e JOIN series s ON s.series_uid=e.series_uid"
                " WHERE e.id=?", (export_id,)).fetchone()
            if state is not ExportState.PENDING:  # final at this destination: displays following the stream hear
                db.execute("INSERT INTO events (created_at, kind, series_uid, study_uid) VALUES (?,?,?,?)",
                           (now, "sr", series_uid, study_uid))
            if state is ExportState.DELIVERED:
                waiting = db.execute("SELECT 1 FROM exports WHERE series_uid=? AND state!=?",
                                     (series_uid, ExportState.DELIVERED.value)).fetchone()
                if waiting is None:  # delivered everywhere: keep no patient data longer than needed
                    db.execute("DELETE FROM sources WHERE series_uid=?", (series_uid,))
                    db.execute("UPDATE reports SET document=NULL WHERE series_uid=?", (series_uid,))
        if state is not ExportState.PENDING:
            self._notify()
        return state

    def expire_failed_exports(self, failed_before: float) -> int:
        """Drop the SR document (or source) of series whose exports are all finished, at least one failed, and
        the last failure before `failed_before` (retention of patient data). Their failed items stay listed,
        saying so. Returns how many series."""
        # Due: every destination finished, and the newest failure older than the cutoff (each failed destination
        # gets its whole retention). What is held is the SR document, or only the source if the build failed.
        due = ("SELECT series_uid FROM exports GROUP BY series_uid HAVING SUM(state=?)=0 AND SUM(state=?)>0"
               " AND MAX(CASE WHEN state=? THEN updated_at END)<?")
        args = (ExportState.PENDING.value, ExportState.FAILED.value, ExportState.FAILED.value, failed_before)
        with self._tx() as db:
            series = [r[0] for r in db.execute(
                f"SELECT series_uid FROM ({due}) d WHERE EXISTS (SELECT 1 FROM reports r WHERE"
                " r.series_uid=d.series_uid AND r.document IS NOT NULL) OR EXISTS (SELECT 1 FROM sources s WHERE"
                " s.series_uid=d.series_uid)", args).fetchall()]
            for series_uid in series:
                db.execute("UPDATE reports SET document=NULL WHERE series_uid=?", (series_uid,))
                db.execute("DELETE FROM sources WHERE series_uid=?", (series_uid,))
                db.execute("UPDATE exports SET last_error=TRIM(COALESCE(last_error, '') || ?)"
                           " WHERE series_uid=? AND state=?",
                           (" [SR dropped: kept past export.keep_failed_days]", series_uid, ExportState.FAILED.value))
        return len(series)

    def retry_exports(self, ids: tuple[int, ...] = ()) -> int:
        """Queue failed exports again (all of them, or those with the given ids) with a fresh count of tries."""
        now = time.time()
        where, args = "state=?", [ExportState.FAILED.value]
        if ids:
            where += f" AND id IN ({','.join('?' * len(ids))})"
            args += list(ids)
        with self._tx() as db:
            cur = db.execute(f"UPDATE exports SET state=?, attempts=0, next_attempt_at=?, updated_at=? WHERE {where}",
                             (ExportState.PENDING.value, now, now, *args))
            count = cur.rowcount
        if count:
            self._notify()
        return count

    def wake_waiters(self) -> None:
        """Wake threads blocked in wait_for_event, so that one whose `cancel` is set returns."""
        self._notify()

    def _notify(self) -> None:
        with self._new_event:
            self._new_event.notify_all()

    # --- reads ----------------------------------------------------------------------------------------------------

    def wait_for_event(self, after_id: int, timeout: float, cancel: threading.Event | None = None) -> bool:
        """Block until an event newer than `after_id` exists (True), or the timeout passes or `cancel` is set and
        wake_waiters() called (False)."""
        deadline = time.monotonic() + timeout
        with self._new_event:
            while self.last_event_id() <= after_id:
                left = deadline - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    return False
                self._new_event.wait(left)
        return True

    def last_event_id(self) -> int:
        row = self._reader().execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(row[0])

    def events_after(self, after_id: int, limit: int = 100) -> list[Event]:
        rows = self._reader().execute(
            "SELECT id, created_at, kind, series_uid, study_uid FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit)).fetchall()
        return [Event(*tuple(r)) for r in rows]

    def series(self, series_uid: str) -> SeriesRow | None:
        row = self._reader().execute("SELECT * FROM series WHERE series_uid=?", (series_uid,)).fetchone()
        return _series_row(row) if row else None

    def series_in_states(self, states: tuple[SeriesState, ...]) -> list[SeriesRow]:
        marks = ",".join("?" * len(states))
        rows = self._reader().execute(f"SELECT * FROM series WHERE state IN ({marks}) ORDER BY first_seen",
                                      [s.value for s in states]).fetchall()
        return [_series_row(r) for r in rows]

    def state_counts(self) -> dict[SeriesState, int]:
        rows = self._reader().execute("SELECT state, COUNT(*) FROM series GROUP BY state").fetchall()
        return {SeriesState(r[0]): int(r[1]) for r in rows}

    def result_for_series(self, series_uid: str) -> StudyResult | None:
        row = self._reader().execute(_RESULT_SELECT + " WHERE r.series_uid=?", (series_uid,)).fetchone()
        return _result(row) if row else None

    def results_for_study(self, study_uid: str) -> list[StudyResult]:
        rows = self._reader().execute(_RESULT_SELECT + " WHERE r.study_uid=? ORDER BY r.id", (study_uid,)).fetchall()
        return [_result(r) for r in rows]

    def list_results(self, page_size: int, before_id: int | None = None,
                     since: float | None = None) -> list[tuple[int, StudyResult]]:
        """Newest first; page with `before_id` = the last id of the previous page."""
        clauses, args = [], []
        if before_id is not None:
            clauses.append("r.id < ?")
            args.append(before_id)
        if since is not None:
            clauses.append("r.scored_at >= ?")
            args.append(since)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._reader().execute(_RESULT_SELECT + where + " ORDER BY r.id DESC LIMIT ?",
                                      (*args, page_size)).fetchall()
        return [(int(r["id"]), _result(r)) for r in rows]

    def iter_results(self) -> Iterator[StudyResult]:
        for row in self._reader().execute(_RESULT_SELECT + " ORDER BY r.id"):
            yield _result(row)


    def source(self, series_uid: str) -> tuple[bytes, str] | None:
        row = self._reader().execute("SELECT header, instances FROM sources WHERE series_uid=?",
                                     (series_uid,)).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    def report(self, series_uid: str) -> StoredReport | None:
        """The kept SR, or None if none was built yet or it was dropped after delivery (see sr_uid)."""
        row = self._reader().execute("SELECT sop_instance_uid, document FROM reports WHERE series_uid=?",
                                     (series_uid,)).fetchone()
        return StoredReport(row[0], bytes(row[1])) if row and row[1] is not None else None

    def sr_uid(self, series_uid: str) -> str | None:
        """The SOP Instance UID of the series' SR, kept after the document itself is dropped."""
        row = self._reader().execute("SELECT sop_instance_uid FROM reports WHERE series_uid=?",
                                     (series_uid,)).fetchone()
        return row[0] if row else None

    def due_exports(self, now: float, limit: int = 32) -> list[ExportItem]:
        rows = self._reader().execute(
            _EXPORT_SELECT + " WHERE e.state=? AND e.next_attempt_at<=? ORDER BY e.next_attempt_at, e.id LIMIT ?",
            (ExportState.PENDING.value, now, limit)).fetchall()
        return [_export(r) for r in rows]

    def next_export_due(self) -> float | None:
        row = self._reader().execute("SELECT MIN(next_attempt_at) FROM exports WHERE state=?",
                                     (ExportState.PENDING.value,)).fetchone()
        return row[0]

    def exports(self, state: ExportState | None = None, series_uid: str | None = None,
                limit: int = 1000) -> list[ExportItem]:
        clauses, args = [], []
        if state is not None:
            clauses.append("e.state=?")
            args.append(state.value)
        if series_uid is not None:
            clauses.append("e.series_uid=?")
            args.append(series_uid)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._reader().execute(_EXPORT_SELECT + where + " ORDER BY e.id DESC LIMIT ?",
                                      (*args, limit)).fetchall()
        return [_export(r) for r in rows]

    def deliveries(self, series_uids: list[str]) -> dict[str, list[tuple[ExportItem, str | None]]]:
        """Each series' exports with its SR's SOP Instance UID (None until built), by destination; one query per
        500 series, so a page of results costs two queries, not one per result."""
        out: dict[str, list[tuple[ExportItem, str | None]]] = {}
        for start in range(0, len(series_uids), 500):
            chunk = series_uids[start:start + 500]
            rows = self._reader().execute(
                _EXPORT_SELECT.replace(" FROM exports e", ", r.sop_instance_uid AS sr_uid FROM exports e")
                + " LEFT JOIN reports r ON r.series_uid = e.series_uid"
                f" WHERE e.series_uid IN ({','.join('?' * len(chunk))}) ORDER BY e.destination", chunk).fetchall()
            for row in rows:
                d = dict(row)
                sr_uid = d.pop("sr_uid")
                out.setdefault(d["series_uid"], []).append((_export(d), sr_uid))
        return out

    def export_counts(self) -> dict[tuple[str, ExportState], int]:
        rows = self._reader().execute("SELECT destination, state, COUNT(*) FROM exports GROUP BY destination, state")
        return {(r[0], ExportState(r[1])): int(r[2]) for r in rows}


class _Transaction:
    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn, self.lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")  # may time out while another process holds the database
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        try:
            if exc_type is None:
                try:
                    self.conn.execute("COMMIT")
                except BaseException:
                    # A failed COMMIT (disk full, I/O error) leaves the transaction open; close it, or every
                    # later BEGIN fails.
                    self.conn.execute("ROLLBACK")
                    raise
            else:
                self.conn.execute("ROLLBACK")
        finally:
            self.lock.release()


_RESULT_SELECT = (
    "SELECT r.*, s.key, s.role, s.manufacturer, s.description, s.received, s.expected, s.completed_by,"
    " s.last_file_at FROM results r JOIN series s ON s.series_uid = r.series_uid")


_EXPORT_SELECT = (
    "SELECT e.id, e.series_uid, s.study_uid, s.key, e.destination, e.state, e.attempts, e.next_attempt_at,"
    " e.last_error, e.created_at, e.updated_at FROM exports e JOIN series s ON s.series_uid = e.series_uid")


def _export(row: sqlite3.Row | dict[str, Any]) -> ExportItem:
    d = dict(row)
    d["state"] = ExportState(d["state"])
    return ExportItem(**d)


def _series_row(row: sqlite3.Row) -> SeriesRow:
    d = dict(row)
    d["role"] = SeriesRole(d["role"])
    d["state"] = SeriesState(d["state"])
    return SeriesRow(**d)


def _finding_to_dict(f: FindingScore) -> dict[str, Any]:
    return {"id": f.finding_id, "name": f.name, "score": f.score, "threshold": f.threshold,
            "probability": f.probability, "positive": f.positive, "rare": f.rare,
            "review_reasons": list(f.review_reasons)}


def _finding_from_dict(d: dict[str, Any]) -> FindingScore:
    return FindingScore(d["id"], d["name"], d["score"], d["threshold"], d["probability"], d["positive"], d["rare"],
                        tuple(d["review_reasons"]))


def _result(row: sqlite3.Row) -> StudyResult:
    info = SeriesInfo(key=row["key"], study_uid=row["study_uid"], series_uid=row["series_uid"],
                      role=SeriesRole(row["role"]), manufacturer=row["manufacturer"], description=row["description"],
                      received=row["received"], expected=row["expected"], completed_by=row["completed_by"] or "",
                      last_file_at=row["last_file_at"] or 0.0)
    scores = Scores(findings=tuple(_finding_from_dict(d) for d in json.loads(row["findings"])),
                    ood_distance=row["ood_distance"], review_reasons=tuple(json.loads(row["review_reasons"])))
    return StudyResult(info=info, scores=scores, bundle_name=row["bundle_name"], bundle_version=row["bundle_version"],
                       backend=row["backend"], precision=row["precision"], timings_ms=json.loads(row["timings"]),
                       scored_at=row["scored_at"])

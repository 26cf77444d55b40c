"""The SR queue: one item per (scored series, destination), the SR built once and kept, the header of its source
images, and how long patient data stays.

Items are queued in the result's own transaction (`queue`, called by Results.save). A try is counted only on a
pending item, so a late answer never undoes an outcome recorded meanwhile. Once every destination has the SR, the
document and the source header are dropped; a failed SR stays `export.keep_failed_days` for a retry, then goes.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from appliance.handovers import EventKind, ExportItem, ExportState, StoredReport
from appliance.store import events
from appliance.store.database import Database, StoreError

_SELECT = (
    "SELECT e.id, e.series_uid, s.study_uid, s.key, e.destination, e.state, e.attempts, e.next_attempt_at,"
    " e.last_error, e.created_at, e.updated_at FROM exports e JOIN series s ON s.series_uid = e.series_uid")


def queue(db: sqlite3.Connection, series_uid: str, destinations: tuple[str, ...], now: float) -> None:
    """One pending item per destination, inside the caller's transaction."""
    for destination in destinations:
        db.execute("INSERT OR IGNORE INTO exports (series_uid, destination, state, next_attempt_at, created_at,"
                   " updated_at) VALUES (?,?,?,?,?,?)",
                   (series_uid, destination, ExportState.PENDING.value, now, now, now))


class ExportQueue:
    def __init__(self, db: Database, log: events.EventLog) -> None:
        self._db = db
        self._events = log

    def save_source(self, series_uid: str, header: bytes, instances_json: str) -> None:
        with self._db.transaction() as db:
            db.execute("INSERT OR REPLACE INTO sources (series_uid, header, instances, captured_at) VALUES (?,?,?,?)",
                       (series_uid, header, instances_json, time.time()))

    def save_report(self, series_uid: str, sop_instance_uid: str, document: bytes) -> StoredReport:
        """Keep a built SR; if one was kept already (a race, or a rebuild after a crash), that one wins. The source
        header has served its purpose then and goes: the document alone carries the patient data from here on."""
        with self._db.transaction() as db:
            db.execute("INSERT OR IGNORE INTO reports (series_uid, sop_instance_uid, created_at, document)"
                       " VALUES (?,?,?,?)", (series_uid, sop_instance_uid, time.time(), document))
            row = db.execute("SELECT sop_instance_uid, document FROM reports WHERE series_uid=?",
                             (series_uid,)).fetchone()
            if row[1] is None:
                raise StoreError("this series' SR was delivered everywhere and its document dropped")
            db.execute("DELETE FROM sources WHERE series_uid=?", (series_uid,))
        return StoredReport(row[0], bytes(row[1]))

    def record_try(self, export_id: int, delivered: bool, error: str | None,
                          next_attempt_at: float | None) -> ExportState:
        """Count one try. `next_attempt_at` None on a failure means no further try: the item is failed."""
        state = (ExportState.DELIVERED if delivered else
                 ExportState.PENDING if next_attempt_at is not None else ExportState.FAILED)
        now = time.time()
        with self._db.transaction() as db:
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
                events.record(db, EventKind.SR, series_uid, study_uid, now)
            if state is ExportState.DELIVERED:
                waiting = db.execute("SELECT 1 FROM exports WHERE series_uid=? AND state!=?",
                                     (series_uid, ExportState.DELIVERED.value)).fetchone()
                if waiting is None:  # delivered everywhere: keep no patient data longer than needed
                    db.execute("DELETE FROM sources WHERE series_uid=?", (series_uid,))
                    db.execute("UPDATE reports SET document=NULL WHERE series_uid=?", (series_uid,))
        if state is not ExportState.PENDING:
            self._events.notify()
        return state

    def defer(self, export_id: int, until: float, note: str) -> None:
        """A try still undecided (stored, its storage commitment report not yet in): the item waits until `until`,
        or until the report makes it due, with no try counted; `note` shows in `scanside exports list`."""
        with self._db.transaction() as db:
            db.execute("UPDATE exports SET next_attempt_at=?, last_error=?, updated_at=? WHERE id=? AND state=?",
                       (until, note, time.time(), export_id, ExportState.PENDING.value))

    def expire_failed(self, failed_before: float) -> int:
        """Drop the SR document (or source) of series whose exports are all finished, at least one failed, and
        the last failure before `failed_before` (retention of patient data). Their failed items stay listed,
        saying so. Returns how many series."""
        # Due: every destination finished, and the newest failure older than the cutoff (each failed destination
        # gets its whole retention). What is held is the SR document, or only the source if the build failed.
        due = ("SELECT series_uid FROM exports GROUP BY series_uid HAVING SUM(state=?)=0 AND SUM(state=?)>0"
               " AND MAX(CASE WHEN state=? THEN updated_at END)<?")
        args = (ExportState.PENDING.value, ExportState.FAILED.value, ExportState.FAILED.value, failed_before)
        with self._db.transaction() as db:
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

    def retry(self, ids: tuple[int, ...] = ()) -> int:
        """Queue failed exports again (all of them, or those with the given ids) with a fresh count of tries."""
        now = time.time()
        where = "state=?"
        args: list[str | int] = [ExportState.FAILED.value]
        if ids:
            where += f" AND id IN ({','.join('?' * len(ids))})"
            args += list(ids)
        with self._db.transaction() as db:
            cur = db.execute(f"UPDATE exports SET state=?, attempts=0, next_attempt_at=?, updated_at=? WHERE {where}",
                             (ExportState.PENDING.value, now, now, *args))
            count = cur.rowcount
        if count:
            self._events.notify()
        return count

    def source(self, series_uid: str) -> tuple[bytes, str, str] | None:
        """(header, instances JSON, used JSON) as SourceStudy.from_row takes them."""
        row = self._db.reader().execute("SELECT header, instances, used FROM sources WHERE series_uid=?",
                                     (series_uid,)).fetchone()
        return (bytes(row[0]), row[1], row[2]) if row else None

    def mark_used(self, series_uid: str, sop_instance_uids: list[str]) -> None:
        """The images the model tensor was made of, for the SR to reference (after save_source, once planned)."""
        with self._db.transaction() as db:
            db.execute("UPDATE sources SET used=? WHERE series_uid=?", (json.dumps(sop_instance_uids), series_uid))

    def report(self, series_uid: str) -> StoredReport | None:
        """The kept SR, or None if none was built yet or it was dropped after delivery (see sr_uid)."""
        row = self._db.reader().execute("SELECT sop_instance_uid, document FROM reports WHERE series_uid=?",
                                     (series_uid,)).fetchone()
        return StoredReport(row[0], bytes(row[1])) if row and row[1] is not None else None

    def sr_uid(self, series_uid: str) -> str | None:
        """The SOP Instance UID of the series' SR, kept after the document itself is dropped."""
        row = self._db.reader().execute("SELECT sop_instance_uid FROM reports WHERE series_uid=?",
                                     (series_uid,)).fetchone()
        return row[0] if row else None

    def due(self, now: float, limit: int = 32) -> list[ExportItem]:
        rows = self._db.reader().execute(
            _SELECT + " WHERE e.state=? AND e.next_attempt_at<=? ORDER BY e.next_attempt_at, e.id LIMIT ?",
            (ExportState.PENDING.value, now, limit)).fetchall()
        return [_export(r) for r in rows]

    def next_due(self) -> float | None:
        row = self._db.reader().execute("SELECT MIN(next_attempt_at) FROM exports WHERE state=?",
                                     (ExportState.PENDING.value,)).fetchone()
        return row[0]

    def items(self, state: ExportState | None = None, series_uid: str | None = None,
                limit: int = 1000) -> list[ExportItem]:
        clauses, args = [], []
        if state is not None:
            clauses.append("e.state=?")
            args.append(state.value)
        if series_uid is not None:
            clauses.append("e.series_uid=?")
            args.append(series_uid)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._db.reader().execute(_SELECT + where + " ORDER BY e.id DESC LIMIT ?",
                                      (*args, limit)).fetchall()
        return [_export(r) for r in rows]

    def deliveries(self, series_uids: list[str]) -> dict[str, list[tuple[ExportItem, str | None]]]:
        """Each series' exports with its SR's SOP Instance UID (None until built), by destination; one query per
        500 series, so a page of results costs two queries, not one per result."""
        out: dict[str, list[tuple[ExportItem, str | None]]] = {}
        for start in range(0, len(series_uids), 500):
            chunk = series_uids[start:start + 500]
            rows = self._db.reader().execute(
                _SELECT.replace(" FROM exports e", ", r.sop_instance_uid AS sr_uid FROM exports e")
                + " LEFT JOIN reports r ON r.series_uid = e.series_uid"
                f" WHERE e.series_uid IN ({','.join('?' * len(chunk))}) ORDER BY e.destination", chunk).fetchall()
            for row in rows:
                d = dict(row)
                sr_uid = d.pop("sr_uid")
                out.setdefault(d["series_uid"], []).append((_export(d), sr_uid))
        return out

    def counts(self) -> dict[tuple[str, ExportState], int]:
        rows = self._db.reader().execute("SELECT destination, state, COUNT(*) FROM exports GROUP BY destination, state")
        return {(r[0], ExportState(r[1])): int(r[2]) for r in rows}


def _export(row: sqlite3.Row | dict[str, Any]) -> ExportItem:
    d = dict(row)
    d["state"] = ExportState(d["state"])
    return ExportItem(**d)

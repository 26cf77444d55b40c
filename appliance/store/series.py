"""Series and their states. A series in a final state never moves again: one outcome per series. A failure is
sealed in the ledger in the transaction that records it."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from appliance.handovers import EventKind, SeriesInfo, SeriesRole, SeriesRow, SeriesState
from appliance.store import events, ledger
from appliance.store.database import Database, StoreError


def insert_bare(db: sqlite3.Connection, info: SeriesInfo, state: SeriesState, now: float) -> None:
    """The row for a series first heard of at a later stage (e.g. a result after a crash lost its first image)."""
    db.execute("INSERT INTO series (series_uid, study_uid, key, role, state, first_seen, updated_at, accession_number,"
               " station_name, patient_id, patient_name) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
               (info.series_uid, info.study_uid, info.key, info.role.value, state.value, now, now,
                info.accession_number, info.station_name, info.patient_id, info.patient_name))


# Exam identity, kept once known: a later hand-over without it (a recovered series) never blanks it.
KEEP_IDENTITY = ("accession_number=CASE WHEN ?1 != '' THEN ?1 ELSE accession_number END,"
                 " station_name=CASE WHEN ?2 != '' THEN ?2 ELSE station_name END,"
                 " patient_id=CASE WHEN ?4 != '' THEN ?4 ELSE patient_id END,"
                 " patient_name=CASE WHEN ?5 != '' THEN ?5 ELSE patient_name END")


def keep_identity(db: sqlite3.Connection, info: SeriesInfo) -> None:
    db.execute(f"UPDATE series SET {KEEP_IDENTITY} WHERE series_uid=?3",
               (info.accession_number, info.station_name, info.series_uid, info.patient_id, info.patient_name))


def digest(sop_instance_uid: str) -> str:
    """16 hex digits of SHA-256: unique enough within one series, and no UID in the clear."""
    return hashlib.sha256(sop_instance_uid.encode()).hexdigest()[:16]


def state_of(db: sqlite3.Connection, series_uid: str) -> SeriesState | None:
    row = db.execute("SELECT state FROM series WHERE series_uid=?", (series_uid,)).fetchone()
    return SeriesState(row[0]) if row else None


class SeriesTable:
    def __init__(self, db: Database, log: events.EventLog, mode: str = "assist") -> None:
        self._db = db
        self._events = log
        self.mode = mode  # appliance.mode, sealed into each ledger entry

    def seen(self, info: SeriesInfo) -> SeriesState | None:
        """Record a series on its first instance; returns its state if it was already known."""
        now = time.time()
        with self._db.transaction() as db:
            known = state_of(db, info.series_uid)
            if known is not None:
                return known
            db.execute(
                "INSERT INTO series (series_uid, study_uid, key, role, state, received, expected, manufacturer,"
                " description, first_seen, last_file_at, updated_at, accession_number, station_name, patient_id,"
                " patient_name) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (info.series_uid, info.study_uid, info.key, info.role.value, SeriesState.RECEIVING.value,
                 info.received, info.expected, info.manufacturer, info.description, now, info.last_file_at, now,
                 info.accession_number, info.station_name, info.patient_id, info.patient_name))
            return None

    def set_state(self, info: SeriesInfo, state: SeriesState, detail: str | None = None, *, stage: str = "",
                  input_sha256: str = "", bundle: tuple[str, str, str] = ("", "", "")) -> SeriesState | None:
        """Move a series to `state` (creating the row if needed); returns the previous state. Failures are events
        and ledger entries (with `stage`, the model input's hash if one was made, and the bundle name, version and
        bank version in force). A finished series never moves again (StoreError): that would be a second outcome
        for one series."""
        now = time.time()
        with self._db.transaction() as db:
            previous = state_of(db, info.series_uid)
            if previous is not None and previous.is_final and previous is not state:
                raise StoreError(f"series {info.key} is {previous.value}; refusing to make it {state.value}")
            if previous is None:
                insert_bare(db, info, state, now)
            db.execute(
                "UPDATE series SET state=?, role=?, received=?, expected=?, manufacturer=?, description=?,"
                " completed_by=?, detail=?, last_file_at=?, updated_at=? WHERE series_uid=?",
                (state.value, info.role.value, info.received, info.expected, info.manufacturer, info.description,
                 info.completed_by, detail, info.last_file_at, now, info.series_uid))
            keep_identity(db, info)
            if state is SeriesState.FAILED and previous is not SeriesState.FAILED:  # one entry per outcome
                ledger.append_failed(db, info, stage or (detail or "").partition(":")[0], input_sha256, self.mode,
                                     now, bundle)
            if state is SeriesState.FAILED:
                events.record(db, EventKind.FAILED, info.series_uid, info.study_uid, now)
                db.execute("DELETE FROM sources WHERE series_uid=?", (info.series_uid,))  # no SR will need it
                db.execute("DELETE FROM thumbnails WHERE series_uid=?", (info.series_uid,))  # nor a display
        if state is SeriesState.FAILED:
            self._events.notify()
        return previous

    def record_instances(self, series_uid: str, sop_instance_uids: Iterable[str]) -> None:
        """Which images a series had when it closed: a digest of each SOP Instance UID (not the UID itself, which
        identifies the image to anyone holding it), so that an image arriving later is told re-sent or new."""
        with self._db.transaction() as db:
            db.execute("UPDATE series SET instance_digests=? WHERE series_uid=?",
                       (" ".join(sorted({digest(u) for u in sop_instance_uids})), series_uid))

    def had_instance(self, series_uid: str, sop_instance_uid: str) -> bool:
        """Whether the closed series held this image (False also when that is not known: an older file's)."""
        row = self._db.reader().execute("SELECT instance_digests FROM series WHERE series_uid=?",
                                        (series_uid,)).fetchone()
        return bool(row) and digest(sop_instance_uid) in row[0].split()

    def forget(self, series_uid: str) -> None:
        """Drop a series row that holds nothing yet (no result, no event)."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM series WHERE series_uid=? AND state=? AND NOT EXISTS"
                       " (SELECT 1 FROM events WHERE events.series_uid=series.series_uid)",
                       (series_uid, SeriesState.RECEIVING.value))

    def get(self, series_uid: str) -> SeriesRow | None:
        row = self._db.reader().execute("SELECT * FROM series WHERE series_uid=?", (series_uid,)).fetchone()
        return _series_row(row) if row else None

    def in_states(self, states: tuple[SeriesState, ...]) -> list[SeriesRow]:
        marks = ",".join("?" * len(states))
        rows = self._db.reader().execute(f"SELECT * FROM series WHERE state IN ({marks}) ORDER BY first_seen",
                                         [s.value for s in states]).fetchall()
        return [_series_row(r) for r in rows]

    def counts(self) -> dict[SeriesState, int]:
        rows = self._db.reader().execute("SELECT state, COUNT(*) FROM series GROUP BY state").fetchall()
        return {SeriesState(r[0]): int(r[1]) for r in rows}


def _series_row(row: sqlite3.Row) -> SeriesRow:
    d: dict[str, Any] = dict(row)
    d.pop("instance_digests", None)  # the ingestor's (had_instance), not part of a series' record
    d["role"] = SeriesRole(d["role"])
    d["state"] = SeriesState(d["state"])
    return SeriesRow(**d)

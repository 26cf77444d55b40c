"""The event log: every outcome a display must hear of (scored, failed, an SR delivered), with increasing ids, and
a condition that wakes the readers following it.

An event is written in the same transaction as the change it announces (see `record`), so a reader that resumes
after its last id misses nothing and hears nothing that did not happen.
"""

from __future__ import annotations

import sqlite3
import threading
import time

from appliance.handovers import Event, EventKind
from appliance.store.database import Database

__all__ = ["Event", "EventKind", "EventLog", "record"]


def record(db: sqlite3.Connection, kind: EventKind, series_uid: str, study_uid: str, now: float) -> int:
    """Append an event inside the caller's transaction; returns its id. Call `EventLog.notify` after the commit."""
    cur = db.execute("INSERT INTO events (created_at, kind, series_uid, study_uid) VALUES (?,?,?,?)",
                     (now, kind.value, series_uid, study_uid))
    return int(cur.lastrowid or 0)


class EventLog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._new_event = threading.Condition()

    def notify(self) -> None:
        """Wake every waiter: a new event was committed (or one of them is being cancelled)."""
        with self._new_event:
            self._new_event.notify_all()

    wake = notify  # for a caller that sets a waiter's `cancel`: reads as what it is for

    def wait(self, after_id: int, timeout: float, cancel: threading.Event | None = None) -> bool:
        """Block until an event newer than `after_id` exists (True), or the timeout passes or `cancel` is set and
        wake() called (False)."""
        deadline = time.monotonic() + timeout
        with self._new_event:
            while self.last_id() <= after_id:
                left = deadline - time.monotonic()
                if left <= 0 or (cancel is not None and cancel.is_set()):
                    return False
                self._new_event.wait(left)
        return True

    def last_id(self) -> int:
        row = self._db.reader().execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()
        return int(row[0])

    def after(self, after_id: int, limit: int = 100) -> list[Event]:
        rows = self._db.reader().execute(
            "SELECT id, created_at, kind, series_uid, study_uid FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit)).fetchall()
        return [Event(r[0], r[1], EventKind(r[2]), r[3], r[4]) for r in rows]

"""The DICOM receiver's record of what it was sent: one row per SOP instance, so that a storage commitment request
is answered from what was promised, not from files (which leave the spool once their series is scored).

An instance is recorded as stored in a synced transaction before its C-STORE is answered Success: no instance a
sender was told is stored can ever be reported to it as failed, a restart or a power cut included. A refused
instance is recorded with the Failure Reason its refusal stands for, unless it was stored before (a resend that
fails does not undo one that succeeded). Rows go after the retention (`prune`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from appliance.handovers import SopReference
from appliance.store.database import Database

_CHUNK = 500  # references per lookup query (SQLite's bound on parameters is far above)


class ReceivedInstances:
    def __init__(self, db: Database) -> None:
        self._db = db

    def stored(self, sop_class_uid: str, sop_instance_uid: str, now: float | None = None) -> None:
        """Record an instance as stored, synced to disk before this returns. Raises on a database error: then
        the C-STORE must not be answered Success."""
        at = time.time() if now is None else now
        with self._db.transaction(durable=True) as db:
            db.execute("INSERT INTO received_instances (sop_instance_uid, sop_class_uid, reason, received_at)"
                       " VALUES (?,?,0,?) ON CONFLICT(sop_instance_uid) DO UPDATE SET sop_class_uid=excluded."
                       "sop_class_uid, reason=0, received_at=excluded.received_at",
                       (sop_instance_uid, sop_class_uid, at))

    def refused(self, sop_class_uid: str, sop_instance_uid: str, reason: int, now: float | None = None) -> None:
        """Record a refusal (not synced: losing one only turns its later answer into 'no such instance')."""
        at = time.time() if now is None else now
        with self._db.transaction() as db:
            db.execute("INSERT INTO received_instances (sop_instance_uid, sop_class_uid, reason, received_at)"
                       " VALUES (?,?,?,?) ON CONFLICT(sop_instance_uid) DO UPDATE SET sop_class_uid=excluded."
                       "sop_class_uid, reason=excluded.reason, received_at=excluded.received_at"
                       " WHERE received_instances.reason != 0", (sop_instance_uid, sop_class_uid, reason, at))

    def lookup(self, references: Sequence[SopReference]) -> list[tuple[str, int] | None]:
        """Per reference, in order: (the SOP Class UID it was received as, 0 if stored or else the reason it was
        refused), or None if it was never received (or its record was pruned)."""
        found: dict[str, tuple[str, int]] = {}
        uids = list(dict.fromkeys(ref.sop_instance_uid for ref in references))
        reader = self._db.reader()
        for start in range(0, len(uids), _CHUNK):
            chunk = uids[start:start + _CHUNK]
            for row in reader.execute("SELECT sop_instance_uid, sop_class_uid, reason FROM received_instances"
                                      f" WHERE sop_instance_uid IN ({','.join('?' * len(chunk))})", chunk):
                found[row[0]] = (row[1], int(row[2]))
        return [found.get(ref.sop_instance_uid) for ref in references]

    def prune(self, before: float) -> int:
        """Drop the records of instances received before `before`; returns how many."""
        with self._db.transaction() as db:
            return db.execute("DELETE FROM received_instances WHERE received_at < ?", (before,)).rowcount

    def count(self) -> int:
        return int(self._db.reader().execute("SELECT COUNT(*) FROM received_instances").fetchone()[0])

"""The PACS destination's storage commitment requests, until each SR's try is settled.

A request is written (one row per SR) before its N-ACTION goes, so that a report arriving at once on another
association (the receiver takes it, appliance/ingest/receiver.py) finds it; a report marks the rows of its
Transaction UID and makes their export items due, so the exporter settles them at once. Matching is by Transaction
UID, in the database: a restart in between loses nothing. Rows are deleted when the destination settles them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from appliance.handovers import CommitmentResult, ExportState, PendingCommitment, SopReference
from appliance.store.database import Database

_CHUNK = 500


class CommitmentRequests:
    def __init__(self, db: Database) -> None:
        self._db = db

    def open(self, transaction_uid: str, destination: str, references: Sequence[SopReference], deadline: float,
             now: float | None = None) -> None:
        at = time.time() if now is None else now
        with self._db.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO commitment_requests (transaction_uid, sop_instance_uid,"
                           " sop_class_uid, destination, state, requested_at, deadline) VALUES (?,?,?,?,'waiting',?,?)",
                           [(transaction_uid, ref.sop_instance_uid, ref.sop_class_uid, destination, at, deadline)
                            for ref in references])

    def drop(self, transaction_uid: str) -> None:
        """Forget a request that never reached the PACS (refused, unanswered)."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM commitment_requests WHERE transaction_uid=?", (transaction_uid,))

    def report(self, result: CommitmentResult, association: str, now: float | None = None) -> bool:
        """Record a result: each SR it names committed or failed (with its reason), any it leaves out failed. Their
        export items become due at once. False if no request of that Transaction UID is waiting (unknown, or
        settled already: e.g. a late report after its try had failed)."""
        at = time.time() if now is None else now
        named: dict[str, int | None] = {ref.sop_instance_uid: None for ref in result.committed}
        named.update({f.reference.sop_instance_uid: f.reason for f in result.failed})
        with self._db.transaction() as db:
            rows = db.execute("SELECT sop_instance_uid, destination FROM commitment_requests WHERE transaction_uid=?"
                              " AND state='waiting'", (result.transaction_uid,)).fetchall()
            if not rows:
                return False
            for sop_instance_uid, _ in rows:
                committed = sop_instance_uid in named and named[sop_instance_uid] is None
                db.execute("UPDATE commitment_requests SET state=?, failure_reason=?, reported_at=?, association=?"
                           " WHERE transaction_uid=? AND sop_instance_uid=?",
                           ("committed" if committed else "failed", named.get(sop_instance_uid), at, association,
                            result.transaction_uid, sop_instance_uid))
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start:start + _CHUNK]
                for destination in {d for _, d in chunk}:
                    uids = [u for u, d in chunk if d == destination]
                    db.execute("UPDATE exports SET next_attempt_at=MIN(next_attempt_at, ?) WHERE state=? AND"
                               " destination=? AND series_uid IN (SELECT series_uid FROM reports WHERE"
                               f" sop_instance_uid IN ({','.join('?' * len(uids))}))",
                               (at, ExportState.PENDING.value, destination, *uids))
        return True

    def state(self, destination: str, sop_instance_uid: str) -> PendingCommitment | None:
        """The latest request for this SR at this destination, or None (never asked, or settled)."""
        row = self._db.reader().execute(
            "SELECT transaction_uid, state, failure_reason, deadline, association FROM commitment_requests"
            " WHERE destination=? AND sop_instance_uid=? ORDER BY requested_at DESC LIMIT 1",
            (destination, sop_instance_uid)).fetchone()
        return PendingCommitment(row[0], row[1], row[2], float(row[3]), row[4]) if row else None

    def settle(self, destination: str, sop_instance_uid: str) -> None:
        """The SR's try is decided (its outcome goes to the export queue now): its requests go."""
        with self._db.transaction() as db:
            db.execute("DELETE FROM commitment_requests WHERE destination=? AND sop_instance_uid=?",
                       (destination, sop_instance_uid))

    def waiting(self) -> int:
        return int(self._db.reader().execute(
            "SELECT COUNT(*) FROM commitment_requests WHERE state='waiting'").fetchone()[0])

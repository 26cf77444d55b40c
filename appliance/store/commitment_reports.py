"""Storage commitment results the receiver owes its senders, until each is delivered or given up.

A result is written, synced, before its N-ACTION is answered Success, so a restart never forgets a report it
promised: the next start sends it on a new association. A request that repeats a Transaction UID of the same sender
replaces the earlier one (a sender that never heard the first answer asks again). Delivered and failed reports are
kept for the retention (`prune`), then go.
"""

from __future__ import annotations

import json
import time

from appliance.handovers import CommitmentFailure, CommitmentResult, OwedCommitmentReport, SopReference
from appliance.store.database import Database

STATES = ("pending", "sent", "failed")
_COLUMNS = "id, calling_ae, transaction_uid, result, attempts, created_at"


class CommitmentReports:
    def __init__(self, db: Database) -> None:
        self._db = db

    def owe(self, calling_ae: str, result: CommitmentResult, due_at: float, now: float | None = None) -> int:
        """Record a report to deliver from `due_at` on; synced before this returns. Returns its id."""
        at = time.time() if now is None else now
        with self._db.transaction(durable=True) as db:
            db.execute(
                "INSERT INTO commitment_reports (calling_ae, transaction_uid, result, state, attempts, next_attempt_at,"
                " created_at, updated_at) VALUES (?,?,?,'pending',0,?,?,?) ON CONFLICT(calling_ae, transaction_uid)"
                " DO UPDATE SET result=excluded.result, state='pending', attempts=0, next_attempt_at=excluded."
                "next_attempt_at, last_error=NULL, association=NULL, updated_at=excluded.updated_at",
                (calling_ae, result.transaction_uid, _encode(result), due_at, at, at))
            row = db.execute("SELECT id FROM commitment_reports WHERE calling_ae=? AND transaction_uid=?",
                             (calling_ae, result.transaction_uid)).fetchone()
        return int(row[0])

    def upcoming(self, before: float, limit: int = 64) -> list[tuple[OwedCommitmentReport, float]]:
        """Pending reports due before `before`, soonest first, each with when it is due."""
        rows = self._db.reader().execute(
            f"SELECT {_COLUMNS}, next_attempt_at FROM commitment_reports WHERE state='pending' AND next_attempt_at<=?"
            " ORDER BY next_attempt_at, id LIMIT ?", (before, limit)).fetchall()
        return [(_owed(tuple(r)[:-1]), float(r[-1])) for r in rows]

    def sent(self, report_id: int, association: str) -> None:
        with self._db.transaction() as db:
            db.execute("UPDATE commitment_reports SET state='sent', attempts=attempts+1, association=?,"
                       " last_error=NULL, updated_at=? WHERE id=? AND state='pending'",
                       (association, time.time(), report_id))

    def record_failure(self, report_id: int, error: str, next_attempt_at: float | None) -> str:
        """Count a failed try; `next_attempt_at` None: no further try, the report is failed. Returns the state."""
        state = "pending" if next_attempt_at is not None else "failed"
        now = time.time()
        with self._db.transaction() as db:
            db.execute("UPDATE commitment_reports SET state=?, attempts=attempts+1, next_attempt_at=?, last_error=?,"
                       " updated_at=? WHERE id=? AND state='pending'",
                       (state, next_attempt_at if next_attempt_at is not None else now, error, now, report_id))
        return state

    def get(self, calling_ae: str, transaction_uid: str) -> dict[str, object] | None:
        """The row of one report (for `scanside` tools and tests): state, attempts, association, last_error."""
        row = self._db.reader().execute(
            "SELECT state, attempts, association, last_error FROM commitment_reports WHERE calling_ae=? AND"
            " transaction_uid=?", (calling_ae, transaction_uid)).fetchone()
        return dict(row) if row else None

    def prune(self, before: float) -> int:
        """Drop reports delivered or given up before `before`; returns how many."""
        with self._db.transaction() as db:
            return db.execute("DELETE FROM commitment_reports WHERE state!='pending' AND updated_at < ?",
                              (before,)).rowcount

    def counts(self) -> dict[str, int]:
        rows = self._db.reader().execute("SELECT state, COUNT(*) FROM commitment_reports GROUP BY state")
        return {state: 0 for state in STATES} | {r[0]: int(r[1]) for r in rows}


def _encode(result: CommitmentResult) -> str:
    return json.dumps({"committed": [[r.sop_class_uid, r.sop_instance_uid] for r in result.committed],
                       "failed": [[f.reference.sop_class_uid, f.reference.sop_instance_uid, f.reason]
                                  for f in result.failed]}, separators=(",", ":"))


def _owed(row: tuple) -> OwedCommitmentReport:
    report_id, calling_ae, transaction_uid, encoded, attempts, created_at = row
    data = json.loads(encoded)
    result = CommitmentResult(transaction_uid, tuple(SopReference(c, i) for c, i in data["committed"]),
                              tuple(CommitmentFailure(SopReference(c, i), int(reason))
                                    for c, i, reason in data["failed"]))
    return OwedCommitmentReport(int(report_id), calling_ae, result, int(attempts), float(created_at))

"""Results. Saving one is the transaction that makes "nothing scored twice" hold across a crash: the result, its
series' state, its ledger entry, its SR queue items and its event are all on disk or none is, and recovery skips
series already in a final state.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from appliance.handovers import EventKind, FindingScore, Scores, SeriesInfo, SeriesRole, SeriesState, StudyResult
from appliance.store import events, exports, ledger, series, truth
from appliance.store.database import Database

_SELECT = (
    "SELECT r.*, s.key, s.role, s.manufacturer, s.description, s.received, s.expected, s.completed_by,"
    " s.last_file_at, s.accession_number, s.station_name, s.patient_id, s.patient_name"
    " FROM results r JOIN series s ON s.series_uid = r.series_uid")


class Results:
    def __init__(self, db: Database, log: events.EventLog, export_destinations: tuple[str, ...],
                 mode: str = "assist") -> None:
        self._db = db
        self._events = log
        self.export_destinations = export_destinations  # one SR queue item each, with every result saved
        self.mode = mode  # appliance.mode, sealed into each ledger entry

    def save(self, result: StudyResult) -> int | None:
        """Store a result, mark the series scored, seal it in the ledger, queue its SRs and log the event,
        atomically. Returns the event id, or None if this series already had an outcome (it is never scored
        twice)."""
        info, scores = result.info, result.scores
        now = time.time()
        with self._db.transaction() as db:
            if db.execute("SELECT 1 FROM results WHERE series_uid=?", (info.series_uid,)).fetchone():
                return None
            state = series.state_of(db, info.series_uid)
            if state is not None and state.is_final:
                return None  # failed or skipped already: one outcome per series
            if state is None:
                series.insert_bare(db, info, SeriesState.COMPLETE, now)
            db.execute(
                "UPDATE series SET state=?, received=?, expected=?, completed_by=?, last_file_at=?, updated_at=?"
                " WHERE series_uid=?",
                (SeriesState.SCORED.value, info.received, info.expected, info.completed_by, info.last_file_at, now,
                 info.series_uid))
            series.keep_identity(db, info)
            db.execute(
                "INSERT INTO results (series_uid, study_uid, scored_at, bundle_name, bundle_version, backend,"
                " precision, needs_review, review_reasons, ood_distance, findings, timings, assessable,"
                " quality_reasons, bank_version, input_sha256)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (info.series_uid, info.study_uid, result.scored_at, result.bundle_name, result.bundle_version,
                 result.backend, result.precision, int(scores.needs_review), json.dumps(list(scores.review_reasons)),
                 scores.ood_distance, json.dumps([_finding_to_dict(f) for f in scores.findings]),
                 json.dumps(result.timings_ms), int(scores.assessable), json.dumps(list(scores.quality_reasons)),
                 result.bank_version, result.input_sha256))
            ledger.append_scored(db, result, self.mode, now)
            truth.on_result(db, info, now)  # reports that arrived before their study match now
            exports.queue(db, info.series_uid, self.export_destinations, now)
            event_id = events.record(db, EventKind.SCORED, info.series_uid, info.study_uid, now)
        self._events.notify()
        return event_id

    def for_series(self, series_uid: str) -> StudyResult | None:
        row = self._db.reader().execute(_SELECT + " WHERE r.series_uid=?", (series_uid,)).fetchone()
        return _result(row) if row else None

    def for_study(self, study_uid: str) -> list[StudyResult]:
        rows = self._db.reader().execute(_SELECT + " WHERE r.study_uid=? ORDER BY r.id", (study_uid,)).fetchall()
        return [_result(r) for r in rows]

    def page(self, page_size: int, before_id: int | None = None,
             since: float | None = None) -> list[tuple[int, StudyResult]]:
        """Newest first; page with `before_id` = the last id of the previous page."""
        clauses: list[str] = []
        args: list[Any] = []
        if before_id is not None:
            clauses.append("r.id < ?")
            args.append(before_id)
        if since is not None:
            clauses.append("r.scored_at >= ?")
            args.append(since)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self._db.reader().execute(_SELECT + where + " ORDER BY r.id DESC LIMIT ?",
                                         (*args, page_size)).fetchall()
        return [(int(r["id"]), _result(r)) for r in rows]

    def all(self) -> Iterator[StudyResult]:
        for row in self._db.reader().execute(_SELECT + " ORDER BY r.id"):
            yield _result(row)


def result_row(db: sqlite3.Connection, series_uid: str) -> StudyResult | None:
    """A series' result read on the caller's connection (inside its transaction or snapshot)."""
    row = db.execute(_SELECT + " WHERE r.series_uid=?", (series_uid,)).fetchone()
    return _result(row) if row else None


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
                      last_file_at=row["last_file_at"] or 0.0, accession_number=row["accession_number"],
                      station_name=row["station_name"], patient_id=row["patient_id"],
                      patient_name=row["patient_name"])
    scores = Scores(findings=tuple(_finding_from_dict(d) for d in json.loads(row["findings"])),
                    ood_distance=row["ood_distance"], review_reasons=tuple(json.loads(row["review_reasons"])),
                    assessable=bool(row["assessable"]), quality_reasons=tuple(json.loads(row["quality_reasons"])))
    return StudyResult(info=info, scores=scores, bundle_name=row["bundle_name"], bundle_version=row["bundle_version"],
                       backend=row["backend"], precision=row["precision"], timings_ms=json.loads(row["timings"]),
                       scored_at=row["scored_at"], bank_version=row["bank_version"],
                       input_sha256=row["input_sha256"])

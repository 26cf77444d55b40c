"""Ground truth: final reports and assessments, matched to studies, and the current truth per study and finding.

    store.truth.receive(report)            # a ReceivedReport, before the MLLP ACK (one transaction)
    store.truth.assess(series_uid, {...}, assessor, comment)   # the gRPC AssessResult call
    store.truth.by_series()                # series_uid -> {finding_id: bool}: the evidence monitor's truth source
    on_result(db, info, now)               # inside Results.save's transaction: reports that came first match now

**Records.** Every report received (F final, C corrected, X cancelled) and every assessment is a row of
`truth_records`, kept for good: the labels read from the report per finding, which findings the text stated, the
control id and sending application, accession number and Study Instance UID, observation and receipt times. The
report's text is not stored: it is patient data, the labels are what the evidence needs, and the extractor runs on
the text before the ACK, so nothing waits for it later. (The cost: a better extractor cannot re-read old reports;
the sender still has them.) The same control id from the same sending application again is a resend (an ACK lost
on the way back): answered as stored, applied once.

**Matching.** A record belongs to a study by the Study Instance UID it carries, else by its accession number: the
one study whose series carry it (DICOM AccessionNumber, 0008,0050, kept per series). Tried twice: when the record
arrives, and when a result of a study is stored (`on_result`), so a report that comes days later and one that comes
before its images both match. An accession number carried by several studies stays pending (never guessed).

**Current truth.** `truth` holds one value per (study, finding), recomputed from the study's records in receipt
order each time one is added: a final or corrected report sets every finding it reads, an assessment the findings
it names (the latest record wins, whichever kind), a cancellation withdraws (NULL) every finding whose truth came
from a report. Each change (set, replaced, withdrawn) is a row of `truth_history`. A study's truth applies to each of
its scored series: `by_series`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from appliance.handovers import ReceivedReport, SeriesInfo, TruthStatus, TruthUpdate

if TYPE_CHECKING:
    from appliance.store.database import Database

VERDICTS = ("accept", "reject", "correct")  # an assessment per finding: the call was right, wrong, or this value
STATES = ("pending", "matched", "corrected", "withdrawn", "assessed")  # scanside_truth_records{state}


class AssessmentError(ValueError):
    """An assessment that cannot be stored; `not_found` when the series has no result."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


def _study_for_accession(db: sqlite3.Connection, accession: str) -> str | None:
    if not accession:
        return None
    rows = db.execute("SELECT DISTINCT study_uid FROM series WHERE accession_number=? LIMIT 2",
                      (accession,)).fetchall()
    return rows[0][0] if len(rows) == 1 else None


def _has_result(db: sqlite3.Connection, study_uid: str) -> bool:
    return db.execute("SELECT 1 FROM results WHERE study_uid=? LIMIT 1", (study_uid,)).fetchone() is not None


def recompute(db: sqlite3.Connection, study_uid: str, now: float) -> int:
    """The study's current truth from its records, in receipt order; writes what changed (and its history).
    Returns how many findings changed."""
    state: dict[str, tuple[int | None, int, str]] = {}  # finding -> (value, record id, source)
    for rid, source, status, labels in db.execute(
            "SELECT id, source, status, labels FROM truth_records WHERE study_uid=? ORDER BY id", (study_uid,)):
        if status == TruthStatus.CANCELLED.value:
            for finding, (_, _, src) in list(state.items()):
                if src == "report":
                    state[finding] = (None, rid, "report")
            continue
        for finding, value in json.loads(labels).items():
            state[finding] = (int(bool(value)), rid, source)
    current = {f: (v, r) for f, v, r in db.execute(
        "SELECT finding_id, value, record_id FROM truth WHERE study_uid=?", (study_uid,))}
    changed = 0
    for finding, (value, rid, source) in sorted(state.items()):
        old = current.get(finding)
        if old == (value, rid):
            continue
        if old is not None and old[0] == value and value is None:
            continue  # withdrawn already: a second cancellation changes nothing
        change = "withdrawn" if value is None else "set" if old is None or old[0] is None else "replaced"
        db.execute("INSERT INTO truth (study_uid, finding_id, value, record_id, source, updated_at)"
                   " VALUES (?,?,?,?,?,?) ON CONFLICT (study_uid, finding_id) DO UPDATE SET value=excluded.value,"
                   " record_id=excluded.record_id, source=excluded.source, updated_at=excluded.updated_at",
                   (study_uid, finding, value, rid, source, now))
        db.execute("INSERT INTO truth_history (study_uid, finding_id, change, old_value, old_record_id, new_value,"
                   " new_record_id, changed_at) VALUES (?,?,?,?,?,?,?,?)",
                   (study_uid, finding, change, old[0] if old else None, old[1] if old else None, value, rid, now))
        changed += 1
    return changed


def on_result(db: sqlite3.Connection, info: SeriesInfo, now: float) -> None:
    """A result of `info`'s study is being stored (in the caller's transaction): reports pending on its accession
    number belong to the study now, and every record of the study is matched."""
    study = info.study_uid
    if info.accession_number and _study_for_accession(db, info.accession_number) == study:
        db.execute("UPDATE truth_records SET study_uid=? WHERE study_uid IS NULL AND accession_number=?",
                   (study, info.accession_number))
    if db.execute("SELECT 1 FROM truth_records WHERE study_uid=? LIMIT 1", (study,)).fetchone() is None:
        return
    recompute(db, study, now)
    db.execute("UPDATE truth_records SET matched_at=? WHERE study_uid=? AND matched_at IS NULL", (now, study))


class TruthStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def receive(self, report: ReceivedReport, now: float | None = None) -> TruthUpdate:
        """Store one report and apply it, in one transaction: once this returns, the report survives a crash (the
        MLLP listener sends AA only then)."""
        now = time.time() if now is None else now
        if report.status is TruthStatus.ASSESSMENT:
            raise ValueError("assessments are stored by assess()")
        with self._db.transaction() as db:
            known = db.execute("SELECT id, study_uid, matched_at FROM truth_records WHERE source='report' AND"
                               " sender=? AND control_id=?", (report.sending_application, report.control_id)).fetchone()
            if known is not None:
                return TruthUpdate(int(known[0]), True, known[2] is not None, 0)
            study = report.study_uid or _study_for_accession(db, report.accession_number)
            matched = study is not None and _has_result(db, study)
            cur = db.execute(
                "INSERT INTO truth_records (source, status, sender, control_id, accession_number, study_uid,"
                " observed_at, received_at, labels, mentioned, matched_at) VALUES ('report',?,?,?,?,?,?,?,?,?,?)",
                (report.status.value, report.sending_application, report.control_id, report.accession_number,
                 study, report.observed_at, now, json.dumps(dict(sorted(report.labels.items()))),
                 json.dumps(list(report.mentioned)), now if matched else None))
            record_id = int(cur.lastrowid or 0)
            changed = recompute(db, study, now) if study is not None else 0
        return TruthUpdate(record_id, False, matched, changed)

    def assess(self, series_uid: str, verdicts: Mapping[str, tuple[str, bool]], assessor: str, comment: str = "",
               now: float | None = None) -> TruthUpdate:
        """A radiologist's (or reporting system's) verdict on a result, per finding: ("accept", _) the call was
        right, ("reject", _) it was wrong, ("correct", value) the truth is `value`. Stored as a record of its own
        (source "assessment") and applied to the result's study like a report: the latest record wins."""
        now = time.time() if now is None else now
        if not verdicts:
            raise AssessmentError("an assessment needs at least one finding")
        if any(v not in VERDICTS for v, _ in verdicts.values()):
            raise AssessmentError(f"each verdict must be one of {', '.join(VERDICTS)}")
        with self._db.transaction() as db:
            row = db.execute("SELECT study_uid, findings FROM results WHERE series_uid=?", (series_uid,)).fetchone()
            if row is None:
                raise AssessmentError("no result for this series", not_found=True)
            calls = {f["id"]: bool(f["positive"]) for f in json.loads(row[1])}
            unknown = sorted(set(verdicts) - set(calls))
            if unknown:
                raise AssessmentError(f"finding(s) not in this result: {', '.join(unknown)}")
            labels = {f: (calls[f] if v == "accept" else not calls[f] if v == "reject" else bool(value))
                      for f, (v, value) in sorted(verdicts.items())}
            cur = db.execute(
                "INSERT INTO truth_records (source, status, sender, control_id, study_uid, series_uid, received_at,"
                " labels, verdicts, comment, matched_at) VALUES ('assessment', 'A', ?, '', ?, ?, ?, ?, ?, ?, ?)",
                (assessor, row[0], series_uid, now, json.dumps(labels),
                 json.dumps({f: v for f, (v, _) in sorted(verdicts.items())}), comment, now))
            record_id = int(cur.lastrowid or 0)
            changed = recompute(db, row[0], now)
        return TruthUpdate(record_id, False, True, changed)

    def by_series(self) -> dict[str, dict[str, bool]]:
        """series_uid -> {finding_id: bool} for every scored result whose study has current truth (a study's
        truth applies to each of its scored series). The evidence monitor's truth source."""
        out: dict[str, dict[str, bool]] = {}
        for series_uid, finding, value in self._db.reader().execute(
                "SELECT r.series_uid, t.finding_id, t.value FROM truth t JOIN results r ON r.study_uid = t.study_uid"
                " WHERE t.value IS NOT NULL ORDER BY r.id"):
            out.setdefault(series_uid, {})[finding] = bool(value)
        return out

    def for_study(self, study_uid: str) -> dict[str, tuple[bool | None, str]]:
        """finding -> (current value, None when withdrawn; its source)."""
        return {f: (None if v is None else bool(v), src) for f, v, src in self._db.reader().execute(
            "SELECT finding_id, value, source FROM truth WHERE study_uid=?", (study_uid,))}

    def history(self, study_uid: str) -> list[dict[str, object]]:
        rows = self._db.reader().execute(
            "SELECT h.finding_id, h.change, h.old_value, h.new_value, h.new_record_id, r.source, r.status"
            " FROM truth_history h JOIN truth_records r ON r.id = h.new_record_id WHERE h.study_uid=? ORDER BY h.id",
            (study_uid,)).fetchall()
        return [dict(r) for r in rows]

    def records(self) -> list[dict[str, object]]:
        """Every record, in receipt order, labels as objects (for tests and exports)."""
        out = []
        for row in self._db.reader().execute("SELECT * FROM truth_records ORDER BY id"):
            d = dict(row)
            for key in ("labels", "mentioned", "verdicts"):
                d[key] = json.loads(d[key])
            out.append(d)
        return out

    def counts(self) -> dict[str, int]:
        """Records by state (STATES): reports (F, C) pending or matched to a scored study, corrected (C) and
        withdrawn (X) reports, assessments."""
        row = self._db.reader().execute(
            "SELECT COALESCE(SUM(source='report' AND status IN ('F','C') AND matched_at IS NULL), 0),"
            " COALESCE(SUM(source='report' AND status IN ('F','C') AND matched_at IS NOT NULL), 0),"
            " COALESCE(SUM(status='C'), 0), COALESCE(SUM(status='X'), 0), COALESCE(SUM(status='A'), 0)"
            " FROM truth_records").fetchone()
        return dict(zip(STATES, (int(v) for v in row), strict=True))

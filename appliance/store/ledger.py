"""The sealed prediction ledger: one append-only entry per series outcome (a result, scored or not assessable, or a
failure), hash-chained, written in the transaction that stores the outcome.

    append_scored(db, result, mode, now)    # inside Results.save's transaction
    append_failed(db, info, stage, sha, mode, now)  # inside SeriesTable.set_state's, for FAILED
    Ledger(database).verify()  /  .head()  /  .entries(since)

Each entry's hash is the SHA-256 of a canonical JSON (sorted keys, no spaces, no NaN) of every field of the entry,
the previous entry's hash included, so changing, removing or reordering one breaks the chain from there on. SQLite
triggers refuse UPDATE and DELETE on the table; a copy with the triggers dropped is what `verify` is for. What this
proves, and what it cannot: docs/ledger.md.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.handovers import SeriesInfo, StudyResult

if TYPE_CHECKING:
    from appliance.store.database import Database

KINDS = ("scored", "failed")  # the label set of scanside_ledger_entries_total too
GENESIS = "0" * 64  # the previous hash of the first entry
# The columns every entry has, in the order they are stored and exported; `payload` is a JSON object.
FIELDS = ("seq", "kind", "series_uid", "study_uid", "recorded_at", "payload", "bundle_name", "bundle_version",
          "bank_version", "input_sha256", "mode", "prev_hash")


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """The SHA-256 of an entry: every field in FIELDS (payload as its object), prev_hash included."""
    return hashlib.sha256(canonical({k: entry[k] for k in FIELDS})).hexdigest()


def result_payload(result: StudyResult) -> dict[str, Any]:
    """What a statistician needs of one result: every finding's score, probability and call, the review flags, the
    quality gate's verdict and the out-of-distribution distance; the manufacturer and the StationName (the site's
    name for the scanner, which the evidence monitor maps to a configured label). No patient identifier (the UIDs
    are columns; the accession number is never sealed)."""
    s = result.scores
    return {
        "findings": [{"id": f.finding_id, "score": f.score, "threshold": f.threshold, "probability": f.probability,
                      "positive": f.positive, "rare": f.rare, "review_reasons": list(f.review_reasons)}
                     for f in s.findings],
        "needs_review": s.needs_review, "review_reasons": list(s.review_reasons),
        "assessable": s.assessable, "quality_reasons": list(s.quality_reasons), "ood_distance": s.ood_distance,
        "scored_at": result.scored_at, "backend": result.backend, "precision": result.precision,
        "manufacturer": result.info.manufacturer, "station": result.info.station_name,
    }


def _append(db: sqlite3.Connection, kind: str, series_uid: str, study_uid: str, payload: dict[str, Any],
            bundle: tuple[str, str, str], input_sha256: str, mode: str, now: float) -> int:
    """One entry at the end of the chain, inside the caller's transaction (an IMMEDIATE one: the head read here
    cannot move before the insert). A clock stepped back records the previous entry's time: times never decrease."""
    last = db.execute("SELECT seq, hash, recorded_at FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev, at = (last[0] + 1, last[1], max(now, last[2])) if last else (1, GENESIS, now)
    entry = {"seq": seq, "kind": kind, "series_uid": series_uid, "study_uid": study_uid, "recorded_at": at,
             "payload": payload, "bundle_name": bundle[0], "bundle_version": bundle[1], "bank_version": bundle[2],
             "input_sha256": input_sha256, "mode": mode, "prev_hash": prev}
    db.execute(f"INSERT INTO ledger ({', '.join(FIELDS)}, hash) VALUES ({', '.join('?' * (len(FIELDS) + 1))})",
               (*(json.dumps(entry["payload"], sort_keys=True, allow_nan=False) if k == "payload" else entry[k]
                  for k in FIELDS), entry_hash(entry)))
    return seq


def append_scored(db: sqlite3.Connection, result: StudyResult, mode: str, now: float) -> int:
    return _append(db, "scored", result.info.series_uid, result.info.study_uid, result_payload(result),
                   (result.bundle_name, result.bundle_version, result.bank_version), result.input_sha256, mode, now)


def append_failed(db: sqlite3.Connection, info: SeriesInfo, stage: str, input_sha256: str, mode: str, now: float,
                  bundle: tuple[str, str, str] = ("", "", "")) -> int:
    """A failed series: the stage only. The failure's detail can quote a library's message (values, paths): it
    stays on the series row and in reason.txt, out of what is exported."""
    return _append(db, "failed", info.series_uid, info.study_uid,
                   {"stage": stage, "manufacturer": info.manufacturer, "station": info.station_name},
                   bundle, input_sha256, mode, now)


def seal_existing(db: sqlite3.Connection, now: float) -> int:
    """At the upgrade to the ledger's schema version: seal the results and failed series the file already holds, in
    their stored order (by the time each was stored), as of now. Those entries say so ("sealed_at_upgrade"), carry
    their own stored time, no input hash (none was kept), and mode assist (the only one there was). The ledger
    vouches for them from the upgrade on, not before. Returns how many."""
    rows = db.execute(
        "SELECT 'scored' AS kind, r.series_uid, r.scored_at AS at, r.id AS n FROM results r"
        " WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.series_uid = r.series_uid)"
        " UNION ALL SELECT 'failed', s.series_uid, s.updated_at, 0 FROM series s WHERE s.state = 'failed'"
        " AND NOT EXISTS (SELECT 1 FROM ledger l WHERE l.series_uid = s.series_uid) ORDER BY at, n").fetchall()
    from appliance.store.results import result_row  # results imports this module

    for kind, series_uid, at, _ in rows:
        if kind == "scored":
            result = result_row(db, series_uid)
            assert result is not None  # selected above, in this transaction
            payload = {**result_payload(result), "sealed_at_upgrade": True}
            _append(db, kind, series_uid, result.info.study_uid, payload,
                    (result.bundle_name, result.bundle_version, result.bank_version), "", "assist", now)
        else:
            study_uid, detail, manufacturer = db.execute(
                "SELECT study_uid, detail, manufacturer FROM series WHERE series_uid=?", (series_uid,)).fetchone()
            stage = (detail or "").partition(":")[0] or "unknown"
            _append(db, kind, series_uid, study_uid, {"stage": stage, "manufacturer": manufacturer,
                                                      "stored_at": at, "sealed_at_upgrade": True},
                    ("", "", ""), "", "assist", now)
    return len(rows)


@dataclass(frozen=True)
class Verdict:
    """What `verify` found: ok, or the first bad entry (`bad_seq`) and why."""

    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problem: str = ""
    bad_seq: int | None = None


class Ledger:
    """Reading the ledger: verify the chain, its head, its entries for an export."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest entry; (0, GENESIS) when empty."""
        row = self._db.reader().execute("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def count(self) -> int:
        return int(self._db.reader().execute("SELECT COUNT(*) FROM ledger").fetchone()[0])

    def entries(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Every entry (payload as its object, hash added), in seq order; `since`: recorded at or after it."""
        where, args = ("WHERE recorded_at >= ?", (since,)) if since is not None else ("", ())
        for row in self._db.reader().execute(f"SELECT {', '.join(FIELDS)}, hash FROM ledger {where} ORDER BY seq",
                                             args):
            yield _entry(row)

    def verify(self) -> Verdict:
        """Recompute the chain from the first entry: each seq the previous plus one (a removed entry leaves a gap),
        each prev_hash the previous entry's hash, each hash its entry's, times never decreasing (nothing back-dated);
        then every stored result has exactly one scored entry and every failed series one failed entry. One read
        snapshot, so a running appliance can be verified."""
        conn = self._db.reader()
        conn.execute("BEGIN")
        try:
            return _verify(conn)
        finally:
            conn.execute("COMMIT")


def _entry(row: sqlite3.Row) -> dict[str, Any]:
    entry = {k: row[k] for k in FIELDS}
    entry["payload"] = json.loads(entry["payload"])
    entry["hash"] = row["hash"]
    return entry


def _verify(conn: sqlite3.Connection) -> Verdict:
    chain = _verify_chain(conn)
    return chain if not chain.ok else _verify_outcomes(conn, chain)


def _verify_chain(conn: sqlite3.Connection) -> Verdict:
    prev_seq, prev_hash, prev_at, n = 0, GENESIS, float("-inf"), 0

    def bad(seq: int, why: str) -> Verdict:
        return Verdict(False, n, prev_seq, prev_hash, f"ledger entry seq {seq}: {why}", seq)

    for row in conn.execute(f"SELECT {', '.join(FIELDS)}, hash FROM ledger ORDER BY seq"):
        seq = int(row["seq"])
        if seq != prev_seq + 1:
            return bad(prev_seq + 1, f"missing (the next entry is seq {seq}): entries were removed")
        try:
            entry = _entry(row)
            computed = entry_hash(entry)
        except (ValueError, TypeError) as exc:
            return bad(seq, f"unreadable ({exc})")
        if entry["prev_hash"] != prev_hash:
            return bad(seq, "its previous hash is not the hash of the entry before it: the chain was rewritten or "
                            "an entry removed")
        if computed != entry["hash"]:
            return bad(seq, "its hash does not match its contents: the entry was changed")
        if entry["kind"] not in KINDS:
            return bad(seq, f"unknown kind {entry['kind']!r}")
        if not entry["recorded_at"] >= prev_at:
            return bad(seq, "recorded earlier than the entry before it: back-dated")
        prev_seq, prev_hash, prev_at, n = seq, computed, entry["recorded_at"], n + 1
    return Verdict(True, n, prev_seq, prev_hash)


# What a result row must agree on with its sealed entry (the fields the results table itself holds).
_CHECKED = ("findings", "review_reasons", "assessable", "quality_reasons", "ood_distance", "scored_at")


def _verify_outcomes(conn: sqlite3.Connection, chain: Verdict) -> Verdict:
    """One entry per outcome, and each stored result as sealed. Series are named by seq, never by UID: this
    message goes to terminals and logs."""
    def bad(seq: int | None, why: str) -> Verdict:
        return Verdict(False, chain.entries, chain.head_seq, chain.head_hash, why, seq)

    for kind, table, stored_at in (("scored", "results r WHERE 1", "r.scored_at"),
                                   ("failed", "series r WHERE r.state = 'failed'", "r.updated_at")):
        for series_uid, count, at in conn.execute(
                f"SELECT r.series_uid, (SELECT COUNT(*) FROM ledger l WHERE l.series_uid = r.series_uid"
                f" AND l.kind = '{kind}'), {stored_at} FROM {table} ORDER BY r.rowid"):
            if count == 1:
                continue
            what = "stored result" if kind == "scored" else "failed series"
            if count == 0:
                # Where its entry would lie: the first entry recorded after it was stored (or past the head).
                after = conn.execute("SELECT MIN(seq) FROM ledger WHERE recorded_at >= ?", (at,)).fetchone()[0]
                seq = int(after) if after is not None else chain.head_seq + 1
                return bad(seq, f"ledger entry seq {seq}: a {what} stored then has no {kind} ledger entry: its "
                                "entry was removed (and the chain rewritten after it), or it was never sealed")
            seqs = [r[0] for r in conn.execute("SELECT seq FROM ledger WHERE series_uid=? AND kind=? ORDER BY seq",
                                               (series_uid, kind))]
            return bad(seqs[1], f"ledger entry seq {seqs[1]}: a second {kind} entry for one {what} (entries "
                                f"{', '.join(map(str, seqs))})")
    from appliance.store.results import result_row  # results imports this module

    for row in conn.execute("SELECT seq, series_uid, payload FROM ledger WHERE kind = 'scored' ORDER BY seq"):
        result = result_row(conn, row["series_uid"])
        if result is None:
            return bad(row["seq"], f"ledger entry seq {row['seq']}: its result is no longer stored")
        sealed, stored = json.loads(row["payload"]), result_payload(result)
        changed = [k for k in _CHECKED if sealed.get(k) != stored[k]]
        if changed:
            return bad(row["seq"], f"ledger entry seq {row['seq']}: the stored result differs from the sealed one "
                                   f"({', '.join(changed)}): the results table was changed")
    return chain


# --- the export for a statistician ----------------------------------------------------------------------------------

EXPORT_FORMATS = ("jsonl", "csv")


def export_bytes(entries: list[dict[str, Any]], fmt: str) -> bytes:
    """JSON lines (one entry per line, exactly as sealed, hash included: a reader can re-verify the chain), or CSV
    with one row per entry: the entry's columns, the payload's scalars, and per finding `<id>_score`,
    `<id>_probability`, `<id>_positive` (the union of the findings seen, sorted)."""
    if fmt == "jsonl":
        return "".join(json.dumps(e, sort_keys=True, allow_nan=False) + "\n" for e in entries).encode()
    if fmt != "csv":
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}")
    import csv
    import io
    from datetime import datetime, timezone

    scalars = ("stage", "manufacturer", "station", "needs_review", "assessable", "ood_distance", "scored_at",
               "backend", "precision", "review_reasons", "quality_reasons", "sealed_at_upgrade")
    findings = sorted({f["id"] for e in entries for f in e["payload"].get("findings", [])})
    columns = [*(k for k in FIELDS if k != "payload"), "hash", "recorded_at_utc", *scalars,
               *(f"{fid}_{what}" for fid in findings for what in ("score", "probability", "positive"))]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    for e in entries:
        p = e["payload"]
        row: dict[str, Any] = {k: e[k] for k in (*FIELDS, "hash") if k != "payload"}
        row["recorded_at_utc"] = datetime.fromtimestamp(e["recorded_at"], timezone.utc).isoformat()
        for k in scalars:
            value = p.get(k, "")
            row[k] = ";".join(value) if isinstance(value, list) else value
        for f in p.get("findings", []):
            row.update({f"{f['id']}_score": f["score"], f"{f['id']}_probability": f["probability"],
                        f"{f['id']}_positive": f["positive"]})
        writer.writerow(row)
    return out.getvalue().encode()


# --- pseudonyms for an export that leaves the hospital --------------------------------------------------------------

PSEUDONYM_KEY_FILE = "ledger-pseudonym.key"


def pseudonym_key(data_dir: Path) -> bytes:
    """This appliance's secret for pseudonyms: 32 random bytes in the data folder (0600), made on first use, so the
    same UID gets the same pseudonym in every export from this appliance and no one without the key can reverse or
    recompute it (a plain hash of a UID could be matched against a PACS's UIDs)."""
    from appliance.fileio import write_bytes_atomic

    path = Path(data_dir) / PSEUDONYM_KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) != 32:
        if key:
            raise ValueError(f"{path} is not a 32-byte pseudonym key; restore it, or move it away to start new "
                             "pseudonyms")
        write_bytes_atomic(path, secrets.token_bytes(32), mode=0o600, durable=True)
        key = path.read_bytes()
    return key


def pseudonym(uid: str, key: bytes) -> str:
    """A DICOM-valid stand-in for a UID ('2.25.' and a 128-bit number, the UUID-derived root), keyed HMAC-SHA256."""
    if not uid:
        return uid
    return "2.25." + str(int.from_bytes(hmac.new(key, uid.encode(), hashlib.sha256).digest()[:16], "big"))


def pseudonymised(entries: list[dict[str, Any]], key: bytes) -> list[dict[str, Any]]:
    """The entries with their Study and Series Instance UIDs replaced by pseudonyms. Each keeps its `hash` and
    `prev_hash`, so a reader can still check that the chain is whole (seq without gaps, each prev_hash the previous
    hash, the last hash the anchored head) but not recompute a hash: that needs the real UIDs (`--with-uids`)."""
    return [{**e, "series_uid": pseudonym(e["series_uid"], key), "study_uid": pseudonym(e["study_uid"], key),
             "pseudonymised": True} for e in entries]


def chain_problem(entries: list[dict[str, Any]]) -> str | None:
    """What a reader of an export can check without the UIDs: None, or the first broken link."""
    for before, entry in itertools.pairwise(entries):
        if entry["seq"] != before["seq"] + 1:
            return f"seq {before['seq']} is followed by {entry['seq']}"
        if entry["prev_hash"] != before["hash"]:
            return f"seq {entry['seq']} does not link to seq {before['seq']}"
    return None

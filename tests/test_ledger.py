"""The sealed prediction ledger: one hash-chained, append-only entry per outcome, in the outcome's own transaction;
`scanside ledger verify` finds a changed, removed or back-dated entry; an older database is sealed at upgrade; and
repeated kill -9 of a real `scanside serve` leaves no gap and a verifying chain. Real SQLite, a real appliance."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import shutil
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from test_store import info, result

from appliance.cli import main
from appliance.dev.served import ServedAppliance
from appliance.dev.synth import SyntheticScanner, plan_study
from appliance.handovers import SeriesState
from appliance.pipeline.preparer import tensor_sha256
from appliance.store import Store
from appliance.store.ledger import FIELDS, GENESIS, entry_hash
from appliance.store.schema import SCHEMA_VERSION

HASH = "ab" * 32


def sealed(r, sha: str = HASH, assessable: bool = True):
    scores = dataclasses.replace(r.scores, assessable=assessable,
                                 quality_reasons=() if assessable else ("too_few_slices",))
    return dataclasses.replace(r, scores=scores, input_sha256=sha, bank_version="bank.1")


def a_ledger(path: Path, mode: str = "assist") -> Store:
    """Three results (one not assessable) and one failure: seq 1..4."""
    store = Store(path, mode=mode)
    store.results.save(sealed(result(info(1))))
    store.results.save(sealed(result(info(2)), assessable=False))
    store.series.set_state(info(3), SeriesState.FAILED, "preprocess: no slices", stage="preprocess")
    store.results.save(sealed(result(info(4))))
    return store


def config_for(tmp_path: Path, data_dir: Path) -> Path:
    cfg = tmp_path / "scanside.toml"
    cfg.write_text(f'[paths]\ndata_dir = "{data_dir}"\nwatch_dir = "{tmp_path / "incoming"}"\n')
    return cfg


def test_every_outcome_is_sealed_once_and_the_chain_verifies(tmp_path):
    store = a_ledger(tmp_path / "db.sqlite", mode="shadow")
    assert store.results.save(sealed(result(info(1)))) is None  # a second result for one series: no entry
    store.series.set_state(info(3), SeriesState.FAILED, "preprocess: again", stage="preprocess")  # nor a failure
    entries = list(store.ledger.entries())
    assert [(e["seq"], e["kind"]) for e in entries] == [(1, "scored"), (2, "scored"), (3, "failed"), (4, "scored")]
    assert [e["series_uid"] for e in entries] == ["1.2.1.1", "1.2.2.1", "1.2.3.1", "1.2.4.1"]
    assert {e["mode"] for e in entries} == {"shadow"}
    assert entries[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(entries))
    assert all(entry_hash(e) == e["hash"] for e in entries)
    scored, not_assessable, failed = entries[0], entries[1], entries[2]
    assert (scored["input_sha256"], scored["bank_version"], scored["bundle_name"]) == (HASH, "bank.1", "b")
    assert scored["payload"]["findings"][0] == {"id": "lv_dilation", "score": 0.31, "threshold": 0.25,
                                                "probability": 0.8, "positive": True, "rare": False,
                                                "review_reasons": []}
    assert (scored["payload"]["needs_review"], scored["payload"]["ood_distance"]) == (True, 1.5)
    assert (not_assessable["payload"]["assessable"], not_assessable["payload"]["quality_reasons"]) == \
        (False, ["too_few_slices"])
    assert failed["payload"]["stage"] == "preprocess" and "no slices" not in json.dumps(failed)  # detail stays out
    assert failed["input_sha256"] == ""
    times = [e["recorded_at"] for e in entries]
    assert times == sorted(times)
    verdict = store.ledger.verify()
    assert verdict.ok and (verdict.entries, verdict.head_seq, verdict.head_hash) == (4, 4, entries[-1]["hash"])
    assert store.results.for_series("1.2.1.1").input_sha256 == HASH  # the result reads back as it was sealed
    store.close()


def test_sqlite_itself_refuses_to_change_or_remove_an_entry(tmp_path):
    a_ledger(tmp_path / "db.sqlite").close()
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE ledger SET payload='{}' WHERE seq=2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM ledger WHERE seq=4")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM ledger")
        assert db.execute("SELECT COUNT(*) FROM ledger").fetchone()[0] == 4


def _rehash_from(db: sqlite3.Connection, seq: int) -> None:
    """What an attacker with write access does to hide an edit: recompute every hash from `seq` on."""
    rows = db.execute(f"SELECT {', '.join(FIELDS)} FROM ledger ORDER BY seq").fetchall()
    prev = GENESIS
    for row in rows:
        entry = dict(zip(FIELDS, row, strict=True))
        entry["payload"] = json.loads(entry["payload"])
        if entry["seq"] >= seq:
            entry["prev_hash"] = prev
            db.execute("UPDATE ledger SET prev_hash=?, hash=? WHERE seq=?", (prev, entry_hash(entry), entry["seq"]))
        prev = entry_hash(entry)


TAMPERING = {
    "a changed payload": ("UPDATE ledger SET payload=replace(payload, '\"positive\": true', '\"positive\": false')"
                          " WHERE seq=4", None, 4, "its hash does not match its contents"),
    "a changed model version": ("UPDATE ledger SET bundle_version='2' WHERE seq=2", None, 2, "changed"),
    "a removed entry": ("DELETE FROM ledger WHERE seq=2", None, 2, "missing"),
    "a removed entry, the chain rewritten": ("DELETE FROM ledger WHERE seq=2; UPDATE ledger SET seq=seq+100 WHERE"
                                             " seq>2; UPDATE ledger SET seq=seq-101 WHERE seq>100", 2, 2,
                                             "no scored ledger entry"),
    "the newest entry removed": ("DELETE FROM ledger WHERE seq=4", None, 4, "no scored ledger entry"),
    "a back-dated entry, the chain rewritten": ("UPDATE ledger SET recorded_at=recorded_at-3600 WHERE seq=3", 3, 3,
                                                "back-dated"),
    "a re-ordered chain": ("UPDATE ledger SET seq=seq+10 WHERE seq=2; UPDATE ledger SET seq=2 WHERE seq=3;"
                           " UPDATE ledger SET seq=3 WHERE seq=12", None, 2, "previous hash"),
    "a changed result": ("UPDATE results SET findings=replace(findings, '0.8', '0.2') WHERE series_uid='1.2.4.1'",
                         None, 4, "the results table was changed"),
    "a second entry for one result": (None, None, 5, "a second scored entry"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_verify_names_the_first_bad_seq_of_a_tampered_copy(tmp_path, case, capsys):
    data = tmp_path / "data"
    a_ledger(data / "scanside.db").close()
    cfg = config_for(tmp_path, data)
    assert main(["ledger", "verify", "--config", str(cfg)]) == 0
    sql, rehash_from, bad_seq, why = TAMPERING[case]
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    with sqlite3.connect(copy / "scanside.db") as db:
        db.executescript("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete;")
        if sql is None:  # duplicate seq 1's entry as seq 5, correctly chained
            head = db.execute("SELECT hash FROM ledger WHERE seq=4").fetchone()[0]
            db.execute(f"INSERT INTO ledger ({', '.join(FIELDS)}, hash) SELECT 5, kind, series_uid, study_uid,"
                       f" recorded_at + 10, payload, bundle_name, bundle_version, bank_version, input_sha256, mode,"
                       f" ?, '' FROM ledger WHERE seq=1", (head,))
            rehash_from = 5
        else:
            db.executescript(sql)
        if rehash_from is not None:
            _rehash_from(db, rehash_from)
    store = Store(copy / "scanside.db")
    verdict = store.ledger.verify()
    store.close()
    assert not verdict.ok and verdict.bad_seq == bad_seq and why in verdict.problem, verdict
    capsys.readouterr()
    assert main(["ledger", "verify", "--config", str(config_for(tmp_path, copy))]) == 1
    err = capsys.readouterr().err
    assert f"first bad seq: {bad_seq}" in err and why in err
    assert "1.2." not in err  # the series is named by seq, never by UID


def _make_version_3_file(path: Path) -> None:
    """What a version-3 appliance left: no ledger, results without input_sha256; two results and a failure."""
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.executescript("""
            DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete; DROP TABLE ledger;
            ALTER TABLE results DROP COLUMN input_sha256;
            INSERT INTO series (series_uid, study_uid, key, role, state, manufacturer, first_seen, updated_at)
                VALUES ('1.2.5.1', '1.2.5', 's000000000005', 'cine_sax', 'scored', 'A', 1.0, 30.0),
                       ('1.2.6.1', '1.2.6', 's000000000006', 'cine_sax', 'failed', 'B', 1.0, 20.0),
                       ('1.2.7.1', '1.2.7', 's000000000007', 'cine_sax', 'scored', 'A', 1.0, 10.0);
            UPDATE series SET detail='inference: RuntimeError' WHERE series_uid='1.2.6.1';
            INSERT INTO results (series_uid, study_uid, scored_at, bundle_name, bundle_version, backend, precision,
                                 needs_review, review_reasons, ood_distance, findings, timings, bank_version)
                VALUES ('1.2.5.1', '1.2.5', 30.0, 'b', '1', 'onnxruntime', 'fp32', 0, '[]', NULL, '[]', '{}', 'v'),
                       ('1.2.7.1', '1.2.7', 10.0, 'b', '1', 'onnxruntime', 'fp32', 0, '[]', 0.5, '[]', '{}', 'v');
            UPDATE meta SET value='3' WHERE key='schema_version';""")


def test_an_older_database_is_upgraded_and_what_it_holds_sealed_in_stored_order(tmp_path):
    path = tmp_path / "old.db"
    _make_version_3_file(path)
    store = Store(path)
    entries = list(store.ledger.entries())
    # In the order they were stored (10, 20, 30), not by table: the failure between the two results.
    assert [(e["seq"], e["kind"], e["series_uid"]) for e in entries] == \
        [(1, "scored", "1.2.7.1"), (2, "failed", "1.2.6.1"), (3, "scored", "1.2.5.1")]
    assert all(e["payload"]["sealed_at_upgrade"] and e["mode"] == "assist" and e["input_sha256"] == ""
               for e in entries)
    assert entries[0]["payload"]["scored_at"] == 10.0 and entries[1]["payload"]["stage"] == "inference"
    assert store.ledger.verify().ok
    store.results.save(sealed(result(info(8))))  # the chain goes on from the sealed head
    assert store.ledger.head()[0] == 4 and store.ledger.verify().ok
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("DELETE FROM ledger")
    again = Store(path)  # opening the upgraded file again seals nothing twice
    assert again.ledger.count() == 4 and again.ledger.verify().ok
    again.close()


def test_export_head_and_since(tmp_path, capsys):
    data = tmp_path / "data"
    store = a_ledger(data / "scanside.db")
    head = store.ledger.head()
    store.close()
    cfg = config_for(tmp_path, data)
    assert main(["ledger", "head", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.split() == [str(head[0]), head[1]]
    out = tmp_path / "ledger.jsonl"
    assert main(["ledger", "--config", str(cfg), "export", "--out", str(out)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert oct(out.stat().st_mode & 0o777) == "0o640"
    # A statistician can re-verify what was taken away, without the appliance.
    assert [e["seq"] for e in lines] == [1, 2, 3, 4] and all(entry_hash(e) == e["hash"] for e in lines)
    assert lines[-1]["hash"] == head[1]
    out_csv = tmp_path / "ledger.csv"
    assert main(["ledger", "export", "--config", str(cfg), "--out", str(out_csv), "--format", "csv"]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["kind"] for r in rows] == ["scored", "scored", "failed", "scored"]
    assert rows[0]["lv_dilation_probability"] == "0.8" and rows[1]["assessable"] == "False"
    assert rows[2]["stage"] == "preprocess" and rows[2]["lv_dilation_probability"] == ""
    time.sleep(0.05)
    boundary = datetime.now(timezone.utc)
    time.sleep(0.05)
    store = Store(data / "scanside.db")
    store.results.save(sealed(result(info(5))))
    store.close()
    since = boundary.replace(tzinfo=None).isoformat()  # no offset: UTC
    assert main(["ledger", "export", "--config", str(cfg), "--out", str(out), "--since", since]) == 0
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [5]
    assert main(["ledger", "export", "--config", str(cfg), "--out", str(out), "--since", "last tuesday"]) == 2


def test_the_input_hash_is_the_float32_tensor_bytes():
    tensor = np.random.default_rng(1).random((4, 3, 8, 8)).astype(np.float32)
    assert tensor_sha256(tensor) == hashlib.sha256(tensor.tobytes()).hexdigest()
    assert tensor_sha256(np.asfortranarray(tensor)) == tensor_sha256(tensor)  # C order, whatever the layout
    assert tensor_sha256(tensor.astype(np.float64)) == tensor_sha256(tensor)
    assert tensor_sha256(tensor + 1e-6) != tensor_sha256(tensor)


# --- kill -9 of a real appliance --------------------------------------------------------------------------------

@pytest.mark.slow
def test_repeated_kill_9_leaves_no_gap_and_a_verifying_chain(tmp_path, tiny_bundle, capsys):
    plans = [plan_study(seed=300 + i, vendor="AB"[i % 2], n_slices=8, n_phases=20, matrix=(128, 128))
             for i in range(5)]
    cine = {s.series_uid for p in plans for s in p.series if s.role == "cine_sax"}
    app = ServedAppliance(tmp_path / "appliance", engine={"bundle": tiny_bundle, "intra_op_threads": 1},
                          assembly={"quiet_period_s": 1.0}, ingest={"settle_seconds": 0.5, "poll_interval_s": 0.05})
    scanner = SyntheticScanner(app.incoming, plans, pace_s=0.004)
    app.start()
    scanner.start()

    def results() -> int:
        return len(list(app.client.list_all()))

    # Kill while studies arrive, then again at each further result: during ingest, assembly and scoring.
    for at_least in (1, 2, 3):
        wait_for(lambda n=at_least: results() >= n, timeout=90, what=f"result {at_least}")
        app.kill_hard()
        app.start()
    assert scanner.join(60) and scanner.error is None
    try:
        wait_for(lambda: {r.series_instance_uid for r in app.client.list_all()} >= cine, timeout=90,
                 what="every study scored after the restarts")
    finally:
        app.stop()
    store = Store(app.data / "scanside.db")
    entries = list(store.ledger.entries())
    verdict = store.ledger.verify()
    store.close()
    assert verdict.ok, verdict.problem
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))  # no gap
    assert sorted(e["series_uid"] for e in entries) == sorted(cine)  # every result exactly once, nothing else
    assert all(e["kind"] == "scored" and e["mode"] == "assist" and len(e["input_sha256"]) == 64 for e in entries)
    assert main(["ledger", "verify", "--config", str(app.config)]) == 0
    assert f"{len(cine)} entries" in capsys.readouterr().out


def test_a_pseudonymised_export_hides_the_uids_and_keeps_the_links(tmp_path, capsys):
    from appliance.store.ledger import PSEUDONYM_KEY_FILE, chain_problem

    data = tmp_path / "data"
    store = a_ledger(data / "scanside.db")
    real = list(store.ledger.entries())
    head = store.ledger.head()
    store.close()
    cfg = config_for(tmp_path, data)
    out, again = tmp_path / "p.jsonl", tmp_path / "p2.jsonl"
    assert main(["ledger", "export", "--config", str(cfg), "--out", str(out), "--pseudonymise"]) == 0
    assert "pseudonymised" in capsys.readouterr().out
    key = data / PSEUDONYM_KEY_FILE
    assert len(key.read_bytes()) == 32 and oct(key.stat().st_mode & 0o777) == "0o600"
    text = out.read_text()
    for e in real:  # no real UID anywhere in the file
        assert e["series_uid"] not in text and e["study_uid"] not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(e["series_uid"].startswith("2.25.") and len(e["series_uid"]) <= 64 for e in lines)
    # the same series keeps one pseudonym, different series differ, and the next export gives the same ones
    assert len({e["series_uid"] for e in lines}) == len({e["series_uid"] for e in real})
    assert main(["ledger", "export", "--config", str(cfg), "--out", str(again), "--pseudonymise"]) == 0
    assert again.read_text() == text
    # the links still check out, the hashes cannot be recomputed without the UIDs, and a removed line is seen
    assert chain_problem(lines) is None and lines[-1]["hash"] == head[1]
    assert all(entry_hash(e) != e["hash"] for e in lines)
    assert chain_problem(lines[:1] + lines[2:]) == "seq 1 is followed by 3"
    # a plain export says what it holds
    assert main(["ledger", "export", "--config", str(cfg), "--out", str(tmp_path / "plain.jsonl")]) == 0
    assert "--pseudonymise" in capsys.readouterr().err
    key.write_bytes(b"short")
    assert main(["ledger", "export", "--config", str(cfg), "--out", str(out), "--pseudonymise"]) != 0

"""`kill -9` of a real `scanside serve` process, then a restart: nothing accepted is lost, nothing scored twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import wait_for

from appliance.dev.served import ServedAppliance
from appliance.dev.synth import SyntheticScanner, plan_study

pytestmark = pytest.mark.slow


def plans(first_seed: int, n: int):
    return [plan_study(seed=first_seed + i, vendor="AB"[i % 2], n_slices=8, n_phases=20, matrix=(160, 160))
            for i in range(n)]


def cine_uids(ps) -> set[str]:
    return {s.series_uid for p in ps for s in p.series if s.role == "cine_sax"}


def served(tmp_path: Path, bundle: Path, **engine) -> ServedAppliance:
    return ServedAppliance(tmp_path / "appliance", engine={"bundle": bundle, "intra_op_threads": 1, **engine},
                           assembly={"quiet_period_s": 1.0}, ingest={"settle_seconds": 0.5, "poll_interval_s": 0.05})


def check_exactly_once(app: ServedAppliance, expected: set[str]) -> None:
    db = sqlite3.connect(app.data / "scanside.db")
    results = [r[0] for r in db.execute("SELECT series_uid FROM results")]
    events = [r for r in db.execute("SELECT kind, series_uid FROM events ORDER BY id")]
    states = dict(db.execute("SELECT state, COUNT(*) FROM series GROUP BY state").fetchall())
    db.close()
    assert sorted(results) == sorted(expected)  # every cine series, each once
    assert [kind for kind, _ in events] == ["scored"] * len(expected)
    assert sorted(uid for _, uid in events) == sorted(expected)
    assert set(states) <= {"scored", "skipped"}, states
    assert not any((app.data / "spool").iterdir())
    assert not (app.data / "quarantine").exists() or not any((app.data / "quarantine").rglob("*.reason.json"))


def test_hard_kill_while_studies_arrive(tmp_path, tiny_bundle):
    ps = plans(100, 4)
    app = served(tmp_path, tiny_bundle).start()
    scanner = SyntheticScanner(app.incoming, ps, pace_s=0.004)
    scanner.start()
    # Kill once the first study is scored and the others are part-way in: the spool and the database then hold
    # accepted-but-unfinished work.
    wait_for(lambda: len(list(app.client.list_all())) >= 1, timeout=60, what="a first result")
    app.kill_hard()
    assert scanner.join(60) and scanner.error is None  # the scanner goes on writing while the appliance is down
    app.start()
    try:
        wait_for(lambda: {r.series_instance_uid for r in app.client.list_all()} >= cine_uids(ps), timeout=60,
                 what="every study scored after the restart")
        wait_for(lambda: not any((app.data / "spool").iterdir()), timeout=20, what="an empty spool")
    finally:
        app.stop()
    check_exactly_once(app, cine_uids(ps))


def test_hard_kill_between_completion_and_scoring(tmp_path, tiny_bundle):
    ps = plans(200, 1)
    (uid,) = cine_uids(ps)
    # A long batching wait holds the complete series in the inference queue: the kill lands in that window.
    app = served(tmp_path, tiny_bundle, batch_wait_ms=5000, max_batch=4).start()
    SyntheticScanner(app.incoming, ps, pace_s=0).start()
    wait_for(lambda: _state(app, uid) == "complete", timeout=60, what="the series to be complete")
    app.kill_hard()
    app.start()
    try:
        wait_for(lambda: _state(app, uid) == "scored", timeout=60, what="the recovered series to be scored")
        wait_for(lambda: all(_state(app, s.series_uid) in ("scored", "skipped") for s in ps[0].series), timeout=20)
        wait_for(lambda: not any((app.data / "spool").iterdir()), timeout=20, what="an empty spool")
    finally:
        app.stop()
    check_exactly_once(app, {uid})


def _state(app: ServedAppliance, series_uid: str) -> str:
    try:
        return app.client.series_status(series_uid).state
    except Exception:
        return ""

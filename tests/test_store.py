import threading
import time

import pytest

from appliance.handovers import FindingScore, Scores, SeriesInfo, SeriesRole, SeriesState, StudyResult
from appliance.store import Store, StoreError


def info(n: int = 1, role=SeriesRole.CINE_SAX) -> SeriesInfo:
    return SeriesInfo(key=f"s{n:012d}", study_uid=f"1.2.{n}", series_uid=f"1.2.{n}.1", role=role, manufacturer="A",
                      description="cine", received=300, expected=300, completed_by="tags", last_file_at=time.time())


def result(i: SeriesInfo) -> StudyResult:
    f = FindingScore("lv_dilation", "LV dilation", 0.31, 0.25, 0.8, True, False, ())
    return StudyResult(i, Scores((f,), 1.5, ("lv_dilation:near_threshold",)), "b", "1", "onnxruntime", "fp32",
                       {"preprocess": 5.0}, time.time())


def test_states_results_and_events_round_trip(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = info()
    assert store.series.seen(i) is None
    assert store.series.seen(i) is SeriesState.RECEIVING
    assert store.series.set_state(i, SeriesState.COMPLETE) is SeriesState.RECEIVING
    event_id = store.results.save(result(i))
    assert event_id == 1
    assert store.results.save(result(i)) is None  # never scored twice
    row = store.series.get(i.series_uid)
    assert row.state is SeriesState.SCORED and row.received == 300
    (stored,) = store.results.for_study(i.study_uid)
    assert stored.scores.findings[0].positive and stored.scores.review_reasons == ("lv_dilation:near_threshold",)
    assert stored.timings_ms == {"preprocess": 5.0}
    assert [e.kind for e in store.events.after(0)] == ["scored"]
    assert store.series.counts() == {SeriesState.SCORED: 1}


def test_failed_series_is_an_event_and_paging_is_newest_first(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    for n in range(1, 6):
        store.results.save(result(info(n)))
    store.series.set_state(info(9), SeriesState.FAILED, "preprocess: too few slices")
    assert [e.kind for e in store.events.after(4)] == ["scored", "failed"]
    first = store.results.page(2)
    second = store.results.page(2, before_id=first[-1][0])
    assert [r.info.study_uid for _, r in first] == ["1.2.5", "1.2.4"]
    assert [r.info.study_uid for _, r in second] == ["1.2.3", "1.2.2"]
    assert store.series.get(info(9).series_uid).detail == "preprocess: too few slices"


def test_wait_for_event_wakes_on_a_new_result(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    assert store.events.wait(0, timeout=0.05) is False
    threading.Timer(0.1, lambda: store.results.save(result(info()))).start()
    assert store.events.wait(0, timeout=5) is True


def test_survives_reopen_and_refuses_a_future_schema(tmp_path):
    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.results.save(result(info()))
    store.close()
    again = Store(path)
    assert again.events.last_id() == 1
    again.db._writer.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    again.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)


def test_a_finished_series_never_changes_outcome(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    i = info()
    store.results.save(result(i))
    with pytest.raises(StoreError, match="refusing"):
        store.series.set_state(i, SeriesState.FAILED, "late failure")
    j = info(2)
    store.series.set_state(j, SeriesState.FAILED, "preprocess: x")
    assert store.results.save(result(j)) is None  # a failed series is not scored afterwards
    assert [e.kind for e in store.events.after(0)] == ["scored", "failed"]


def test_a_busy_database_does_not_wedge_the_writer(tmp_path):
    import sqlite3

    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.db._writer.execute("PRAGMA busy_timeout=100")
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell holding a write transaction
    with pytest.raises(sqlite3.OperationalError):
        store.series.seen(info(3))
    other.execute("ROLLBACK")
    other.close()
    assert store.series.seen(info(3)) is None  # the lock was released: writes work again

"""The inference worker and the scoring stage behind it, with the real ONNX Runtime backend on the tiny test bundle,
a real store and the real failure handler."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from appliance.bundle import load_bundle
from appliance.handovers import PreparedSeries, SeriesFailure, SeriesInfo, SeriesRole, SeriesState, Stage
from appliance.inference import create_backend
from appliance.inference.worker import InferenceWorker
from appliance.metrics import Metrics
from appliance.pipeline.failures import FailureHandler
from appliance.pipeline.scorer import Scorer
from appliance.scoring import ScoringPolicy
from appliance.store import Store


def prepared(bundle, n: int, seed: int = 0, shape=None, paths=()) -> PreparedSeries:
    info = SeriesInfo(f"s{n:012d}", f"1.2.{n}", f"1.2.{n}.1", SeriesRole.CINE_SAX, "A", "cine", 10, 10, "tags",
                      time.time())
    tensor = np.random.default_rng(seed + n).random(shape or bundle.input_shape[1:], dtype=np.float32)
    return PreparedSeries(info, tensor, {"preprocess": 1.0}, instance_paths=tuple(paths))


class Parts:
    def __init__(self, tmp_path, tiny_bundle):
        self.bundle = load_bundle(tiny_bundle)
        self.backend = create_backend("onnxruntime", self.bundle, intra_op_threads=1, max_batch=4)
        self.store = Store(tmp_path / "db.sqlite")
        self.metrics = Metrics(CollectorRegistry())
        self.quarantine = tmp_path / "quarantine"
        self.failures = FailureHandler(self.store, self.metrics, self.quarantine)
        self.results = []
        self.scorer = Scorer(self.bundle, self.backend.name, self.backend.precision, ScoringPolicy(), self.store,
                             self.metrics, self.failures, on_result=self.results.append)
        self.failed: list[tuple[str, SeriesFailure]] = []

    def worker(self, **kwargs) -> InferenceWorker:
        def on_failure(item: PreparedSeries, failure: SeriesFailure) -> None:
            self.failed.append((item.info.key, failure))
            self.failures.fail(item.info, item.instance_paths, failure)

        return InferenceWorker(self.backend, self.metrics, on_embedded=self.scorer, on_failure=on_failure, **kwargs)

    def failed_count(self, stage: Stage) -> float | None:
        return self.metrics.registry.get_sample_value("scanside_series_failed_total", {"stage": stage.value})


@pytest.fixture
def parts(tmp_path, tiny_bundle):
    p = Parts(tmp_path, tiny_bundle)
    yield p
    p.backend.close()
    p.store.close()


def test_series_ready_together_share_one_batch(parts):
    worker = parts.worker(max_batch=4, batch_wait_ms=50)
    for n in range(3):
        worker.submit(prepared(parts.bundle, n))
    assert worker.run_once(timeout=1) == 3
    assert parts.metrics.registry.get_sample_value("scanside_inference_batch_size_sum") == 3
    assert parts.metrics.registry.get_sample_value("scanside_inference_batch_size_count") == 1
    assert [r.timings_ms["batch_size"] for r in parts.results] == [3.0] * 3
    assert all(parts.store.series.get(r.info.series_uid).state is SeriesState.SCORED for r in parts.results)
    # The same embedding as running each series alone: batching changes nothing in the scores.
    alone = parts.backend.infer(prepared(parts.bundle, 1).tensor[None])
    together = parts.backend.infer(np.stack([prepared(parts.bundle, n).tensor for n in range(3)]))
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-5, atol=1e-6)


def test_scored_series_leave_the_spool(parts, tmp_path):
    image = tmp_path / "spool" / "image.dcm"
    image.parent.mkdir()
    image.write_bytes(b"pixels")
    worker = parts.worker(max_batch=1)
    worker.submit(prepared(parts.bundle, 1, paths=[str(image)]))
    worker.run_once(timeout=1)
    assert len(parts.results) == 1
    assert not image.exists()


def test_bounded_queue_pushes_back(parts):
    worker = parts.worker(queue_size=2)
    worker.submit(prepared(parts.bundle, 1))
    worker.submit(prepared(parts.bundle, 2))
    with pytest.raises(queue.Full):
        worker.submit(prepared(parts.bundle, 3), timeout=0.05)
    assert parts.metrics.registry.get_sample_value("scanside_inference_queue_depth") == 2


def test_an_engine_error_fails_the_batch_at_inference_and_the_worker_goes_on(parts, tmp_path):
    image = tmp_path / "bad.dcm"
    image.write_bytes(b"pixels")
    worker = parts.worker(max_batch=1)
    T, C, H, W = parts.bundle.input_shape[1:]
    bad = prepared(parts.bundle, 1, shape=(T, C, H + 1, W), paths=[str(image)])  # a tensor the engine cannot take
    worker.submit(bad)
    worker.submit(prepared(parts.bundle, 2))
    worker.run_once(timeout=1)
    worker.run_once(timeout=1)
    assert [(key, f.stage) for key, f in parts.failed] == [(bad.info.key, Stage.INFERENCE)]
    assert [r.info.series_uid for r in parts.results] == ["1.2.2.1"]
    row = parts.store.series.get(bad.info.series_uid)
    assert row.state is SeriesState.FAILED and row.detail.startswith("inference: ")
    # Set aside with its reason, counted by its stage; the other stages show at zero.
    folder = parts.quarantine / "failed_series" / bad.info.key
    assert (folder / "bad.dcm").exists() and not image.exists()
    assert (folder / "reason.txt").read_text().startswith("inference: ")
    assert parts.failed_count(Stage.INFERENCE) == 1
    assert parts.failed_count(Stage.SCORING) == 0


def test_a_nan_embedding_fails_that_series_only_at_scoring(parts):
    worker = parts.worker(max_batch=4, batch_wait_ms=50)
    bad = prepared(parts.bundle, 1)
    bad.tensor[...] = np.nan  # what an overflowing FP16 engine hands back
    worker.submit(bad)
    worker.submit(prepared(parts.bundle, 2))
    worker.run_once(timeout=1)
    assert parts.failed == []  # the engine ran; the scoring stage refused the embedding
    assert parts.store.series.get(bad.info.series_uid).state is SeriesState.FAILED
    assert parts.store.series.get(bad.info.series_uid).detail.startswith("scoring: ")
    assert parts.failed_count(Stage.SCORING) == 1 and parts.failed_count(Stage.INFERENCE) == 0
    assert [r.info.series_uid for r in parts.results] == ["1.2.2.1"]


def test_a_result_stored_once_is_not_scored_twice(parts):
    worker = parts.worker(max_batch=1)
    worker.submit(prepared(parts.bundle, 1))
    worker.submit(prepared(parts.bundle, 1))
    worker.run_once(timeout=1)
    worker.run_once(timeout=1)
    assert len(parts.results) == 1
    assert len(list(parts.store.results.all())) == 1

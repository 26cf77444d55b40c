"""The inference worker with the real ONNX Runtime backend on the tiny test bundle and a real store."""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from appliance.bundle import load_bundle
from appliance.handovers import PreparedSeries, SeriesInfo, SeriesRole, SeriesState
from appliance.inference import create_backend
from appliance.inference.worker import InferenceWorker
from appliance.metrics import Metrics
from appliance.scoring import ScoringPolicy
from appliance.store import Store


def prepared(bundle, n: int, seed: int = 0, shape=None) -> PreparedSeries:
    info = SeriesInfo(f"s{n:012d}", f"1.2.{n}", f"1.2.{n}.1", SeriesRole.CINE_SAX, "A", "cine", 10, 10, "tags",
                      time.time())
    tensor = np.random.default_rng(seed + n).random(shape or bundle.input_shape[1:], dtype=np.float32)
    return PreparedSeries(info, tensor, {"preprocess": 1.0})


@pytest.fixture
def worker_parts(tmp_path, tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    backend = create_backend("onnxruntime", bundle, intra_op_threads=1, max_batch=4)
    store = Store(tmp_path / "db.sqlite")
    metrics = Metrics(CollectorRegistry())
    yield bundle, backend, store, metrics
    store.close()


def test_series_ready_together_share_one_batch(worker_parts):
    bundle, backend, store, metrics = worker_parts
    results = []
    worker = InferenceWorker(backend, bundle, ScoringPolicy(), store, metrics, max_batch=4, batch_wait_ms=50,
                             on_result=results.append)
    for n in range(3):
        worker.submit(prepared(bundle, n))
    assert worker.run_once(timeout=1) == 3
    assert metrics.registry.get_sample_value("scanside_inference_batch_size_sum") == 3
    assert metrics.registry.get_sample_value("scanside_inference_batch_size_count") == 1
    assert [r.timings_ms["batch_size"] for r in results] == [3.0] * 3
    assert all(store.series(r.info.series_uid).state is SeriesState.SCORED for r in results)
    # The same embedding as running each series alone: batching changes nothing in the scores.
    alone = backend.infer(prepared(bundle, 1).tensor[None])
    together = backend.infer(np.stack([prepared(bundle, n).tensor for n in range(3)]))
    np.testing.assert_allclose(together[1], alone[0], rtol=1e-5, atol=1e-6)


def test_bounded_queue_pushes_back(worker_parts):
    bundle, backend, store, metrics = worker_parts
    worker = InferenceWorker(backend, bundle, ScoringPolicy(), store, metrics, queue_size=2)
    worker.submit(prepared(bundle, 1))
    worker.submit(prepared(bundle, 2))
    with pytest.raises(queue.Full):
        worker.submit(prepared(bundle, 3), timeout=0.05)
    assert metrics.registry.get_sample_value("scanside_inference_queue_depth") == 2


def test_an_engine_error_fails_the_batch_and_the_worker_goes_on(worker_parts):
    bundle, backend, store, metrics = worker_parts
    failed, results = [], []
    worker = InferenceWorker(backend, bundle, ScoringPolicy(), store, metrics, max_batch=1,
                             on_result=results.append, on_failure=lambda item, why: failed.append(why))
    T, C, H, W = bundle.input_shape[1:]
    worker.submit(prepared(bundle, 1, shape=(T, C, H + 1, W)))  # a tensor the engine cannot take
    worker.submit(prepared(bundle, 2))
    worker.run_once(timeout=1)
    worker.run_once(timeout=1)
    assert len(failed) == 1 and failed[0].startswith("inference:")
    assert len(results) == 1 and results[0].info.series_uid == "1.2.2.1"


def test_a_nan_embedding_fails_that_series_only(worker_parts):
    bundle, backend, store, metrics = worker_parts
    failed, results = [], []
    worker = InferenceWorker(backend, bundle, ScoringPolicy(), store, metrics, max_batch=4, batch_wait_ms=50,
                             on_result=results.append, on_failure=lambda item, why: failed.append(item.info.key))
    bad = prepared(bundle, 1)
    bad.tensor[...] = np.nan  # what an overflowing FP16 engine hands back
    worker.submit(bad)
    worker.submit(prepared(bundle, 2))
    worker.run_once(timeout=1)
    assert failed == [bad.info.key]
    assert [r.info.series_uid for r in results] == ["1.2.2.1"]

"""The one worker that owns the engine: a bounded queue in front, micro-batches, embeddings handed on.

Producers block on `submit` when the queue is full (back-pressure): the images stay in the spool meanwhile, so
nothing is lost, and memory stays bounded however fast series arrive. Scoring and storing are the next stage's
(appliance/pipeline/scorer.py), called on this thread with each embedding.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from appliance.handovers import EmbeddedSeries, PreparedSeries, SeriesFailure, Stage
from appliance.inference.backend import InferenceBackend, infer_tagged
from appliance.logsafe import describe
from appliance.metrics import Metrics

log = logging.getLogger(__name__)


class InferenceWorker:
    def __init__(self, backend: InferenceBackend, metrics: Metrics, *,
                 on_embedded: Callable[[EmbeddedSeries], None],
                 on_failure: Callable[[PreparedSeries, SeriesFailure], None],
                 max_batch: int = 4, batch_wait_ms: float = 10.0, queue_size: int = 16) -> None:
        self.backend = backend
        self.metrics = metrics
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_ms / 1000.0
        self._queue: queue.Queue[PreparedSeries] = queue.Queue(maxsize=queue_size)
        self.on_embedded = on_embedded
        self.on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warmed = threading.Event()
        self._warm_error: BaseException | None = None

    def submit(self, item: PreparedSeries, timeout: float | None = None) -> None:
        self._queue.put(item, timeout=timeout)
        self.metrics.queue_depth.set(self._queue.qsize())

    def depth(self) -> int:
        return self._queue.qsize()

    def run_once(self, timeout: float = 0.5) -> int:
        """Take one micro-batch (waiting up to `timeout` for its first series), run it, hand the embeddings on."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return 0
        batch = [first]
        deadline = time.monotonic() + self.batch_wait_s
        while len(batch) < self.max_batch:
            left = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        self.metrics.queue_depth.set(self._queue.qsize())
        self._run_batch(batch)
        return len(batch)

    def _run_batch(self, batch: list[PreparedSeries]) -> None:
        self.metrics.batch_size.observe(len(batch))
        started = time.perf_counter()
        try:
            embeddings, tags = infer_tagged(self.backend, np.stack([item.tensor for item in batch]))
            if len(embeddings) != len(batch) or len(tags) != len(batch):
                raise RuntimeError(f"the engine returned {len(embeddings)} embeddings for {len(batch)} series")
        except Exception as exc:  # the engine failing on one batch must not stop the service
            log.error("inference failed for a batch of %d: %s", len(batch), describe(exc))
            for item in batch:
                self.on_failure(item, SeriesFailure(Stage.INFERENCE, type(exc).__name__))
            return
        infer_s = time.perf_counter() - started
        self.metrics.stage_seconds.labels(stage="inference").observe(infer_s)
        for item, embedding, tag in zip(batch, embeddings, tags, strict=True):
            timings = dict(item.timings_ms)
            timings["inference"] = infer_s * 1000.0
            timings["batch_size"] = float(len(batch))
            # One series at a time from here: the next stage fails a bad one (a NaN from an overflowing engine)
            # and the rest of the batch is still scored.
            self.on_embedded(EmbeddedSeries(item.info, embedding, timings, item.instance_paths,
                                            item.quality_reasons, item.input_sha256, tag.backend, tag.precision))

    # --- thread ---------------------------------------------------------------------------------------------------

    def start(self, warm_up_timeout_s: float = 600.0) -> None:
        """Start the thread and return once it has warmed the engine up: the warm-up runs on the thread that
        will run inference, because a TensorRT backend keeps one execution context (and its GPU memory) per
        thread. Raises whatever the warm-up raised."""
        self._thread = threading.Thread(target=self._run, name="scanside-inference", daemon=True)
        self._thread.start()
        if not self._warmed.wait(warm_up_timeout_s):
            raise TimeoutError(f"engine warm-up did not finish in {warm_up_timeout_s:g} s")
        if self._warm_error is not None:
            raise self._warm_error

    def _run(self) -> None:
        try:
            started = time.perf_counter()
            self.backend.warm_up()
            log.info("engine warmed up in %.0f ms", (time.perf_counter() - started) * 1000)
        except BaseException as exc:
            self._warm_error = exc
            return
        finally:
            self._warmed.set()
        while not self._stop.is_set():
            try:
                self.run_once(timeout=0.2)
            except Exception as exc:
                log.error("inference step failed: %s", describe(exc))

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop taking batches; True once the thread has finished (only then may the engine be closed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

"""Complete series -> model tensors, on their own thread, in front of the inference worker.

A complete series that is not a role the bundle scores is recorded as skipped and its images removed. A scored
one keeps its source header for the SR first (its images leave the spool once scored), then is prepared and
queued; `submit` blocks while the engine is behind, which holds the images in the spool, not in memory.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from appliance.config.sections import QualityConfig
from appliance.export.source import capture_source
from appliance.fileio import remove_files
from appliance.handovers import CompleteSeries, PreparedSeries, SeriesFailure, SeriesRole, SeriesState, Stage
from appliance.inference.worker import InferenceWorker
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.pipeline.failures import FailureHandler
from appliance.pipeline.priority import ScoringPriority
from appliance.pipeline.thumbnails import thumbnails
from appliance.preprocess import PreprocessError, PreprocessSpec, StackPlan, plan_stack, prepare
from appliance.quality import REASONS, assess, series_facts
from appliance.store import Store

log = logging.getLogger(__name__)


def tensor_sha256(tensor: np.ndarray) -> str:
    """The SHA-256 of the model input as float32 bytes in C order (sealed in the ledger: the same images through
    the same preprocessing give the same hash). No copy when the tensor is already float32 and contiguous."""
    data = np.ascontiguousarray(tensor, dtype=np.float32)
    return hashlib.sha256(data.data.cast("B")).hexdigest()


class Preparer:
    def __init__(self, spec: PreprocessSpec, store: Store, metrics: Metrics, worker: InferenceWorker,
                 failures: FailureHandler, *, keep_sources: bool, quality: QualityConfig | None = None,
                 priority: ScoringPriority | None = None,
                 remove: Callable[[Sequence[str]], None] = remove_files) -> None:
        """`remove` takes a skipped series' spooled images once its state is stored (the pipeline's SpoolCleaner:
        not on the ingest thread, which calls on_complete)."""
        self.remove = remove
        self.spec = spec
        self.priority = priority
        self.quality = quality if quality is not None else QualityConfig()
        for reason in REASONS:
            metrics.not_assessable.labels(reason=reason)
        self.store = store
        self.metrics = metrics
        self.worker = worker
        self.failures = failures
        self.keep_sources = keep_sources  # an SR will need the source header
        self._queue: queue.Queue[CompleteSeries | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scanside-prepare", daemon=True)

    def on_complete(self, series: CompleteSeries) -> None:
        """The assembler's hand-over: called on the ingest thread, so it only records and queues."""
        info = series.info
        if info.role is not SeriesRole.CINE_SAX:
            self.store.series.set_state(info, SeriesState.SKIPPED, f"role {info.role.value} is not scored")
            self.remove(series.instance_paths)
            log.info("series %s complete (%s, %d images): %s, not scored", info.key, info.completed_by,
                     info.received, info.role.value)
            return
        self.store.series.set_state(info, SeriesState.COMPLETE)
        if self.priority is not None:
            self.priority.begin(info.series_uid)  # until stored or failed (Scorer, FailureHandler)
        if self.keep_sources:
            self._keep_source(series)
        log.info("series %s complete (%s, %d images): queued for scoring", info.key, info.completed_by,
                 info.received)
        self._queue.put(series)

    def _keep_source(self, series: CompleteSeries) -> None:
        """The SR copies patient and study identity from the images, which leave the spool once scored."""
        try:
            started = time.perf_counter()
            source = capture_source(series.instance_paths[0], series.instances)
            self.store.exports.save_source(series.info.series_uid, source.header, source.instances_json())
            self.metrics.stage_seconds.labels(stage="source").observe(time.perf_counter() - started)
        except Exception as exc:  # whatever it is (a busy database, an odd file), scoring goes on; the series'
            # SR export then fails visibly, naming the missing source.
            log.warning("series %s: source header not kept for its SR: %s", series.info.key, describe(exc))

    def _note_used(self, series: CompleteSeries, plan: StackPlan) -> None:
        """Which images the model tensor is made of, for the SR to reference (not every image of the series)."""
        try:
            by_path = dict(zip(series.instance_paths, series.instances, strict=False))
            used = [by_path[series.frames[i].pixels.path][1] for i in plan.used_frames()
                    if series.frames[i].pixels.path in by_path]
            self.store.exports.mark_used(series.info.series_uid, list(dict.fromkeys(used)))
        except Exception as exc:  # the SR then references every image of the series, as before
            log.warning("series %s: the images the model used not recorded for its SR: %s", series.info.key,
                        describe(exc))

    def _keep_thumbnails(self, prepared: PreparedSeries) -> None:
        """The slices the model saw, for the display; like the source header, a failure here never stops scoring."""
        try:
            self.store.thumbnails.save(prepared.info.series_uid, thumbnails(prepared.tensor))
        except Exception as exc:
            log.warning("series %s: thumbnails not kept for the display: %s", prepared.info.key, describe(exc))

    def _gate(self, series: CompleteSeries, prepared: PreparedSeries, shapes: list[tuple[int, int]],
              plan: StackPlan) -> PreparedSeries:
        """The input quality gate's verdict rides with the tensor; a not-assessable series is still scored and
        stored (the technologist must see why), with no finding positive (pipeline/scorer.py)."""
        started = time.perf_counter()
        verdict = assess(prepared.tensor, series_facts(series.frames, shapes, self.spec, plan), self.quality)
        self.metrics.stage_seconds.labels(stage="quality").observe(time.perf_counter() - started)
        if verdict.assessable:
            return prepared
        for reason in verdict.reasons:
            self.metrics.not_assessable.labels(reason=reason).inc()
        log.warning("series %s: not assessable: %s", series.info.key, ", ".join(verdict.reasons))
        return replace(prepared, quality_reasons=verdict.reasons)

    def prepare(self, series: CompleteSeries) -> PreparedSeries | None:
        """The tensor, or None once the series has been failed (at the preprocess stage)."""
        try:
            started = time.perf_counter()
            shapes = [(f.pixels.rows, f.pixels.columns) for f in series.frames]
            plan = plan_stack(series.frames, shapes, self.spec)  # once: the tensor and the quality gate read it
            if self.keep_sources:
                self._note_used(series, plan)
            prepared = prepare(series, self.spec, plan)
            prepared = replace(prepared, input_sha256=tensor_sha256(prepared.tensor))
            self.metrics.stage_seconds.labels(stage="preprocess").observe(time.perf_counter() - started)
            if self.quality.enabled:
                prepared = self._gate(series, prepared, shapes, plan)
            self._keep_thumbnails(prepared)
            return prepared
        except PreprocessError as exc:
            failure = SeriesFailure(Stage.PREPROCESS, str(exc))
        except Exception as exc:  # an unexpected bug on one series must not stop the others
            log.error("series %s: preprocessing crashed: %s", series.info.key, describe(exc))
            failure = SeriesFailure(Stage.PREPROCESS, f"{type(exc).__name__}: {exc}")
        self.failures.fail(series.info, series.instance_paths, failure)
        return None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._closing.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            series = self._queue.get()
            if series is None:
                return
            prepared = self.prepare(series)
            if prepared is None:
                continue
            while not self._closing.is_set():
                try:
                    self.worker.submit(prepared, timeout=0.5)  # blocks while the engine is behind
                    break
                except queue.Full:
                    continue

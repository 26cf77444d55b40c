"""Embedding -> scores -> stored result: the zero-shot head and the transaction that records the outcome.

Runs on the inference thread, one series at a time, so a bad embedding (a NaN from an overflowing engine) or a
failed write fails that series alone and the rest of its batch is still scored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from appliance.bundle import Bundle, LabelBank
from appliance.fileio import remove_files
from appliance.handovers import EmbeddedSeries, SeriesFailure, Stage, StudyResult
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.pipeline.failures import FailureHandler
from appliance.pipeline.priority import ScoringPriority
from appliance.scoring import ScoringPolicy, mark_not_assessable, score_batch
from appliance.store import Store

log = logging.getLogger(__name__)


class Scorer:
    def __init__(self, bundle: Bundle, backend_name: str, precision: str, policy: ScoringPolicy, store: Store,
                 metrics: Metrics, failures: FailureHandler,
                 on_result: Callable[[StudyResult], None] | None = None,
                 bank_source: Callable[[], tuple[LabelBank, str]] | None = None,
                 priority: ScoringPriority | None = None,
                 remove: Callable[[Sequence[str]], None] = remove_files) -> None:
        """`bank_source`: (label bank, version) now in force, asked before every series (the site's prompt edits,
        appliance.prompts.LiveBank); without it the bundle's own bank scores. `remove` takes a scored series'
        spooled images once its result is stored (the pipeline's SpoolCleaner, off this thread)."""
        self.remove = remove
        self.bundle = bundle
        self.priority = priority
        self.backend_name = backend_name
        self.precision = precision
        self.policy = policy
        self.store = store
        self.metrics = metrics
        self.failures = failures
        self.on_result = on_result
        shipped = (bundle.label_bank, bundle.label_bank.content_hash)
        self.bank_source = bank_source or (lambda: shipped)

    @property
    def bank(self) -> LabelBank:
        return self.bank_source()[0]

    @property
    def bank_version(self) -> str:
        return self.bank_source()[1]

    def current_bank(self) -> tuple[LabelBank, str]:
        """The bank now in force and its version, read together (an edit swaps both at once)."""
        return self.bank_source()

    def __call__(self, item: EmbeddedSeries) -> None:
        try:
            self._score(item)
        finally:
            if self.priority is not None:
                self.priority.end(item.info.series_uid)

    def _score(self, item: EmbeddedSeries) -> None:
        started = time.perf_counter()
        try:
            bank, bank_version = self.bank_source()  # once per series: an edit never splits a result
            (scores,) = score_batch(item.embedding[None], bank, self.policy)
            if item.quality_reasons:
                scores = mark_not_assessable(scores, item.quality_reasons)
        except Exception as exc:
            log.error("series %s: scoring failed: %s", item.info.key, describe(exc))
            self.failures.fail(item.info, item.instance_paths, SeriesFailure(Stage.SCORING, type(exc).__name__),
                               input_sha256=item.input_sha256)
            return
        score_s = time.perf_counter() - started
        self.metrics.stage_seconds.labels(stage="scoring").observe(score_s)
        timings = dict(item.timings_ms)
        timings["scoring"] = score_s * 1000.0
        result = StudyResult(info=item.info, scores=scores, bundle_name=self.bundle.name,
                             bundle_version=self.bundle.version, backend=item.engine or self.backend_name,
                             precision=item.precision or self.precision, timings_ms=timings, scored_at=time.time(),
                             bank_version=bank_version, input_sha256=item.input_sha256)
        try:
            event_id = self.store.results.save(result)
        except Exception as exc:  # a full disk, a locked database: this series fails visibly, the next one tries
            log.error("series %s: storing the result failed: %s", item.info.key, describe(exc))
            self.failures.fail(item.info, item.instance_paths, SeriesFailure(Stage.STORE, type(exc).__name__),
                               input_sha256=item.input_sha256)
            return
        if event_id is None:
            log.warning("series %s already had a result; not scored twice", item.info.key)
            return
        self.metrics.results.labels(needs_review=str(scores.needs_review).lower()).inc()
        self.metrics.ledger_entries.labels(kind="scored").inc()  # sealed in the same transaction
        self.metrics.scan_to_score.observe(max(result.scored_at - item.info.last_file_at, 0.0))
        self.remove(item.instance_paths)
        findings = ", ".join(f"{f.finding_id}={'+' if f.positive else '-'}" for f in scores.findings)
        log.info("series %s scored in %.0f ms after its last image%s: %s", item.info.key,
                 (result.scored_at - item.info.last_file_at) * 1000,
                 " (needs review)" if scores.needs_review else "", findings)
        if self.on_result is not None:
            self.on_result(result)

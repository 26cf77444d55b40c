"""The one place a series fails: its state and reason recorded and sealed in the ledger, its images set aside, the
failure counted by the stage it happened at. Every stage hands its failures here as a SeriesFailure."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from appliance.fileio import private_folder
from appliance.handovers import SeriesFailure, SeriesInfo, SeriesState, Stage
from appliance.ingest.quarantine import move_file
from appliance.metrics import Metrics
from appliance.pipeline.priority import ScoringPriority
from appliance.store import Store, StoreError

log = logging.getLogger(__name__)


class FailureHandler:
    def __init__(self, store: Store, metrics: Metrics, quarantine: Path,
                 provenance: Callable[[], tuple[str, str, str]] = lambda: ("", "", ""),
                 priority: ScoringPriority | None = None) -> None:
        """`provenance`: (bundle name, bundle version, label-bank version) in force, sealed with each failure."""
        self.priority = priority
        self.store = store
        self.metrics = metrics
        self.provenance = provenance
        self.root = Path(quarantine) / "failed_series"
        for stage in Stage:  # every stage shows, at 0, before its first failure
            metrics.series_failed.labels(stage=stage.value)

    def fail(self, info: SeriesInfo, paths: tuple[str, ...], failure: SeriesFailure, input_sha256: str = "") -> None:
        """Record why (and seal it: `input_sha256` is the model input's, when one was made), then set the series'
        images aside under quarantine/failed_series/<key>/. In that order: a crash part-way through the moves leaves
        a FAILED series whose leftovers recovery moves the same way."""
        if self.priority is not None:
            self.priority.end(info.series_uid)
        try:
            previous = self.store.series.set_state(info, SeriesState.FAILED, str(failure), stage=failure.stage.value,
                                                   input_sha256=input_sha256, bundle=self.provenance())
        except StoreError as exc:  # already finished (e.g. scored): nothing to set aside
            log.warning("series %s: not marking failed: %s", info.key, exc)
            return
        if previous is not SeriesState.FAILED:
            self.metrics.ledger_entries.labels(kind="failed").inc()
        (self.folder(info.key) / "reason.txt").write_text(f"{failure}\n")
        for path in paths:
            self.set_aside(info.key, path)
        self.metrics.series_failed.labels(stage=failure.stage.value).inc()
        # The detail can quote a library's message (values, paths): it goes to reason.txt and the database, the log
        # line names the stage only.
        log.warning("series %s failed at %s; the reason is in quarantine/failed_series/%s/reason.txt", info.key,
                    failure.stage.value, info.key)

    def folder(self, key: str) -> Path:
        return private_folder(self.root / key)

    def set_aside(self, key: str, path: str) -> None:
        try:
            move_file(Path(path), self.folder(key) / Path(path).name)
        except FileNotFoundError:
            pass

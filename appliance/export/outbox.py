"""The thread that works the persistent export queue (the `exports` table).

Each scored series has one row per destination, queued in the transaction that stored its result. The thread takes
due rows, builds the SR once (kept in `reports`, so every try sends the same SOP instance), hands each destination
(appliance.export.destinations, by the row's kind) its SRs as one batch, and counts each try: delivered; pending
again after a backoff that doubles up to a ceiling; or failed after the last allowed try. Nothing is kept in memory
that the database does not also hold, so a restart simply carries on. A PACS that refuses the association uses up
tries like any other failure and ends failed, never in an endless loop.

Delivery is at least once: a crash between a PACS' answer and the commit sends the same SR again, which a PACS
stores once (same SOP Instance UID). A destination may leave a try undecided (`SendOutcome.awaiting_until`: the PACS
stored the SR but has not yet said it commits it): the item then waits, still pending, with no try counted, until
its destination is asked again and decides it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from appliance.export import destinations as registry
from appliance.export.destinations import Destination, SendOutcome
from appliance.export.source import SourceStudy
from appliance.export.sr import SrSettings, build_sr
from appliance.handovers import ExportState
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.store import ExportItem, Store, StoredReport, StoreError

log = logging.getLogger(__name__)

BATCH = 32  # SRs taken per look; each destination gets its share as one batch (PACS: over one association)
MAX_IDLE_WAIT_S = 2.0  # re-read the queue at least this often: `scanside exports retry` runs in another process
MAX_ERROR_WAIT_S = 60.0  # after an unexpected error (a full disk, a locked database), wait longer each time
EXPIRY_INTERVAL_S = 3600.0  # how often failed SRs past their retention are dropped


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    initial_s: float
    max_s: float

    def next_attempt_at(self, attempts_so_far: int, now: float) -> float | None:
        """When to try again after the `attempts_so_far`-th failed try; None when that was the last one."""
        if attempts_so_far >= self.max_attempts:
            return None
        return now + min(self.initial_s * 2 ** (attempts_so_far - 1), self.max_s)


class BuildError(RuntimeError):
    """The SR cannot be built; trying again would not change that."""


class Exporter:
    def __init__(self, store: Store, metrics: Metrics, policy: RetryPolicy, sr_settings: SrSettings,
                 destinations: Mapping[str, Destination], keep_failed_days: float = 0.0) -> None:
        """`destinations`: by kind, already checked (appliance.export.build_exporter does both)."""
        self.keep_failed_days = keep_failed_days
        self._next_expiry = 0.0
        self.store = store
        self.metrics = metrics
        self.policy = policy
        self.sr_settings = sr_settings
        self.destinations = dict(destinations)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.metrics.watch_exports(self.store.exports.counts)
        self._thread = threading.Thread(target=self._run, name="scanside-export", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Abort a delivery in progress and stop; what is left stays queued on disk. True once the thread has ended;
        pynetdicom may hold it in a wait until its own timeout (see PacsSender.abort), and then this says False."""
        self._stop.set()
        self.store.events.wake()
        for destination in self.destinations.values():
            try:
                destination.abort()
            except Exception as exc:  # one destination's trouble must not keep the others sending
                log.error("export to %s: abort failed (%s)", destination.kind, describe(exc))
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.alive

    def _run(self) -> None:
        seen: int | None = None
        errors = 0
        while not self._stop.is_set():
            try:
                if seen is None:
                    seen = self.store.events.last_id()
                self._expire()
                if self.run_once():
                    errors = 0
                    continue
                due = self.store.exports.next_due()
                wait = MAX_IDLE_WAIT_S if due is None else min(max(due - time.time(), 0.0), MAX_IDLE_WAIT_S)
                if self.store.events.wait(seen, wait, cancel=self._stop):  # a new result queues new exports
                    seen = self.store.events.last_id()
                errors = 0
            except Exception as exc:  # a database hiccup must neither end deliveries nor spin the loop
                errors += 1
                log.error("export queue: %s (waiting before the next look)", describe(exc))
                self._stop.wait(min(2.0 ** errors, MAX_ERROR_WAIT_S))

    def _expire(self) -> None:
        now = time.time()
        if not self.keep_failed_days or now < self._next_expiry:
            return
        self._next_expiry = now + EXPIRY_INTERVAL_S
        dropped = self.store.exports.expire_failed(now - self.keep_failed_days * 86_400)
        if dropped:
            log.info("dropped the SRs of %d series whose exports failed over %g days ago", dropped,
                     self.keep_failed_days)

    def run_once(self, now: float | None = None) -> bool:
        """Try every due export once; True if there were any."""
        items = self.store.exports.due(time.time() if now is None else now, limit=BATCH)
        if not items:
            return False
        batches: dict[str, list[tuple[ExportItem, StoredReport]]] = {}
        for item in items:
            if self._stop.is_set():
                return True
            try:
                batches.setdefault(item.destination, []).append((item, self._report(item)))
            except BuildError as exc:
                self._finish(item, SendOutcome(False, str(exc)), final=True)
        for kind, batch in batches.items():
            if self._stop.is_set():
                break
            destination = self.destinations.get(kind)
            if destination is None:  # configured when it was queued, not now: retried, in case that is mended
                for item, _ in batch:  # a kind no module registers fails at once
                    self._finish(item, registry.not_configured(kind), final=kind not in registry.FACTORIES)
                continue
            for (item, _), outcome in zip(batch, self._deliver(destination, [r for _, r in batch]), strict=True):
                if outcome.tried:  # untried (shutdown): due again at the next start, no try counted
                    self._finish(item, outcome, final=outcome.final)
        return True

    @staticmethod
    def _deliver(destination: Destination, reports: Sequence[StoredReport]) -> list[SendOutcome]:
        """The destination's outcomes; a failed try of the whole batch if it raises or miscounts."""
        try:
            outcomes = list(destination.deliver(reports))
        except Exception as exc:  # a destination's bug is a failed try, not a dead exporter; type only in the text
            return [SendOutcome(False, f"not delivered: {describe(exc)}")] * len(reports)
        if len(outcomes) != len(reports):
            log.error("export to %s: %d outcomes for %d SRs, all counted as failed", destination.kind,
                      len(outcomes), len(reports))
            return [SendOutcome(False, f"destination gave {len(outcomes)} outcomes for {len(reports)} SRs")] \
                * len(reports)
        return outcomes

    def _report(self, item: ExportItem) -> StoredReport:
        report = self.store.exports.report(item.series_uid)
        if report is not None:
            return report
        if self.store.exports.sr_uid(item.series_uid) is not None:
            raise BuildError("its SR was dropped (delivered everywhere, or failed and kept past "
                             "export.keep_failed_days) and cannot be rebuilt")
        result = self.store.results.for_series(item.series_uid)
        row = self.store.exports.source(item.series_uid)
        if result is None:
            raise BuildError("the series has no stored result")
        if row is None:
            raise BuildError("no source header is held for this series (never captured, or dropped after "
                             "export.keep_failed_days), so its SR would have no patient identity")
        try:
            doc = build_sr(result, SourceStudy.from_row(*row), self.sr_settings)
        except Exception as exc:  # whatever the cause (odd source values, a library's surprise), trying again
            # would build the same thing: fail the item visibly instead. Type only: messages may quote the source.
            raise BuildError(f"the SR could not be built ({describe(exc)})") from None
        if doc.kept_as_is:
            # A strict PACS may refuse these; the log says why an SR could be turned away (names, never values).
            log.warning("series %s: its SR copies the source's own %s, which are not valid DICOM values",
                        item.key, ", ".join(doc.kept_as_is))
        try:
            return self.store.exports.save_report(item.series_uid, doc.sop_instance_uid, doc.data)
        except StoreError as exc:
            raise BuildError(str(exc)) from None

    def _finish(self, item: ExportItem, outcome: SendOutcome, final: bool = False) -> None:
        if outcome.awaiting_until is not None and not outcome.delivered and not final:
            self.store.exports.defer(item.id, outcome.awaiting_until, outcome.detail)
            log.info("series %s: SR at %s undecided (%s); waiting at most %.0f s", item.key, item.destination,
                     outcome.detail, max(outcome.awaiting_until - time.time(), 0.0))
            return
        attempts = item.attempts + 1
        now = time.time()
        retry_at = None if (outcome.delivered or final) else self.policy.next_attempt_at(attempts, now)
        state = self.store.exports.record_try(item.id, outcome.delivered, outcome.detail or None, retry_at)
        self.metrics.exports.labels(destination=item.destination, outcome=(
            "delivered" if state is ExportState.DELIVERED else "retry" if state is ExportState.PENDING else "failed"
        )).inc()
        if state is ExportState.DELIVERED:
            self.metrics.export_delay.labels(destination=item.destination).observe(max(now - item.created_at, 0.0))
            log.info("series %s: SR delivered to %s (try %d)%s", item.key, item.destination, attempts,
                     f": {outcome.detail}" if outcome.detail else "")
        elif state is ExportState.PENDING:
            log.warning("series %s: SR to %s, try %d of %d failed (%s); next try in %.1f s", item.key,
                        item.destination, attempts, self.policy.max_attempts, outcome.detail,
                        (now if retry_at is None else retry_at) - now)
        else:
            log.error("series %s: SR to %s FAILED after %d tries: %s (`scanside exports retry` queues it again)",
                      item.key, item.destination, attempts, outcome.detail)

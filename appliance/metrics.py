"""Every Prometheus metric of the appliance, defined in one place.

Metrics live on an injected registry (the process-wide default in the service, a fresh one in each test), and no
label ever carries a patient, study or series identifier: labels are small closed sets (reasons, stages, states).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from appliance.handovers import ExportState, SeriesState

STAGES = ("parse", "preprocess", "quality", "inference", "scoring", "source")
# Refusals by the DICOM receiver: at admission and inside associations (appliance.ingest.dicom_guard.REASONS),
# and per C-STORE (SOP class not taken, spool not writable, instance not usable or not matching its SOP class).
# The receiver's transfer syntaxes by keyword (appliance/ingest/transfer_syntaxes.py PREFERRED, in its order; a test
# keeps the two the same).
DICOM_TRANSFER_SYNTAXES = ("ExplicitVRLittleEndian", "ImplicitVRLittleEndian", "DeflatedExplicitVRLittleEndian",
                           "ExplicitVRBigEndian", "JPEGLosslessSV1", "JPEGLossless", "JPEGLSLossless", "RLELossless",
                           "JPEG2000Lossless", "HTJ2KLossless", "HTJ2KLosslessRPCL", "JPEGLSNearLossless",
                           "JPEGExtended12Bit", "JPEGBaseline8Bit", "JPEG2000", "HTJ2K")
DICOM_REJECTIONS = ("calling_ae", "association_limit", "evicted", "negotiation_timeout", "invalid_pdu",
                    "pdu_too_large", "message_too_large", "inflight_budget", "stalled", "tls_handshake", "sop_class",
                    "out_of_resources", "cannot_understand", "sop_mismatch")
# Why a file is quarantined: the reader's closed set (appliance.ingest.reader.errors.REJECT_REASONS, which this module
# may not import; tests/test_dashboard_files.py checks that the two agree), pre-set to 0 so that the dashboard shows
# every reason on a healthy box and increase() counts a reason's first file (a series that starts at 1 reads 0).
QUARANTINE_REASONS = ("not_a_file", "not_dicom", "unreadable", "corrupt", "truncated", "too_large", "not_mr",
                      "missing_identity", "missing_geometry", "no_pixel_data", "unsupported_pixels",
                      "unsupported_transfer_syntax", "sop_class_mismatch", "late")

# Storage commitment: the receiver as SCP for its senders (side "scp"), the PACS destination as SCU (side "scu").
# result: committed, or the PS3.3 C.14.1.1 Failure Reason by name (appliance.commitment.FAILURE_REASONS, which this
# module may not import; tests/test_commitment_scp.py checks that the two agree), "other" for one outside the list.
COMMITMENT_RESULTS = ("committed", "processing_failure", "no_such_object_instance", "class_instance_conflict",
                      "sop_class_not_supported", "resource_limitation", "duplicate_transaction_uid", "other")
# Requests: scp, from senders: accepted, refused (an N-ACTION failure status: malformed, unknown action), not_recorded
# (the database could not take it: 0x0110); scu, to PACS: accepted, refused (a failure status), not_offered (the PACS
# did not accept the SOP class), no_response.
COMMITMENT_REQUEST_OUTCOMES = {"scp": ("accepted", "refused", "not_recorded"),
                               "scu": ("accepted", "refused", "not_offered", "no_response")}
# Reports: scp, to senders, on the same or a new association (none: no way to reach the sender): sent, retry (a try
# failed, another follows), failed (given up); scu, from PACS: matched (recorded), unmatched (no request of ours is
# waiting for it), unreadable, not_recorded (the database could not take it: answered 0x0110).
COMMITMENT_REPORT_OUTCOMES = {"scp": (("same", "new", "none"), ("sent", "retry", "failed")),
                              "scu": (("same", "new"), ("matched", "unmatched", "unreadable", "not_recorded"))}

# Latency buckets: sub-millisecond parsing up to multi-second waits.
_STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Result to SR delivered: seconds when the PACS is up, up to hours across an outage.
_EXPORT_DELAY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
EXPORT_DESTINATIONS = ("pacs", "folder", "dicomweb")
# Scan-to-score: the target is 0.3 s when tags give the count; quiet-period series take seconds.
_SCAN_TO_SCORE_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 7.5, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        ns = "scanside"
        self.files_ingested = Counter("files_ingested", "DICOM files accepted into the spool.",
                                      namespace=ns, registry=registry)
        self.bytes_ingested = Counter("ingested_bytes", "Bytes of DICOM files accepted into the spool.",
                                      namespace=ns, registry=registry)
        self.files_quarantined = Counter("files_quarantined", "Files set aside in the quarantine folder, by reason.",
                                         ["reason"], namespace=ns, registry=registry)
        for reason in QUARANTINE_REASONS:
            self.files_quarantined.labels(reason=reason)
        self.files_ignored = Counter("files_ignored",
                                     "Files dropped without quarantine: duplicates and late files of finished series.",
                                     ["reason"], namespace=ns, registry=registry)
        self.file_retries = Counter("file_parse_retries", "Parses that ended early on a file still being written.",
                                    namespace=ns, registry=registry)
        self.series_failed = Counter("series_failed", "Series that could not be scored, by the stage that failed.",
                                     ["stage"],
                                     namespace=ns, registry=registry)
        self.queue_depth = Gauge("inference_queue_depth", "Prepared series waiting for the engine.",
                                 namespace=ns, registry=registry)
        self.stage_seconds = Histogram("stage_duration_seconds", "Time spent in one pipeline stage per item.",
                                       ["stage"], namespace=ns, registry=registry, buckets=_STAGE_BUCKETS)
        self.scan_to_score = Histogram("scan_to_score_seconds",
                                       "From the last file of a series seen to its result stored.",
                                       namespace=ns, registry=registry, buckets=_SCAN_TO_SCORE_BUCKETS)
        self.batch_size = Histogram("inference_batch_size", "Series per inference call.", namespace=ns,
                                    registry=registry, buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
        self.results = Counter("results", "Series scored, by whether a human must look.", ["needs_review"],
                               namespace=ns, registry=registry)
        # reason: the input quality gate's closed set (appliance.quality.REASONS), each pre-set to 0 by the
        # preparer; a series can count under several reasons.
        self.not_assessable = Counter("series_not_assessable", "Series the input quality gate found not "
                                      "assessable (stored with no finding positive), by reason.", ["reason"],
                                      namespace=ns, registry=registry)
        # kind: appliance.store.ledger.KINDS (scored, which includes not-assessable results, or failed); no other
        # label, and never an identifier.
        self.ledger_entries = Counter("ledger_entries", "Entries sealed in the prediction ledger, by kind: scored "
                                      "(a stored result, not-assessable ones included) or failed.", ["kind"],
                                      namespace=ns, registry=registry)
        for kind in ("scored", "failed"):
            self.ledger_entries.labels(kind=kind)
        self.dicom_associations = Counter("dicom_associations", "DICOM associations accepted by the receiver.",
                                          namespace=ns, registry=registry)
        self.dicom_instances = Counter("dicom_instances_received", "Instances received over C-STORE and spooled.",
                                       namespace=ns, registry=registry)
        # The label is the negotiated syntax's keyword (e.g. JPEGLosslessSV1): a closed set, the receiver's own list.
        self.dicom_instances_by_syntax = Counter(
            "dicom_instances_by_transfer_syntax", "Instances received over C-STORE and spooled, by transfer syntax.",
            ["transfer_syntax"], namespace=ns, registry=registry)
        for syntax in DICOM_TRANSFER_SYNTAXES:
            self.dicom_instances_by_syntax.labels(transfer_syntax=syntax)
        self.dicom_bytes = Counter("dicom_received_bytes", "Bytes of instances received over C-STORE.",
                                   namespace=ns, registry=registry)
        self.dicom_rejections = Counter("dicom_rejections", "Associations and C-STOREs refused, by reason.",
                                        ["reason"], namespace=ns, registry=registry)
        for reason in DICOM_REJECTIONS:
            self.dicom_rejections.labels(reason=reason)
        self.dicom_connections = Gauge("dicom_connections", "DICOM connections now open: negotiating (held by the "
                                       "admission loop, no thread yet) or associated.", ["state"],
                                       namespace=ns, registry=registry)
        for state in ("negotiating", "associated"):
            self.dicom_connections.labels(state=state)
        self.commitment_requests = Counter("commitment_requests", "Storage commitment requests: from senders "
                                           "(side scp) and to PACS (side scu), by outcome.", ["side", "outcome"],
                                           namespace=ns, registry=registry)
        self.commitment_instances = Counter("commitment_instances", "Instances in storage commitment results, by "
                                            "side and result: committed or the failure reason.", ["side", "result"],
                                            namespace=ns, registry=registry)
        self.commitment_reports = Counter("commitment_reports", "Storage commitment reports: sent to senders (side "
                                          "scp) or received from PACS (side scu), by association and outcome.",
                                          ["side", "association", "outcome"], namespace=ns, registry=registry)
        for side, outcomes in COMMITMENT_REQUEST_OUTCOMES.items():
            for outcome in outcomes:
                self.commitment_requests.labels(side=side, outcome=outcome)
            for result in COMMITMENT_RESULTS:
                self.commitment_instances.labels(side=side, result=result)
            associations, report_outcomes = COMMITMENT_REPORT_OUTCOMES[side]
            for association in associations:
                for outcome in report_outcomes:
                    self.commitment_reports.labels(side=side, association=association, outcome=outcome)
        self.grpc_denied = Counter("grpc_denied", "gRPC calls refused by access control: unauthenticated (unknown "
                                   "token), permission_denied (role), stream_limit.", ["method", "reason"],
                                   namespace=ns, registry=registry)
        self.exports = Counter("sr_export_tries", "Tries to deliver an SR, by destination and what followed: "
                               "delivered, retry (queued again) or failed (no tries left).",
                               ["destination", "outcome"], namespace=ns, registry=registry)
        self.export_delay = Histogram("sr_export_delay_seconds", "From a result stored to its SR delivered.",
                                      ["destination"], namespace=ns, registry=registry, buckets=_EXPORT_DELAY_BUCKETS)
        # The MLLP listener (appliance/truth/mllp.py): ack is AA, AE or AR and reason its closed set
        # (appliance.truth.mllp.ACK_REASONS, REFUSALS), pre-set to 0 by `preset_hl7` when the listener is built.
        self.hl7_messages = Counter("hl7_messages", "HL7 messages answered by the MLLP listener, by ACK code (AA "
                                    "stored or not needed, AE the sender retries, AR refused) and reason.",
                                    ["ack", "reason"], namespace=ns, registry=registry)
        self.hl7_refusals = Counter("hl7_refusals", "MLLP connections refused or closed by the listener, by reason: "
                                    "peer, connection_limit, tls, framing, idle.", ["reason"], namespace=ns,
                                    registry=registry)
        self.hl7_connections = Gauge("hl7_connections", "MLLP connections open now (a RIS usually keeps one).",
                                     namespace=ns, registry=registry)
        self.ready = Gauge("ready", "1 once the engine is loaded and warmed up.", namespace=ns, registry=registry)
        self.model = Info("model", "The engine bundle and backend in use.", namespace=ns, registry=registry)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
        for flag in ("true", "false"):
            self.results.labels(needs_review=flag)
        self._series_collector: _SeriesByState | None = None
        self._export_collector: _ExportsByState | None = None
        self._truth_collector: _TruthRecords | None = None
        self._hl7_pairs: frozenset[tuple[str, str]] = frozenset()

    def preset_hl7(self, ack_reasons: Iterable[tuple[str, str]], refusals: Iterable[str]) -> None:
        """Every (ack, reason) and refusal reason of scanside_hl7_* shown at 0 from the start."""
        self._hl7_pairs = frozenset(ack_reasons)
        for ack, reason in self._hl7_pairs:
            self.hl7_messages.labels(ack=ack, reason=reason)
        for reason in refusals:
            self.hl7_refusals.labels(reason=reason)

    def count_hl7(self, ack: str, reason: str) -> None:
        """One ACK sent; a reason outside the preset set counts as "other" (a label never carries free text)."""
        self.hl7_messages.labels(ack=ack, reason=reason if (ack, reason) in self._hl7_pairs else "other").inc()

    def watch_truth(self, counts: Callable[[], Mapping[str, int]]) -> None:
        """Export `scanside_truth_records{state}` (appliance.store.truth.STATES) from the store at scrape time."""
        if self._truth_collector is None:
            self._truth_collector = _TruthRecords(counts)
            self.registry.register(self._truth_collector)
        else:
            self._truth_collector.counts = counts

    def watch_series_states(self, counts: Callable[[], Mapping[SeriesState, int]]) -> None:
        """Export `scanside_series{state}` from the store at scrape time, so the gauge can never drift from it."""
        if self._series_collector is None:
            self._series_collector = _SeriesByState(counts)
            self.registry.register(self._series_collector)
        else:
            self._series_collector.counts = counts


    def watch_exports(self, counts: Callable[[], Mapping[tuple[str, ExportState], int]]) -> None:
        """Export `scanside_sr_exports{destination,state}` (the queue) from the store at scrape time."""
        for destination in EXPORT_DESTINATIONS:
            for outcome in ("delivered", "retry", "failed"):
                self.exports.labels(destination=destination, outcome=outcome)
        if self._export_collector is None:
            self._export_collector = _ExportsByState(counts)
            self.registry.register(self._export_collector)
        else:
            self._export_collector.counts = counts


class _ExportsByState(Collector):
    def __init__(self, counts: Callable[[], Mapping[tuple[str, ExportState], int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("scanside_sr_exports", "SRs in the export queue, by destination and state.",
                                   labels=["destination", "state"])
        counts = self.counts()
        for destination in EXPORT_DESTINATIONS:
            for state in ExportState:
                family.add_metric([destination, state.value], counts.get((destination, state), 0))
        yield family


class _TruthRecords(Collector):
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("scanside_truth_records", "Ground-truth records by state: final and corrected "
                                   "reports pending (no scored study yet) or matched; corrected and cancelled "
                                   "(withdrawn) reports; assessments (gRPC AssessResult).", labels=["state"])
        for state, n in self.counts().items():
            family.add_metric([state], n)
        yield family


class _SeriesByState(Collector):
    def __init__(self, counts: Callable[[], Mapping[SeriesState, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("scanside_series", "Series known to this appliance, by state.", labels=["state"])
        counts = self.counts()
        for state in SeriesState:
            family.add_metric([state.value], counts.get(state, 0))
        yield family


# === GPU and TensorRT engine (appended for the TensorRT backend) ====================================================
#
# Separate from `Metrics` so that a CPU-only appliance exports none of these families. The service creates a
# `GpuMetrics` on the same injected registry when it runs the TensorRT backend (or fell back from it), sets the
# engine info once, and hands it a GPU statistics sampler (appliance.inference.gpu_stats) that is read at scrape
# time, so the gauges can never be staler than one sampler interval. Labels stay closed sets: no label carries an
# identifier.


class GpuMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        ns = "scanside"
        self.engine = Info("engine_build", "The TensorRT plan in use: file, TensorRT version, GPU, compute "
                           "capability, precision, typing, build time, encoder hash.", namespace=ns,
                           registry=registry)
        self.fallback = Gauge("backend_fallback", "1 when TensorRT was configured but could not be used and the "
                              "appliance runs ONNX Runtime instead (the reason is in the log and GetModelInfo).",
                              namespace=ns, registry=registry)
        self._collector: _GpuStatsCollector | None = None

    def set_engine(self, info: Mapping[str, str]) -> None:
        self.engine.info({str(k): str(v) for k, v in info.items()})

    def watch_gpu(self, sample: Callable[[], object], source: str) -> None:
        """Export scanside_gpu_* from `sample()` (an appliance.inference.gpu_stats.GpuSample or None) at scrape time;
        `source` is the sampler's kind (nvml, tegrastats, jtop) and labels scanside_gpu_stats_up."""
        if self._collector is None:
            self._collector = _GpuStatsCollector(sample, source)
            self.registry.register(self._collector)
        else:
            self._collector.sample, self._collector.source = sample, source


class _GpuStatsCollector(Collector):
    def __init__(self, sample: Callable[[], object], source: str) -> None:
        self.sample = sample
        self.source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            s = self.sample()
        except Exception:  # a failing sampler must not break the scrape of every other metric
            s = None
        up = GaugeMetricFamily("scanside_gpu_stats_up", "1 when the last GPU statistics sample succeeded.",
                               labels=["source"])
        up.add_metric([self.source], 0 if s is None else 1)
        yield up
        if s is None:
            return
        memory_kind = "shared" if getattr(s, "memory_shared", False) else "dedicated"
        for name, doc, value, labels in (
            ("scanside_gpu_memory_used_bytes", "GPU memory in use (on a Jetson: RAM shared by CPU and GPU).",
             getattr(s, "memory_used_bytes", None), {"memory": memory_kind}),
            ("scanside_gpu_memory_total_bytes", "GPU memory in total (on a Jetson: RAM shared by CPU and GPU).",
             getattr(s, "memory_total_bytes", None), {"memory": memory_kind}),
            ("scanside_gpu_utilization_ratio", "GPU busy fraction over the last sampling interval, 0..1.",
             getattr(s, "utilization", None), {}),
            ("scanside_gpu_temperature_celsius", "GPU temperature (Jetson boards without a GPU sensor: junction).",
             getattr(s, "temperature_c", None), {}),
        ):
            if value is None:
                continue
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            family.add_metric(list(labels.values()), float(value))
            yield family


# === Live performance and drift (appliance/evidence, docs/evidence.md) =============================================
#
# Separate from `Metrics`: the label sets come from the bundle (findings) and [evidence] (manufacturers, stations),
# so the evidence monitor creates one `EvidenceMetrics` on the same injected registry once those are known. Every
# label set is closed and every series is pre-set: counts to 0, statistics to NaN ("not enough cases yet"; NaN
# compares false, so no alert fires on it). manufacturer and station take their configured labels plus "other"
# (station also "unknown"), and "all" for the pooled slice; finding is a bundle finding id; no label is ever an
# identifier.

EVIDENCE_BOUNDS = ("estimate", "lower", "upper")  # the point estimate and its 95 % interval
EVIDENCE_TRUTH = ("positive", "negative")


class EvidenceMetrics:
    def __init__(self, registry: CollectorRegistry, slices: Iterable[tuple[str, str, str]],
                 signals: Iterable[str], manufacturers: Iterable[str], findings: Iterable[str]) -> None:
        """`slices`: (finding, manufacturer, station) reported (appliance.evidence.performance.slices);
        `signals`: appliance.evidence.drift.signal_names; `manufacturers`: the drift groups ("all" included)."""
        self.registry = registry
        ns, slice_labels = "scanside", ["finding", "manufacturer", "station"]
        self.sensitivity = Gauge("evidence_sensitivity", "Sensitivity at the threshold among cases with ground "
                                 "truth, with its Wilson 95 % interval (bound).", [*slice_labels, "bound"],
                                 namespace=ns, registry=registry)
        self.specificity = Gauge("evidence_specificity", "Specificity at the threshold among cases with ground "
                                 "truth, with its Wilson 95 % interval (bound).", [*slice_labels, "bound"],
                                 namespace=ns, registry=registry)
        self.auroc = Gauge("evidence_auroc", "AUROC of the finding's score among cases with ground truth, with its "
                           "DeLong 95 % interval (bound); NaN until enough positives and negatives.",
                           [*slice_labels, "bound"], namespace=ns, registry=registry)
        self.calibration_error = Gauge("evidence_calibration_error", "Expected calibration error of the calibrated "
                                       "probability (equal-width bins).", slice_labels, namespace=ns,
                                       registry=registry)
        self.brier = Gauge("evidence_brier_score", "Brier score of the calibrated probability.", slice_labels,
                           namespace=ns, registry=registry)
        self.cases = Gauge("evidence_cases", "Cases with ground truth (scored, assessable, matched), by truth.",
                           [*slice_labels, "truth"], namespace=ns, registry=registry)
        self.studies = Gauge("evidence_studies", "Scored assessable studies under the current bundle (scored) and "
                             "those with ground truth for at least one finding (matched).", ["state"],
                             namespace=ns, registry=registry)
        self.refreshed = Gauge("evidence_refreshed_timestamp_seconds", "When the evidence monitor last recomputed "
                               "(Unix time); 0 until it has.", namespace=ns, registry=registry)
        self.ood_rate = Gauge("evidence_ood_rate", "Share of the last window's studies beyond the bundle's "
                              "out-of-distribution threshold.", ["manufacturer"], namespace=ns, registry=registry)
        self.ood_distance = Gauge("evidence_ood_distance_mean", "Mean out-of-distribution distance over the last "
                                  "window.", ["manufacturer"], namespace=ns, registry=registry)
        self.positive_rate_ratio = Gauge("evidence_positive_rate_ratio", "The finding's positive rate over the last "
                                         "window divided by the bank's prevalence.", ["finding", "manufacturer"],
                                         namespace=ns, registry=registry)
        self.drifting = Gauge("evidence_drifting", "1 when the signal's drift test rejects at evidence.drift_alpha "
                              "(docs/evidence.md), else 0.", ["signal", "manufacturer"], namespace=ns,
                              registry=registry)
        self.window_studies = Gauge("evidence_window_studies", "Studies in the drift window.", ["manufacturer"],
                                    namespace=ns, registry=registry)
        nan = float("nan")
        for finding, manufacturer, station in slices:
            labels = {"finding": finding, "manufacturer": manufacturer, "station": station}
            for bound in EVIDENCE_BOUNDS:
                for gauge in (self.sensitivity, self.specificity, self.auroc):
                    gauge.labels(**labels, bound=bound).set(nan)
            self.calibration_error.labels(**labels).set(nan)
            self.brier.labels(**labels).set(nan)
            for truth in EVIDENCE_TRUTH:
                self.cases.labels(**labels, truth=truth)
        for state in ("scored", "matched"):
            self.studies.labels(state=state)
        signal_set, finding_set = tuple(signals), tuple(findings)
        for manufacturer in manufacturers:
            self.ood_rate.labels(manufacturer=manufacturer).set(nan)
            self.ood_distance.labels(manufacturer=manufacturer).set(nan)
            self.window_studies.labels(manufacturer=manufacturer)
            for finding in finding_set:
                self.positive_rate_ratio.labels(finding=finding, manufacturer=manufacturer).set(nan)
            for signal in signal_set:
                self.drifting.labels(signal=signal, manufacturer=manufacturer)


# === Triton backend (appliance/inference/triton_backend.py, docs/triton.md) ========================================
#
# Separate from `Metrics`, like the GPU ones: only an appliance configured with engine.backend = "triton" exports
# these (also when it fell back to ONNX Runtime at start: then scanside_triton_up is 0). Read at scrape time from the
# backend's `stats()` (a TritonStats: up, requests by outcome, local batches, model and versions); the model labels
# name the served model, never a study.

TRITON_OUTCOMES = ("ok", "retried", "failed")


class TritonMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._collector: _TritonCollector | None = None

    def watch(self, stats: Callable[[], object]) -> None:
        if self._collector is None:
            self._collector = _TritonCollector(stats)
            self.registry.register(self._collector)
        else:
            self._collector.stats = stats


class _TritonCollector(Collector):
    def __init__(self, stats: Callable[[], object]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily]:
        try:
            s = self.stats()
        except Exception:  # a failing source must not break the scrape of every other metric
            s = None
        up = GaugeMetricFamily("scanside_triton_up", "1 while the last exchange with the Triton server succeeded; 0 "
                               "once a batch failed after its retries (it ran on local ONNX Runtime or failed) or "
                               "when Triton could not be used at start.")
        up.add_metric([], 1 if s is not None and getattr(s, "up", False) else 0)
        yield up
        requests = CounterMetricFamily("scanside_triton_requests", "Inference requests to Triton by outcome: ok, "
                                       "retried (a try that failed and was repeated), failed (no tries left).",
                                       labels=["outcome"])
        counts = getattr(s, "requests", {}) or {}
        for outcome in TRITON_OUTCOMES:
            requests.add_metric([outcome], float(counts.get(outcome, 0)))
        yield requests
        local = CounterMetricFamily("scanside_triton_local_batches", "Batches run on local ONNX Runtime because "
                                    "Triton failed them (engine.fallback_to_onnxruntime).")
        local.add_metric([], float(getattr(s, "local_batches", 0) or 0))
        yield local
        info = InfoMetricFamily("scanside_triton_model", "The Triton model in use: name, the version of the last "
                                "answer, the server's version.")
        info.add_metric([], {"model": str(getattr(s, "model", "") or ""),
                             "version": str(getattr(s, "model_version", "") or ""),
                             "server_version": str(getattr(s, "server_version", "") or "")})
        yield info

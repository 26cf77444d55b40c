"""The composition root: every part of the appliance built from one Settings, in one place.

The service starts and stops what `build_pipeline` returns; the bench, the demo and the tests build through the
same functions, so what they measure is what runs next to a scanner. Building loads the bundle and the engine and
opens the database, but starts no thread and opens no port: `Appliance.start` does that, in order.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from appliance.assembly import Assembler
from appliance.bundle import Bundle, load_bundle
from appliance.config import ConfigError, Settings, is_loopback
from appliance.evidence.monitor import EvidenceMonitor
from appliance.fileio import keep_private, private_folder
from appliance.handovers import CompleteSeries, SeriesInfo, StudyResult
from appliance.inference import BACKEND_KINDS, TritonTarget, create_backend
from appliance.inference.backend import InferenceBackend
from appliance.inference.gpu_stats import GpuSampler, open_sampler
from appliance.inference.worker import InferenceWorker
from appliance.ingest import Ingestor, IngestThread, Quarantine
from appliance.ingest.commitment_scp import CommitmentScpSettings
from appliance.ingest.dicom_guard import GuardLimits
from appliance.ingest.receiver import TAKEN_SOP_CLASSES, DicomReceiver, ReceiverSettings
from appliance.logsafe import silence_value_echoes
from appliance.metrics import GpuMetrics, Metrics, TritonMetrics
from appliance.pipeline.failures import FailureHandler
from appliance.pipeline.preparer import Preparer
from appliance.pipeline.priority import ScoringPriority
from appliance.pipeline.scorer import Scorer
from appliance.pipeline.spool_cleaner import SpoolCleaner
from appliance.prompts.overlay import LiveBank, Overlay, overlay_dir
from appliance.scoring import ScoringPolicy
from appliance.serve.access import AccessError, AccessPolicy, load_clients
from appliance.serve.model_info import model_info
from appliance.serve.server import ApplianceServicer, GrpcServer, GrpcTls
from appliance.store import Store
from appliance.truth.mllp import ACK_REASONS, REFUSALS, MllpListener
from appliance.truth.sink import ReportSink

if TYPE_CHECKING:
    from appliance.export.outbox import Exporter

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    """Everything `build_pipeline` made, wired, not yet started. `close` releases it if it is never started."""

    settings: Settings
    metrics: Metrics
    store: Store
    bundle: Bundle
    backend: InferenceBackend
    gpu_sampler: GpuSampler | None  # only where TensorRT runs
    assembler: Assembler
    failures: FailureHandler
    scorer: Scorer
    worker: InferenceWorker
    preparer: Preparer
    ingestor: Ingestor
    ingest_thread: IngestThread
    grpc: GrpcServer
    exporter: Exporter | None  # only where [export] names a destination
    receiver: DicomReceiver | None  # only where [dicom] is enabled
    closing: threading.Event  # set at shutdown; result streams end on it
    evidence: EvidenceMonitor  # live performance (ledger x truth) and drift, scanside_evidence_*
    spool_cleaner: SpoolCleaner  # finished series' images deleted off the scoring and ingest threads
    mllp: MllpListener | None = None  # final reports in; only where [hl7] is enabled

    def close(self) -> None:
        if self.gpu_sampler is not None:
            self.gpu_sampler.close()
        self.backend.close()
        self.store.close()


def prepare_folders(settings: Settings) -> None:
    """The data folder and what lies under it, private to the service's user and group."""
    p = settings.paths
    keep_private()
    for folder in (p.data_dir, p.spool, p.quarantine):
        private_folder(folder)
    if Path(p.incoming).resolve().is_relative_to(Path(p.data_dir).resolve()):
        private_folder(p.incoming)
    else:  # the scanner's own export folder: its modes are the site's to choose
        Path(p.incoming).mkdir(parents=True, exist_ok=True)


def build_store(settings: Settings) -> Store:
    """In shadow mode no result queues an SR (appliance.mode): nothing is sent to PACS."""
    destinations = () if settings.appliance.shadow else settings.export.destinations
    return Store(settings.paths.database, export_destinations=destinations, mode=settings.appliance.mode)


def build_backend(settings: Settings, bundle: Bundle) -> InferenceBackend:
    e = settings.engine
    if e.backend.strip().lower() not in BACKEND_KINDS:
        raise ConfigError(f"engine.backend must be one of {', '.join(BACKEND_KINDS)}, not {e.backend!r}")
    return create_backend(e.backend, bundle, intra_op_threads=e.intra_op_threads, max_batch=e.max_batch,
                          plan_dir=e.plan_dir, trt_max_batch=e.trt_max_batch,
                          fallback_to_onnxruntime=e.fallback_to_onnxruntime, triton=triton_target(settings))


def triton_target(settings: Settings) -> TritonTarget | None:
    t = settings.triton
    if not t.url:
        return None
    return TritonTarget(url=t.url, model_name=t.model_name, model_version=t.model_version, timeout_s=t.timeout_s,
                        health_timeout_s=t.health_timeout_s, retries=t.retries, retry_backoff_s=t.retry_backoff_s,
                        recheck_s=t.recheck_s, verify_min_cosine=t.verify_min_cosine, tls_ca=t.tls_ca,
                        tls_cert=t.tls_cert, tls_key=t.tls_key,
                        fallback_to_onnxruntime=settings.engine.fallback_to_onnxruntime)


def watch_triton(settings: Settings, backend: InferenceBackend, registry: CollectorRegistry) -> None:
    """scanside_triton_* exist only where Triton is configured; one that fell back at start shows up 0."""
    if settings.engine.backend.strip().lower() != "triton":
        return
    stats = getattr(backend, "stats", None)
    if stats is None:  # local ONNX Runtime stands in since start
        from appliance.inference.triton_backend import TritonStats

        still = TritonStats(model=settings.triton.model_name)
        log.warning("Triton not used, running ONNX Runtime: %s", getattr(backend, "fallback_reason", None))
        TritonMetrics(registry).watch(lambda: still)
        return
    TritonMetrics(registry).watch(stats)


def watch_gpu(settings: Settings, backend: InferenceBackend, registry: CollectorRegistry) -> GpuSampler | None:
    """GPU metrics exist only where TensorRT runs or was asked for (and fell back): a CPU box shows none."""
    fallback = getattr(backend, "fallback_reason", None)
    if backend.name != "tensorrt" and settings.engine.backend != "tensorrt":
        return None
    gpu = GpuMetrics(registry)
    gpu.fallback.set(1 if fallback else 0)
    if fallback:
        log.warning("TensorRT not used, running ONNX Runtime: %s", fallback)
    if backend.name != "tensorrt":
        return None
    gpu.set_engine(getattr(backend, "engine_info", {}))
    sampler = open_sampler(settings.metrics.gpu_stats)
    if sampler is not None:
        gpu.watch_gpu(sampler.sample, sampler.source)
    return sampler


def build_ingestor(settings: Settings, store: Store, assembler: Assembler, metrics: Metrics,
                   on_complete: Callable[[CompleteSeries], None],
                   failures: FailureHandler | None = None) -> Ingestor:
    """The ingest loop's worker: parse, spool, assemble. `failures` takes the leftovers of failed series."""
    s = settings
    return Ingestor(s.paths.spool, Quarantine(s.paths.quarantine), store, assembler, metrics, on_complete,
                    settle_seconds=s.ingest.settle_seconds, max_instance_bytes=s.ingest.max_instance_bytes,
                    on_leftover_failed=failures.set_aside if failures is not None else None)


def build_receiver(settings: Settings, metrics: Metrics, store: Store | None = None) -> DicomReceiver | None:
    """The C-STORE receiver; with `store`, its Storage Commitment SCP too (dicom.commitment), and the taker of
    PACS' commitment results for the SRs (export.pacs_commitment)."""
    d = settings.dicom
    if not d.enabled:
        return None
    limits = GuardLimits(negotiation_timeout_s=d.negotiation_timeout_s, idle_timeout_s=d.idle_timeout_s,
                         max_pending=d.max_pending_connections, max_associations=d.max_associations,
                         max_associations_per_peer=d.max_associations_per_peer, max_pdu_bytes=d.max_pdu_bytes,
                         max_inflight_bytes=int(d.max_inflight_mb * (1 << 20)))
    commitment = CommitmentScpSettings(
        d.ae_title, TAKEN_SOP_CLASSES, d.commitment_peer_addresses, report_delay_s=d.commitment_report_delay_s,
        timeout_s=d.commitment_timeout_s, attempts=d.commitment_attempts, retry_s=d.commitment_retry_s,
        keep_days=d.commitment_keep_days) if d.commitment and store is not None else None
    e = settings.export
    accept_reports = e.pacs_commitment and bool(e.pacs_ae_title) and not settings.appliance.shadow and \
        store is not None
    return DicomReceiver(ReceiverSettings(d.ae_title, d.host, d.port, d.allowed_calling_aets, d.tls_cert, d.tls_key,
                                          d.tls_ca, limits, settings.ingest.max_instance_bytes, commitment,
                                          accept_reports),
                         settings.paths.incoming, metrics, Quarantine(settings.paths.quarantine), store=store)


def build_grpc(settings: Settings, servicer: ApplianceServicer, metrics: Metrics) -> GrpcServer:
    g = settings.grpc
    try:
        clients = load_clients(g.clients_file) if g.clients_file is not None else ()
        policy = AccessPolicy(clients, frozenset(g.anonymous_roles), g.max_streams, g.max_streams_per_client,
                              shadow=settings.appliance.shadow)
        tls = GrpcTls(g.tls_cert, g.tls_key, g.tls_client_ca) if g.tls_cert and g.tls_key else None
        server = GrpcServer(servicer, g.host, g.port, max_workers=g.max_streams + 8, access=policy, tls=tls,
                            on_denied=lambda method, reason: metrics.grpc_denied.labels(
                                method=method, reason=reason).inc())
    except (AccessError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    if tls is None and not is_loopback(g.host):
        log.warning("gRPC on %s without TLS (grpc.allow_plaintext_remote): results and tokens cross the "
                    "network in the clear", g.host)
    if any(c.certificate_cn for c in clients) and g.tls_client_ca is None:
        log.warning("clients listed by certificate can never be recognised: grpc.tls_client_ca is not set")
    return server


def build_mllp(settings: Settings, store: Store, metrics: Metrics,
               priority: ScoringPriority | None = None) -> MllpListener | None:
    """The MLLP listener for final reports, storing each (labels, matching, truth) before its ACK, each after the
    series being scored (within [hl7] yield_to_scoring_s)."""
    h = settings.hl7
    metrics.watch_truth(store.truth.counts)
    if not h.enabled:
        return None
    metrics.preset_hl7(ACK_REASONS, REFUSALS)
    try:
        wait = h.yield_to_scoring_s
        listener = MllpListener(h, ReportSink(store.truth.receive), on_message=metrics.count_hl7,
                                on_refusal=lambda reason: metrics.hl7_refusals.labels(reason=reason).inc(),
                                before_message=(lambda: priority.wait_idle(wait)) if priority and wait > 0
                                else lambda: None)
    except (OSError, ValueError) as exc:  # a TLS file that cannot be loaded, a malformed network
        raise ConfigError(f"[hl7] cannot be used: {exc}") from None
    metrics.hl7_connections.set_function(lambda: listener.open_connections)
    if h.tls_cert is None and not is_loopback(h.host):
        log.warning("MLLP on %s without TLS: final reports cross the network in the clear", h.host)
    return listener


def build_evidence(settings: Settings, bundle: Bundle, store: Store, registry: CollectorRegistry) -> EvidenceMonitor:
    """Live performance and drift: the sealed ledger against the current truth of each scored series."""
    return EvidenceMonitor(settings.evidence, bundle.label_bank, store.ledger.entries, store.truth.by_series,
                           registry, bundle=(bundle.name, bundle.version))


def scoring_policy(settings: Settings) -> ScoringPolicy:
    s = settings.scoring
    return ScoringPolicy(review_band=(s.review_low, s.review_high), flag_rare_positive=s.flag_rare_positive,
                         ood_check=s.ood_check)


def build_pipeline(settings: Settings, registry: CollectorRegistry,
                   on_result: Callable[[StudyResult], None] | None = None) -> Pipeline:
    """Build every part, wired. On a failure, what was already built (database, engine) is released again."""
    silence_value_echoes()
    s = settings
    prepare_folders(s)
    with ExitStack() as undo:
        metrics = Metrics(registry)
        store = build_store(s)
        undo.callback(store.close)
        metrics.watch_series_states(store.series.counts)
        bundle = load_bundle(s.engine.bundle)
        backend = build_backend(s, bundle)
        undo.callback(backend.close)
        gpu_sampler = watch_gpu(s, backend, registry)
        watch_triton(s, backend, registry)
        if gpu_sampler is not None:
            undo.callback(gpu_sampler.close)
        assembler = Assembler(s.assembly.quiet_period_s, s.assembly.incomplete_timeout_s)
        live_bank = LiveBank(Overlay(overlay_dir(s.paths.data_dir), bundle.label_bank), bundle.embedding_dim)
        priority = ScoringPriority()
        failures = FailureHandler(store, metrics, s.paths.quarantine,
                                  provenance=lambda: (bundle.name, bundle.version, live_bank.get()[1]),
                                  priority=priority)
        spool_cleaner = SpoolCleaner()
        scorer = Scorer(bundle, backend.name, backend.precision, scoring_policy(s), store, metrics, failures,
                        on_result=on_result, bank_source=live_bank.get, priority=priority,
                        remove=spool_cleaner.remove)
        worker = InferenceWorker(backend, metrics, on_embedded=scorer,
                                 on_failure=lambda item, failure: failures.fail(
                                     item.info, item.instance_paths, failure, input_sha256=item.input_sha256),
                                 max_batch=s.engine.max_batch, batch_wait_ms=s.engine.batch_wait_ms,
                                 queue_size=s.engine.queue_size)
        preparer = Preparer(bundle.preprocess, store, metrics, worker, failures,
                            keep_sources=s.export.enabled and not s.appliance.shadow, quality=s.quality,
                            priority=priority, remove=spool_cleaner.remove)
        ingestor = build_ingestor(s, store, assembler, metrics, preparer.on_complete, failures)
        closing = threading.Event()

        def live_status(series_uid: str) -> SeriesInfo | None:
            with ingestor.lock:
                return assembler.info(series_uid)

        servicer = ApplianceServicer(store, lambda: model_info(bundle, backend, *scorer.current_bank(),
                                                               mode=s.appliance.mode),
                                     live_status, closing)
        grpc = build_grpc(s, servicer, metrics)
        # Imported here: highdicom and its image codecs cost ~30 MB of memory, for appliances that send SRs only.
        from appliance.export import build_exporter

        exporter = build_exporter(s, store, metrics)
        pipeline = Pipeline(
            settings=s, metrics=metrics, store=store, bundle=bundle, backend=backend, gpu_sampler=gpu_sampler,
            assembler=assembler, failures=failures, scorer=scorer, worker=worker, preparer=preparer,
            ingestor=ingestor, ingest_thread=IngestThread(ingestor, s.paths.incoming, s.ingest.poll_interval_s,
                                                          s.ingest.rescan_on_start),
            grpc=grpc, exporter=exporter, receiver=build_receiver(s, metrics, store), closing=closing,
            evidence=build_evidence(s, bundle, store, registry), spool_cleaner=spool_cleaner,
            mllp=build_mllp(s, store, metrics, priority))
        undo.pop_all()
    return pipeline

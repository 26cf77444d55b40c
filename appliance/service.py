"""The appliance assembled from its stages: start-up order, recovery, hand-overs between threads, shutdown.

Threads: the watchdog observer and the ingest loop (parse, spool, assemble), the prepare loop (series -> tensor),
the inference worker (batches, scoring, storing), and gRPC's pool. Each hand-over is one typed record.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from appliance import __version__
from appliance.api import pb
from appliance.assembly import Assembler
from appliance.bundle import Bundle, load_bundle
from appliance.config import ConfigError, Settings, is_loopback
from appliance.export.source import capture_source
from appliance.fileio import keep_private, private_folder
from appliance.handovers import CompleteSeries, PreparedSeries, SeriesInfo, SeriesRole, SeriesState, StudyResult
from appliance.inference import create_backend
from appliance.inference.gpu_stats import open_sampler
from appliance.inference.worker import InferenceWorker
from appliance.ingest import Ingestor, IngestThread, Quarantine
from appliance.ingest.dicom_guard import GuardLimits
from appliance.ingest.quarantine import move_file
from appliance.ingest.receiver import DicomReceiver, ReceiverSettings
from appliance.logsafe import describe, silence_value_echoes
from appliance.metrics import GpuMetrics, Metrics
from appliance.preprocess import PreprocessError, prepare
from appliance.scoring import ScoringPolicy
from appliance.serve.access import AccessError, AccessPolicy, load_clients
from appliance.serve.server import ApplianceServicer, GrpcServer, GrpcTls
from appliance.store import Store, StoreError

log = logging.getLogger(__name__)


class Appliance:
    def __init__(self, settings: Settings, registry: CollectorRegistry = REGISTRY) -> None:
        silence_value_echoes()
        self.settings = settings
        self.registry = registry
        self.metrics = Metrics(registry)
        self.ready = threading.Event()
        self._closing = threading.Event()
        self._prepare_queue: queue.Queue[CompleteSeries | None] = queue.Queue()
        self._paths: dict[str, tuple[str, ...]] = {}
        self._paths_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._metrics_server = None
        self.bundle: Bundle | None = None
        self.backend = None
        self.grpc: GrpcServer | None = None
        self.worker: InferenceWorker | None = None
        self.ingest_thread: IngestThread | None = None
        self._gpu_sampler = None
        self.receiver: DicomReceiver | None = None
        self.exporter = None  # appliance.export.outbox.Exporter, where [export] names a destination

    # --- start-up -------------------------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        keep_private()
        for folder in (s.paths.data_dir, s.paths.spool, s.paths.quarantine):
            private_folder(folder)
        if Path(s.paths.incoming).resolve().is_relative_to(Path(s.paths.data_dir).resolve()):
            private_folder(s.paths.incoming)
        else:  # the scanner's own export folder: its modes are the site's to choose
            Path(s.paths.incoming).mkdir(parents=True, exist_ok=True)
        self.store = Store(s.paths.database, export_destinations=s.export.destinations)
        self.metrics.watch_series_states(self.store.state_counts)
        self.bundle = load_bundle(s.engine.bundle)
        self.backend = create_backend(s.engine.backend, self.bundle, intra_op_threads=s.engine.intra_op_threads,
                                      max_batch=s.engine.max_batch, plan_dir=s.engine.plan_dir,
                                      trt_max_batch=s.engine.trt_max_batch,
                                      fallback_to_onnxruntime=s.engine.fallback_to_onnxruntime)
        self._watch_gpu()
        self.assembler = Assembler(s.assembly.quiet_period_s)
        self.ingestor = Ingestor(s.paths.spool, Quarantine(s.paths.quarantine), self.store, self.assembler,
                                 self.metrics, self._on_complete, settle_seconds=s.ingest.settle_seconds,
                                 max_instance_bytes=s.ingest.max_instance_bytes)
        self.ingestor.on_leftover_failed = self._set_aside
        # gRPC first, NOT_SERVING, so orchestrators can watch the warm-up through health checks.
        self.grpc = self._make_grpc()
        self.grpc.start()
        if s.metrics.enabled:
            self._metrics_server, _ = start_http_server(s.metrics.port, addr=s.metrics.host, registry=self.registry)
        self.metrics.model.info({"bundle": self.bundle.name, "bundle_version": self.bundle.version,
                                 "backend": self.backend.name, "backend_version": str(self.backend.version),
                                 "precision": self.backend.precision, "appliance_version": __version__})
        self.worker = InferenceWorker(self.backend, self.bundle,
                                      ScoringPolicy(review_band=(s.scoring.review_low, s.scoring.review_high),
                                                    flag_rare_positive=s.scoring.flag_rare_positive,
                                                    ood_check=s.scoring.ood_check),
                                      self.store, self.metrics, max_batch=s.engine.max_batch,
                                      batch_wait_ms=s.engine.batch_wait_ms, queue_size=s.engine.queue_size,
                                      on_result=self._on_result, on_failure=self._on_inference_failure)
        self.worker.start()  # warms the engine up on its own thread; ready only after that
        log.info("engine %s %s on %s (%s) ready", self.bundle.name, self.bundle.version, self.backend.name,
                 self.backend.precision)
        prep = threading.Thread(target=self._prepare_loop, name="scanside-prepare", daemon=True)
        prep.start()
        self._threads.append(prep)
        self._recover()
        if s.export.enabled:
            self.exporter = self._make_exporter()
            self.exporter.start()  # picks up whatever a previous run left queued; drops expired failed SRs hourly
        elif s.export.keep_failed_days:
            # Export turned off since: failed SRs left from then still leave once their retention is over.
            self.store.expire_failed_exports(time.time() - s.export.keep_failed_days * 86_400)
        self.ingest_thread = IngestThread(self.ingestor, s.paths.incoming, s.ingest.poll_interval_s,
                                          s.ingest.rescan_on_start)
        self.ingest_thread.start()
        if s.dicom.enabled:
            d = s.dicom
            limits = GuardLimits(negotiation_timeout_s=d.negotiation_timeout_s, idle_timeout_s=d.idle_timeout_s,
                                 max_pending=d.max_pending_connections, max_associations=d.max_associations,
                                 max_associations_per_peer=d.max_associations_per_peer,
                                 max_pdu_bytes=d.max_pdu_bytes, max_inflight_bytes=int(d.max_inflight_mb * (1 << 20)))
            self.receiver = DicomReceiver(ReceiverSettings(d.ae_title, d.host, d.port, d.allowed_calling_aets,
                                                           d.tls_cert, d.tls_key, d.tls_ca, limits,
                                                           s.ingest.max_instance_bytes),
                                          s.paths.incoming, self.metrics, Quarantine(s.paths.quarantine))
            self.receiver.start()
        self.ready.set()
        self.metrics.ready.set(1)
        self.grpc.set_serving(True)
        log.info("ready: gRPC on %s%s, watching %s", self.grpc.address,
                 (" (TLS, client certificates required)" if s.grpc.tls_client_ca else " (TLS)")
                 if self.grpc.tls else "", s.paths.incoming)

    def _make_grpc(self) -> GrpcServer:
        g = self.settings.grpc
        try:
            clients = load_clients(g.clients_file) if g.clients_file is not None else ()
            policy = AccessPolicy(clients, frozenset(g.anonymous_roles), g.max_streams, g.max_streams_per_client)
            tls = GrpcTls(g.tls_cert, g.tls_key, g.tls_client_ca) if g.tls_cert and g.tls_key else None
            server = GrpcServer(ApplianceServicer(self.store, self.model_info, self._live_status, self._closing),
                                g.host, g.port, max_workers=g.max_streams + 8, access=policy, tls=tls,
                                on_denied=lambda method, reason: self.metrics.grpc_denied.labels(
                                    method=method, reason=reason).inc())
        except (AccessError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
        if tls is None and not is_loopback(g.host):
            log.warning("gRPC on %s without TLS (grpc.allow_plaintext_remote): results and tokens cross the "
                        "network in the clear", g.host)
        if any(c.certificate_cn for c in clients) and g.tls_client_ca is None:
            log.warning("clients listed by certificate can never be recognised: grpc.tls_client_ca is not set")
        return server

    def _make_exporter(self):
        # Imported here: highdicom and its image codecs cost ~30 MB of memory, for appliances that send SRs only.
        from appliance.export.outbox import Exporter, RetryPolicy
        from appliance.export.pacs import PacsPeer, PacsSender
        from appliance.export.sr import SrSettings

        e = self.settings.export
        if e.folder is not None and e.folder.exists() and not e.folder.is_dir():
            raise ConfigError(f"export.folder {e.folder} exists and is not a folder")
        pacs = (PacsSender(PacsPeer(e.pacs_ae_title, e.pacs_host, e.pacs_port,
                                    calling_ae_title=self.settings.dicom.ae_title, timeout_s=e.timeout_s,
                                    tls_ca=e.tls_ca, tls_cert=e.tls_cert, tls_key=e.tls_key))
                if e.pacs_ae_title else None)
        if pacs is not None:
            try:
                pacs.peer.tls_args()  # a missing or wrong certificate file stops the start, not every later send
            except (OSError, ValueError) as exc:
                raise ConfigError(f"export.tls_ca / tls_cert / tls_key cannot be loaded: {exc}") from None
        return Exporter(self.store, self.metrics, RetryPolicy(e.max_attempts, e.retry_initial_s, e.retry_max_s),
                        SrSettings(series_number=e.series_number, institution_name=e.institution_name),
                        pacs=pacs, folder=e.folder, keep_failed_days=e.keep_failed_days)

    def _watch_gpu(self) -> None:
        """GPU metrics exist only where TensorRT runs or was asked for (and fell back): a CPU box shows none."""
        s = self.settings
        fallback = getattr(self.backend, "fallback_reason", None)
        if self.backend.name != "tensorrt" and s.engine.backend != "tensorrt":
            return
        gpu = GpuMetrics(self.registry)
        gpu.fallback.set(1 if fallback else 0)
        if fallback:
            log.warning("TensorRT not used, running ONNX Runtime: %s", fallback)
        if self.backend.name == "tensorrt":
            gpu.set_engine(getattr(self.backend, "engine_info", {}))
            self._gpu_sampler = open_sampler(s.metrics.gpu_stats)
            if self._gpu_sampler is not None:
                gpu.watch_gpu(self._gpu_sampler.sample, self._gpu_sampler.source)

    def _recover(self) -> None:
        """Finish what a previous run accepted: images in the spool, series complete but not scored."""
        unfinished = {row.series_uid: row for row in
                      self.store.series_in_states((SeriesState.RECEIVING, SeriesState.COMPLETE))}
        found = self.ingestor.recover_spool()
        if found:
            log.info("recovered %d series from the spool", len(found))
        with self.ingestor.lock:
            pending = set(self.assembler.pending_uids())
            closed = [self.assembler.complete_now(uid, "recovered") for uid in pending
                      if uid in unfinished and unfinished[uid].state is SeriesState.COMPLETE]
        for series in closed:
            if series is not None:
                self._on_complete(series)
        for uid, row in unfinished.items():
            if uid in found:
                continue  # assembled again (and, if its count was reached, already queued)
            if row.state is SeriesState.RECEIVING:
                # Its first image was recorded but never reached the spool (a crash in between): the image is
                # still in the watch folder, and the rescan brings the series back.
                self.store.forget_series(uid)
            else:
                info = SeriesInfo(row.key, row.study_uid, row.series_uid, row.role, row.manufacturer,
                                  row.description, row.received, row.expected, "recovered", row.last_file_at or 0)
                self._fail_series(info, (), "its images were no longer in the spool after a restart")

    # --- hand-overs -----------------------------------------------------------------------------------------------

    def _on_complete(self, series: CompleteSeries) -> None:
        info = series.info
        if info.role is not SeriesRole.CINE_SAX:
            self.store.set_state(info, SeriesState.SKIPPED, f"role {info.role.value} is not scored")
            self._remove(series.instance_paths)
            log.info("series %s complete (%s, %d images): %s, not scored", info.key, info.completed_by,
                     info.received, info.role.value)
            return
        self.store.set_state(info, SeriesState.COMPLETE)
        if self.settings.export.enabled:
            self._keep_source(series)
        with self._paths_lock:
            self._paths[info.series_uid] = series.instance_paths
        log.info("series %s complete (%s, %d images): queued for scoring", info.key, info.completed_by,
                 info.received)
        self._prepare_queue.put(series)

    def _keep_source(self, series: CompleteSeries) -> None:
        """The SR copies patient and study identity from the images, which leave the spool once scored."""
        try:
            started = time.perf_counter()
            source = capture_source(series.instance_paths[0], series.instances)
            self.store.save_source(series.info.series_uid, source.header, source.instances_json())
            self.metrics.stage_seconds.labels(stage="source").observe(time.perf_counter() - started)
        except Exception as exc:
            # the series' SR export then fails visibly, naming the missing source.
            log.warning("series %s: source header not kept for its SR: %s", series.info.key, describe(exc))

    def _prepare_loop(self) -> None:
        while True:
            series = self._prepare_queue.get()
            if series is None:
                return
            try:
                started = time.perf_counter()
                prepared = prepare(series, self.bundle.preprocess)
                self.metrics.stage_seconds.labels(stage="preprocess").observe(time.perf_counter() - started)
            except PreprocessError as exc:
                self._fail_series(series.info, series.instance_paths, f"preprocess: {exc}")
                continue
            except Exception as exc:  # an unexpected bug on one series must not stop the others
                log.error("series %s: preprocessing crashed: %s", series.info.key, describe(exc))
                self._fail_series(series.info, series.instance_paths, f"preprocess: {type(exc).__name__}: {exc}")
                continue
            while not self._closing.is_set():
                try:
                    self.worker.submit(prepared, timeout=0.5)  # blocks while the engine is behind
                    break
                except queue.Full:
                    continue

    def _on_result(self, result: StudyResult) -> None:
        with self._paths_lock:
            paths = self._paths.pop(result.info.series_uid, ())
        self._remove(paths)
        findings = ", ".join(f"{f.finding_id}={'+' if f.positive else '-'}" for f in result.scores.findings)
        log.info("series %s scored in %.0f ms after its last image%s: %s", result.info.key,
                 (result.scored_at - result.info.last_file_at) * 1000,
                 " (needs review)" if result.scores.needs_review else "", findings)

    def _on_inference_failure(self, item: PreparedSeries, detail: str) -> None:
        with self._paths_lock:
            paths = self._paths.pop(item.info.series_uid, ())
        self._fail_series(item.info, paths, detail)

    def _fail_series(self, info: SeriesInfo, paths: tuple[str, ...], detail: str) -> None:
        """Record why, then set the series' images aside under quarantine/failed_series/<key>/. In that order: a
        crash part-way through the moves leaves a FAILED series whose leftovers recovery moves the same way."""
        with self._paths_lock:
            self._paths.pop(info.series_uid, None)
        try:
            self.store.set_state(info, SeriesState.FAILED, detail)
        except StoreError as exc:  # already finished (e.g. scored): nothing to set aside
            log.warning("series %s: not marking failed: %s", info.key, exc)
            return
        folder = self._failed_folder(info.key)
        (folder / "reason.txt").write_text(detail + "\n")
        for path in paths:
            self._set_aside(info.key, path)
        reason = detail.split(":", 1)[0]
        self.metrics.series_failed.labels(reason=reason if reason in ("preprocess", "inference") else "other").inc()
        # The detail can quote a library's message (values, paths): it goes to reason.txt and the database, the log
        # line names the stage only.
        log.warning("series %s failed at %s; the reason is in quarantine/failed_series/%s/reason.txt", info.key,
                    reason if reason in ("preprocess", "inference") else "another stage", info.key)

    def _failed_folder(self, key: str) -> Path:
        return private_folder(Path(self.settings.paths.quarantine) / "failed_series" / key)

    def _set_aside(self, key: str, path: str) -> None:
        try:
            move_file(Path(path), self._failed_folder(key) / Path(path).name)
        except FileNotFoundError:
            pass

    @staticmethod
    def _remove(paths: tuple[str, ...]) -> None:
        for path in paths:
            try:
                Path(path).unlink()
            except FileNotFoundError:
                pass

    # --- serving --------------------------------------------------------------------------------------------------

    def _live_status(self, series_uid: str) -> SeriesInfo | None:
        with self.ingestor.lock:
            return self.assembler.info(series_uid)

    def model_info(self) -> pb.ModelInfo:
        b, backend = self.bundle, self.backend
        return pb.ModelInfo(
            bundle_name=b.name, bundle_version=b.version, description=b.description, backend=backend.name,
            backend_version=str(backend.version), precision=backend.precision, research_only=b.research_only,
            input_shape=[-1, *b.input_shape[1:]], embedding_dim=b.embedding_dim, appliance_version=__version__,
            backend_note=getattr(backend, "fallback_reason", None) or "",
            findings=[pb.Finding(finding_id=f.id, name=f.name, prompts=list(f.prompts), threshold=f.threshold,
                                 rare=f.rare) for f in b.label_bank.findings])

    # --- shutdown -------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking files, finish nothing new, keep everything accepted on disk for the next start. Once."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.ready.clear()
        if self.grpc is not None:
            self.grpc.set_serving(False)
        if self.receiver is not None:
            self.receiver.stop()  # first: nothing new is accepted while the rest winds down
        if self.ingest_thread is not None:
            self.ingest_thread.stop()
        self._prepare_queue.put(None)
        exporter_done = True
        if self.exporter is not None:
            # Aborts a send in progress; everything not confirmed stays queued in the database. pynetdicom may hold
            # the thread until its timeout, so it is not waited for long: its try is made again at the next start.
            exporter_done = self.exporter.stop(timeout=3.0)
        for t in self._threads:
            t.join(5)
        worker_done = self.worker.stop() if self.worker is not None else True
        if self.grpc is not None:
            self.grpc.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if self._gpu_sampler is not None:
            self._gpu_sampler.close()  # ends tegrastats on a Jetson
        if self.backend is not None and worker_done:
            self.backend.close()  # never under a batch still running: its buffers would be freed beneath it
        elif self.backend is not None:
            log.warning("inference still running at shutdown; leaving the engine to the process exit")
        if getattr(self, "store", None) is not None and exporter_done:
            self.store.close()
        elif not exporter_done:
            log.warning("SR export still waiting for the PACS at shutdown; its try is repeated at the next start")

    @property
    def grpc_address(self) -> str:
        return self.grpc.address if self.grpc else ""

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.server_port if self._metrics_server else None


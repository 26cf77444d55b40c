"""The appliance: start and stop, in order, of what the composition root built (appliance/pipeline/build.py).

Threads: the watchdog observer and the ingest loop (parse, spool, assemble), the preparer (series -> tensor), the
inference worker (batches; scoring and storing run on it, series by series), the spool cleaner (a finished series'
images deleted after its outcome is stored), the SR exporter, the DICOM receiver,
the MLLP listener (final reports: one thread per sender connection), the evidence monitor, and gRPC's pool. Each
hand-over is one typed record from appliance/handovers.py.
"""

from __future__ import annotations

import logging
import threading
import time
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from appliance import __version__
from appliance.config import Settings
from appliance.handovers import ExportState, SeriesState
from appliance.pipeline import build_pipeline
from appliance.pipeline.recovery import recover

log = logging.getLogger(__name__)


def one_blas_thread() -> None:
    """NumPy's BLAS (OpenBLAS in its wheels) on one thread in this process. Its matrix products here are small
    (the quality gate's sums, a tensor's) and run beside the pipeline's own threads and ONNX Runtime's; a BLAS
    pool of its own per core, spinning between calls, cost a burst on 2 cores ~30 ms of CPU per series (146 ->
    110-118 ms, docs/benchmarks.md) and gives nothing back at these sizes."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class Appliance:
    def __init__(self, settings: Settings, registry: CollectorRegistry = REGISTRY) -> None:
        """Builds everything (loads the bundle and the engine, opens the database); raises ConfigError,
        BundleError or BackendError saying what is wrong. Nothing runs until start()."""
        self.settings = settings
        self.registry = registry
        self.pipeline = build_pipeline(settings, registry)
        self.store = self.pipeline.store
        self.bundle = self.pipeline.bundle
        self.metrics = self.pipeline.metrics
        self.ready = threading.Event()
        self._started = False
        self._metrics_server: WSGIServer | None = None

    def start(self) -> None:
        p, s = self.pipeline, self.settings
        if self._started or p.closing.is_set():
            raise RuntimeError("an Appliance starts once; build a new one to start again")
        self._started = True
        one_blas_thread()
        # gRPC first, NOT_SERVING, so orchestrators can watch the warm-up through health checks.
        p.grpc.start()
        if s.metrics.enabled:
            self._metrics_server, _ = start_http_server(s.metrics.port, addr=s.metrics.host, registry=self.registry)
        p.metrics.model.info({"bundle": p.bundle.name, "bundle_version": p.bundle.version,
                              "backend": p.backend.name, "backend_version": str(p.backend.version),
                              "precision": p.backend.precision, "appliance_version": __version__})
        p.spool_cleaner.start()
        p.worker.start()  # warms the engine up on its own thread; ready only after that
        log.info("engine %s %s on %s (%s) ready", p.bundle.name, p.bundle.version, p.backend.name,
                 p.backend.precision)
        p.preparer.start()
        recover(p.store, p.ingestor, p.assembler, p.preparer.on_complete, p.failures)
        if p.exporter is not None:
            p.exporter.start()  # picks up whatever a previous run left queued; drops expired failed SRs hourly
        elif s.export.keep_failed_days:
            # Export turned off since: failed SRs left from then still leave once their retention is over.
            p.store.exports.expire_failed(time.time() - s.export.keep_failed_days * 86_400)
        p.ingest_thread.start()
        if p.receiver is not None:
            p.receiver.start()
        if p.mllp is not None:
            p.mllp.start()  # reports are stored and matched whether or not their studies have come yet
        p.evidence.start()
        self.ready.set()
        p.metrics.ready.set(1)
        p.grpc.set_serving(True)
        log.info("ready: %s", "; ".join(self.listeners()))

    def listeners(self) -> list[str]:
        """Every way in that is open, with the address actually bound: what the ready line names."""
        p, s = self.pipeline, self.settings
        tls = (" (TLS, client certificates required)" if s.grpc.tls_client_ca else " (TLS)") if p.grpc.tls else ""
        out = [f"gRPC on {p.grpc.address}{tls}"]
        if self._metrics_server is not None:
            out.append(f"metrics on http://{s.metrics.host}:{self.metrics_port}/metrics")
        if p.receiver is not None:
            out.append(f"DICOM receiver {s.dicom.ae_title} on {s.dicom.host}:{p.receiver.port}"
                       + (" (TLS, client certificates required)" if s.dicom.tls_ca else " (TLS)" if s.dicom.tls_cert
                          else ""))
        if p.mllp is not None:
            out.append(f"HL7/MLLP on {s.hl7.host}:{p.mllp.port}"
                       + (" (TLS, client certificates required)" if s.hl7.tls_client_ca else " (TLS)"
                          if s.hl7.tls_cert else ""))
        out.append(f"watching {s.paths.incoming}")
        if s.appliance.shadow:
            out.append("SHADOW MODE (results to admin callers only, no SR sent)")
        return out

    def stop(self, reason: str = "") -> None:
        """Stop taking files, finish nothing new, keep everything accepted on disk for the next start. Once. Logs
        one line saying what was left for the next start (`reason`, e.g. the signal, leads it)."""
        p = self.pipeline
        if p.closing.is_set():
            return
        p.closing.set()
        self.ready.clear()
        if not self._started:
            p.close()
            return
        p.grpc.set_serving(False)
        if p.receiver is not None:
            p.receiver.stop()  # first: nothing new is accepted while the rest winds down
        if p.mllp is not None:
            # A report being stored finishes (and is ACKed) or was never committed: the sender resends it.
            p.mllp.stop()
        p.evidence.stop()
        p.ingest_thread.stop()
        unparsed = p.ingestor.pending_files()
        p.preparer.stop()
        exporter_done = True
        if p.exporter is not None:
            # Aborts a send in progress; everything not confirmed stays queued in the database. pynetdicom may hold
            # the thread until its timeout, so it is not waited for long: its try is made again at the next start.
            exporter_done = p.exporter.stop(timeout=3.0)
        worker_done = p.worker.stop()
        p.spool_cleaner.stop(timeout=3.0)  # what is not deleted by then, the next start's recovery deletes
        p.grpc.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        if p.gpu_sampler is not None:
            p.gpu_sampler.close()  # ends tegrastats on a Jetson
        if worker_done:
            p.backend.close()  # never under a batch still running: its buffers would be freed beneath it
        else:
            log.warning("inference still running at shutdown; leaving the engine to the process exit")
        log.info("stopped%s: %s", f" ({reason})" if reason else "", self._left_queued(unparsed))
        if exporter_done:
            p.store.close()
        else:
            log.warning("SR export still waiting for the PACS at shutdown; its try is repeated at the next start")

    def _left_queued(self, unparsed: int) -> str:
        """What the next start picks up: files not yet taken in, series not yet scored, SRs not yet delivered."""
        try:
            series = self.store.series.counts()
            exports = self.store.exports.counts()
        except Exception as exc:  # the database is what it reads; the line must still be written
            return f"left queued: unknown (the database could not be read: {type(exc).__name__})"
        pending = sum(n for (_, state), n in exports.items() if state == ExportState.PENDING)
        return (f"left queued for the next start: {unparsed} file(s) not yet taken in, "
                f"{series.get(SeriesState.RECEIVING, 0)} series receiving, "
                f"{series.get(SeriesState.COMPLETE, 0)} complete and not yet scored, {pending} SR(s) to deliver")

    @property
    def grpc_address(self) -> str:
        return self.pipeline.grpc.address

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_server.server_port if self._metrics_server else None

"""gRPC serving: the Appliance service, grpc.health.v1 and server reflection.

Servicer methods are thin: they translate between protobuf messages and the store's records. Health stays
NOT_SERVING until the engine is loaded and warmed up, so an orchestrator never routes to a cold appliance.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from concurrent import futures
from typing import Callable, Iterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .api import pb, pb_grpc
from .models import SeriesInfo, SeriesState, StudyResult
from .paging import BadPageToken, PageTokens
from .store import Event, SeriesRow, Store

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Appliance"].full_name
MAX_PAGE = 500
DEFAULT_PAGE = 50
STREAM_POLL_S = 0.5  # how often an idle stream re-checks that its client is still there


def result_to_pb(r: StudyResult, deliveries: list[pb.SrDelivery] | None = None) -> pb.SeriesResult:
    t = r.timings_ms
    return pb.SeriesResult(
        sr_deliveries=deliveries or [],
        study_instance_uid=r.info.study_uid, series_instance_uid=r.info.series_uid, series_key=r.info.key,
        series_description=r.info.description, manufacturer=r.info.manufacturer,
        findings=[pb.FindingResult(finding_id=f.finding_id, name=f.name, score=f.score, threshold=f.threshold,
                                   probability=f.probability, positive=f.positive, rare=f.rare,
                                   review_reasons=list(f.review_reasons)) for f in r.scores.findings],
        needs_review=r.scores.needs_review, review_reasons=list(r.scores.review_reasons),
        ood_distance=r.scores.ood_distance or 0.0, bundle_name=r.bundle_name, bundle_version=r.bundle_version,
        backend=r.backend, precision=r.precision, scored_at_unix=r.scored_at, images=r.info.received,
        timings=pb.StageTimings(preprocess_ms=t.get("preprocess", 0.0), inference_ms=t.get("inference", 0.0),
                                scoring_ms=t.get("scoring", 0.0), batch_size=int(t.get("batch_size", 1)),
                                scan_to_score_ms=max(r.scored_at - r.info.last_file_at, 0.0) * 1000.0))


def status_from_row(row: SeriesRow) -> pb.SeriesStatus:
    return pb.SeriesStatus(study_instance_uid=row.study_uid, series_instance_uid=row.series_uid,
                           series_key=row.key, state=row.state.value, images_received=row.received,
                           images_expected=row.expected or 0, role=row.role.value, detail=row.detail or "")


def status_from_live(info: SeriesInfo) -> pb.SeriesStatus:
    return pb.SeriesStatus(study_instance_uid=info.study_uid, series_instance_uid=info.series_uid,
                           series_key=info.key, state=SeriesState.RECEIVING.value, images_received=info.received,
                           images_expected=info.expected or 0, role=info.role.value)


class ApplianceServicer(pb_grpc.ApplianceServicer):
    def __init__(self, store: Store, model_info: Callable[[], pb.ModelInfo],
                 live_status: Callable[[str], SeriesInfo | None], closing: threading.Event,
                 max_streams: int = 8) -> None:
        self.store = store
        self.model_info = model_info
        self.live_status = live_status
        self.closing = closing
        self.page_tokens = PageTokens(store.secret("page-token"))
        # Each open stream holds a server thread; capping them keeps threads free for health checks and queries.
        self._streams = threading.BoundedSemaphore(max_streams)
        self.max_streams = max_streams

    def _results(self, results: list[StudyResult]) -> list[pb.SeriesResult]:
        deliveries = self.store.deliveries([r.info.series_uid for r in results])
        return [result_to_pb(r, [pb.SrDelivery(destination=e.destination, state=e.state.value, tries=e.attempts,
                                               last_error=e.last_error or "", sr_instance_uid=sr_uid or "",
                                               updated_unix=e.updated_at)
                                 for e, sr_uid in deliveries.get(r.info.series_uid, [])])
                for r in results]

    def _result(self, r: StudyResult) -> pb.SeriesResult:
        return self._results([r])[0]

    def GetStudyResult(self, request: pb.GetStudyResultRequest, context: grpc.ServicerContext):
        if not request.study_instance_uid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "study_instance_uid is required")
        results = self.store.results_for_study(request.study_instance_uid)
        if not results:
            context.abort(grpc.StatusCode.NOT_FOUND, "no result for this study (yet)")
        return pb.GetStudyResultResponse(results=self._results(results))

    def ListResults(self, request: pb.ListResultsRequest, context: grpc.ServicerContext):
        size = request.page_size or DEFAULT_PAGE
        if size > MAX_PAGE:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size must be at most {MAX_PAGE}")
        before = None
        if request.page_token:
            try:
                before = self.page_tokens.read(request.page_token, request.since_unix)
            except BadPageToken as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        rows = self.store.list_results(size + 1, before_id=before, since=request.since_unix or None)
        page, more = rows[:size], len(rows) > size
        token = self.page_tokens.issue(page[-1][0], request.since_unix) if more else ""
        return pb.ListResultsResponse(results=self._results([r for _, r in page]), next_page_token=token)

    def StreamResults(self, request: pb.StreamResultsRequest, context: grpc.ServicerContext) -> Iterator:
        if not self._streams.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.max_streams} result streams are open already; close one or poll ListResults")
        try:
            yield from self._stream(request, context)
        finally:
            self._streams.release()

    def _stream(self, request: pb.StreamResultsRequest, context: grpc.ServicerContext) -> Iterator:
        last = request.after_event_id
        try:
            newest = self.store.last_event_id()
            if last < 0:
                last = newest
            elif last > newest:
                # Resuming past the end means the client's id is from another database (a reset or another
                # appliance): waiting would silently skip the events up to that id.
                context.abort(grpc.StatusCode.OUT_OF_RANGE,
                              f"after_event_id {last} is beyond the newest event ({newest}); resume from 0")
            while context.is_active() and not self.closing.is_set():
                events = self.store.events_after(last, limit=100)
                for event in events:
                    last = event.id
                    if event.kind == "sr" and not request.include_sr_updates:
                        continue
                    yield self._event_to_pb(event)
                if not events:
                    self.store.wait_for_event(last, timeout=STREAM_POLL_S)
        except sqlite3.ProgrammingError:
            if not self.closing.is_set():
                raise
            # The appliance is shutting down and closed its store under this stream: end it cleanly.

    def _event_to_pb(self, event: Event) -> pb.ResultEvent:
        if event.kind in ("scored", "sr"):
            result = self.store.result_for_series(event.series_uid)
            kind = pb.ResultEvent.SCORED if event.kind == "scored" else pb.ResultEvent.SR_UPDATED
            return pb.ResultEvent(event_id=event.id, kind=kind, result=self._result(result) if result else None)
        row = self.store.series(event.series_uid)
        return pb.ResultEvent(event_id=event.id, kind=pb.ResultEvent.FAILED,
                              status=status_from_row(row) if row else None)

    def GetSeriesStatus(self, request: pb.GetSeriesStatusRequest, context: grpc.ServicerContext):
        if not request.series_instance_uid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "series_instance_uid is required")
        live = self.live_status(request.series_instance_uid)
        if live is not None:
            return status_from_live(live)
        row = self.store.series(request.series_instance_uid)
        if row is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "this series has not been seen")
        return status_from_row(row)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext):
        return self.model_info()


class GrpcServer:
    """The gRPC server with health and reflection. `port` 0 picks a free port; `bound_port` tells which."""

    def __init__(self, servicer: ApplianceServicer, host: str, port: int, max_workers: int = 16) -> None:
        if servicer.max_streams > max_workers - 4:
            raise ValueError("keep at least 4 gRPC workers free of result streams")
        self.servicer = servicer
        # Each open result stream holds a worker thread; max_workers bounds concurrent clients.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                             thread_name_prefix="scanside-grpc"))
        pb_grpc.add_ApplianceServicer_to_server(servicer, self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME),
                                            self.server)
        self.set_serving(False)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.bound_port = self.server.add_insecure_port(address)
        if self.bound_port == 0:
            raise OSError(f"could not listen for gRPC on {address}")
        self.address = f"{host}:{self.bound_port}"

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def start(self) -> None:
        self.server.start()

    def stop(self, grace: float = 2.0) -> None:
        self.servicer.closing.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)

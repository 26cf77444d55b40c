"""gRPC serving: the Appliance service, grpc.health.v1 and server reflection.

Servicer methods are thin: they translate between protobuf messages and the store's records. Health stays
NOT_SERVING until the engine is loaded and warmed up, so an orchestrator never routes to a cold appliance.
"""

from __future__ import annotations

import logging
import sqlite3
import ssl
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from appliance.api import pb, pb_grpc
from appliance.handovers import SeriesInfo, SeriesState, StudyResult
from appliance.serve.access import AccessControl, AccessPolicy, Identity, identity_withheld
from appliance.serve.paging import BadPageToken, PageTokens
from appliance.store import Event, EventKind, SeriesRow, Store
from appliance.store.truth import AssessmentError

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Appliance"].full_name
MAX_PAGE = 500
DEFAULT_PAGE = 50
STREAM_POLL_S = 0.5  # how often an idle stream re-checks that its client is still there
MAX_ASSESSOR, MAX_COMMENT = 64, 1024
_VERDICTS = {pb.FindingAssessment.ACCEPT: "accept", pb.FindingAssessment.REJECT: "reject",
             pb.FindingAssessment.CORRECT: "correct"}


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
        not_assessable=not r.scores.assessable, quality_reasons=list(r.scores.quality_reasons),
        bank_version=r.bank_version,
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
    """The Appliance service. Who may call what, and how many result streams are open, is decided in front of it
    (appliance.serve.access.AccessControl, installed by GrpcServer)."""

    def __init__(self, store: Store, model_info: Callable[[], pb.ModelInfo],
                 live_status: Callable[[str], SeriesInfo | None], closing: threading.Event) -> None:
        self.store = store
        self.model_info = model_info
        self.live_status = live_status
        self.closing = closing
        self.page_tokens = PageTokens(store.secret("page-token"))
        # Who is calling, for the one answer that depends on it (exam identity in GetSeriesPreview); GrpcServer
        # installs its access control's. Until then nobody is identified, so identity is withheld from everyone.
        self.identify: Callable[[grpc.ServicerContext], Identity | None] = lambda context: None

    def _results(self, results: list[StudyResult]) -> list[pb.SeriesResult]:
        deliveries = self.store.exports.deliveries([r.info.series_uid for r in results])
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
        results = self.store.results.for_study(request.study_instance_uid)
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
        rows = self.store.results.page(size + 1, before_id=before, since=request.since_unix or None)
        page, more = rows[:size], len(rows) > size
        token = self.page_tokens.issue(page[-1][0], request.since_unix) if more else ""
        return pb.ListResultsResponse(results=self._results([r for _, r in page]), next_page_token=token)

    def StreamResults(self, request: pb.StreamResultsRequest, context: grpc.ServicerContext) -> Iterator:
        last = request.after_event_id
        try:
            newest = self.store.events.last_id()
            if last < 0:
                last = newest
            elif last > newest:
                # Resuming past the end means the client's id is from another database (a reset or another
                # appliance): waiting would silently skip the events up to that id.
                context.abort(grpc.StatusCode.OUT_OF_RANGE,
                              f"after_event_id {last} is beyond the newest event ({newest}); resume from 0")
            while context.is_active() and not self.closing.is_set():
                events = self.store.events.after(last, limit=100)
                for event in events:
                    last = event.id
                    if event.kind is EventKind.SR and not request.include_sr_updates:
                        continue
                    yield self._event_to_pb(event)
                if not events:
                    self.store.events.wait(last, timeout=STREAM_POLL_S)
        except sqlite3.ProgrammingError:
            if not self.closing.is_set():
                raise
            # The appliance is shutting down and closed its store under this stream: end it cleanly.

    def _event_to_pb(self, event: Event) -> pb.ResultEvent:
        if event.kind in (EventKind.SCORED, EventKind.SR):
            result = self.store.results.for_series(event.series_uid)
            kind = pb.ResultEvent.SCORED if event.kind is EventKind.SCORED else pb.ResultEvent.SR_UPDATED
            return pb.ResultEvent(event_id=event.id, kind=kind, result=self._result(result) if result else None)
        row = self.store.series.get(event.series_uid)
        return pb.ResultEvent(event_id=event.id, kind=pb.ResultEvent.FAILED,
                              status=status_from_row(row) if row else None)

    def GetSeriesStatus(self, request: pb.GetSeriesStatusRequest, context: grpc.ServicerContext):
        if not request.series_instance_uid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "series_instance_uid is required")
        live = self.live_status(request.series_instance_uid)
        if live is not None:
            return status_from_live(live)
        row = self.store.series.get(request.series_instance_uid)
        if row is not None:
            return status_from_row(row)
        context.abort(grpc.StatusCode.NOT_FOUND, "this series has not been seen")

    def GetSeriesPreview(self, request: pb.GetSeriesPreviewRequest, context: grpc.ServicerContext):
        if not request.series_instance_uid:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "series_instance_uid is required")
        result = self.store.results.for_series(request.series_instance_uid)
        if result is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no result for this series (yet)")
            raise AssertionError("context.abort returned")  # it raises; this keeps the type checker honest
        info = result.info
        withheld = identity_withheld(self.identify(context), context)
        identity = None if withheld else pb.ExamIdentity(accession_number=info.accession_number,
                                                         patient_id=info.patient_id, patient_name=info.patient_name)
        return pb.SeriesPreview(
            series_instance_uid=info.series_uid, station_name=info.station_name, identity=identity,
            identity_withheld=withheld,
            thumbnails=[pb.Thumbnail(position=t.position, label=t.label, width=t.width, height=t.height, png=t.png)
                        for t in self.store.thumbnails.for_series(info.series_uid)])

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext):
        return self.model_info()

    def AssessResult(self, request: pb.AssessResultRequest, context: grpc.ServicerContext):
        """admin only (serve/access.py). Validated here, stored by the truth store in one transaction."""
        def invalid(message: str) -> None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

        if not request.series_instance_uid:
            invalid("series_instance_uid is required")
        assessor = request.assessor.strip()
        if not 1 <= len(assessor) <= MAX_ASSESSOR or not assessor.isprintable():
            invalid(f"assessor is required: 1-{MAX_ASSESSOR} printable characters")
        if len(request.comment) > MAX_COMMENT:
            invalid(f"comment must be at most {MAX_COMMENT} characters")
        verdicts: dict[str, tuple[str, bool]] = {}
        for f in request.findings:
            if f.verdict not in _VERDICTS:
                invalid(f"finding {f.finding_id!r}: verdict must be ACCEPT, REJECT or CORRECT")
            if f.finding_id in verdicts:
                invalid(f"finding {f.finding_id!r} is assessed twice")
            verdicts[f.finding_id] = (_VERDICTS[f.verdict], f.corrected_value)
        if not verdicts:
            invalid("at least one finding must be assessed")
        try:
            update = self.store.truth.assess(request.series_instance_uid, verdicts, assessor, request.comment)
        except AssessmentError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND if exc.not_found else grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        log.info("assessment %d stored: %d finding(s) assessed, %d changed", update.record_id, len(verdicts),
                 update.changed)
        return pb.AssessResultResponse(assessment_id=update.record_id, findings_changed=update.changed)


@dataclass(frozen=True)
class GrpcTls:
    """TLS for the API: the server's certificate chain and key; with `client_ca`, mutual TLS (every client must
    present a certificate signed by it)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Loaded and checked now, so that a wrong file stops the start with a message instead of every call
        failing later. Raises ValueError naming the file."""
        try:
            check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            check.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"grpc.tls_cert {self.cert} / tls_key {self.key} cannot be used: {exc}") from None
        ca = None
        if self.client_ca is not None:
            try:
                ssl.create_default_context(cafile=str(self.client_ca))
                ca = self.client_ca.read_bytes()
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"grpc.tls_client_ca {self.client_ca} cannot be used: {exc}") from None
        return grpc.ssl_server_credentials([(self.key.read_bytes(), self.cert.read_bytes())],
                                           root_certificates=ca, require_client_auth=ca is not None)


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(server: grpc.Server, names: tuple[str, ...]) -> None:
    """Server reflection under both names: v1alpha (grpcio-reflection's) and v1, which current grpcurl and Postman
    ask for first. The two protocols are the same messages in another package, so v1 is served by the same
    servicer, and its descriptor (v1alpha's, renamed) is added to the pool so that v1 can describe itself."""
    from google.protobuf import descriptor_pb2, descriptor_pool
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    pool = descriptor_pool.Default()
    v1_file = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(v1_file)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto()
        reflection_pb2.DESCRIPTOR.CopyToProto(proto)
        proto.name, proto.package = v1_file, "grpc.reflection.v1"
        pool.Add(proto)
    names = (*names, reflection.SERVICE_NAME, REFLECTION_V1)
    servicer = reflection.ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}),))


class GrpcServer:
    """The gRPC server with health, reflection, TLS and access control. `port` 0 picks a free port; `bound_port`
    tells which."""

    def __init__(self, servicer: ApplianceServicer, host: str, port: int, max_workers: int = 16,
                 access: AccessPolicy | None = None, tls: GrpcTls | None = None,
                 on_denied: Callable[[str, str], None] = lambda method, reason: None) -> None:
        access = access or AccessPolicy()
        if access.max_streams > max_workers - 4:
            raise ValueError("keep at least 4 gRPC workers free of result streams")
        self.servicer = servicer
        self.access = AccessControl(access, on_denied)
        servicer.identify = self.access.identify
        # Each open result stream holds a worker thread; max_workers bounds concurrent clients.
        # Calls beyond maximum_concurrent_rpcs are refused (RESOURCE_EXHAUSTED) instead of queueing without bound.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                             thread_name_prefix="scanside-grpc"),
                                  interceptors=[self.access], maximum_concurrent_rpcs=4 * max_workers)
        pb_grpc.add_ApplianceServicer_to_server(servicer, self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        _enable_reflection(self.server, (SERVICE_NAME, health.SERVICE_NAME))
        self.set_serving(False)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if tls is not None:
            self.bound_port = self.server.add_secure_port(address, tls.credentials())
        else:
            self.bound_port = self.server.add_insecure_port(address)
        if self.bound_port == 0:
            raise OSError(f"could not listen for gRPC on {address}")
        self.tls = tls
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

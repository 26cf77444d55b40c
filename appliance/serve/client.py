"""A gRPC client for the appliance, and the technologists' live results table that `scanside results` shows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from appliance.api import pb, pb_grpc


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call (works over TLS and over loopback plaintext alike)."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details.method, details.timeout, [*(details.metadata or ()), self._metadata],
                            details.credentials, details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression


class ApplianceClient:
    """`tls_ca` turns TLS on and verifies the appliance's certificate against it; `tls_cert`/`tls_key` present a
    client certificate (mutual TLS); `token` is a client token from `scanside clients add`. `server_name` checks
    the certificate for that name when the address is an IP the certificate does not list."""

    def __init__(self, address: str, timeout_s: float = 10.0, tls_ca: Path | None = None,
                 tls_cert: Path | None = None, tls_key: Path | None = None, token: str | None = None,
                 server_name: str | None = None) -> None:
        self.address = address
        self.timeout_s = timeout_s
        if tls_ca is not None or tls_cert is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=Path(tls_ca).read_bytes() if tls_ca else None,
                private_key=Path(tls_key).read_bytes() if tls_key else None,
                certificate_chain=Path(tls_cert).read_bytes() if tls_cert else None)
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address)
        calls = grpc.intercept_channel(self.channel, _Bearer(token)) if token else self.channel
        self.stub = pb_grpc.ApplianceStub(calls)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ApplianceClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def wait_until_serving(self, timeout_s: float = 60.0) -> None:
        """Poll grpc.health.v1 until the appliance says SERVING (engine loaded and warm)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                reply = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"appliance at {self.address} not serving after {timeout_s:g} s")
            time.sleep(0.1)

    def model_info(self) -> pb.ModelInfo:
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self.timeout_s)

    def study(self, study_uid: str) -> list[pb.SeriesResult]:
        return list(self.stub.GetStudyResult(pb.GetStudyResultRequest(study_instance_uid=study_uid),
                                             timeout=self.timeout_s).results)

    def series_status(self, series_uid: str) -> pb.SeriesStatus:
        return self.stub.GetSeriesStatus(pb.GetSeriesStatusRequest(series_instance_uid=series_uid),
                                         timeout=self.timeout_s)

    def preview(self, series_uid: str) -> pb.SeriesPreview:
        """The slices the model saw, the station and (for a named client over TLS) the exam identity."""
        return self.stub.GetSeriesPreview(pb.GetSeriesPreviewRequest(series_instance_uid=series_uid),
                                          timeout=self.timeout_s)

    def list_all(self, page_size: int = 50) -> Iterator[pb.SeriesResult]:
        token = ""
        while True:
            page = self.stub.ListResults(pb.ListResultsRequest(page_size=page_size, page_token=token),
                                         timeout=self.timeout_s)
            yield from page.results
            if not page.next_page_token:
                return
            token = page.next_page_token

    def assess(self, series_uid: str, verdicts: dict[str, str | bool], assessor: str,
               comment: str = "") -> pb.AssessResultResponse:
        """`verdicts`: finding id -> "accept", "reject", or a bool (corrected to that value)."""
        findings = []
        for finding_id, verdict in verdicts.items():
            if isinstance(verdict, bool):
                findings.append(pb.FindingAssessment(finding_id=finding_id, verdict=pb.FindingAssessment.CORRECT,
                                                     corrected_value=verdict))
            else:
                kind = {"accept": pb.FindingAssessment.ACCEPT, "reject": pb.FindingAssessment.REJECT}[verdict]
                findings.append(pb.FindingAssessment(finding_id=finding_id, verdict=kind))
        return self.stub.AssessResult(pb.AssessResultRequest(series_instance_uid=series_uid, findings=findings,
                                                             assessor=assessor, comment=comment),
                                      timeout=self.timeout_s)

    def stream(self, after_event_id: int = 0, include_sr_updates: bool = False) -> ResultStream:
        """Result events from `after_event_id` on, live. Cancel with `.cancel()` on the returned iterator."""
        return self.stub.StreamResults(pb.StreamResultsRequest(after_event_id=after_event_id,
                                                               include_sr_updates=include_sr_updates))


class ResultStream(Protocol):
    """What `ApplianceClient.stream` returns: gRPC's response iterator, which can also be cancelled."""

    def __iter__(self) -> Iterator[pb.ResultEvent]: ...
    def __next__(self) -> pb.ResultEvent: ...
    def cancel(self) -> bool: ...





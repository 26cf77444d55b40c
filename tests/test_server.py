"""A real gRPC server on a free loopback port over a real SQLite store, and a real client."""

from __future__ import annotations

import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_store import info, result

from appliance.api import pb
from appliance.handovers import SeriesState
from appliance.serve.access import AccessPolicy
from appliance.serve.client import ApplianceClient
from appliance.serve.server import SERVICE_NAME, ApplianceServicer, GrpcServer
from appliance.store import Store


@pytest.fixture
def served(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    live = {}
    servicer = ApplianceServicer(store, lambda: pb.ModelInfo(bundle_name="test", research_only=True), live.get,
                                 threading.Event())
    server = GrpcServer(servicer, "127.0.0.1", 0)
    server.start()
    client = ApplianceClient(server.address, timeout_s=5)
    yield store, server, client, live
    client.close()
    server.stop(0.5)
    store.close()


def test_health_follows_readiness_and_reflection_lists_the_services(served):
    _, server, client, _ = served
    def check():
        return client.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status

    assert check() == health_pb2.HealthCheckResponse.NOT_SERVING
    server.set_serving(True)
    assert check() == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    (reply,) = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for s in reply.list_services_response.service}
    assert {"scanside.v1.Appliance", "grpc.health.v1.Health"} <= names


def test_results_status_and_errors(served):
    store, _, client, live = served
    store.results.save(result(info(1)))
    (r,) = client.study("1.2.1")
    assert r.findings[0].finding_id == "lv_dilation" and r.findings[0].positive and r.needs_review
    assert r.timings.preprocess_ms == 5.0
    with pytest.raises(grpc.RpcError) as err:
        client.study("9.9.9")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert client.series_status("1.2.1.1").state == SeriesState.SCORED.value
    live["1.2.7.1"] = info(7)
    status = client.series_status("1.2.7.1")
    assert status.state == "receiving" and status.images_received == 300 and status.images_expected == 300
    assert client.model_info().bundle_name == "test"


def test_paging_covers_every_result_once(served):
    store, _, client, _ = served
    for n in range(1, 8):
        store.results.save(result(info(n)))
    seen = [r.study_instance_uid for r in client.list_all(page_size=3)]
    assert seen == [f"1.2.{n}" for n in range(7, 0, -1)]
    with pytest.raises(grpc.RpcError) as err:
        client.stub.ListResults(pb.ListResultsRequest(page_token="garbage"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("token", ["99999999999999999999999999", "-5", "5", "0", "AAAA", "%%%", "é",
                                   "AQAAAAAAAAAFAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"])
def test_page_tokens_the_server_never_issued_are_invalid_argument(served, token):
    """A 26-digit token used to overflow SQLite (UNKNOWN and a traceback); "-5" was taken as a position."""
    store, _, client, _ = served
    for n in range(1, 4):
        store.results.save(result(info(n)))
    with pytest.raises(grpc.RpcError) as err:
        client.stub.ListResults(pb.ListResultsRequest(page_token=token), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "issued" in err.value.details()


def test_page_tokens_survive_a_restart_and_are_bound_to_their_query(served, tmp_path):
    store, _, client, _ = served
    for n in range(1, 6):
        store.results.save(result(info(n)))
    first = client.stub.ListResults(pb.ListResultsRequest(page_size=2), timeout=5)
    assert first.next_page_token
    with pytest.raises(grpc.RpcError) as err:  # the same token with another query is refused, not misread
        client.stub.ListResults(pb.ListResultsRequest(page_size=2, page_token=first.next_page_token,
                                                      since_unix=1.0), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    other = Store(tmp_path / "db.sqlite")  # a restarted appliance on the same data folder
    try:
        servicer = ApplianceServicer(other, lambda: pb.ModelInfo(), lambda uid: None, threading.Event())
        assert servicer.page_tokens.read(first.next_page_token, 0.0) == 4
        foreign = ApplianceServicer(Store(tmp_path / "other.sqlite"), lambda: pb.ModelInfo(), lambda uid: None,
                                    threading.Event())
        with pytest.raises(ValueError):  # another appliance's token
            foreign.page_tokens.read(first.next_page_token, 0.0)
    finally:
        other.close()


def test_stream_resumes_without_gaps_or_repeats(served):
    store, _, client, _ = served
    for n in range(1, 4):
        store.results.save(result(info(n)))
    stream = client.stream(after_event_id=0)
    first = [next(stream) for _ in range(3)]
    stream.cancel()
    assert [e.event_id for e in first] == [1, 2, 3]
    # The client goes away; results keep coming; it resumes from the last id it saw.
    for n in range(4, 6):
        store.results.save(result(info(n)))
    store.series.set_state(info(6), SeriesState.FAILED, "preprocess: too few slices")
    resumed = client.stream(after_event_id=first[-1].event_id)
    got = [next(resumed) for _ in range(3)]
    threading.Timer(0.2, lambda: store.results.save(result(info(7)))).start()
    got.append(next(resumed))  # a live one, delivered as it happens
    resumed.cancel()
    assert [e.event_id for e in got] == [4, 5, 6, 7]
    assert got[2].kind == pb.ResultEvent.FAILED and got[2].status.detail == "preprocess: too few slices"
    assert got[3].result.study_instance_uid == "1.2.7"


def test_live_end_skips_history(served):
    store, _, client, _ = served
    store.results.save(result(info(1)))
    stream = client.stream(after_event_id=-1)
    threading.Timer(0.3, lambda: store.results.save(result(info(2)))).start()
    event = next(stream)
    stream.cancel()
    assert event.result.study_instance_uid == "1.2.2"


def test_resuming_past_the_newest_event_is_refused(served):
    store, _, client, _ = served
    store.results.save(result(info(1)))
    stream = client.stream(after_event_id=99)
    with pytest.raises(grpc.RpcError) as err:
        next(stream)
    assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE


def test_streams_are_capped_and_queries_still_answer(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    servicer = ApplianceServicer(store, lambda: pb.ModelInfo(), lambda uid: None, threading.Event())
    server = GrpcServer(servicer, "127.0.0.1", 0, max_workers=6,
                        access=AccessPolicy(max_streams=2, max_streams_per_client=2))
    server.start()
    client = ApplianceClient(server.address, timeout_s=5)
    try:
        open_streams = [client.stream(after_event_id=0) for _ in range(2)]
        store.results.save(result(info(1)))
        for s in open_streams:
            assert next(s).event_id == 1
        third = client.stream(after_event_id=-1)
        with pytest.raises(grpc.RpcError) as err:
            next(third)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # Health still answers within its deadline while the streams hold their threads.
        reply = client.health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING  # as set: nobody called set_serving
        for s in open_streams:
            s.cancel()
    finally:
        client.close()
        server.stop(0.5)
        store.close()

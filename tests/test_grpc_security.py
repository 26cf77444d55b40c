"""Transport security and identity on the gRPC API (issue 9): TLS and mutual TLS with certificates made by openssl,
per-client tokens and roles from a clients file, result streams shared fairly, reflection v1. Real gRPC server on
a loopback port, real clients."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from test_store import info, result
from tls_factory import TestCA, needs_openssl, self_signed

from appliance.api import pb
from appliance.config import ConfigError, Settings
from appliance.serve.access import AccessPolicy, Client, hash_token, load_clients, new_token, save_clients
from appliance.serve.client import ApplianceClient
from appliance.serve.server import SERVICE_NAME, ApplianceServicer, GrpcServer, GrpcTls
from appliance.store import Store


@pytest.fixture
def serve(tmp_path):
    """Start a gRPC server over a store holding one result: serve(access=..., tls=...) -> (address, denials)."""
    started = []

    def start(access: AccessPolicy | None = None, tls: GrpcTls | None = None):
        store = Store(tmp_path / f"db{len(started)}.sqlite")
        store.results.save(result(info(1)))
        denied: list[tuple[str, str]] = []
        servicer = ApplianceServicer(store, lambda: pb.ModelInfo(bundle_name="test"), lambda uid: None,
                                     threading.Event())
        server = GrpcServer(servicer, "127.0.0.1", 0, access=access, tls=tls,
                            on_denied=lambda method, reason: denied.append((method, reason)))
        server.start()
        started.append((server, store))
        return f"127.0.0.1:{server.bound_port}", denied

    yield start
    for server, store in started:
        server.stop(0.2)
        store.close()


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_tokens_and_roles(serve, caplog):
    display, ops = new_token(), new_token()
    policy = AccessPolicy(clients=(Client("console-mr1", frozenset({"display"}), hash_token(display)),
                                   Client("grafana", frozenset({"ops"}), hash_token(ops))),
                          anonymous_roles=frozenset())
    address, denied = serve(access=policy)
    with ApplianceClient(address, token=display) as c:
        assert [r.study_instance_uid for r in c.list_all()] == ["1.2.1"]
        assert c.model_info().bundle_name == "test"
    with ApplianceClient(address, token=ops) as c:
        assert c.model_info().bundle_name == "test"  # ops reads model information...
        assert code_of(lambda: list(c.list_all())) == grpc.StatusCode.PERMISSION_DENIED  # ...not results
    with ApplianceClient(address, token="not-a-token-anyone-issued") as c:
        assert code_of(c.model_info) == grpc.StatusCode.UNAUTHENTICATED
    with ApplianceClient(address) as c:  # anonymous, with no roles on this server
        assert code_of(c.model_info) == grpc.StatusCode.PERMISSION_DENIED
        assert c.health.Check(health_pb2.HealthCheckRequest(), timeout=5) is not None  # health answers everyone
    assert ("ListResults", "permission_denied") in denied and ("GetModelInfo", "unauthenticated") in denied
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "grafana" in logged and "ListResults" in logged
    assert "1.2.1" not in logged and display not in logged and ops not in logged


def test_result_streams_are_shared_fairly(serve):
    a, b = new_token(), new_token()
    policy = AccessPolicy(clients=(Client("a", frozenset({"display"}), hash_token(a)),
                                   Client("b", frozenset({"display"}), hash_token(b))),
                          max_streams=4, max_streams_per_client=2)
    address, denied = serve(access=policy)
    with ApplianceClient(address, token=a) as ca, ApplianceClient(address, token=b) as cb:
        held = [ca.stream(after_event_id=0) for _ in range(2)]
        assert all(next(s).event_id == 1 for s in held)
        third = ca.stream(after_event_id=0)
        with pytest.raises(grpc.RpcError) as err:
            next(third)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "this client" in err.value.details()
        others = [cb.stream(after_event_id=0) for _ in range(2)]  # the other client still gets its share
        assert all(next(s).event_id == 1 for s in others)
        for s in held + others:
            s.cancel()
    assert ("StreamResults", "stream_limit") in denied


@needs_openssl
def test_tls_and_mutual_tls_with_roles_from_the_certificate(serve, tmp_path):
    ca = TestCA(tmp_path / "ca")
    server_key, server_cert = ca.issue("scanside.example", client=False)
    ops_key, ops_cert = ca.issue("ops-probe", client=True)
    console_key, console_cert = ca.issue("console-mr1", client=True)
    policy = AccessPolicy(clients=(Client("console", frozenset({"display"}), certificate_cn="console-mr1"),
                                   Client("probe", frozenset({"ops"}), certificate_cn="ops-probe")),
                          anonymous_roles=frozenset())
    address, _ = serve(access=policy, tls=GrpcTls(server_cert, server_key, client_ca=ca.cert))
    with ApplianceClient(address, tls_ca=ca.cert, tls_cert=console_cert, tls_key=console_key) as c:
        assert [r.study_instance_uid for r in c.list_all()] == ["1.2.1"]
    with ApplianceClient(address, tls_ca=ca.cert, tls_cert=ops_cert, tls_key=ops_key) as c:
        assert c.model_info().bundle_name == "test"
        assert code_of(lambda: list(c.list_all())) == grpc.StatusCode.PERMISSION_DENIED
    with ApplianceClient(address, tls_ca=ca.cert, timeout_s=3) as c:  # no client certificate: no handshake
        assert code_of(c.model_info) == grpc.StatusCode.UNAVAILABLE
    with ApplianceClient(address, timeout_s=3) as c:  # plaintext to a TLS server
        assert code_of(c.model_info) == grpc.StatusCode.UNAVAILABLE
    stranger = TestCA(tmp_path / "stranger")
    s_key, s_cert = stranger.issue("console-mr1", client=True)  # the right name from the wrong CA
    with ApplianceClient(address, tls_ca=ca.cert, tls_cert=s_cert, tls_key=s_key, timeout_s=3) as c:
        assert code_of(c.model_info) == grpc.StatusCode.UNAVAILABLE


@needs_openssl
def test_server_tls_verifies_against_the_ca_the_client_was_given(serve, tmp_path):
    key, cert = self_signed(tmp_path / "tls", "scanside")
    address, _ = serve(tls=GrpcTls(cert, key))
    with ApplianceClient(address, tls_ca=cert) as c:
        assert c.model_info().bundle_name == "test"
    _, other = self_signed(tmp_path / "other", "impostor")
    with ApplianceClient(address, tls_ca=other, timeout_s=3) as c:
        assert code_of(c.model_info) == grpc.StatusCode.UNAVAILABLE


@needs_openssl
def test_a_bad_certificate_stops_the_start_with_a_clear_error(appliance, tmp_path):
    key, cert = self_signed(tmp_path / "tls", "scanside")
    _, other_cert = self_signed(tmp_path / "other", "other")
    with pytest.raises(ConfigError, match="tls_cert"):
        appliance(grpc={"tls_cert": str(other_cert), "tls_key": str(key)})  # key and certificate do not match
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="tls_client_ca"):
        appliance(grpc={"tls_cert": str(cert), "tls_key": str(key), "tls_client_ca": str(garbage)})


def test_plaintext_only_on_loopback_unless_allowed():
    with pytest.raises(ConfigError, match="loopback"):
        Settings().replace(grpc={"host": "0.0.0.0"})
    assert Settings().replace(grpc={"host": "0.0.0.0", "allow_plaintext_remote": True}).grpc.host == "0.0.0.0"
    with pytest.raises(ConfigError, match="anonymous_roles"):
        Settings().replace(grpc={"anonymous_roles": ["root"]})


def test_the_appliance_enforces_its_clients_file(appliance, tmp_path):
    token = new_token()
    clients = tmp_path / "clients.toml"
    save_clients(clients, [Client("console-mr1", frozenset({"display"}), hash_token(token))])
    assert token not in clients.read_text() and load_clients(clients)[0].name == "console-mr1"
    app = appliance(grpc={"clients_file": str(clients), "anonymous_roles": ["ops"]})
    with ApplianceClient(app.grpc_address) as anonymous:
        assert anonymous.model_info().bundle_name  # ops, as configured for anonymous callers
        assert code_of(lambda: list(anonymous.list_all())) == grpc.StatusCode.PERMISSION_DENIED
    with ApplianceClient(app.grpc_address, token=token) as console:
        assert list(console.list_all()) == []
    denied = app.registry.get_sample_value("scanside_grpc_denied_total",
                                           {"method": "ListResults", "reason": "permission_denied"})
    assert denied == 1


def test_a_malformed_clients_file_is_refused(appliance, tmp_path):
    clients = tmp_path / "clients.toml"
    clients.write_text('[[client]]\nname = "x"\nroles = ["superuser"]\ntoken_sha256 = "00"\n')
    with pytest.raises(ConfigError, match="roles"):
        appliance(grpc={"clients_file": str(clients)})


def test_reflection_answers_v1_and_v1alpha(serve):
    address, _ = serve()
    channel = grpc.insecure_channel(address)
    try:
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                         request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                         response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol="grpc.reflection.v1.ServerReflection")]
            listed, described, itself = list(call(iter(requests), timeout=5))
            names = {s.name for s in listed.list_services_response.service}
            assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
            assert described.file_descriptor_response.file_descriptor_proto
            assert itself.file_descriptor_response.file_descriptor_proto, version
    finally:
        channel.close()


def test_clients_made_with_the_cli_are_recognised(appliance, tmp_path, capsys):
    from appliance.cli import main

    clients = tmp_path / "clients.toml"
    assert main(["clients", "--file", str(clients), "add", "console-mr1", "--role", "display"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert hash_token(token) in clients.read_text() and token not in clients.read_text()
    app = appliance(grpc={"clients_file": str(clients), "anonymous_roles": []})
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    assert main(["results", "--address", app.grpc_address, "--token-file", str(token_file)]) == 0
    assert "positive findings" in capsys.readouterr().out
    assert main(["results", "--address", app.grpc_address]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert main(["clients", "--file", str(clients), "remove", "console-mr1"]) == 0
    assert load_clients(clients) == ()


def _own_address() -> str | None:
    """A non-loopback address of this machine, if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_anonymous_callers_from_other_hosts_get_no_role(tmp_path):
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    store = Store(tmp_path / "db.sqlite")
    servicer = ApplianceServicer(store, lambda: pb.ModelInfo(bundle_name="test"), lambda uid: None,
                                 threading.Event())
    server = GrpcServer(servicer, "0.0.0.0", 0)  # anonymous_roles display and ops: for local callers only
    server.start()
    try:
        with ApplianceClient(f"{address}:{server.bound_port}") as remote:
            assert code_of(remote.model_info) == grpc.StatusCode.PERMISSION_DENIED
        with ApplianceClient(f"127.0.0.1:{server.bound_port}") as local:
            assert local.model_info().bundle_name == "test"
    finally:
        server.stop(0.2)
        store.close()


def test_every_kind_of_stream_takes_a_slot_and_gives_it_back(serve):
    """Reflection sessions and health Watch are open to everyone and hold a thread each, like result streams:
    before, 12 reflection streams from a caller without a token starved health checks."""
    address, denied = serve(access=AccessPolicy(max_streams=4, max_streams_per_client=2))
    channel = grpc.insecure_channel(address)
    reflect = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                    request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                    response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    gate = threading.Event()

    def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        gate.wait(10)  # keep the session open

    try:
        sessions = [reflect(requests()) for _ in range(2)]
        for session in sessions:
            next(session)
        third = reflect(requests())
        with pytest.raises(grpc.RpcError) as err:
            next(third)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with ApplianceClient(address) as c:
            assert c.health.Check(health_pb2.HealthCheckRequest(), timeout=2) is not None
        for session in sessions:
            session.cancel()
        # The slots come back once the streams end.
        with ApplianceClient(address) as c:
            deadline = time.monotonic() + 5
            while True:
                stream = c.stream(after_event_id=0)
                try:
                    assert next(stream).event_id == 1
                    stream.cancel()
                    break
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    assert time.monotonic() < deadline, "the slots never came back"
    finally:
        gate.set()
        channel.close()
    assert ("other", "stream_limit") in denied

"""The MLLP listener on a real loopback port: framed messages over a socket, ACK codes, several messages on one
connection, a refused peer and a refused sending application, a too-large message, bytes outside a frame, TLS and
mutual TLS with generated certificates, and a sink that raises (AE, and the listener serves on)."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from appliance.config import Hl7Config
from appliance.dev.oru import MllpClient, oru_message
from appliance.dev.synth import plan_study
from appliance.truth.mllp import MllpListener
from appliance.truth.oru import FinalReport
from tests.tls_factory import TestCA, needs_openssl, self_signed


@pytest.fixture(scope="module")
def plans():
    return [plan_study(seed=300 + i, vendor="ABC"[i % 3]) for i in range(4)]


class Sink:
    def __init__(self) -> None:
        self.reports: list[FinalReport] = []
        self.fail_next = 0

    def __call__(self, report: FinalReport) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("disk full")
        self.reports.append(report)


@pytest.fixture
def running():
    started: list[MllpListener] = []

    def start(sink=None, **settings) -> tuple[MllpListener, Sink]:
        sink = sink or Sink()
        listener = MllpListener(Hl7Config(port=0, **settings), sink)
        listener.start()
        started.append(listener)
        return listener, sink

    yield start
    for listener in started:
        listener.stop()


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_reports_on_one_connection_are_stored_then_acknowledged(running, plans):
    listener, sink = running()
    assert listener.settings.host == "127.0.0.1"
    with MllpClient("127.0.0.1", listener.port) as client:
        assert client.send(oru_message(plans[0], "C1")) == ("AA", "C1")
        assert client.send(oru_message(plans[1], "C2", status="C")) == ("AA", "C2")
        assert client.send(oru_message(plans[2], "C3", status="P")) == ("AA", "C3")
        assert client.send("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ADT^A01|C4|P|2.5\rPID|1") == ("AR", "C4")
        assert client.send("MSH|^~\\&|RIS|H|SCANSIDE||20240102||ORU^R01|C5|P|2.5\rPID|1") == ("AE", "C5")
        assert client.send("not hl7 at all")[0] == "AR"
        assert client.send(oru_message(plans[3], "C6")) == ("AA", "C6")  # still serving
    assert [r.accession_number for r in sink.reports] == [plans[i].accession_number for i in (0, 1, 3)]
    assert sink.reports[1].corrected
    assert listener.counts["final"] == 2 and listener.counts["preliminary"] == 1


def test_two_messages_in_one_write_get_two_acks(running, plans):
    listener, sink = running()
    frames = b"".join(b"\x0b" + oru_message(p, f"B{i}").encode() + b"\x1c\r\n" for i, p in enumerate(plans[:2]))
    with MllpClient("127.0.0.1", listener.port) as client:
        client.sock.sendall(frames)
        assert [client.read_ack().split("\r")[1] for _ in range(2)] == ["MSA|AA|B0|final", "MSA|AA|B1|final"]
    assert len(sink.reports) == 2


def test_a_sink_that_raises_gets_ae_and_the_listener_serves_on(running, plans, caplog):
    sink = Sink()
    sink.fail_next = 1
    listener, _ = running(sink)
    with MllpClient("127.0.0.1", listener.port) as client:
        assert client.send(oru_message(plans[0], "R1")) == ("AE", "R1")
        assert client.send(oru_message(plans[0], "R1")) == ("AA", "R1")  # the sender's retry
    with MllpClient("127.0.0.1", listener.port) as client:
        assert client.send(oru_message(plans[1], "R2")) == ("AA", "R2")
    assert len(sink.reports) == 2 and listener.counts["sink_error"] == 1
    for p in plans[:2]:  # no identifier in any log line
        assert p.accession_number not in caplog.text and p.study_uid not in caplog.text
        assert p.patient_id not in caplog.text


def test_a_peer_not_allowed_is_closed_unanswered(running, plans):
    listener, sink = running(allowed_peers=("10.1.2.0/24",))
    with MllpClient("127.0.0.1", listener.port) as client, pytest.raises((ConnectionError, OSError)):
        client.send(oru_message(plans[0], "P1"))
    assert sink.reports == [] and wait_for(lambda: listener.counts["refused_peer"] == 1)
    allowed, _ = running(allowed_peers=("127.0.0.1",))
    with MllpClient("127.0.0.1", allowed.port) as client:
        assert client.send(oru_message(plans[0], "P2")) == ("AA", "P2")


def test_a_sending_application_not_allowed_is_rejected(running, plans):
    listener, sink = running(allowed_applications=("REPORTING",))
    with MllpClient("127.0.0.1", listener.port) as client:
        assert client.send(oru_message(plans[0], "S1")) == ("AR", "S1")
        assert client.send(oru_message(plans[0], "S2", sending_application="REPORTING")) == ("AA", "S2")
    assert len(sink.reports) == 1


def test_a_too_large_message_is_rejected_and_its_connection_closed(running, plans):
    listener, sink = running(max_message_bytes=4096)
    big = oru_message(plans[0], "L1", text="LV dilated. " * 1000)
    with MllpClient("127.0.0.1", listener.port) as client:
        assert client.send(big) == ("AR", "L1")
        with pytest.raises((ConnectionError, OSError)):
            client.send(oru_message(plans[0], "L2"))
    with MllpClient("127.0.0.1", listener.port) as client:  # the listener itself serves on
        assert client.send(oru_message(plans[0], "L3")) == ("AA", "L3")
    assert [r.control_id for r in sink.reports] == ["L3"] and listener.counts["too_large"] == 1


def test_bytes_outside_a_frame_close_the_connection(running, plans):
    listener, _ = running()
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert sock.recv(100) == b""
    assert listener.counts["refused_framing"] == 1


def test_an_idle_connection_is_closed(running):
    listener, _ = running(idle_timeout_s=0.3)
    with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as sock:
        sock.sendall(b"\x0bMSH|")  # a frame begun and never finished
        assert sock.recv(100) == b""
    assert wait_for(lambda: listener.counts["closed_idle"] == 1)


def test_connections_beyond_the_limit_are_refused(running, plans):
    listener, _ = running(max_connections=1)
    with MllpClient("127.0.0.1", listener.port) as first:
        assert first.send(oru_message(plans[0], "K1"))[0] == "AA"
        with MllpClient("127.0.0.1", listener.port) as second, pytest.raises((ConnectionError, OSError)):
            second.send(oru_message(plans[0], "K2"))
    assert listener.counts["refused_connection_limit"] == 1


@needs_openssl
def test_tls_with_a_self_signed_certificate(running, plans, tmp_path):
    key, cert = self_signed(tmp_path, "mllp")
    listener, sink = running(tls_cert=cert, tls_key=key)
    ctx = ssl.create_default_context(cafile=str(cert))
    with MllpClient("127.0.0.1", listener.port, tls=ctx) as client:
        assert client.send(oru_message(plans[0], "T1")) == ("AA", "T1")
    with MllpClient("127.0.0.1", listener.port) as plain, pytest.raises((ConnectionError, OSError)):
        plain.send(oru_message(plans[0], "T2"))  # plaintext to a TLS listener: no answer
    assert [r.control_id for r in sink.reports] == ["T1"]
    assert wait_for(lambda: listener.counts["refused_tls"] == 1)


@needs_openssl
def test_mutual_tls_requires_a_client_certificate_from_the_ca(running, plans, tmp_path):
    ca = TestCA(tmp_path / "ca")
    server_key, server_cert = ca.issue("mllp-server")
    client_key, client_cert = ca.issue("ris", client=True)
    listener, sink = running(tls_cert=server_cert, tls_key=server_key, tls_client_ca=ca.cert)
    ctx = ssl.create_default_context(cafile=str(ca.cert))
    with pytest.raises((ConnectionError, OSError)), MllpClient("127.0.0.1", listener.port, tls=ctx) as anonymous:
        anonymous.send(oru_message(plans[0], "M1"))
    ctx.load_cert_chain(str(client_cert), str(client_key))
    with MllpClient("127.0.0.1", listener.port, tls=ctx) as client:
        assert client.send(oru_message(plans[0], "M2")) == ("AA", "M2")
    assert [r.control_id for r in sink.reports] == ["M2"]


def test_the_connections_gauge_follows_open_connections(plans, tmp_path):
    """scanside_hl7_connections on a real registry, from the listener the pipeline builds."""
    from prometheus_client import CollectorRegistry

    from appliance.config import Settings
    from appliance.metrics import Metrics
    from appliance.pipeline.build import build_mllp
    from appliance.store import Store

    registry = CollectorRegistry()
    store = Store(tmp_path / "scanside.db")
    listener = build_mllp(Settings().replace(hl7={"enabled": "true", "port": "0"}), store, Metrics(registry))
    assert listener is not None
    listener.start()

    def gauge() -> float | None:
        return registry.get_sample_value("scanside_hl7_connections")

    try:
        assert gauge() == 0
        with MllpClient("127.0.0.1", listener.port) as first, MllpClient("127.0.0.1", listener.port) as second:
            assert first.send(oru_message(plans[0], "G1"))[0] == "AA"
            assert second.send(oru_message(plans[1], "G2"))[0] == "AA"
            assert gauge() == 2
        assert wait_for(lambda: gauge() == 0)
    finally:
        listener.stop()
        store.close()

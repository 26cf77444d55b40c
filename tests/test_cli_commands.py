"""`scanside results`, `scanside status` and `scanside serve` as an operator runs them: a real appliance (gRPC,
Prometheus, the C-STORE receiver) fed by `scanside synth --send`, the commands run as processes that read the
appliance's address, TLS and token from `--config`."""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import wait_for
from tls_factory import needs_openssl, self_signed

from appliance.cli import main
from appliance.dev.served import ServedAppliance, free_port
from appliance.dev.synth.scanner import demo_cohort
from appliance.serve.client import ApplianceClient

pytestmark = pytest.mark.slow


@pytest.fixture
def scanside(capsys, monkeypatch):
    """Run a scanside command line in this process at a terminal width: (exit code, stdout, stderr)."""
    monkeypatch.delenv("SCANSIDE_TOKEN", raising=False)

    def run(*args: str, columns: int = 100) -> subprocess.CompletedProcess:
        monkeypatch.setenv("COLUMNS", str(columns))
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def client_config(path: Path, app, **client: str) -> Path:
    """What an operator's configuration says about this appliance: its ports, TLS and a [client] section."""
    grpc = f"port = {app.grpc_address.rsplit(':', 1)[1]}\n"
    if app.settings.grpc.tls_cert is not None:
        grpc += f'tls_cert = "{app.settings.grpc.tls_cert}"\ntls_key = "{app.settings.grpc.tls_key}"\n'
    text = f"[grpc]\n{grpc}[metrics]\nport = {app.metrics_port}\n"
    if client:
        text += "[client]\n" + "".join(f'{k} = "{v}"\n' for k, v in client.items())
    path.write_text(text)
    return path


def test_synth_sends_to_the_receiver_and_results_and_status_show_it_at_every_width(appliance, tmp_path,
                                                                                    scanside):
    app = appliance(dicom={"enabled": True, "port": 0}, export={"folder": str(tmp_path / "sr")})
    port = app.pipeline.receiver.port
    sent = scanside("synth", "--vendor", "B", "--studies", "1", "--seed", "3", "--send", f"127.0.0.1:{port}",
                    "--calling-ae", "MRI1")
    said = sent.stdout
    assert sent.returncode == 0, sent.stderr
    assert re.search(r"203 instances sent to SCANSIDE at 127\.0\.0\.1:\d+", said), said
    with ApplianceClient(app.grpc_address) as client:
        (scored,) = wait_for(lambda: list(client.list_all()), timeout=90, what="the sent study scored")
    (Path(app.settings.paths.incoming) / "junk.dcm").write_bytes(b"not DICOM at all" * 64)
    config = client_config(tmp_path / "console.toml", app)

    for columns in (60, 100, 160):
        done = scanside("results", "--config", str(config), columns=columns)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert max(map(len, lines)) <= columns and scored.series_key in done.stdout, done.stdout
        assert "Borealis Healthcare" in " ".join(lines) or {"Borealis", "Healthcare"} <= set(done.stdout.split())
        for f in scored.findings:  # a positive's probability beside it, never below 0.50
            if f.positive and not scored.not_assessable:
                assert f"{f.name.split()[-1]} {f.probability:.2f}" in done.stdout and f.probability >= 0.5, \
                    done.stdout
        # The station from GetSeriesPreview; no accession number for an anonymous caller over plaintext.
        (plan,) = demo_cohort(1, 3, vendors=["B"])
        assert "SYNTHB" in done.stdout and plan.accession_number not in done.stdout, done.stdout

    status = wait_for(lambda: (s := scanside("status", "--config", str(config))).returncode == 0
                      and "quarantine  1 files" in s.stdout and s, timeout=90, interval=0.2,
                      what="status, the file quarantined")
    text = status.stdout
    assert f"{app.grpc_address}: READY" in text
    assert "model       placeholder" in text and "onnxruntime" in text and "mode        assist" in text
    assert re.search(r"queue\s+0 series waiting for the engine", text)
    assert "quarantine  1 files since start (not_dicom 1)" in text
    assert re.search(r"SR backlog\s+0 pending, 0 failed", text)
    assert f"http://127.0.0.1:{app.metrics_port}/metrics" in text


def test_status_and_results_say_clearly_when_nothing_answers(tmp_path, scanside):
    port = free_port()
    config = tmp_path / "c.toml"
    config.write_text(f"[grpc]\nport = {port}\n")
    for command in ("status", "results"):
        done = scanside(command, "--config", str(config))
        assert done.returncode == 2 and done.stdout == ""
        assert len(done.stderr.strip().splitlines()) == 1 and f"127.0.0.1:{port}" in done.stderr


@needs_openssl
def test_results_and_status_take_tls_and_the_token_from_the_config(appliance, tmp_path, scanside):
    key, cert = self_signed(tmp_path / "tls", "scanside")
    clients = tmp_path / "clients.toml"
    added = scanside("clients", "--file", str(clients), "add", "console", "--role", "display", "--role", "ops")
    assert added.returncode == 0
    (tmp_path / "console.token").write_text(added.stdout.strip().splitlines()[-1])
    app = appliance(grpc={"tls_cert": str(cert), "tls_key": str(key), "clients_file": str(clients),
                          "anonymous_roles": []})
    # TLS from [grpc] alone (its self-signed certificate as the anchor): connected, but no role without a token.
    anonymous = scanside("status", "--config", str(client_config(tmp_path / "anonymous.toml", app)))
    assert anonymous.returncode == 0 and "READY" in anonymous.stdout
    assert "GetModelInfo: PERMISSION_DENIED" in anonymous.stdout, anonymous.stdout
    console = client_config(tmp_path / "console.toml", app, token_file="console.token")  # relative to the file
    named = scanside("status", "--config", str(console))
    assert named.returncode == 0 and "model       placeholder" in named.stdout, named.stdout + named.stderr
    # A study in: the named client over TLS sees its accession number beside the station.
    written = scanside("synth", "--vendor", "B", "--seed", "4", "--out", str(app.settings.paths.incoming))
    assert written.returncode == 0, written.stderr
    with ApplianceClient(app.grpc_address, tls_ca=cert, token=(tmp_path / "console.token").read_text()) as c:
        wait_for(lambda: list(c.list_all()), what="the written study scored")
    (plan,) = demo_cohort(1, 4, vendors=["B"])
    listed = scanside("results", "--config", str(console), columns=160)
    assert listed.returncode == 0 and "model placeholder" in listed.stdout, listed.stderr
    assert f"{plan.accession_number} / SYNTHB" in listed.stdout, listed.stdout
    # --address overrides the configured one; nothing answers there.
    elsewhere = scanside("status", "--config", str(console), "--address", f"127.0.0.1:{free_port()}")
    assert elsewhere.returncode == 2 and "no answer from the appliance" in elsewhere.stderr


def test_serve_names_every_listener_when_ready_and_what_was_left_at_sigterm(tmp_path, tiny_bundle):
    ports = {name: free_port() for name in ("metrics", "dicom", "hl7")}
    served = ServedAppliance(tmp_path, engine={"bundle": str(tiny_bundle), "intra_op_threads": 1},
                             metrics={"enabled": True, "port": ports["metrics"]},
                             dicom={"enabled": True, "port": ports["dicom"]},
                             hl7={"enabled": True, "port": ports["hl7"]}, logging={"level": "INFO"})
    served.start()
    try:
        (served.incoming / "scanner1").mkdir(parents=True)
        assert served.proc.pid
    finally:
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(30)
        served.stop()
    log = (tmp_path / "serve.log").read_text()
    (ready,) = [line for line in log.splitlines() if "appliance.service: ready:" in line]
    assert f"gRPC on 127.0.0.1:{served.port}" in ready
    assert f"metrics on http://127.0.0.1:{ports['metrics']}/metrics" in ready
    assert f"DICOM receiver SCANSIDE on 127.0.0.1:{ports['dicom']}" in ready
    assert f"HL7/MLLP on 127.0.0.1:{ports['hl7']}" in ready
    assert f"watching {served.incoming}" in ready
    (stopped,) = [line for line in log.splitlines() if "appliance.service: stopped" in line]
    assert "stopped (SIGTERM): left queued for the next start: 0 file(s) not yet taken in, 0 series receiving, " \
           "0 complete and not yet scored, 0 SR(s) to deliver" in stopped
    assert served.proc.returncode == 0

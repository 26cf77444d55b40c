"""Ground truth end to end: a real appliance (watch folder, SQLite, ONNX Runtime, gRPC and Prometheus on loopback)
with [hl7] on, final reports for synthetic studies sent over real MLLP (one before its study, one by accession
number only, a correction, a cancellation), a radiologist's assessment over gRPC, and the evidence monitor counting
the matched cases on the real metrics endpoint. Then kill -9 of a served appliance while reports arrive: every
report acknowledged AA is on disk after the restart."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from conftest import wait_for
from prometheus_client.parser import text_string_to_metric_families

from appliance.cli import main
from appliance.dev.oru import MllpClient, oru_message, report_text
from appliance.dev.served import ServedAppliance, free_port
from appliance.dev.synth import SyntheticScanner, plan_study
from appliance.serve.access import Client, hash_token, new_token, save_clients
from appliance.serve.client import ApplianceClient
from appliance.store import Store
from appliance.truth.extract import extract

pytestmark = pytest.mark.slow

CORRECTION = "The left ventricle is dilated with severely impaired systolic function. No pericardial effusion."


def small_plan(seed: int, vendor: str):
    return plan_study(seed=seed, vendor=vendor, n_slices=8, n_phases=20, matrix=(128, 128))


def cine_uid(plan) -> str:
    (series,) = [s for s in plan.series if s.role == "cine_sax"]
    return series.series_uid


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(metrics, name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), float("nan"))


def test_reports_over_mllp_become_the_truth_the_evidence_monitor_counts(appliance, tmp_path):
    tokens = {"radiologist": new_token(), "console": new_token()}
    clients = tmp_path / "clients.toml"
    save_clients(clients, [Client("radiologist", frozenset({"admin"}), hash_token(tokens["radiologist"])),
                           Client("console", frozenset({"display"}), hash_token(tokens["console"]))])
    early, late, cancelled = small_plan(61, "A"), small_plan(62, "B"), small_plan(63, "A")
    app = appliance(hl7={"enabled": True, "port": 0}, grpc={"clients_file": str(clients)},
                    evidence={"refresh_interval_s": 1, "stations": ["SYNTHA", "SYNTHB"]})
    mllp = app.pipeline.mllp
    assert mllp is not None
    with MllpClient("127.0.0.1", mllp.port) as ris:
        # before its study: named by its Study Instance UID (ZDS), kept, matched once the result is stored
        assert ris.send(oru_message(early, "C1")) == ("AA", "C1")
        wait_for(lambda: app.store.truth.counts()["pending"] == 1, what="the early report stored, pending")
        SyntheticScanner(Path(app.settings.paths.incoming) / "magnet", [early, late, cancelled], pace_s=0).start()
        wait_for(lambda: len(list(app.store.results.all())) == 3, timeout=90, what="three studies scored")
        # after its study, by accession number only; then a correction replacing it
        assert ris.send(oru_message(late, "C2", study_uid_in="none")) == ("AA", "C2")
        assert ris.send(oru_message(late, "C3", status="C", text=CORRECTION, study_uid_in="obx")) == ("AA", "C3")
        # a final report and its cancellation
        assert ris.send(oru_message(cancelled, "C4")) == ("AA", "C4")
        assert ris.send(oru_message(cancelled, "C5", status="X", text="")) == ("AA", "C5")
        assert ris.send(oru_message(early, "C6", status="P")) == ("AA", "C6")  # preliminary: not used
        assert ris.send("MSH|^~\\&|RIS|H|SCANSIDE||20260101||ADT^A01|C7|P|2.5.1\r")[0] == "AR"
    truth = app.store.truth.by_series()
    assert truth == {cine_uid(early): extract(report_text(early)).as_bools(),
                     cine_uid(late): extract(CORRECTION).as_bools()}
    assert [h["change"] for h in app.store.truth.history(late.study_uid)].count("replaced") == 10
    # the ledger carries the station the evidence slices by; the accession number appears nowhere in it
    entries = list(app.store.ledger.entries())
    assert {e["payload"]["station"] for e in entries} == {"SYNTHA", "SYNTHB"}
    assert not any(p.accession_number in str(entries) for p in (early, late, cancelled))

    # a radiologist's assessment over gRPC: admin only
    finding = "lv_dilation"
    with ApplianceClient(app.grpc_address, token=tokens["console"]) as console:
        with pytest.raises(grpc.RpcError) as refused:
            console.assess(cine_uid(early), {finding: "reject"}, "dr who")
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    was = truth[cine_uid(early)][finding]
    with ApplianceClient(app.grpc_address, token=tokens["radiologist"]) as radiologist:
        reply = radiologist.assess(cine_uid(early), {finding: not was}, "dr house", "re-read")
        assert reply.findings_changed == 1
        with pytest.raises(grpc.RpcError) as unknown:
            radiologist.assess(cine_uid(early), {"no_such_finding": "accept"}, "dr house")
        assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as missing:
            radiologist.assess("1.2.3.4", {finding: "accept"}, "dr house")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert app.store.truth.by_series()[cine_uid(early)][finding] is (not was)
    token_file = tmp_path / "admin.token"
    token_file.write_text(tokens["radiologist"])
    assert main(["assess", cine_uid(late), "hcm=present", "--assessor", "dr cli", "--address", app.grpc_address,
                 "--token-file", str(token_file)]) == 0
    assert app.store.truth.for_study(late.study_uid)["hcm"] == (True, "assessment")

    # the real metrics endpoint: messages by ACK, truth records by state, and the matched cases
    def evidence_matched():
        m = scrape(app.metrics_port)
        scored = sample(m, "scanside_evidence_studies", state="scored")
        return m if scored == 3 and sample(m, "scanside_evidence_studies", state="matched") == 2 else None

    m = wait_for(evidence_matched, timeout=30, what="the evidence monitor's refresh")
    assert sample(m, "scanside_hl7_messages_total", ack="AA", reason="final") == 3
    assert sample(m, "scanside_hl7_messages_total", ack="AA", reason="corrected") == 1
    assert sample(m, "scanside_hl7_messages_total", ack="AA", reason="cancelled") == 1
    assert sample(m, "scanside_hl7_messages_total", ack="AA", reason="preliminary") == 1
    assert sample(m, "scanside_hl7_messages_total", ack="AR", reason="unsupported_message_type") == 1
    assert sample(m, "scanside_hl7_messages_total", ack="AE", reason="not_stored") == 0  # pre-set
    for state, n in {"pending": 0, "matched": 4, "corrected": 1, "withdrawn": 1, "assessed": 2}.items():
        assert sample(m, "scanside_truth_records", state=state) == n, state
    findings = len(app.bundle.label_bank.findings)
    cases = [sample(m, "scanside_evidence_cases", finding=f.id, manufacturer="all", station="all", truth=t)
             for f in app.bundle.label_bank.findings for t in ("positive", "negative")]
    assert sum(cases) == 2 * findings  # two studies with truth, every finding
    by_station = [sample(m, "scanside_evidence_cases", finding=finding, manufacturer="all", station=st, truth=t)
                  for st in ("SYNTHA", "SYNTHB") for t in ("positive", "negative")]
    assert sum(by_station) == 2
    assert not any("SYNTH_RIS" in str(k) or early.study_uid in str(k) for k in m)  # no identifier in a label


def test_kill_9_while_reports_arrive_loses_no_acknowledged_report(tmp_path, tiny_bundle):
    plans = [small_plan(70 + i, "AB"[i % 2]) for i in range(3)]
    port = free_port()
    app = ServedAppliance(tmp_path / "appliance", engine={"bundle": tiny_bundle, "intra_op_threads": 1},
                          assembly={"quiet_period_s": 1.0}, ingest={"settle_seconds": 0.5, "poll_interval_s": 0.05},
                          hl7={"enabled": True, "port": port})
    app.start()
    acked: list[str] = []
    done = threading.Event()

    def send_until_cut() -> None:
        n = 0
        try:
            with MllpClient("127.0.0.1", port) as ris:
                while not done.is_set():
                    plan = plans[n % len(plans)]
                    cid = f"K{n}"
                    status = "F" if n < len(plans) else "C"
                    code, _ = ris.send(oru_message(plan, cid, status=status,
                                                   study_uid_in="zds" if n % 2 else "none"))
                    if code == "AA":
                        acked.append(cid)
                    n += 1
        except OSError:  # the appliance was killed under the connection
            pass

    sender = threading.Thread(target=send_until_cut)
    scanner = SyntheticScanner(app.incoming, plans, pace_s=0.002)
    scanner.start()  # studies arrive and are scored while their reports are matched
    sender.start()
    wait_for(lambda: len(acked) >= 40, timeout=60, what="reports acked")
    app.kill_hard()
    done.set()
    sender.join(10)
    assert len(acked) >= 40
    app.start()
    try:
        assert scanner.join(60) and scanner.error is None
        wait_for(lambda: {r.series_instance_uid for r in app.client.list_all()} >= {cine_uid(p) for p in plans},
                 timeout=90, what="every study scored after the restart")
        with MllpClient("127.0.0.1", port) as ris:  # the last word for each study, after the crash
            for k, plan in enumerate(plans):
                assert ris.send(oru_message(plan, f"Z{k}", status="C", text=CORRECTION))[0] == "AA"
    finally:
        app.stop()
    store = Store(app.data / "scanside.db")
    stored = {r["control_id"] for r in store.truth.records()}
    truth = store.truth.by_series()
    verdict = store.ledger.verify()
    store.close()
    assert set(acked) <= stored  # nothing acknowledged was lost
    assert truth == {cine_uid(p): extract(CORRECTION).as_bools() for p in plans}
    assert verdict.ok, verdict.problem

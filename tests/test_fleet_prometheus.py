"""A health system watching its appliances from one place, with real Prometheus processes (Debian's `prometheus`):
two agents run deploy/prometheus/agent.yml, each as a different box (its SCANSIDE_SITE, _APPLIANCE and _ROOM), both
scraping one real appliance that has scored a synthetic study; a central server runs deploy/prometheus/central.yml
with the remote-write receiver behind central-web.yml (TLS, a client certificate from the fleet's CA for every
request). Then, within a bounded wait, the centre holds the appliance's series from both boxes, each carrying its
box's external labels and no label value naming the study's patient; the dashboard's variables and queries pick one
box out of the two, which share a scrape address; and every alert rule evaluates there without an error.

Only what cannot be on this host is changed in the shipped files: the addresses and ports, the certificate paths
(test certificates made by openssl), the scrape and evaluation intervals (1 s, to keep the test short), the names
the test certificates carry. The labels, jobs and the remote-write and TLS settings are the files' own.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from test_dashboard import DASHBOARD, PROMETHEUS, WINDOWS, Prometheus, check_variables, concrete, panel_targets

from appliance.dev.served import free_port
from appliance.dev.synth import SyntheticScanner, plan_study

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the test extra")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus server is not on PATH (Debian package "
                                                            "'prometheus'; .ci/run installs it)")]

ROOT = Path(__file__).resolve().parent.parent
PROM_DIR = ROOT / "deploy" / "prometheus"
AGENT, CENTRAL, CENTRAL_WEB = PROM_DIR / "agent.yml", PROM_DIR / "central.yml", PROM_DIR / "central-web.yml"
RULES = PROM_DIR / "scanside-alerts.yml"
BOXES = {  # two appliances of the fleet; the same room name at two sites is allowed, the appliance name is not
    "north-general-mr2": {"SCANSIDE_SITE": "north-general", "SCANSIDE_APPLIANCE": "north-general-mr2",
                          "SCANSIDE_ROOM": "mr-suite-2"},
    "south-clinic-mr1": {"SCANSIDE_SITE": "south-clinic", "SCANSIDE_APPLIANCE": "south-clinic-mr1",
                         "SCANSIDE_ROOM": "mr-suite-2"},
}


@functools.cache
def flags() -> dict[str, list[str]]:
    """This Prometheus' spelling of agent mode and of the receiver: 3.x has --agent (and expands external labels by
    itself), 2.x --enable-feature=agent plus expand-external-labels; 2.33 and later have the receiver's flag."""
    done = subprocess.run([PROMETHEUS, "--help"], capture_output=True, text=True, timeout=30)  # type: ignore[list-item]
    text = done.stdout + done.stderr
    agent = (["--agent"] if re.search(r"(?m)^\s+--agent\b", text)
             else ["--enable-feature=agent,expand-external-labels"])
    receiver = (["--web.enable-remote-write-receiver"] if "--web.enable-remote-write-receiver" in text
                else ["--enable-feature=remote-write-receiver"])
    return {"agent": agent, "receiver": receiver}


class Certificates:
    """The fleet's CA and what it issues: the centre's server certificate, a client certificate per agent, one for
    whoever queries the centre (Grafana, here the test) and the centre's own scrape of itself."""

    def __init__(self, folder: Path) -> None:
        from tls_factory import OPENSSL, TestCA

        if OPENSSL is None:
            pytest.skip("openssl is needed to make test certificates")
        self.ca = TestCA(folder, "fleet-ca")
        self.central = self.ca.issue("central")
        self.clients = {name: self.ca.issue(name, client=True) for name in (*BOXES, "grafana", "central-self")}

    def context(self, client: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        key, cert = self.clients[client]
        context.load_cert_chain(str(cert), str(key))
        return context


class Central(Prometheus):
    def __init__(self, root: Path, certs: Certificates) -> None:
        root.mkdir(parents=True)
        self.port, self.root = free_port(), root
        shutil.copy(RULES, root / RULES.name)
        config = yaml.safe_load(CENTRAL.read_text(encoding="utf-8"))
        assert config["rule_files"] == [RULES.name]
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        (own,) = config["scrape_configs"]
        own["static_configs"] = [{"targets": [f"127.0.0.1:{self.port}"]}]
        key, cert = certs.clients["central-self"]
        own["tls_config"].update(ca_file=str(certs.ca.cert), cert_file=str(cert), key_file=str(key),
                                 server_name="localhost")  # the name in the test certificate
        self.config = root / "central.yml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        web = yaml.safe_load(CENTRAL_WEB.read_text(encoding="utf-8"))
        assert web["tls_server_config"]["client_auth_type"] == "RequireAndVerifyClientCert"
        key, cert = certs.central
        web["tls_server_config"].update(cert_file=str(cert), key_file=str(key), client_ca_file=str(certs.ca.cert))
        self.web = root / "central-web.yml"
        self.web.write_text(yaml.safe_dump(web), encoding="utf-8")
        self.scheme, self.context = "https", certs.context("grafana")
        self.proc = None

    def args(self) -> list[str]:
        return [*super().args(), *flags()["receiver"], f"--web.config.file={self.web}"]


class Agent(Prometheus):
    def __init__(self, root: Path, box: str, target: str, central: Central, certs: Certificates) -> None:
        root.mkdir(parents=True)
        self.port, self.root = free_port(), root
        config = yaml.safe_load(AGENT.read_text(encoding="utf-8"))
        assert config["global"]["external_labels"] == {
            "site": "${SCANSIDE_SITE}", "appliance": "${SCANSIDE_APPLIANCE}", "room": "${SCANSIDE_ROOM}"}
        config["global"]["scrape_interval"] = "1s"
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert set(jobs) == {"scanside", "prometheus-agent"}
        jobs["scanside"]["static_configs"] = [{"targets": [target]}]
        jobs["scanside"]["scrape_timeout"] = "1s"
        jobs["prometheus-agent"]["static_configs"] = [{"targets": [f"127.0.0.1:{self.port}"]}]
        (write,) = config["remote_write"]
        assert write["url"].startswith("https://") and write["url"].endswith("/api/v1/write")
        write["url"] = f"https://localhost:{central.port}/api/v1/write"  # the centre's certificate names localhost
        key, cert = certs.clients[box]
        write["tls_config"].update(ca_file=str(certs.ca.cert), cert_file=str(cert), key_file=str(key))
        self.config = root / "agent.yml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.env = {**os.environ, **BOXES[box]}
        self.proc = None

    def args(self) -> list[str]:
        return [*flags()["agent"], f"--config.file={self.config}", f"--storage.agent.path={self.root / 'wal'}",
                f"--web.listen-address=127.0.0.1:{self.port}"]


def patient_identifiers(plan) -> set[str]:
    """What identifies the synthetic study's patient, as the DICOM files carry it, and the name's parts."""
    values = {plan.patient_name, plan.patient_id, plan.accession_number, plan.study_uid, plan.patient_birth_date,
              *(s.series_uid for s in plan.series)}
    values |= {part for part in re.split(r"[\^ ]", plan.patient_name) if len(part) >= 3}
    return {v for v in values if v}


def identifying(label_values: dict[str, list[str]], identifiers: set[str]) -> list[str]:
    """Every label value that contains one of `identifiers` (case ignored), as 'label=value'."""
    found = []
    for label, values in label_values.items():
        for value in values:
            if any(i.lower() in value.lower() for i in identifiers):
                found.append(f"{label}={value}")
    return found


def test_the_centre_receives_both_boxes_labelled_with_no_patient_identifier_and_tells_them_apart(appliance, tmp_path):
    app = appliance()
    target = f"127.0.0.1:{app.metrics_port}"
    plan = plan_study(seed=90, vendor="A", n_slices=8, n_phases=20, matrix=(160, 160))
    scanner = SyntheticScanner(Path(app.settings.paths.incoming) / "magnet", [plan], pace_s=0)
    scanner.start()
    assert scanner.join(60) and scanner.error is None
    wait_for(lambda: len(list(app.store.results.all())) == 1, timeout=60, what="the study scored")

    certs = Certificates(tmp_path / "certs")
    central = Central(tmp_path / "central", certs).start()
    agents: list[Agent] = []
    try:
        for box in BOXES:
            agents.append(Agent(tmp_path / box, box, target, central, certs).start())
        started = time.monotonic()

        def both_arrived() -> list[dict[str, Any]] | None:
            found = central.query('scanside_series{job="scanside", state="scored"} >= 1')
            return found if {r["metric"].get("appliance") for r in found} == set(BOXES) else None

        arrived = wait_for(both_arrived, timeout=60, interval=0.5, what="both boxes' series at the centre")
        took = time.monotonic() - started
        assert isinstance(arrived, list)
        for series in arrived:  # each carries its own box's external labels, and the appliance's own labels
            box = BOXES[series["metric"]["appliance"]]
            assert {k: series["metric"][k] for k in ("site", "appliance", "room")} == {
                "site": box["SCANSIDE_SITE"], "appliance": box["SCANSIDE_APPLIANCE"], "room": box["SCANSIDE_ROOM"]}
            assert series["metric"]["instance"] == target and series["metric"]["job"] == "scanside"
        # every sample of a box is labelled, the agent's own too (its remote-write health)
        unlabelled = central.query('count by (__name__, job) ({job=~"scanside|prometheus-agent", appliance=""})')
        assert not unlabelled, unlabelled
        wait_for(lambda: len(central.query('up{job="prometheus-agent"} == 1')) == 2, timeout=30, interval=0.5,
                 what="both agents' own series at the centre")

        # No label value at the centre names the patient, the study or its series: the appliance's labels are
        # closed sets and the boxes' are names chosen for them (docs/fleet.md).
        identifiers = patient_identifiers(plan)
        names = central.api("labels")
        values = {name: central.api(f"label/{name}/values") for name in names}
        assert sum(len(v) for v in values.values()) > 100  # the whole of it was read, metric names included
        assert not identifying(values, identifiers)
        # the check would see one: a label value holding the patient ID, or a part of the name
        assert identifying({"station": [f"x{plan.patient_id}x"]}, identifiers)
        assert identifying({"room": [next(i for i in identifiers if i in plan.patient_name.split("^")).upper()]},
                           identifiers)

        # The dashboard at the centre: its variables offer each box, and its queries pick one box out of the two
        # that share the instance 127.0.0.1:<port>.
        dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        north = BOXES["north-general-mr2"]
        values_north = {**WINDOWS, "$site": north["SCANSIDE_SITE"], "$appliance": north["SCANSIDE_APPLIANCE"],
                        "$instance": target, "$manufacturer": "all"}
        # The evidence gauges (the manufacturer variable's series) come with the monitor's first refresh, which a
        # loaded machine may deliver after the counters above: waited for, not raced.
        wait_for(lambda: "all" in central.api("label/manufacturer/values",
                                              **{"match[]": 'scanside_evidence_window_studies{job="scanside"}'}),
                 timeout=60, interval=0.5, what="the evidence series at the centre")
        check_variables(central, dashboard, values_north)
        offered = central.api("label/appliance/values", **{"match[]": f'scanside_ready{{job="scanside", '
                                                                      f'site="{north["SCANSIDE_SITE"]}"}}'})
        assert offered == [north["SCANSIDE_APPLIANCE"]]  # the site narrows the appliances offered
        for title, t in panel_targets(dashboard):
            result = central.query(concrete(t["expr"], values_north))  # each parses and runs at the centre
            if title in ("Metrics endpoint", "Ready"):  # one box, up and ready, not two
                assert [float(r["value"][1]) for r in result] == [1.0], (title, result)
        (series_panel,) = [t for title, t in panel_targets(dashboard) if title == "Series by state"]
        by_state = {r["metric"]["state"]: float(r["value"][1])
                    for r in central.query(concrete(series_panel["expr"], values_north))}
        assert by_state["scored"] == 1  # one box's study, not the sum over both boxes
        everything = concrete(series_panel["expr"], {**values_north, "$site": "", "$appliance": ""})
        assert not central.query(everything)  # an empty variable matches only series without the label

        # The alert rules ran at the centre on what arrived: every one evaluated without an error.
        wait_for(lambda: all(r.get("lastEvaluation", "").startswith("20") for g in central.api("rules")["groups"]
                             for r in g["rules"]), timeout=10, what="every rule evaluated")
        broken = [(r["name"], r.get("lastError")) for g in central.api("rules")["groups"] for r in g["rules"]
                  if r["health"] != "ok"]
        assert not broken, broken
        print(f"both boxes at the centre {took:.1f} s after the agents started")
    finally:
        for agent in agents:
            agent.stop()
        central.stop()


def test_the_centre_refuses_a_writer_without_a_fleet_certificate(tmp_path):
    """central-web.yml lets no one in without a certificate from the fleet's CA, the receiver included; with one,
    the receiver is there (it reads the body, and says a body that is no snappy-compressed WriteRequest is bad)."""
    certs = Certificates(tmp_path / "certs")
    central = Central(tmp_path / "central", certs).start()
    try:
        url = f"https://127.0.0.1:{central.port}/api/v1/write"
        anonymous = ssl.create_default_context(cafile=str(certs.ca.cert))  # trusts the centre, presents nothing
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=10,
                                   context=anonymous)
        except urllib.error.HTTPError as exc:
            pytest.fail(f"the centre answered HTTP {exc.code} to a writer without a certificate")
        except OSError:
            pass  # the TLS handshake (or the first read after it, in TLS 1.3) failed: refused
        else:
            pytest.fail("the centre took a write without a client certificate")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=10,
                                   context=certs.context("north-general-mr2"))
        assert answer.value.code == 400  # read by the receiver, refused as not a WriteRequest
    finally:
        central.stop()

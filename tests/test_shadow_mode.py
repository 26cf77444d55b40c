"""Shadow mode against assist: the same real appliance (watch folder, SQLite, ONNX Runtime, gRPC on loopback, an SR
folder destination), fed one synthetic study. In shadow the result is scored, stored and sealed, but no SR is queued
or written and only admin callers receive it; in assist every display does and the SR is written."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from conftest import wait_for

from appliance.cli import main
from appliance.config import ConfigError, Settings
from appliance.dev.synth import SyntheticScanner, plan_study
from appliance.serve.access import Client, hash_token, new_token, save_clients
from appliance.serve.client import ApplianceClient

pytestmark = pytest.mark.slow

ROLES = {"console": {"display"}, "grafana": {"ops"}, "validator": {"admin"}}


def code_and_details(call) -> tuple[grpc.StatusCode | None, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return None, ""


def run(appliance, tmp_path: Path, mode: str):
    tokens = {name: new_token() for name in ROLES}
    clients = tmp_path / "clients.toml"
    save_clients(clients, [Client(n, frozenset(r), hash_token(tokens[n])) for n, r in ROLES.items()])
    sr = tmp_path / "sr"
    app = appliance(appliance={"mode": mode}, export={"folder": str(sr), "retry_initial_s": 0.2},
                    grpc={"clients_file": str(clients)})  # anonymous callers on loopback: display and ops
    plan = plan_study(seed=41, vendor="A", n_slices=8, n_phases=20, matrix=(128, 128))
    SyntheticScanner(Path(app.settings.paths.incoming), [plan], pace_s=0).start()
    wait_for(lambda: list(app.store.results.all()), timeout=60, what="the study scored")
    return app, tokens, plan, sr


def test_shadow_mode_scores_and_seals_but_shows_and_sends_nothing(appliance, tmp_path, capsys):
    app, tokens, plan, sr = run(appliance, tmp_path, "shadow")
    (series_uid,) = [r.info.series_uid for r in app.store.results.all()]
    for who in ("console", "grafana", None):  # a display, an ops dashboard, an anonymous caller on this host
        with ApplianceClient(app.grpc_address, token=tokens.get(who or "")) as c:
            for call in (lambda: list(c.list_all()), lambda: c.study(plan.study_uid),
                         lambda: next(iter(c.stream(after_event_id=0)))):
                code, details = code_and_details(call)
                assert code == grpc.StatusCode.PERMISSION_DENIED and "shadow mode" in details, (who, details)
            assert c.model_info().mode == "shadow"  # what it is in, it may see
            assert c.series_status(series_uid).state == "scored"  # that it was scored, not what was found
    with ApplianceClient(app.grpc_address, token=tokens["validator"]) as admin:
        assert [r.series_instance_uid for r in admin.list_all()] == [series_uid]
        assert [r.series_instance_uid for r in admin.study(plan.study_uid)] == [series_uid]
        assert next(iter(admin.stream(after_event_id=0))).result.series_instance_uid == series_uid
    token_file = tmp_path / "admin.token"
    token_file.write_text(tokens["validator"])
    capsys.readouterr()
    assert main(["results", "--address", app.grpc_address, "--token-file", str(token_file)]) == 0
    out = capsys.readouterr().out
    assert "SHADOW MODE" in out and next(app.store.results.all()).info.key in out
    # Nothing towards PACS: no exporter, no queue item, no SR written.
    assert app.pipeline.exporter is None and app.store.exports.counts() == {}
    assert not sr.exists() or not any(sr.iterdir())
    (entry,) = app.store.ledger.entries()
    assert (entry["mode"], entry["kind"], entry["series_uid"]) == ("shadow", "scored", series_uid)
    assert len(entry["input_sha256"]) == 64 and app.store.ledger.verify().ok
    assert app.registry.get_sample_value("scanside_ledger_entries_total", {"kind": "scored"}) == 1
    assert app.registry.get_sample_value("scanside_ledger_entries_total", {"kind": "failed"}) == 0


def test_assist_mode_shows_and_sends_the_same_result(appliance, tmp_path):
    app, tokens, _, sr = run(appliance, tmp_path, "assist")
    (series_uid,) = [r.info.series_uid for r in app.store.results.all()]
    for who in ("console", None):
        with ApplianceClient(app.grpc_address, token=tokens.get(who or "")) as c:
            assert [r.series_instance_uid for r in c.list_all()] == [series_uid]
            assert c.model_info().mode == "assist"
    with ApplianceClient(app.grpc_address, token=tokens["grafana"]) as ops:  # ops never sees results
        assert code_and_details(lambda: list(ops.list_all()))[0] == grpc.StatusCode.PERMISSION_DENIED
    wait_for(lambda: sr.exists() and list(sr.glob("*.dcm")), timeout=30, what="the SR written")
    (entry,) = app.store.ledger.entries()
    assert entry["mode"] == "assist" and app.store.ledger.verify().ok


def test_mode_is_validated():
    assert Settings().appliance.mode == "assist"
    assert Settings().replace(appliance={"mode": "shadow"}).appliance.shadow
    with pytest.raises(ConfigError, match=r"appliance\.mode must be assist or shadow"):
        Settings().replace(appliance={"mode": "Shadow"})

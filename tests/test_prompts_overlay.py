"""Site prompt edits: kept in an overlay in the data folder (never the shipped bundle), versioned, revertible,
refused when the text encoder cannot read them, thresholds restored exactly, decisions that match probabilities,
and a running appliance that scores with an edit without a restart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for

from appliance.bundle import Finding, LabelBank, load_bundle
from appliance.cli import main as cli
from appliance.fileio import sha256_file
from appliance.prompts import LiveBank, Overlay, PromptRefused, Site, add_prompt, history, remove, revert
from appliance.scoring import ScoringPolicy, score_batch

REFERENCE = Path(__file__).resolve().parent.parent / "engines" / "reference-v1"
KNOWN = "dilated left ventricle"  # not one of the shipped prompts


def bundle_hashes(root: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(root.iterdir())}


@pytest.fixture
def site(tmp_path):
    return Site.open(REFERENCE, tmp_path / "data")


def test_edits_go_to_the_data_folder_and_never_touch_the_bundle(site, tmp_path):
    before = bundle_hashes(REFERENCE)
    edit = add_prompt(site, "lv_dilation", KNOWN, by="alice")
    assert bundle_hashes(REFERENCE) == before
    assert load_bundle(REFERENCE).label_bank.content_hash == site.bundle.label_bank.content_hash
    folder = tmp_path / "data" / "label_bank"
    assert (folder / "edits.jsonl").exists() and (folder / "current.json").exists()
    effective = site.effective()
    assert effective.version == edit.record.version and KNOWN in effective.bank.finding("lv_dilation").prompts


def test_every_edit_is_versioned_with_who_when_what(site):
    shipped = site.bundle.label_bank.content_hash
    a = add_prompt(site, "lv_dilation", KNOWN, by="alice")
    b = add_prompt(site, "apical_thinning", "apical wall thinning", by="bob", prevalence=0.02, name="Apical thinning")
    c = remove(site, "apical_thinning", by="carol")
    got = history(site)
    assert [(e.seq, e.by, e.action, e.finding) for e in got] == [
        (1, "alice", "add_prompt", "lv_dilation"), (2, "bob", "add_finding", "apical_thinning"),
        (3, "carol", "remove_finding", "apical_thinning")]
    assert [e.previous for e in got] == [shipped, a.record.version, b.record.version]
    assert got[-1].version == c.record.version and all(e.at.endswith("Z") for e in got)
    assert a.record.version == f"{a.bank.content_hash}.1" and len(a.bank.content_hash) == 12
    assert c.bank.content_hash == a.bank.content_hash and c.record.version != a.record.version  # same bank, new seq


def test_revert_returns_to_an_earlier_bank_exactly_and_is_itself_an_edit(site):
    shipped = site.bundle.label_bank
    a = add_prompt(site, "lv_dilation", KNOWN, by="alice")
    add_prompt(site, "apical_thinning", "apical wall thinning", by="bob", prevalence=0.02)
    r = revert(site, a.record.version, by="dave")
    assert site.effective().bank.content_hash == a.bank.content_hash
    assert (r.record.action, r.record.by, r.record.seq) == ("revert", "dave", 3)
    revert(site, "0")
    back = site.effective().bank
    assert back.content_hash == shipped.content_hash
    for f, g in zip(back.findings, shipped.findings, strict=True):
        assert (f.prompts, f.threshold, f.slope, f.intercept) == (g.prompts, g.threshold, g.slope, g.intercept)
    with pytest.raises(PromptRefused, match="no bank version"):
        revert(site, "ffffffffffff.9")
    with pytest.raises(PromptRefused, match="already"):
        revert(site, "0")


@pytest.mark.parametrize(("prompt", "why"), [
    ("a \U0001fac0 that is dilated", "'\U0001fac0'"),  # the tokenizer has no piece for it: [UNK]
    ("   ", "empty"),
    ("left ventricular dilatation", "already has"),  # a shipped prompt of lv_dilation
    ("dilated cardiomyopathy", "already a prompt of finding 'nonischaemic_cm'"),
    (" ".join(["dilated"] * 80), "longer than"),
])
def test_prompts_the_model_cannot_read_faithfully_are_refused_saying_why(site, prompt, why):
    with pytest.raises(PromptRefused, match=why):
        add_prompt(site, "lv_dilation", prompt)
    assert history(site) == [] and site.effective().seq == 0


def test_text_about_no_finding_is_refused_and_every_held_out_clinical_prompt_is_taken(site):
    from appliance.prompts.edit import RELEVANCE_MIN_COSINE, relevance, text_encoder
    from training.heldout_prompts import NEGATED, PARAPHRASES, UNRELATED

    encoder, bank = text_encoder(site.bundle), site.bundle.label_bank
    for prompt in UNRELATED:  # the evaluation's unrelated text: refused, nothing changed
        with pytest.raises(PromptRefused, match="about none of the bank's findings"):
            add_prompt(site, "lv_dilation", prompt)
    assert history(site) == []
    clinical = [p for prompts in (*PARAPHRASES.values(), *NEGATED.values()) for p in prompts]
    clinical += ["aortic stenosis", "myocarditis", "thrombus in the left ventricle", "apical wall thinning"]
    low = [(p, c) for p in clinical if (c := relevance(bank, encoder.embed([p]))[0]) < RELEVANCE_MIN_COSINE]
    assert low == []  # what clinicians write stays well above the bar


def test_add_shows_the_nearest_findings_and_prompts_by_cosine(site):
    edit = add_prompt(site, "lv_dilation", KNOWN)
    assert len(edit.nearest_findings) == 3 and len(edit.nearest_prompts) == 5
    cos = [n.cosine for n in edit.nearest_prompts]
    assert cos == sorted(cos, reverse=True)
    bank = site.bundle.label_bank
    from appliance.text import TextEncoder
    e = TextEncoder.for_bundle(site.bundle).embed([KNOWN])[0]
    e = e / np.linalg.norm(e)
    best = max(bank.findings, key=lambda f: float(f.axis @ e / np.linalg.norm(f.axis)))
    assert edit.nearest_findings[0].finding_id == best.id
    assert edit.nearest_findings[0].cosine == pytest.approx(float(best.axis @ e / np.linalg.norm(best.axis)))


def test_add_then_remove_gives_the_shipped_fitted_threshold_back_exactly(site):
    shipped = site.bundle.label_bank.finding("lv_dilation")
    added = add_prompt(site, "lv_dilation", KNOWN).bank.finding("lv_dilation")
    assert added.threshold != shipped.threshold  # prevalence-matched while edited
    back = remove(site, "lv_dilation", KNOWN).bank.finding("lv_dilation")
    assert (back.prompts, back.threshold, back.slope, back.intercept) == \
        (shipped.prompts, shipped.threshold, shipped.slope, shipped.intercept)
    # and a shipped prompt removed, then added again
    first = shipped.prompts[0]
    remove(site, "lv_dilation", first)
    again = add_prompt(site, "lv_dilation", first).bank.finding("lv_dilation")
    assert (again.threshold, again.slope) == (shipped.threshold, shipped.slope)


def _finding(threshold: float, slope: float, intercept: float) -> Finding:
    return Finding("f", "F", ("p",), np.eye(4)[:1], threshold, slope, intercept, 0.1, False)


def test_positive_always_means_probability_at_least_one_half():
    # A calibration whose intercept puts p = 0.5 elsewhere than the threshold (0.28 beside a positive before).
    bank = LabelBank((_finding(0.3, 10.0, -1.0), Finding("g", "G", ("q",), np.eye(4)[1:2], 0.2, 8.0, 0.0, 0.1, False)))
    assert bank.finding("f").intercept == pytest.approx(-3.0)  # anchored at the threshold on loading
    rng = np.random.default_rng(3)
    results = score_batch(rng.standard_normal((400, 4)), bank, ScoringPolicy())
    for s in results:
        for f in s.findings:
            assert f.positive == (f.probability >= 0.5)
            assert f.probability == pytest.approx(1 / (1 + np.exp(-bank.finding(f.finding_id).slope
                                                                   * (f.score - f.threshold))))
    assert any(f.positive for s in results for f in s.findings) and any(
        not f.positive for s in results for f in s.findings)
    at = score_batch(np.array([[0.3, np.sqrt(1 - 0.09), 0, 0]]), bank)[0].findings[0]
    assert at.probability == pytest.approx(0.5, abs=1e-6) and "near_threshold" in at.review_reasons


def test_a_decreasing_calibration_is_refused():
    from appliance.bundle import BundleError
    with pytest.raises(BundleError, match="slope must be positive"):
        _finding(0.3, -2.0, 0.6)


def test_a_bank_written_and_read_back_keeps_its_version(site):
    bank = site.bundle.label_bank
    assert LabelBank.from_json(bank.to_json()).content_hash == bank.content_hash


def test_an_edit_cut_short_by_a_crash_loses_nothing(site, tmp_path):
    a = add_prompt(site, "lv_dilation", KNOWN)
    folder = tmp_path / "data" / "label_bank"
    # A crash after the log line, before current.json: the edit is rolled forward.
    b = add_prompt(site, "apical_thinning", "apical wall thinning", prevalence=0.02)
    (folder / "current.json").write_text(json.dumps({**json.loads((folder / "current.json").read_text()),
                                                     "seq": 1, "version": a.record.version,
                                                     "bank": a.bank.to_dict()}))
    assert site.effective().version == b.record.version
    # A crash mid-append: a torn last line is no edit, and the next edit starts on a line of its own.
    with open(folder / "edits.jsonl", "ab") as f:
        f.write(b'{"seq": 3, "at": "2026')
    assert [e.seq for e in history(site)] == [1, 2]
    c = remove(site, "apical_thinning")
    assert [e.seq for e in history(site)] == [1, 2, 3] and site.effective().version == c.record.version


def test_an_overlay_made_on_another_shipped_bank_is_not_applied(site, tmp_path):
    add_prompt(site, "lv_dilation", KNOWN)
    other = LabelBank(site.bundle.label_bank.findings[:3], site.bundle.label_bank.reference)
    effective = Overlay(tmp_path / "data" / "label_bank", other).current()
    assert effective.stale_overlay and effective.bank is other and effective.seq == 0


def test_live_bank_swaps_in_an_edit_and_keeps_the_old_one_when_the_file_is_bad(site, tmp_path):
    live = LiveBank(site.overlay, site.bundle.embedding_dim)
    shipped = site.bundle.label_bank.content_hash
    assert live.get()[1] == shipped
    edit = add_prompt(site, "lv_dilation", KNOWN)
    bank, version = live.get()
    assert version == edit.record.version and KNOWN in bank.finding("lv_dilation").prompts
    (tmp_path / "data" / "label_bank" / "current.json").write_text("{not json")
    assert live.get()[1] == edit.record.version


def test_cli_prompts_take_config_and_refuse_with_the_reason(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'[paths]\ndata_dir = "{tmp_path / "data"}"\n[engine]\nbundle = "{REFERENCE}"\n')
    assert cli(["prompts", "--config", str(config), "add", "lv_dilation", KNOWN, "--by", "erin"]) == 0
    out = capsys.readouterr().out
    assert "nearest findings" in out and "nearest prompts" in out and "revert" in out
    assert cli(["prompts", "--config", str(config), "add", "lv_dilation", "a \u237c ventricle"]) == 2
    assert "'\u237c'" in capsys.readouterr().err
    assert cli(["prompts", "--config", str(config), "history"]) == 0
    out = capsys.readouterr().out
    assert "erin" in out and "add prompt" in out
    assert cli(["prompts", "--config", str(config), "revert", "0"]) == 0
    capsys.readouterr()
    assert cli(["prompts", "--config", str(config), "list"]) == 0
    assert "(fitted)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_running_appliance_scores_with_an_edit_without_a_restart(appliance, tmp_path):
    from test_e2e import cine_uid, small_plan

    from appliance.dev.synth import SyntheticScanner
    from appliance.serve.client import ApplianceClient

    app = appliance()
    shipped = app.bundle.label_bank
    site = Site(app.bundle, Overlay(Path(app.settings.paths.data_dir) / "label_bank", shipped))
    with ApplianceClient(app.grpc_address) as client:
        client.wait_until_serving()
        assert client.model_info().bank_version == shipped.content_hash
        first = small_plan(11)
        SyntheticScanner(Path(app.settings.paths.incoming) / "a", [first], pace_s=0).start()
        wait_for(lambda: cine_uid(first) in {r.series_instance_uid for r in client.list_all()}, what="first")
        gone = shipped.findings[0].id
        edit = remove(site, gone, by="test")
        info = client.model_info()
        assert info.bank_version == edit.record.version and gone not in {f.finding_id for f in info.findings}
        second = small_plan(12)
        SyntheticScanner(Path(app.settings.paths.incoming) / "b", [second], pace_s=0).start()
        wait_for(lambda: cine_uid(second) in {r.series_instance_uid for r in client.list_all()}, what="second")
        by_uid = {r.series_instance_uid: r for r in client.list_all()}
    old, new = by_uid[cine_uid(first)], by_uid[cine_uid(second)]
    assert old.bank_version == shipped.content_hash and gone in {f.finding_id for f in old.findings}
    assert new.bank_version == edit.record.version and gone not in {f.finding_id for f in new.findings}
    stored = app.store.results.for_series(cine_uid(second))
    assert stored is not None and stored.bank_version == edit.record.version


def test_the_shipped_bundle_folder_may_be_read_only(tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(REFERENCE, bundle)
    for p in [bundle, *bundle.iterdir()]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        s = Site.open(bundle, tmp_path / "data")
        assert add_prompt(s, "lv_dilation", KNOWN).record.seq == 1
    finally:
        for p in [bundle, *bundle.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)

"""The validation report on a real store (results, reports, corrections, cancellations and assessments saved
through the store's own APIs, two manufacturers and a third arriving later): one self-contained file, the ledger's
verdict shown (and a tampered copy shown as broken), the agreement tables equal to what was stored, no identifier
from the inputs anywhere in the page, and a clear refusal of a bad --since."""

from __future__ import annotations

import re
import shutil
import sqlite3
from html import unescape

import pytest
from validation_site import ASSESSOR, PATIENT, START, build_site, config_text

from appliance.cli import main
from appliance.config import load_settings
from appliance.store import Store
from appliance.validation import Period, gather
from appliance.validation.html import render

SINCE = "2026-03-01"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    data = tmp_path_factory.mktemp("site")
    built = build_site(data / "scanside.db", studies=120, weeks=3)
    cfg = data / "scanside.toml"
    cfg.write_text(config_text(data))
    return built, cfg


@pytest.fixture(scope="module")
def report(site, tmp_path_factory):
    """The report as the CLI writes it, plots and all."""
    _, cfg = site
    out = tmp_path_factory.mktemp("out") / "report.html"
    assert main(["validation", "report", "--since", SINCE, "--out", str(out), "--config", str(cfg)]) == 0
    return out


def _cells(html: str, finding_name: str) -> list[int]:
    """The four counts of a finding's 2x2, in page order (called +: present, absent; called -: present, absent)."""
    block = html[html.index(f'<p class="t">{finding_name}</p>'):]
    block = block[:block.index("</table>")]
    return [int(n) for n in re.findall(r'<td class="n">(\d+)</td>', block)]


def test_one_self_contained_file_with_plots_and_no_external_reference(report):
    html = report.read_text()
    assert [p.name for p in report.parent.iterdir()] == ["report.html"]
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == 4  # ROC, calibration, OOD, positive rates
    assert "http://" not in html and "https://" not in html  # no CDN, font, script, not even a namespace URI
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"url\((?!#)", html)  # SVG clip paths point inside the page only
    assert not re.search(r'\b(src|href)="(?!#)', html)  # only in-page anchors
    for section in ("Is the record intact?", "What was running", "How often was the appliance right?",
                    "Agreement with the reports", "Rare findings", "Drift over time", "Caveats", "Terms"):
        assert section in html
    assert "not comparable with CMR-CLIP" in html.lower() or "Not comparable with CMR-CLIP" in html


def test_the_ledger_verdict_is_shown_and_a_tampered_copy_shows_broken(site, report, tmp_path):
    built, _ = site
    html = report.read_text()
    store = Store(built.path)
    seq, digest = store.ledger.head()
    store.close()
    assert "Ledger verified" in html and f"Head: seq {seq}, hash" in html and digest in html
    assert "FAILED" not in html

    copy = tmp_path / "copy"
    shutil.copytree(built.path.parent, copy, ignore=shutil.ignore_patterns("*.toml"))
    with sqlite3.connect(copy / "scanside.db") as db:  # as tests/test_ledger.py: an entry edited behind the chain
        db.executescript("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete;")
        first = "SELECT MIN(seq) FROM ledger WHERE kind='scored' AND payload LIKE '%\"positive\": true%'"
        db.execute("UPDATE ledger SET payload=replace(payload, '\"positive\": true', '\"positive\": false')"
                   f" WHERE seq=({first})")
    settings = load_settings(str(site[1]))
    store = Store(copy / "scanside.db")
    try:  # the page without its plots (they take seconds and say nothing about the ledger)
        broken = render(gather(store, built.bank, settings.evidence, Period(START)), {})
    finally:
        store.close()
    assert "Ledger verification FAILED" in broken and "Ledger verified" not in broken
    assert "its hash does not match its contents" in unescape(broken)
    assert "must not be relied on" in broken


def test_agreement_tables_equal_what_was_stored(site, report):
    built, _ = site
    html = report.read_text()
    assert sum(built.stored.values()) > 500  # the test means something: many cases, both outcomes
    for finding in built.bank.findings:
        expected = [built.stored[(finding.id, called, truth)] for called, truth in
                    ((True, True), (True, False), (False, True), (False, False))]
        assert _cells(html, finding.name) == expected, finding.id
    # the assessments, per finding and verdict
    rows = dict(re.findall(r"<tr><td>([^<]+)</td>((?:<td class=\"n\">\d+</td>){3})</tr>", html))
    name = {f.id: f.name for f in built.bank.findings}
    for (finding, verdict), n in built.assessed.items():
        counts = [int(x) for x in re.findall(r"\d+", rows[name[finding]])]
        assert counts[("accept", "reject", "correct").index(verdict)] == n


def test_no_identifier_from_the_inputs_appears(site, report):
    built, _ = site
    html = report.read_text()
    assert built.accessions and not any(a in html for a in built.accessions)
    assert PATIENT not in html and "DOE" not in html and ASSESSOR not in html and "re-read" not in html
    assert "1.2.826.0.1." not in html  # no Study or Series Instance UID either
    assert "MR1" in html and "aurora" in html  # station and manufacturer labels are fine


def test_counts_and_the_period_bound_what_is_reported(site):
    built, cfg = site
    settings = load_settings(str(cfg))
    store = Store(built.path)
    try:
        whole = gather(store, built.bank, settings.evidence, Period(START))
        first_week = gather(store, built.bank, settings.evidence, Period(START, START + 7 * 86400))
    finally:
        store.close()
    c = whole.counts
    assert c.scored + c.failed == c.entries == 120 and c.not_assessable > 0 and c.failed > 0
    assert c.with_truth + c.pending_truth == c.assessable > 0 and c.pending_truth > 0
    assert whole.manufacturers == ("aurora", "borealis", "cobalt")
    assert 0 < first_week.counts.entries < c.entries and first_week.last_seq < whole.last_seq
    assert first_week.manufacturers == ("aurora", "borealis")  # the third arrives later
    assert any(cp.manufacturer == "cobalt" and cp.signal == "ood_rate" for cp in whole.timeline.change_points)
    page = render(first_week, {})  # without plots the page still says everything in numbers
    assert "Ledger verified" in page and "cobalt" not in page.split("What was running")[1].split("Terms")[0]


@pytest.mark.parametrize("args, message", [
    (["--since", "last tuesday"], "--since 'last tuesday' is not an ISO 8601 date or time"),
    (["--since", SINCE, "--until", "2026-02-01"], "is not after --since"),
    (["--since", SINCE, "--until", "soon"], "--until 'soon' is not an ISO 8601"),
])
def test_a_bad_period_is_refused_with_a_clear_message(site, tmp_path, capsys, args, message):
    _, cfg = site
    out = tmp_path / "r.html"
    assert main(["validation", "report", *args, "--out", str(out), "--config", str(cfg)]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_without_matplotlib_the_error_names_the_extra(site, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    _, cfg = site
    assert main(["validation", "report", "--since", SINCE, "--out", str(tmp_path / "r.html"), "--config",
                 str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "scanside[report]" in err and "matplotlib" in err


def test_a_missing_database_is_named(tmp_path, capsys):
    cfg = tmp_path / "scanside.toml"
    cfg.write_text(config_text(tmp_path / "nothing"))
    assert main(["validation", "report", "--since", SINCE, "--out", str(tmp_path / "r.html"), "--config",
                 str(cfg)]) == 2
    assert "no appliance database" in capsys.readouterr().err


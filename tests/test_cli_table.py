"""The terminal results table at 60, 100 and 160 columns: no line wider than the terminal, no word cut, and every
finding's call on the same side of 0.50 as the probability shown beside it."""

from __future__ import annotations

import io
import re

import pytest

from appliance.api import pb
from appliance.cli.table import ResultsTable, shown_probability, wrap

WIDTHS = (60, 100, 160)
NUMBER = re.compile(r"(?<![\w.<])(0\.\d\d|1\.00)(?![\d])")


def finding(fid: str, name: str, p: float, positive: bool | None = None, reasons: tuple[str, ...] = ()):
    return pb.FindingResult(finding_id=fid, name=name, probability=p, positive=p >= 0.5 if positive is None
                            else positive, score=0.5, threshold=0.5, review_reasons=list(reasons))


def result(key: str, manufacturer: str, findings, reasons=(), **kw) -> pb.SeriesResult:
    return pb.SeriesResult(series_key=key, series_instance_uid=f"1.2.{key}", manufacturer=manufacturer,
                           findings=findings, needs_review=bool(reasons), review_reasons=list(reasons),
                           scored_at_unix=1_780_000_000.0, timings=pb.StageTimings(scan_to_score_ms=191.0), **kw)


# The words the issue saw cut ("ischaemic_", vendor names at 10 characters), edge probabilities, a stored result
# whose call disagrees with its probability (an older calibration), one not assessable, SR states, a failure.
RESULTS = [
    result("s000000000001", "Aurora Medical Systems Healthineers", [
        finding("ischaemic_cm", "ischaemic_cardiomyopathy", 0.95),
        finding("nonischaemic_cm", "Non-ischaemic cardiomyopathy", 0.50, reasons=("near_threshold",)),
        finding("rv_dilation", "RV dilation", 0.4996, reasons=("near_threshold",)),
        finding("amyloidosis", "Cardiac amyloidosis", 0.61, reasons=("near_threshold", "rare_finding"))],
        reasons=("out_of_distribution", "nonischaemic_cm:near_threshold", "rv_dilation:near_threshold",
                 "amyloidosis:near_threshold", "amyloidosis:rare_finding"),
        sr_deliveries=[pb.SrDelivery(destination="pacs", state="pending")]),
    result("s000000000002", "Borealis Healthcare", [
        finding("lv_dilation", "LV dilation", 0.28, positive=True),  # scored by an older calibration
        finding("hcm", "Hypertrophic cardiomyopathy", 0.12)]),
    result("s000000000003", "Cobalt Imaging", [finding("lv_dilation", "LV dilation", 0.93, positive=False)],
           reasons=("not_assessable",), not_assessable=True, quality_reasons=["too_few_slices", "no_motion"]),
]
EVENTS = [pb.ResultEvent(kind=pb.ResultEvent.SCORED, result=r) for r in RESULTS] + [
    pb.ResultEvent(kind=pb.ResultEvent.SR_UPDATED, result=pb.SeriesResult(
        series_key="s000000000001", sr_deliveries=[pb.SrDelivery(destination="pacs", state="failed",
                                                                 last_error="association rejected (permanent)")])),
    pb.ResultEvent(kind=pb.ResultEvent.FAILED, status=pb.SeriesStatus(series_key="s000000000004",
                                                                      detail="preprocess: inconsistent geometry")),
]
INFO = pb.ModelInfo(bundle_name="reference", bundle_version="1", backend="onnxruntime", precision="fp32",
                    research_only=True, bank_version="bd56a2888c0f", findings=[
                        pb.Finding(finding_id=f.finding_id, name=f.name) for r in RESULTS for f in r.findings])
IDENTITY = {"1.2.s000000000001": ("SA00012345", "MR1"), "1.2.s000000000002": ("", "MR2-SOUTH")}


def render(width: int, identity: bool = True) -> str:
    out = io.StringIO()
    table = ResultsTable(out, width=width,
                         identity=(lambda r: IDENTITY.get(r.series_instance_uid, ("", ""))) if identity else None)
    table.header(INFO)
    for event in EVENTS:
        table.add(event)
    assert table.rows == len(EVENTS)
    return out.getvalue()


def words_of(*texts: str) -> set[str]:
    return {w.strip(",;:()") for t in texts for w in t.split()}


def assert_fits_and_no_word_cut(text: str, width: int) -> None:
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, "a line is wider than the terminal"
    tokens = words_of(text)
    names = [f.name for r in RESULTS if not r.not_assessable for f in r.findings if f.positive or f.review_reasons]
    names += [r.manufacturer for r in RESULTS]
    known = words_of(*names) | {"out", "distribution", "too_few_slices", "no_motion"}
    for word in known:
        assert word in tokens, f"{word!r} is not shown whole"
        cut = [t for t in tokens - known if len(t) >= 3 and (word.startswith(t) or word.endswith(t))]
        assert not cut, f"{word!r} appears cut: {cut}"


def column_text(text: str, title: str, next_title: str | None) -> str:
    """The text of one column of the wide layout, or of one labelled field of the block layout."""
    lines = text.splitlines()
    header = next((line for line in lines if title in line and "latency" in line), None)
    if header is not None:
        start, end = header.index(title), header.index(next_title) if next_title else None
        body = lines[lines.index(header) + 2:]
        return "\n".join(line[start:end] for line in body)
    label = {"positive findings": "positive", "review / SR": "review"}[title]
    picked, on = [], False
    for line in lines:
        if re.match(r"  \S", line):
            on = line[2:].startswith(label + " ")
        elif not line.startswith(" "):
            on = False
        if on:
            picked.append(line)
    return "\n".join(picked)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_table_fits_the_terminal_and_cuts_no_word(width):
    text = render(width)
    assert_fits_and_no_word_cut(text, width)
    if width != 100:  # columns where they fit, labelled blocks where they do not (at 100: as the words need)
        assert ("latency" in text) == (width > 100)
    assert {"SA00012345", "MR2-SOUTH", "MR1"} <= words_of(text)  # the exam identity the CLI has
    assert {"too_few_slices", "rejected", "permanent", "inconsistent", "pending"} <= words_of(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_every_call_agrees_with_the_probability_shown_beside_it(width):
    text = render(width)
    one_line = text.splitlines()
    # Positive column (or field): only calls, each at or above 0.50.
    positives = column_text(text, "positive findings", "review / SR")
    shown = [float(n) for n in NUMBER.findall(positives)]
    assert shown and min(shown) >= 0.5, positives
    assert "0.93" not in text  # a not-assessable series shows no finding, whatever its probability
    # The older calibration's contradiction (positive at 0.28) is shown as a call without the number.
    assert "0.28" not in text and any("LV dilation" in line for line in one_line)
    # Review lists: "(+)" always beside >= 0.50, "(-)" beside < 0.50; the number and its mark share a line.
    marked = re.findall(r"(<0\.50|\d\.\d\d) \(([+-])\)", text)
    assert ("<0.50", "-") in marked and ("0.50", "+") in marked and ("0.61", "+") in marked
    for number, sign in marked:
        assert (sign == "+") == (number != "<0.50" and float(number) >= 0.5), (number, sign)
    # The probability stays on the line of its finding's last word.
    for word, p in (("cardiomyopathy", "0.95"), ("amyloidosis", "0.61")):
        assert any(f"{word} {p}" in line for line in one_line), (word, p)


def test_shown_probability_never_contradicts_the_call():
    assert shown_probability(finding("a", "A", 0.4951)) == "<0.50"  # would round to 0.50
    assert shown_probability(finding("a", "A", 0.5)) == "0.50"
    assert shown_probability(finding("a", "A", 0.28, positive=True)) is None
    assert shown_probability(finding("a", "A", 0.7, positive=False)) is None
    for p in [i / 1000 for i in range(1001)]:
        text = shown_probability(finding("a", "A", p))
        assert text is not None and (text == "<0.50" or (float(text) >= 0.5) == (p >= 0.5))


def test_wrap_breaks_at_spaces_only():
    assert wrap("Non-ischaemic cardiomyopathy", 10) == ["Non-ischaemic", "cardiomyopathy"]
    assert wrap("ischaemic_cardiomyopathy 0.81", 12) == ["ischaemic_cardiomyopathy", "0.81"]


def test_without_identity_there_is_no_exam_column():
    text = render(160, identity=False)
    assert "accession" not in text and "SA00012345" not in text
    assert_fits_and_no_word_cut(text, 160)

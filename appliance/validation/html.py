"""The report page: one self-contained HTML file (styles inline, plots as inline SVG, no script, no font, no link
to anything outside it), printable, written for a radiologist and a statistician at once: each section opens with
a plain sentence, numbers carry their 95 % intervals, and the terms are explained at the end.

    page = render(data, figures)     # figures: name -> <svg> text (figures.py), or absent

Every dynamic string is escaped. Nothing here can name a patient: `ValidationData` holds counts, rates, versions,
manufacturer and station names, never a UID, accession number or person.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from html import escape

from appliance import RESEARCH_NOTICE
from appliance.evidence.cases import ALL
from appliance.evidence.performance import Proportion, SlicePerformance
from appliance.validation.gather import ENOUGH_CASES, Agreement, ValidationData

CSS = """
:root { --ink: #1d232b; --muted: #5b6673; --line: #d9dee4; --ok: #1b7f3b; --bad: #b3261e; --warn: #8a5a00; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, Helvetica, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1120px; padding: 24px 28px 48px; font-size: 14px; line-height: 1.45; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 34px 0 6px; padding-top: 10px; border-top: 2px solid var(--line); }
h3 { font-size: 15px; margin: 20px 0 6px; }
p { margin: 6px 0; }
.sub { color: var(--muted); margin: 0 0 14px; }
.headline { font-size: 15px; margin: 4px 0 12px; }
.notice { background: #fff4e5; border: 1px solid #f0c36d; padding: 8px 12px; border-radius: 4px; margin: 10px 0; }
.verdict { border: 2px solid; border-radius: 6px; padding: 12px 16px; margin: 14px 0; }
.verdict.ok { border-color: var(--ok); background: #eef8f1; }
.verdict.bad { border-color: var(--bad); background: #fdeeed; }
.verdict .big { font-size: 18px; font-weight: bold; }
.verdict.ok .big { color: var(--ok); } .verdict.bad .big { color: var(--bad); }
.hash { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: 12px; overflow-wrap: anywhere; }
.warn { color: var(--warn); font-weight: bold; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 9px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.nw, th.nw { white-space: nowrap; }
tr.group td { background: #fafbfc; font-weight: 600; border-top: 1px solid #b9c1ca; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0 12px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 150px; }
.card .v { font-size: 22px; font-weight: bold; } .card .k { color: var(--muted); font-size: 12px; }
.twobytwo { display: grid; grid-template-columns: repeat(auto-fill, minmax(265px, 1fr)); gap: 12px 18px; }
.twobytwo table { width: 100%; margin: 0; font-size: 12.5px; }
.twobytwo th, .twobytwo td { padding: 3px 6px; }
.twobytwo .t { font-weight: 600; margin: 0 0 3px; font-size: 13px; }
figure { margin: 8px 0 16px; } figcaption { color: var(--muted); font-size: 12.5px; margin-top: 2px; }
svg.plot { width: 100%; height: auto; display: block; }
dl.terms dt { font-weight: 600; margin-top: 6px; } dl.terms dd { margin: 0 0 0 18px; }
ul { margin: 4px 0 8px 0; padding-left: 22px; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  h2 { break-after: avoid; } figure, table, .verdict, .twobytwo > div { break-inside: avoid; }
  .scroll { overflow: visible; }
}
@page { size: A4; margin: 14mm; }
"""

NAN = float("nan")


# --- formatting ----------------------------------------------------------------------------------------------------

def utc(t: float | None, with_time: bool = True) -> str:
    if t is None:
        return "now"
    when = datetime.fromtimestamp(t, timezone.utc)
    return f"{when:%Y-%m-%d %H:%M} UTC" if with_time else f"{when:%Y-%m-%d}"


def pct(x: float, digits: int = 1) -> str:
    return "–" if x != x else f"{100 * x:.{digits}f} %"


def prop(p: Proportion) -> str:
    """'87.5 % (80.1–92.3) 14/16'."""
    if p.n == 0:
        return "– (no case)"
    return f"{pct(p.estimate)} <span class=sub>({100 * p.lower:.1f}–{100 * p.upper:.1f}) {p.k}/{p.n}</span>"


def auroc(perf: SlicePerformance, minimum: int) -> str:
    roc = perf.auroc
    if roc is None or roc.estimate != roc.estimate:
        return f"<span class=sub>not yet (needs {minimum} of each)</span>"
    return f"{roc.estimate:.3f} <span class=sub>({roc.lower:.3f}–{roc.upper:.3f})</span>"


def num(x: float, digits: int = 3) -> str:
    return "–" if x != x else f"{x:.{digits}f}"


def table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (),
          groups: Mapping[int, str] | None = None, nowrap: Sequence[int] = ()) -> str:
    """Cells are HTML already (escape before); `numeric`: right-aligned columns; `nowrap`: columns kept on one
    line; `groups`: a full-width row before row i."""
    cls = [' class="n"' if i in numeric else ' class="nw"' if i in nowrap else "" for i in range(len(head))]
    out = ['<div class="scroll"><table><thead><tr>', *(f"<th{c}>{h}</th>" for c, h in zip(cls, head, strict=True)),
           "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        if groups and i in groups:
            out.append(f'<tr class="group"><td colspan="{len(head)}">{groups[i]}</td></tr>')
        out.append("<tr>" + "".join(f"<td{c}>{v}</td>" for c, v in zip(cls, row, strict=True)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def figure(svg: str | None, caption: str) -> str:
    if not svg:
        return ""
    return f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


def name_of(data: ValidationData, finding_id: str) -> str:
    return escape(next((f.name for f in data.findings if f.id == finding_id), finding_id))


# --- sections ------------------------------------------------------------------------------------------------------

def header(data: ValidationData) -> str:
    p = data.period
    bundle = f"{escape(data.bundle[0])} {escape(data.bundle[1])}" if data.bundle else "none (nothing scored)"
    end = utc(p.until) if p.until is not None else utc(data.last_at) + " (the newest entry)"
    return (f"<h1>ScanSide validation report</h1>"
            f'<p class="sub">Period {utc(p.since)} to {end} · made {utc(data.generated_at)} by ScanSide '
            f"{escape(data.appliance_version)} · model evaluated: {bundle}</p>"
            f'<div class="notice"><b>{escape(RESEARCH_NOTICE)}</b> The numbers describe a synthetic reference '
            "model on the studies this appliance saw; they are not evidence of clinical performance (see "
            "<a href=\"#caveats\">Caveats</a>).</div>")


def ledger_section(data: ValidationData) -> str:
    v = data.verdict
    period = (f"This period's entries are seq {data.first_seq} to {data.last_seq}; the last one's hash is "
              f'<span class="hash">{escape(data.last_hash)}</span>.' if data.first_seq is not None
              else "The period holds no ledger entry.")
    if v.ok:
        box = (f'<div class="verdict ok"><div class="big">✔ Ledger verified</div>'
               f"<p>{v.entries} entries, seq 1 to {v.head_seq} with no gap; every entry's hash and its link to the "
               "entry before it recomputed; times never decrease; every stored result and failed series sealed "
               "exactly once and still as sealed.</p>"
               f'<p>Head: seq {v.head_seq}, hash <span class="hash">{escape(v.head_hash)}</span></p></div>')
        headline = ("What the appliance said about each study was written down before the reports arrived and has "
                    "not been changed since.")
    else:
        box = (f'<div class="verdict bad"><div class="big">✘ Ledger verification FAILED</div>'
               f"<p>{escape(v.problem)}</p><p>First bad entry: seq {v.bad_seq}. The chain verifies up to seq "
               f'{v.head_seq} (hash <span class="hash">{escape(v.head_hash)}</span>).</p></div>')
        headline = ('<span class="warn">The record of what the appliance said has been altered.</span> The numbers '
                    "below are computed from it and must not be relied on until the failure is explained.")
    return (f'<h2 id="ledger">1. Is the record intact?</h2><p class="headline">{headline}</p>{box}<p>{period} '
            "Compare the head with a copy kept outside the appliance (docs/ledger.md: a chain rewritten from "
            "the start verifies on its own; only an anchored head shows it).</p>")


def counts_section(data: ValidationData) -> str:
    c = data.counts
    headline = (f"In this period the appliance scored {c.scored} series from {c.studies} studies. {c.with_truth} "
                f"of the {c.assessable} assessable ones have a final report (or a radiologist's assessment) to "
                f"compare with; {c.pending_truth} are still waiting for one.")
    cards = [(c.scored, "series scored"), (c.assessable, "assessable"), (c.not_assessable, "not assessable"),
             (c.failed, "failed before scoring"), (c.with_truth, "with truth"), (c.pending_truth, "pending truth"),
             (c.needs_review, "flagged for review")]
    t = c.truth_records
    return (f'<h2 id="counts">2. What was scored</h2><p class="headline">{escape(headline)}</p><div class="cards">'
            + "".join(f'<div class="card"><div class="v">{v}</div><div class="k">{k}</div></div>' for v, k in cards)
            + "</div><p><i>Not assessable</i>: the quality gate refused the images (too few slices, not a cine "
              "short-axis stack, …), so every finding was reported negative by rule and there is no call to judge; "
              "they are left out of every statistic below, as are failed series. <i>With truth</i> counts a series "
              "once its study has a current label for at least one finding.</p>"
            + f"<p>Report records held by the appliance (all time): {t.get('matched', 0)} matched to a scored study, "
              f"{t.get('pending', 0)} waiting for their study, {t.get('corrected', 0)} corrected reports, "
              f"{t.get('withdrawn', 0)} cancelled, {t.get('assessed', 0)} radiologist assessments.</p>")


def versions_section(data: ValidationData) -> str:
    rows = [(escape(s.what), escape(s.value), str(s.entries), utc(s.first_at), utc(s.last_at)) for s in data.seen]
    others = ""
    if data.other_bundles:
        names = ", ".join(f"{escape(n)} {escape(v)}" for n, v in data.other_bundles)
        others = (f'<p class="warn">Other models also scored studies in this period ({names}). Only '
                  f"{escape(' '.join(data.bundle or ()))} is evaluated below: two models are never pooled.</p>")
    written = table(("Manufacturer as the images name it", "counted as", "series"),
                    [(escape(m.written), escape(m.label), str(m.series)) for m in data.written], numeric=(2,))
    stations = ", ".join(f"{escape(s)} ({n})" for s, n in data.stations) or "none"
    return ('<h2 id="versions">3. What was running</h2><p class="headline">The model, label bank, mode and '
            "inference backend in force, from the ledger entries of the period.</p>"
            + table(("what", "value", "entries", "first", "last"), rows, numeric=(2,)) + others
            + "<p>A new label bank version means the site edited prompts or thresholds: each result is judged by "
              "the threshold it was scored with. <i>shadow</i>: results were scored and sealed but not shown or sent "
              "to PACS; <i>assist</i>: shown to readers.</p><h3>Manufacturers and stations</h3>"
            + "<p>Manufacturers count under the labels configured in <code>[evidence] manufacturers</code> "
              "(anything else is <i>other</i>).</p>" + written
            + f"<p>Stations (StationName, as configured in <code>[evidence] stations</code>): {stations}.</p>")


def _range(values: Sequence[float]) -> str:
    ok = [v for v in values if v == v]
    return f"{pct(min(ok))} to {pct(max(ok))}" if ok else "not yet estimable"


def performance_headline(data: ValidationData) -> str:
    pooled = [data.slice(f) for f in data.finding_ids]
    estimable = [p for p in pooled if p.auroc is not None and p.auroc.estimate == p.auroc.estimate]
    sens, spec = _range([p.sensitivity.estimate for p in pooled]), _range([p.specificity.estimate for p in pooled])
    text = (f"At the threshold, pooled over manufacturers, sensitivity ranged {sens} and specificity {spec} across "
            f"the {len(pooled)} findings. ")
    if estimable:
        low = min(estimable, key=lambda p: p.auroc.estimate if p.auroc else NAN)
        text += (f"AUROC could be estimated for {len(estimable)} of them (lowest: {name_of(data, low.finding_id)}, "
                 f"{num(low.auroc.estimate if low.auroc else NAN)}). ")
    else:
        text += (f"No finding has yet the {data.min_auroc_cases} present and {data.min_auroc_cases} absent cases "
                 "an AUROC needs. ")
    gaps = []
    for f in data.finding_ids:
        by = {m: data.slice(f, m).auroc for m in data.manufacturers}
        est = {m: r.estimate for m, r in by.items() if r is not None and r.estimate == r.estimate}
        if len(est) >= 2:
            hi, lo = max(est, key=est.__getitem__), min(est, key=est.__getitem__)
            gaps.append((est[hi] - est[lo], f, hi, lo, est[hi], est[lo]))
    if gaps:
        _, f, hi, lo, top, bottom = max(gaps)
        text += (f"The largest difference between manufacturers is for {name_of(data, f)}: AUROC {num(top)} on "
                 f"{escape(hi)} against {num(bottom)} on {escape(lo)} (check whether their intervals overlap "
                 "before reading much into it).")
    return text


def performance_section(data: ValidationData, figures: Mapping[str, str]) -> str:
    rows: list[tuple[str, ...]] = []
    groups: dict[int, str] = {}
    for f in data.findings:
        groups[len(rows)] = f"{escape(f.name)}" + (" <span class=warn>(rare)</span>" if f.rare else "")
        for m in (ALL, *data.manufacturers):
            perf = data.slice(f.id, m)
            if m != ALL and not perf.positives + perf.negatives:
                continue
            rows.append(("all" if m == ALL else escape(m), f"{perf.positives} / {perf.negatives}",
                         prop(perf.sensitivity), prop(perf.specificity), auroc(perf, data.min_auroc_cases),
                         num(perf.calibration.ece), num(perf.calibration.brier)))
    body = table(("slice", "present / absent", "sensitivity (95 % CI) k/n", "specificity (95 % CI) k/n",
                  "AUROC (95 % CI)", "ECE", "Brier"), rows, numeric=(1,), groups=groups, nowrap=(0, 2, 3, 4))
    return (f'<h2 id="performance">4. How often was the appliance right?</h2><p class="headline">'
            f"{performance_headline(data)}</p>"
            "<p>Per finding, against the current truth of each study: the final report's reading, or a radiologist's "
            "later assessment where there is one. <i>Sensitivity</i>: of the studies where the finding was present, "
            "the share the appliance called positive; <i>specificity</i>: of those where it was absent, the share "
            "called negative, both at the threshold the appliance used. In brackets the 95 % confidence interval "
            "(Wilson), then the count behind it. Wide intervals mean few cases, not a bad model.</p>"
            + body
            + figure(figures.get("roc"), "ROC curves per finding: each line shows sensitivity against "
                     "1 − specificity as the threshold moves, one colour per manufacturer (dashed: all pooled; "
                     "dotted: fewer cases than an AUROC needs). The dot marks the threshold the appliance used. "
                     "A curve closer to the top-left corner discriminates better; the grey diagonal is chance.")
            + "<h3>Calibration: do the probabilities mean what they say?</h3>"
            + "<p>When the appliance shows 30 %, about 30 % of such studies should truly have the finding. Each dot is "
              "a band of probabilities (its area: how many studies), plotted at the mean probability shown against "
              "the share truly present, with its 95 % interval. Dots on the diagonal are well calibrated; below it, "
              "the appliance over-states; above it, it under-states. <i>ECE</i> (expected calibration error) "
              "is the count-weighted average distance from the diagonal.</p>"
            + figure(figures.get("calibration"), "Reliability diagrams per finding, all manufacturers pooled."))


def _twobytwo(data: ValidationData, a: Agreement) -> str:
    agree = (a.both_positive + a.both_negative) / a.total if a.total else NAN
    src = f"truth from {a.from_report} reports" + (f", {a.from_assessment} assessments" if a.from_assessment else "")
    return (f'<div><p class="t">{name_of(data, a.finding_id)}</p><table><thead><tr><th></th><th class="n">truly '
            f'present</th><th class="n">absent</th></tr></thead><tbody>'
            f'<tr><th class="nw">called positive</th><td class="n">{a.both_positive}</td>'
            f'<td class="n">{a.model_only}</td></tr>'
            f'<tr><th class="nw">called negative</th><td class="n">{a.truth_only}</td>'
            f'<td class="n">{a.both_negative}</td></tr>'
            f'</tbody></table><p class="sub">agree in {pct(agree)} of {a.total}; {src}</p></div>')


def agreement_section(data: ValidationData) -> str:
    total = sum(a.total for a in data.agreement)
    agree = sum(a.both_positive + a.both_negative for a in data.agreement)
    headline = (f"Finding by finding, the appliance's call matched the truth in {agree} of {total} comparisons "
                f"({pct(agree / total if total else NAN)}).")
    if data.agreement and any(a.total for a in data.agreement):
        worst = max(data.agreement, key=lambda a: (a.model_only + a.truth_only) / a.total if a.total else -1)
        headline += (f" Most disagreement: {name_of(data, worst.finding_id)} ({worst.model_only} called positive "
                     f"but absent in the report, {worst.truth_only} missed).")
    out = (f'<h2 id="agreement">5. Agreement with the reports</h2><p class="headline">{headline}</p>'
           "<p>The counts behind sensitivity and specificity: rows are the appliance's call at its threshold, "
           "columns the truth "
           "(the report's reading, or a later assessment). Only assessable series whose study has truth for the "
           "finding.</p><div class=\"twobytwo\">" + "".join(_twobytwo(data, a) for a in data.agreement) + "</div>")
    if data.assessed:
        rows = [(name_of(data, a.finding_id), str(a.accepted), str(a.rejected), str(a.corrected))
                for a in data.assessed]
        out += ("<h3>Radiologists' assessments of the results</h3><p>Where a radiologist reviewed a result directly "
                "(accepted the call, rejected it, or corrected the value), counted per finding. Who assessed is "
                "kept in the appliance, not in this report.</p>"
                + table(("finding", "accepted", "rejected", "corrected"), rows, numeric=(1, 2, 3)))
    else:
        out += "<p>No radiologist assessed a result of this period directly.</p>"
    return out


def rare_section(data: ValidationData) -> str:
    rare = [f for f in data.findings if f.rare]
    if not rare:
        return ('<h2 id="rare">6. Rare findings</h2><p class="headline">The label bank marks no finding as rare.</p>')
    rows, warnings = [], []
    for f in rare:
        perf = data.slice(f.id)
        called = sum(1 for c in data.cases_of(f.id) if c.positive)
        rows.append((escape(f.name), pct(f.prevalence), str(perf.positives), str(perf.negatives), str(called),
                     prop(perf.sensitivity)))
        if perf.positives < ENOUGH_CASES:
            spread = (f"spans {pct(perf.sensitivity.lower, 0)} to {pct(perf.sensitivity.upper, 0)}"
                      if perf.positives else "cannot be computed")
            warnings.append(f'<p class="warn">⚠ {escape(f.name)}: only {perf.positives} confirmed case'
                            f'{"" if perf.positives == 1 else "s"} in this period. That is too few to conclude '
                            "anything about how well the appliance finds it: the sensitivity interval "
                            f"{spread}."
                            " Every positive call of a rare finding is flagged for review; keep it that way.</p>")
    headline = (f"{len(rare)} finding{'s are' if len(rare) > 1 else ' is'} marked rare in the label bank: "
                "positive calls always need a human review, and the evidence on them grows slowly.")
    return (f'<h2 id="rare">6. Rare findings</h2><p class="headline">{escape(headline)}</p>'
            + table(("finding", "expected prevalence", "confirmed present", "confirmed absent", "called positive",
                     "sensitivity (95 % CI) k/n"), rows, numeric=(1, 2, 3, 4)) + "".join(warnings))


def _signal(name: str, data: ValidationData) -> str:
    if name == "ood_rate":
        return "out-of-distribution rate"
    if name == "ood_distance":
        return "out-of-distribution distance"
    return "positive rate of " + name_of(data, name.partition(":")[2])


def _value(name: str, x: float) -> str:
    return num(x, 2) if name == "ood_distance" else pct(x)


def drift_section(data: ValidationData, figures: Mapping[str, str]) -> str:
    tl, p = data.timeline, data.policy
    points = tl.change_points
    if points:
        groups = sorted({c.manufacturer for c in points})
        headline = (f"The drift tests flagged {len(points)} change{'s' if len(points) > 1 else ''} in this period "
                    f"({', '.join(escape('all manufacturers' if g == ALL else g) for g in groups)}): the images or "
                    "the calls changed compared with what the model was built for or with what this site saw "
                    "first. Look at what changed then (a new scanner, software update or protocol).")
    else:
        headline = "No drift signal was flagged in this period: the inputs looked like those the model expects."
    rows = [(utc(c.at), escape("all manufacturers" if c.manufacturer == ALL else c.manufacturer),
             _signal(c.signal, data), _value(c.signal, c.value), _value(c.signal, c.reference),
             f"{c.p_value:.1e}", utc(c.cleared_at) if c.cleared_at is not None else "still flagged at the end")
            for c in points]
    unit = {"week": "week (weeks start on Monday, UTC)", "day": "day (UTC)"}.get(tl.unit, "eighth of the period")
    now_rows = []
    for m, g in data.drift_now.items():
        if not g.studies:
            continue
        flagged = [_signal(s.name, data) for s in g.signals if s.drifting]
        now_rows.append((escape("all manufacturers" if m == ALL else m), str(g.studies), str(g.window_studies),
                         pct(g.ood_rate), num(g.ood_distance_mean, 2),
                         ", ".join(flagged) if flagged else "none"))
    out = (f'<h2 id="drift">7. Drift over time</h2><p class="headline">{headline}</p>'
           f"<p>Drift needs no report: it asks whether the images and the calls still look like what the model was "
           f"built for. A study is <i>out of distribution</i> (OOD) when its image embedding lies further from the "
           f"training images than {num(data.ood_threshold, 2)} (the distance 99 % of training studies stay within); "
           f"the bundle expects about {pct(p.ood_expected_rate, 0)} of studies beyond it. Plotted per {unit}.</p>"
           + figure(figures.get("ood"), "Share of studies beyond the OOD threshold, per manufacturer; the "
                    "dash-dotted line is the expected rate, the dashed verticals mark where a drift test started "
                    "flagging an OOD signal.")
           + figure(figures.get("positive"), "Share of studies called positive per finding and manufacturer; "
                    "dashed verticals mark where the finding's positive rate started being flagged.")
           + "<h3>Change points</h3>"
           + f"<p>The appliance's own drift tests (the ones behind its alerts), replayed over the ledger in order: "
             f"each row is a moment one test started flagging. Tests compare the last {p.window} studies with the "
             f"expected OOD rate (exact binomial test) or with the site's first {p.baseline} studies (distance: Welch "
             f"test on its logarithm; positive rates: two-proportion test), and flag at p below {p.alpha:g} "
             "(positive rates: divided by the number of findings).</p>"
           + (table(("flagged at", "manufacturer", "signal", "value then", "compared with", "p", "cleared"), rows,
                    numeric=(3, 4, 5)) if rows else "<p>None.</p>")
           + "<h3>At the end of the period</h3>"
           + table(("group", "studies so far", "in the window", "OOD rate", "mean OOD distance", "flagged"),
                   now_rows, numeric=(1, 2, 3, 4)))
    return out


def caveats_section(data: ValidationData) -> str:
    small = [data.slice(f).positives for f in data.finding_ids]
    few = sum(1 for n in small if n < ENOUGH_CASES)
    return (
        '<h2 id="caveats">8. Caveats: read before quoting any number</h2><ul>'
        "<li><b>Synthetic reference model, not for clinical use.</b> The model that scored these studies is a small "
        "research model trained on synthetic images; ScanSide is research software. Nothing here supports a "
        "diagnostic decision.</li>"
        "<li><b>Not comparable with CMR-CLIP's published AUROCs.</b> Different model, different data, different "
        "definition of truth, and (here) synthetic studies: a number in this report and a published one measure "
        "different things.</li>"
        "<li><b>Truth is read from report text by rules.</b> The extractor reads each finding as present or absent "
        "from the final report's wording (abbreviations spelled out, negations such as \"no effusion\" handled, "
        "silence read as absent). It reads the synthetic reports without error but has known limits on real prose "
        "(one clause joining a negative and a positive, comparisons with earlier studies, numbers other than "
        "ejection fractions): docs/ground-truth.md.</li>"
        "<li><b>A report is not adjudicated truth.</b> It is one reader's opinion, written knowing the images (and, "
        "in assist mode, possibly the appliance's result). Disagreement may be the report's error; a radiologist's "
        "assessment replaces the report for that finding, but it too is a single reading.</li>"
        f"<li><b>Small samples.</b> {few} of {len(small)} findings have fewer than {ENOUGH_CASES} confirmed "
        "cases in this period. Intervals are 95 % and computed per slice, with no correction for the many slices "
        "shown: among dozens of intervals, a few will miss by chance. Manufacturer differences are trustworthy only "
        "where intervals do not overlap and the cases are many.</li>"
        "<li><b>Not assessable and failed series are excluded</b> (section 2), and so are studies without a report "
        "yet: if the reports that are late or never come differ from those that came, the numbers are biased.</li>"
        "<li><b>One model at a time.</b> Only the newest model of the period is evaluated; a prompt edit changes the "
        "label bank and each result is judged by the threshold it used.</li></ul>")


GLOSSARY = (
    ("Sensitivity", "Of the studies where the finding was present, the share the appliance called positive."),
    ("Specificity", "Of the studies where the finding was absent, the share the appliance called negative."),
    ("95 % confidence interval (CI)", "The range of true values consistent with what was observed; the Wilson "
     "interval is used for proportions because it behaves well with few cases and rates near 0 or 100 %."),
    ("AUROC", "Area under the ROC curve: the chance that a study with the finding gets a higher score than one "
     "without it (0.5 is a coin toss, 1 is perfect). Its interval is DeLong's. Computed once a slice has at least "
     "the configured number of present and absent cases."),
    ("Calibration, ECE, Brier", "Whether a shown probability matches how often the finding is truly present. ECE: "
     "the average gap between shown and observed, weighted by how many studies fall in each band. Brier: the mean "
     "squared difference between probability and outcome (0 is perfect; it mixes calibration and discrimination)."),
    ("Out of distribution (OOD)", "An image embedding far from the model's training images, measured by a "
     "distance the model bundle defines; a rise in OOD studies means the inputs changed."),
    ("Drift test, p", "A statistical test of whether the recent studies differ from a reference; p is the "
     "probability of a difference at least this large by chance alone. Flagged below a small threshold."),
    ("Ledger", "The appliance's append-only, hash-chained record of every result, sealed when it was made: the "
     "verification shows no entry was changed, removed or back-dated afterwards."),
)


def glossary_section() -> str:
    return ('<h2 id="terms">9. Terms</h2><dl class="terms">'
            + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in GLOSSARY) + "</dl>")


def render(data: ValidationData, figures: Mapping[str, str]) -> str:
    title = f"ScanSide validation report {utc(data.period.since, False)} to {utc(data.period.until, False)}"
    sections = [header(data), ledger_section(data), counts_section(data), versions_section(data)]
    if data.findings:
        sections += [performance_section(data, figures), agreement_section(data), rare_section(data),
                     drift_section(data, figures)]
    else:
        sections.append('<h2 id="performance">4. Performance</h2><p class="headline">Nothing was scored in this '
                        "period, so there is nothing to evaluate.</p>")
    sections += [caveats_section(data), glossary_section()]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")


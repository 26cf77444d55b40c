"""The report's plots, made with matplotlib (the `report` extra) on the Agg backend, as inline SVG text.

    svg = roc_grid(data)        # one small panel per finding, a curve per manufacturer
    svg = calibration_grid(data)
    svg = ood_over_time(data); svg = positive_rate_grid(data)

Each function returns an `<svg>` element ready to sit inside HTML: no XML prolog, no DOCTYPE, no metadata (which
name external namespaces), sized by its viewBox so it scales with the page and prints sharp. Text is drawn as
paths, so a plot looks the same on a browser without the fonts it was made with. No figure state is global: each
plot is its own `Figure`, never pyplot.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.evidence.cases import ALL
from appliance.evidence.performance import wilson

if TYPE_CHECKING:
    from appliance.validation.gather import ValidationData
    from appliance.validation.timeline import ChangePoint

EXTRA = "report"  # pip install 'scanside[report]'
POOLED = "#222222"
# Colour-blind-safe (Okabe-Ito), one per manufacturer label in the order the report lists them.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#F0E442", "#999999")
COLUMNS = 5


class MissingExtra(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """Import matplotlib on the Agg backend, or say which extra brings it."""
    try:
        import matplotlib
    except ImportError:
        raise MissingExtra("the validation report's plots need matplotlib: pip install 'scanside[report]' "
                           f"(the {EXTRA!r} extra)") from None
    matplotlib.use("Agg")
    return matplotlib


def colour(data: ValidationData, manufacturer: str) -> str:
    if manufacturer == ALL:
        return POOLED
    return PALETTE[list(data.manufacturers).index(manufacturer) % len(PALETTE)]


@contextmanager
def _style() -> Iterator[Any]:
    matplotlib = require_matplotlib()
    with matplotlib.rc_context({
        "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 8.5, "axes.labelsize": 8,
        "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7.5, "axes.spines.top": False,
        "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e6e6", "grid.linewidth": 0.6,
        "svg.fonttype": "path", "svg.hashsalt": "scanside", "lines.linewidth": 1.4,
    }):
        yield matplotlib


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)  # the HTML parser gives inline SVG its namespace
    # Scale with the page: keep the viewBox, drop the fixed size.
    text = re.sub(r'<svg([^>]*?)\swidth="[^"]*"\sheight="[^"]*"', r'<svg\1 class="plot" role="img"', text, count=1)
    return text.strip()


def _grid(n: int, height: float = 2.15) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    rows = max(1, math.ceil(n / COLUMNS))
    fig = Figure(figsize=(10.4, height * rows + 0.55), layout="constrained")
    axes = fig.subplots(rows, COLUMNS, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _unit_axes(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    """A square [0, 1] panel with three labelled ticks per axis (fewer labels: readable small, and quick)."""
    ax.set(xlim=(0, 1), ylim=(0, 1.02), aspect="equal", title=title)
    ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
    ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"])
    ax.set_xticks([0.25, 0.75], minor=True)
    ax.set_yticks([0.25, 0.75], minor=True)
    ax.grid(True, which="minor", color="#f0f0f0", linewidth=0.5)
    ax.set_xlabel(xlabel, labelpad=1)
    ax.set_ylabel(ylabel, labelpad=1)


def roc_points(scores: Sequence[float], truth: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every distinct score, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(truth, dtype=bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    return np.r_[0.0, fp / max(1, (~y).sum())], np.r_[0.0, tp / max(1, y.sum())]


def _legend(fig: Any, data: ValidationData, extra: Sequence[Any] = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=POOLED, linestyle="--", label="all manufacturers")]
    handles += [Line2D([], [], color=colour(data, m), label=m) for m in data.manufacturers]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside upper center", ncol=min(8, len(handles)), frameon=False)


def roc_grid(data: ValidationData) -> str:
    """Per finding: the ROC curve of each manufacturer with both classes (dotted below min_auroc_cases of
    either), the pooled curve dashed, and a dot where the threshold operates."""
    from matplotlib.lines import Line2D

    with _style():
        fig, axes = _grid(len(data.findings))
        for ax, finding in zip(axes, data.findings, strict=True):
            ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.8)
            drawn = 0
            for m in (*data.manufacturers, ALL):
                cases = data.cases_of(finding.id, m)
                pos = sum(c.truth for c in cases)
                neg = len(cases) - pos
                if not pos or not neg:
                    continue
                fpr, tpr = roc_points([c.score for c in cases], [c.truth for c in cases])
                few = min(pos, neg) < data.min_auroc_cases
                style = "--" if m == ALL else ":" if few else "-"
                ax.plot(fpr, tpr, color=colour(data, m), linestyle=style, linewidth=1.1 if m == ALL else 1.4,
                        drawstyle="steps-post", zorder=3 if m == ALL else 2)
                perf = data.slice(finding.id, m)
                ax.plot([1 - perf.specificity.estimate], [perf.sensitivity.estimate], "o", markersize=3.5,
                        color=colour(data, m), zorder=4)
                drawn += 1
            if not drawn:
                ax.text(0.5, 0.5, "no case with\nboth outcomes yet", ha="center", va="center", color="#777777",
                        transform=ax.transAxes)
            _unit_axes(ax, finding.name, "1 − specificity", "sensitivity")
        _legend(fig, data, [Line2D([], [], color="#666666", linestyle=":",
                                   label=f"fewer than {data.min_auroc_cases} of a class"),
                            Line2D([], [], color="#666666", marker="o", linestyle="", markersize=3.5,
                                   label="at the threshold")])
        return _svg(fig)


def calibration_grid(data: ValidationData) -> str:
    """Per finding, all manufacturers pooled: the observed rate in each probability bin against the mean
    probability shown, with its Wilson 95 % interval and a dot area growing with the bin's count."""
    with _style():
        fig, axes = _grid(len(data.findings))
        for ax, finding in zip(axes, data.findings, strict=True):
            ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.8)
            perf = data.slice(finding.id)
            bins = [b for b in perf.calibration.bins if b.count]
            if bins:
                k = [round(b.observed_rate * b.count) for b in bins]
                ci = [wilson(ki, b.count) for ki, b in zip(k, bins, strict=True)]
                x = np.array([b.mean_probability for b in bins])
                y = np.array([b.observed_rate for b in bins])
                err = np.array([[yi - c.lower for yi, c in zip(y, ci, strict=True)],
                                [c.upper - yi for yi, c in zip(y, ci, strict=True)]]).clip(0.0)  # rounding
                ax.errorbar(x, y, yerr=err, fmt="none", ecolor="#9ab", elinewidth=0.9, capsize=1.5)
                total = sum(b.count for b in bins)
                ax.scatter(x, y, s=[8 + 120 * b.count / total for b in bins], color=PALETTE[0], zorder=3,
                           edgecolors="white", linewidths=0.5)
                ax.text(0.04, 0.96, f"n = {total}\nECE = {perf.calibration.ece:.3f}", transform=ax.transAxes,
                        va="top", fontsize=7, color="#333333")
            else:
                ax.text(0.5, 0.5, "no case yet", ha="center", va="center", color="#777777", transform=ax.transAxes)
            _unit_axes(ax, finding.name, "probability shown", "share truly present")
        return _svg(fig)


def _x_of(data: ValidationData, t: float) -> float:
    """A time's position on the bucket axis (bucket i centred on i)."""
    parts = data.timeline.buckets
    for i, b in enumerate(parts):
        if b.start <= t < b.end or i == len(parts) - 1:
            return i - 0.5 + min(1.0, max(0.0, (t - b.start) / max(b.end - b.start, 1e-9)))
    return 0.0


def _time_axis(ax: Any, data: ValidationData, label_every: int) -> None:
    parts = data.timeline.buckets
    ticks = list(range(0, len(parts), label_every))
    ax.set_xticks(ticks, [parts[i].label for i in ticks], rotation=30, ha="right")
    ax.set_xlim(-0.6, len(parts) - 0.4)


def _mark(ax: Any, data: ValidationData, points: Sequence[ChangePoint]) -> None:
    for c in points:
        ax.axvline(_x_of(data, c.at), color=colour(data, c.manufacturer), linewidth=1.0, linestyle=(0, (4, 2)),
                   alpha=0.9, zorder=1)


def _series(data: ValidationData, manufacturer: str, value: Any) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, b in enumerate(data.timeline.buckets):
        if b.studies.get(manufacturer, 0):
            xs.append(i)
            ys.append(value(b))
    return xs, ys


def ood_over_time(data: ValidationData) -> str:
    """The share of studies beyond the bundle's OOD threshold per time bucket and manufacturer, the rate the bundle
    expects, and a dashed vertical line where the drift module started flagging an OOD signal."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    with _style():
        fig = Figure(figsize=(10.4, 3.1), layout="constrained")
        ax = fig.subplots()
        ax.axhline(data.policy.ood_expected_rate, color="#888888", linewidth=0.9, linestyle="-.")
        for m in (*data.manufacturers, ALL):
            xs, ys = _series(data, m, lambda b, m=m: b.ood_rate(m))
            ax.plot(xs, ys, marker="o", markersize=3, color=colour(data, m), linestyle="--" if m == ALL else "-",
                    linewidth=1.1 if m == ALL else 1.5)
        _mark(ax, data, [c for c in data.timeline.change_points if c.signal.startswith("ood")])
        _time_axis(ax, data, max(1, math.ceil(len(data.timeline.buckets) / 16)))
        ax.set_ylim(0, max(0.1, ax.get_ylim()[1]))
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
        ax.set_ylabel("studies beyond the OOD threshold")
        _legend(fig, data, [Line2D([], [], color="#888888", linestyle="-.",
                                   label=f"expected ({data.policy.ood_expected_rate:.0%})"),
                            Line2D([], [], color="#666666", linestyle=(0, (4, 2)), label="drift flagged")])
        return _svg(fig)


def positive_rate_grid(data: ValidationData) -> str:
    """Per finding: the share of studies called positive per time bucket and manufacturer, with the finding's
    drift flags."""
    with _style():
        fig, axes = _grid(len(data.findings), height=1.9)
        every = max(1, math.ceil(len(data.timeline.buckets) / 5))
        for ax, finding in zip(axes, data.findings, strict=True):
            for m in (*data.manufacturers, ALL):
                xs, ys = _series(data, m, lambda b, m=m, f=finding.id: b.positive_rate(f, m))
                ax.plot(xs, ys, marker="o", markersize=2, color=colour(data, m),
                        linestyle="--" if m == ALL else "-", linewidth=1.0 if m == ALL else 1.2)
            _mark(ax, data, [c for c in data.timeline.change_points if c.signal == f"positive_rate:{finding.id}"])
            ax.set_title(finding.name)
            ax.set_ylim(0, max(0.1, ax.get_ylim()[1]))
            ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
            _time_axis(ax, data, every)
            ax.tick_params(axis="x", labelsize=6)
        _legend(fig, data)
        return _svg(fig)

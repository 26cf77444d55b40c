"""The technologists' results table (`scanside results`): it fits the terminal, wraps every cell at spaces and
never inside a word, and shows each finding's call beside a probability that agrees with it.

The call and the probability come from the same place (appliance/scoring.py): the probability is calibrated at
the finding's threshold and the finding is positive exactly when it is >= 0.50. The table keeps that visible at
two decimals: a positive never reads below 0.50, a finding not called never reads 0.50 (it reads "<0.50"), and a
stored result whose call disagrees with its probability (scored by an older calibration) shows its call without a
number rather than a contradiction.

Wide terminals get one row per result in columns; below the width the columns need, each result is a short block
of labelled lines. A single word longer than the whole terminal is the only thing that can pass the right edge.
"""

from __future__ import annotations

import shutil
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

import grpc

from appliance.api import pb
from appliance.serve.client import ApplianceClient

CUT = 0.5  # positive exactly when the calibrated probability is at least this (appliance/scoring.py)
GAP = "  "
BIND = "\u00a0"  # a space wrap() never breaks at: a probability stays with its finding's last word
SHADOW_NOTE = f"SHADOW{BIND}MODE: not shown on displays, not sent to PACS"
RESEARCH_NOTE = f"RESEARCH{BIND}USE{BIND}ONLY"
LEGEND = ("positive findings: called at a probability of 0.50 or more, shown beside it; review: why a person must "
          "look, (+) called, (-) not called")

# Review reasons (appliance/scoring.py, the quality gate) in the words a technologist reads.
_REASON_WORDS = {"near_threshold": "near threshold", "rare_finding": "rare finding",
                 "out_of_distribution": "out of distribution", "not_assessable": "not assessable"}


def terminal_width(default: int = 100) -> int:
    """The terminal's columns ($COLUMNS first, as shutil reads it), at least 20."""
    return max(20, shutil.get_terminal_size((default, 24)).columns)


def wrap(text: str, width: int) -> list[str]:
    """`text` in lines of at most `width` characters, broken at spaces only: a word (hyphenated or with
    underscores) is never cut; one longer than `width` stands alone on its line."""
    lines = textwrap.wrap(text, max(1, width), break_long_words=False, break_on_hyphens=False) or [""]
    return [line.replace(BIND, " ") for line in lines]


def labelled(fields: Sequence[tuple[str, str]], width: int, indent: int = 0) -> list[str]:
    """`label  value` lines, values wrapped under each other within `width`; empty values left out."""
    fields = [(label, value) for label, value in fields if value]
    label_width = max((len(label) for label, _ in fields), default=0)
    pad = " " * (indent + label_width + 2)
    out = []
    for label, value in fields:
        first, *rest = wrap(value, width - len(pad))
        out.append(f"{' ' * indent}{label.ljust(label_width)}  {first}")
        out += [pad + line for line in rest]
    return out


def shown_probability(f: pb.FindingResult) -> str | None:
    """The probability as shown beside the finding's call, on the call's side of 0.50; None when the stored call
    and probability disagree (then the call is shown without a number)."""
    if f.positive != (f.probability >= CUT):
        return None
    text = f"{f.probability:.2f}"
    return "<0.50" if not f.positive and text == "0.50" else text


def _called(f: pb.FindingResult, mark: bool = False) -> str:
    p = shown_probability(f)
    sign = (f"{BIND}(+)" if f.positive else f"{BIND}(-)") if mark else ""
    if p is None:
        return f"{f.name}{sign} (called on its score; probability from an older calibration not shown)"
    return f"{f.name}{BIND}{p}{sign}"


class IdentityLookup:
    """The exam identity the CLI may show for a result: GetSeriesPreview's station, and its accession number, which
    the appliance sets only for a named client over TLS. Asked once per result; an appliance that does not serve
    the call (an older one), or a client not allowed to make it, is not asked again."""

    def __init__(self, client: ApplianceClient) -> None:
        self.client = client
        self.available = True

    def __call__(self, r: pb.SeriesResult) -> tuple[str, str]:
        """(accession number, station); empty strings for what is not given."""
        if not self.available or not r.series_instance_uid:
            return "", ""
        try:
            preview = self.client.preview(r.series_instance_uid)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED):
                self.available = False
            return "", ""
        return preview.identity.accession_number, preview.station_name


def exam_text(identity: tuple[str, str], labelled: bool = False) -> str:
    """The table's cell ("accession / station", "-" for either one not served), or with `labelled` words."""
    accession, station = identity
    if labelled:
        return ", ".join(f"{name} {value}" for name, value in (("accession", accession), ("station", station))
                         if value)
    return f"{accession or '-'} / {station or '-'}" if accession or station else "-"


def findings_text(r: pb.SeriesResult) -> str:
    """The positive findings with their probabilities, or why there are none to show (not assessable)."""
    if r.not_assessable:
        return f"not assessable: {'; '.join(r.quality_reasons) or 'no reason given'}"
    return ", ".join(_called(f) for f in r.findings if f.positive) or "none"


def review_text(r: pb.SeriesResult) -> str:
    """'no', or the reasons a person must look, in words, naming the findings concerned."""
    if not r.needs_review:
        return "no"
    by_id = {f.finding_id: f for f in r.findings}
    grouped: dict[str, list[str]] = {}
    for reason in r.review_reasons:
        finding_id, sep, code = reason.partition(":")
        if not sep:
            grouped.setdefault(_REASON_WORDS.get(reason, reason.replace("_", " ")), [])
            continue
        f = by_id.get(finding_id)
        words = _REASON_WORDS.get(code, code.replace("_", " "))
        if r.not_assessable and code == "not_assessable":
            continue  # said once for the study
        grouped.setdefault(words, []).append(_called(f, mark=True) if f is not None else finding_id)
    parts = [f"{words}: {', '.join(items)}" if items else words for words, items in grouped.items()]
    return "YES: " + "; ".join(parts) if parts else "YES"


def sr_text(r: pb.SeriesResult, errors: bool = False) -> str:
    if not r.sr_deliveries:
        return ""
    return "SR " + ", ".join(f"{d.destination} {d.state}" + (f" ({d.last_error})" if errors and d.state == "failed"
                                                            and d.last_error else "") for d in r.sr_deliveries)


def latency_text(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.0f} s"


@dataclass(frozen=True)
class Column:
    title: str
    min_width: int
    weight: int = 0  # share of the width left over
    right: bool = False


def fit(columns: Sequence[Column], width: int) -> list[int] | None:
    """Column widths filling `width` (spare width shared by weight), or None when their minimums do not fit."""
    need = sum(c.min_width for c in columns) + len(GAP) * (len(columns) - 1)
    if need > width:
        return None
    spare, weights = width - need, sum(c.weight for c in columns) or 1
    widths = [c.min_width + spare * c.weight // weights for c in columns]
    widths[max(range(len(columns)), key=lambda i: columns[i].weight)] += width - need - sum(
        w - c.min_width for w, c in zip(widths, columns, strict=True))
    return widths


class ResultsTable:
    """Rows appended as results arrive. `width`: the terminal's columns (default: as it is now)."""

    def __init__(self, out: TextIO, width: int | None = None,
                 identity: Callable[[pb.SeriesResult], tuple[str, str]] | None = None) -> None:
        """`identity`: the accession number and station of a result (an IdentityLookup); None: no exam column."""
        self.out = out
        self.width = terminal_width() if width is None else max(20, width)
        self.identity = identity
        self.rows = 0
        self._set_columns([])

    def _set_columns(self, finding_names: Sequence[str]) -> None:
        longest = max((len(w) for name in finding_names for w in name.split()), default=0)
        columns = [Column("scored / series", 13)]
        if self.identity:
            columns.append(Column("accession / station", 12, 1))
        # A finding's last word travels with its probability (" 0.00") and, under review, its call (" (+)").
        columns += [Column("vendor", 12, 1), Column("latency", 7, right=True),
                    Column("positive findings", max(22, longest + 5), 3),
                    Column("review / SR", max(20, longest + 9), 2)]
        self.columns = columns
        self.widths = fit(columns, self.width)

    def _line(self, text: str) -> None:
        self.out.write(text.rstrip() + "\n")

    def header(self, info: pb.ModelInfo | None = None) -> None:
        if info is not None:
            self._set_columns([f.name for f in info.findings])
            notes = [f"model {info.bundle_name} {info.bundle_version} on {info.backend} ({info.precision})"
                     + (f", label bank {info.bank_version}" if info.bank_version else ""),
                     RESEARCH_NOTE if info.research_only else "",
                     SHADOW_NOTE if info.mode == "shadow" else ""]
            for line in wrap(" - ".join(n for n in notes if n), self.width):
                self._line(line)
        for line in wrap(LEGEND, self.width):
            self._line(line)
        if self.widths is not None:
            self._cells([c.title for c in self.columns])
            self._line("-" * self.width)
        self.out.flush()

    def _cells(self, cells: Sequence[str]) -> bool:
        """One row in columns; False (nothing written) when a word does not fit its column."""
        assert self.widths is not None
        wrapped = [wrap(text, w) for text, w in zip(cells, self.widths, strict=True)]
        if any(len(line) > w for lines, w in zip(wrapped, self.widths, strict=True) for line in lines):
            return False
        for k in range(max(len(lines) for lines in wrapped)):
            parts = []
            for lines, w, c in zip(wrapped, self.widths, self.columns, strict=True):
                text = lines[k] if k < len(lines) else ""
                parts.append(text.rjust(w) if c.right else text.ljust(w))
            self._line(GAP.join(parts))
        return True

    def _block(self, head: str, fields: Sequence[tuple[str, str]]) -> None:
        """One result as labelled lines, for a terminal too narrow for the columns."""
        for line in [*wrap(head, self.width), *labelled(fields, self.width, indent=2)]:
            self._line(line)

    def add(self, event: pb.ResultEvent) -> None:
        r = event.result
        if event.kind == pb.ResultEvent.SCORED:
            when = time.strftime("%H:%M:%S", time.localtime(r.scored_at_unix))
            latency = latency_text(r.timings.scan_to_score_ms)
            notes = " ".join(x for x in (review_text(r), sr_text(r)) if x)
            identity = self.identity(r) if self.identity else None
            exam = [exam_text(identity)] if identity is not None else []
            cells = [f"{when} {r.series_key}", *exam, r.manufacturer or "-", latency, findings_text(r), notes]
            fields = [("exam", exam_text(identity, labelled=True) if identity is not None else ""),
                      ("vendor", r.manufacturer or "-"),
                      ("positive", findings_text(r)), ("review", review_text(r)), ("SR", sr_text(r)[3:])]
            head = f"{when}  {r.series_key}  {latency}{'  NEEDS REVIEW' if r.needs_review else ''}"
        elif event.kind == pb.ResultEvent.SR_UPDATED:
            stamp = max((d.updated_unix for d in r.sr_deliveries), default=time.time())
            when = time.strftime("%H:%M:%S", time.localtime(stamp))
            sr = sr_text(r, errors=True)
            cells = [f"{when} {r.series_key}", *([""] if self.identity else []), "", "", "", sr]
            fields, head = [("SR", sr[3:])], f"{when}  {r.series_key}  SR update"
        elif event.kind == pb.ResultEvent.FAILED:
            s = event.status
            when = time.strftime("%H:%M:%S")
            cells = [f"{when} {s.series_key}", *([""] if self.identity else []), "", "", "", f"FAILED: {s.detail}"]
            fields, head = [("failed", s.detail or "no reason given")], f"{when}  {s.series_key}  FAILED"
        else:
            return  # a kind added after this client was written
        if self.widths is None or not self._cells(cells):
            self._block(head, fields)
        self.out.flush()
        self.rows += 1

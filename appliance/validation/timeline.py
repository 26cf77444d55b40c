"""Drift over time for the report: rates per week (or day) per manufacturer, and the moments the drift module's
own tests started and stopped flagging a signal.

    tl = timeline(observations, times, in_period, reference, labels, policy, since, until)

The change points are not a new statistic: the evidence monitor's `group_drift` (windows, baselines, exact binomial,
Welch and two-proportion tests, `drift_alpha`) is replayed over the ledger in its own order, as a monitor refreshing
every `step` studies would have run it, and each onset (not drifting -> drifting) and clearance is kept.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from appliance.evidence.cases import ALL, LabelSets
from appliance.evidence.drift import DriftPolicy, DriftReference, Observation, group_drift

DAY = 86400.0
MAX_CHECKS = 300  # per group: the replay tests every ceil(n / MAX_CHECKS)-th study


@dataclass(frozen=True)
class Bucket:
    start: float
    end: float
    label: str  # its start, short: "02 Mar" (a week's Monday, a day), "02 Mar 14:00" (a part)
    studies: Mapping[str, int]  # manufacturer label (and "all") -> scored assessable studies
    ood: Mapping[str, int]  # -> of them beyond the bundle's OOD threshold
    positives: Mapping[tuple[str, str], int]  # (manufacturer, finding) -> called positive

    def ood_rate(self, manufacturer: str = ALL) -> float:
        n = self.studies.get(manufacturer, 0)
        return self.ood.get(manufacturer, 0) / n if n else math.nan

    def positive_rate(self, finding: str, manufacturer: str = ALL) -> float:
        n = self.studies.get(manufacturer, 0)
        return self.positives.get((manufacturer, finding), 0) / n if n else math.nan


@dataclass(frozen=True)
class ChangePoint:
    manufacturer: str  # a label or "all"
    signal: str  # ood_rate, ood_distance, positive_rate:<finding>
    at: float  # when the study that tipped it was recorded
    seq: int  # its ledger entry
    value: float  # the window's value then
    reference: float  # what it was compared with
    p_value: float
    cleared_at: float | None  # when it stopped drifting (None: still drifting at the period's end)


@dataclass(frozen=True)
class Timeline:
    unit: str  # "week", "day" or "period part"
    buckets: tuple[Bucket, ...]
    change_points: tuple[ChangePoint, ...]
    step: Mapping[str, int]  # group -> every how many studies the replay tested


def _edges(since: float, until: float) -> tuple[str, list[float]]:
    span = until - since
    if span >= 21 * DAY:
        unit, width = "week", 7 * DAY
        start = datetime.fromtimestamp(since, timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        first = (start - timedelta(days=start.weekday())).timestamp()  # the Monday before, 00:00 UTC
    elif span >= 3 * DAY:
        unit, width = "day", DAY
        first = datetime.fromtimestamp(since, timezone.utc).replace(hour=0, minute=0, second=0,
                                                                    microsecond=0).timestamp()
    else:
        unit, width, first = "period part", max(span, 1.0) / 8, since
    edges = [first]
    while edges[-1] <= until:
        edges.append(edges[-1] + width)
    return unit, edges


def _label(t: float, unit: str) -> str:
    when = datetime.fromtimestamp(t, timezone.utc)
    return f"{when:%d %b %H:%M}" if unit == "period part" else f"{when:%d %b}"  # a week: its Monday


def buckets(observations: Sequence[Observation], times: Mapping[int, float], in_period: set[int],
            findings: Sequence[str], since: float, until: float) -> tuple[str, tuple[Bucket, ...]]:
    unit, edges = _edges(since, until)
    out = []
    for lo, hi in itertools.pairwise(edges):
        inside = [o for o in observations if o.seq in in_period and lo <= times[o.seq] < hi]
        studies, ood, positives = Counter[str](), Counter[str](), Counter[tuple[str, str]]()
        for o in inside:
            for group in (ALL, o.manufacturer):
                studies[group] += 1
                ood[group] += o.ood
                for f in o.positives:
                    if f in findings:
                        positives[(group, f)] += 1
        out.append(Bucket(max(lo, since), min(hi, until), _label(lo, unit), studies, ood, positives))
    while out and not out[-1].studies and out[-1].start >= until:
        out.pop()
    return unit, tuple(out)


def change_points(observations: Sequence[Observation], times: Mapping[int, float], reference: DriftReference,
                  labels: LabelSets, policy: DriftPolicy, since: float,
                  until: float) -> tuple[tuple[ChangePoint, ...], dict[str, int]]:
    """Replay group_drift over each group's studies in ledger order; keep the drifting spans that overlap
    [since, until). A signal that flags again within one window of studies after it cleared (a rate hovering at
    the test's edge) continues its episode: one change, not a flicker of them."""
    groups = {ALL: list(observations), **{m: [o for o in observations if o.manufacturer == m]
                                          for m in labels.manufacturer_labels}}
    found: list[ChangePoint] = []
    steps = {}
    for group, obs in groups.items():
        if not obs:
            continue
        step = steps[group] = max(1, math.ceil(len(obs) / MAX_CHECKS))
        open_: dict[str, ChangePoint] = {}
        cleared: dict[str, tuple[int, ChangePoint]] = {}  # signal -> (study count when it cleared, its episode)
        checks = list(range(step, len(obs) + 1, step))
        if checks[-1:] != [len(obs)]:
            checks.append(len(obs))
        for n in checks:
            at = times[obs[n - 1].seq]
            for signal in group_drift(obs[:n], reference, policy, group).signals:
                if signal.drifting and signal.name not in open_:
                    last = cleared.pop(signal.name, None)
                    if last is not None and n - last[0] < policy.window:
                        open_[signal.name] = last[1]  # the same episode goes on
                    else:
                        if last is not None:
                            found.append(last[1])
                        open_[signal.name] = ChangePoint(group, signal.name, at, obs[n - 1].seq, signal.value,
                                                         signal.reference, signal.p_value, None)
                elif not signal.drifting and signal.name in open_:
                    cleared[signal.name] = (n, dataclasses.replace(open_.pop(signal.name), cleared_at=at))
        found += [c for _, c in cleared.values()]
        found += open_.values()
    found = [c for c in found if c.at < until]
    found = [c for c in found if c.cleared_at is None or c.cleared_at >= since]
    return tuple(sorted(found, key=lambda c: (c.at, c.manufacturer != ALL, c.manufacturer, c.signal))), steps


def timeline(observations: Sequence[Observation], times: Mapping[int, float], in_period: set[int],
             reference: DriftReference, labels: LabelSets, policy: DriftPolicy, since: float,
             until: float) -> Timeline:
    first = min((times[o.seq] for o in observations if o.seq in in_period), default=since)
    unit, parts = buckets(observations, times, in_period, reference.findings, max(since, first), until)
    points, steps = change_points(observations, times, reference, labels, policy, since, until)
    return Timeline(unit, parts, points, steps)

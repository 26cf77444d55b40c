"""Matched cases: one per finding of one scored series whose truth is known, with bounded labels.

    labels = LabelSets.from_config(settings.evidence)
    cases = cases_from_ledger(entries, truth, labels)     # truth: series_uid -> {finding_id: bool}

The ledger entries are dicts as `appliance.store.ledger.Ledger.entries` yields them; the truth mapping comes from
whoever matched the final reports (appliance/truth/). Only `scored` entries of assessable results count: a series
the quality gate found not assessable has no call to judge (its findings are all negative by rule), and a failed
series has no score. Manufacturer and station become members of a closed, configured set, so that a metric label
can never carry a free text (docs/evidence.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

OTHER = "other"  # a manufacturer or station that is not configured
UNKNOWN = "unknown"  # a station the ledger entry does not name
ALL = "all"  # the pooled slice, in metric labels
RESERVED = (OTHER, UNKNOWN, ALL)


def normalised(text: str) -> str:
    """Case folded, every run of characters that are not letters or digits one space: 'SIEMENS_Healthineers AG'
    -> 'siemens healthineers ag'."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.casefold()).split())


@dataclass(frozen=True)
class LabelSets:
    """The closed label sets: configured manufacturers (each matching itself and its aliases) and stations."""

    manufacturers: tuple[str, ...]
    aliases: tuple[tuple[str, str], ...]  # (normalised alias, manufacturer label), longest alias first
    stations: tuple[str, ...]

    @classmethod
    def build(cls, manufacturers: Iterable[str], aliases: Iterable[str] = (),
              stations: Iterable[str] = ()) -> LabelSets:
        """`aliases` as 'label=Manufacturer as written' strings (config: evidence.manufacturer_aliases)."""
        labels = tuple(manufacturers)
        pairs = [(normalised(label), label) for label in labels]
        for item in aliases:
            label, _, alias = item.partition("=")
            if label.strip() not in labels or not normalised(alias):
                raise ValueError(f"manufacturer alias {item!r}: must be 'label=alias' with a configured label")
            pairs.append((normalised(alias), label.strip()))
        ordered = tuple(sorted(set(pairs), key=lambda p: (-len(p[0]), p[0])))
        return cls(labels, ordered, tuple(stations))

    @classmethod
    def from_config(cls, evidence: Any) -> LabelSets:
        return cls.build(evidence.manufacturers, evidence.manufacturer_aliases, evidence.stations)

    @property
    def manufacturer_labels(self) -> tuple[str, ...]:
        """Every value the manufacturer label can take."""
        return (*self.manufacturers, OTHER)

    @property
    def station_labels(self) -> tuple[str, ...]:
        return (*self.stations, OTHER, UNKNOWN)

    def manufacturer(self, raw: str | None) -> str:
        """The configured label whose name or alias the DICOM Manufacturer equals or begins with (whole words,
        longest alias first): 'Siemens Healthineers' -> 'siemens' when 'siemens' is configured; anything else
        'other'."""
        text = normalised(raw or "")
        for alias, label in self.aliases:
            if text == alias or text.startswith(alias + " "):
                return label
        return OTHER

    def station(self, raw: str | None) -> str:
        """A configured station (case and punctuation ignored), 'unknown' when none is given, else 'other'."""
        text = normalised(raw or "")
        if not text:
            return UNKNOWN
        for station in self.stations:
            if normalised(station) == text:
                return station
        return OTHER


@dataclass(frozen=True)
class Case:
    """One finding of one scored, assessable series whose truth is known."""

    finding_id: str
    manufacturer: str  # a LabelSets.manufacturer_labels member
    station: str  # a LabelSets.station_labels member
    score: float
    threshold: float
    probability: float
    positive: bool  # the call the appliance made (probability >= 0.5)
    truth: bool  # from the final report
    scored_at: float
    seq: int  # the ledger entry, for a statistician to trace it
    bundle_version: str
    bank_version: str
    mode: str


def scored_assessable(entries: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    """The ledger entries that carry a call: scored, assessable, with findings."""
    for entry in entries:
        payload = entry.get("payload") or {}
        if entry.get("kind") == "scored" and payload.get("assessable", True) and payload.get("findings"):
            yield entry


def cases_from_ledger(entries: Iterable[Mapping[str, Any]], truth: Mapping[str, Mapping[str, bool]],
                      labels: LabelSets, bundle: tuple[str, str] | None = None) -> list[Case]:
    """A case per finding for which `truth[series_uid]` has a label. `bundle` (name, version): only entries scored
    by it (performance of two models is not pooled). The station comes from the payload's "station" when the ledger
    carries one (it does not yet: docs/evidence.md), else 'unknown'."""
    cases = []
    for entry in scored_assessable(entries):
        known = truth.get(entry["series_uid"])
        if not known or (bundle is not None and (entry.get("bundle_name"), entry.get("bundle_version")) != bundle):
            continue
        payload = entry["payload"]
        manufacturer, station = labels.manufacturer(payload.get("manufacturer")), labels.station(payload.get("station"))
        for f in payload["findings"]:
            if f["id"] not in known:
                continue
            cases.append(Case(f["id"], manufacturer, station, float(f["score"]), float(f["threshold"]),
                              float(f["probability"]), bool(f["positive"]), bool(known[f["id"]]),
                              float(payload.get("scored_at") or entry.get("recorded_at") or 0.0), int(entry["seq"]),
                              str(entry.get("bundle_version", "")), str(entry.get("bank_version", "")),
                              str(entry.get("mode", ""))))
    return cases

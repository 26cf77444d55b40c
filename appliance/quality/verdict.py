"""The gate's verdict on one series."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class QualityVerdict:
    assessable: bool
    reasons: tuple[str, ...]  # from appliance.quality.REASONS, in that order; empty when assessable
    measures: dict[str, float] = field(default_factory=dict)  # every measured quantity, for debugging

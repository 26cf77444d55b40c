"""The validation report: one self-contained HTML file people look at (docs/validation-report.md).

- `gather`: the ledger, its verification and the current truth for a period, into typed records (the statistics
  are appliance/evidence's);
- `timeline`: rates per week or day per manufacturer, and the drift module's change points replayed over time;
- `figures`: ROC, calibration and drift plots with matplotlib (the `report` extra), as inline SVG;
- `html`: the page.

    write_report(store, bank, settings.evidence, Period(since, until), Path("report.html"))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from appliance.fileio import write_bytes_atomic
from appliance.validation.gather import Period, ValidationData, gather

if TYPE_CHECKING:
    from appliance.bundle import LabelBank
    from appliance.config import EvidenceConfig
    from appliance.store import Store


def make_figures(data: ValidationData) -> dict[str, str]:
    """Every plot (raises figures.MissingExtra without matplotlib)."""
    from appliance.validation import figures

    figures.require_matplotlib()
    if not data.findings:
        return {}
    return {"roc": figures.roc_grid(data), "calibration": figures.calibration_grid(data),
            "ood": figures.ood_over_time(data), "positive": figures.positive_rate_grid(data)}


def write_report(store: Store, bank: LabelBank, config: EvidenceConfig, period: Period, out: Path) -> ValidationData:
    """Gather, plot, render and write `out` atomically (0644: the report holds no identifier, only counts)."""
    from appliance.validation import figures
    from appliance.validation.html import render

    figures.require_matplotlib()  # before any work: say which extra is missing at once
    data = gather(store, bank, config, period)
    write_bytes_atomic(out, render(data, make_figures(data)).encode())
    return data


__all__ = ["Period", "ValidationData", "gather", "make_figures", "write_report"]

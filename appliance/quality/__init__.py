"""The input quality gate: is a prepared series a usable cine short-axis stack? (docs/quality-gate.md)

A pure function of the model tensor and what the headers say (`series_facts`); numpy only. A series it finds not
assessable is still stored, with its reasons, and none of its findings is called positive.
"""

from appliance.quality.facts import SeriesFacts, heart_axes, series_facts
from appliance.quality.gate import ORIENTATIONS, REASONS, assess, measure
from appliance.quality.verdict import QualityVerdict

__all__ = ["ORIENTATIONS", "REASONS", "QualityVerdict", "SeriesFacts", "assess", "heart_axes", "measure",
           "series_facts"]

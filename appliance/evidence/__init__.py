"""Live performance and drift: the evidence the ledger and the final reports give about the model where it runs.

- `cases`: matched cases (ledger entry x ground truth) with closed manufacturer and station labels;
- `performance`: sensitivity, specificity (Wilson), AUROC (DeLong), calibration, per finding and slice;
- `drift`: OOD rate and distance and positive rates over rolling windows, their tests, detection delay;
- `monitor`: `EvidenceMonitor`, which recomputes from injected sources and sets the evidence gauges.

numpy only. docs/evidence.md describes what is measured, the statistics and the alert rules.
"""

from appliance.evidence.cases import ALL, OTHER, UNKNOWN, Case, LabelSets, cases_from_ledger
from appliance.evidence.drift import DriftPolicy, DriftReference, drift, observations_from_ledger
from appliance.evidence.monitor import Evidence, EvidenceMonitor
from appliance.evidence.performance import delong, performance, wilson

__all__ = ["ALL", "OTHER", "UNKNOWN", "Case", "DriftPolicy", "DriftReference", "Evidence", "EvidenceMonitor",
           "LabelSets", "cases_from_ledger", "delong", "drift", "observations_from_ledger", "performance", "wilson"]

"""Synthetic cine cardiac MR scanner for research software: SYNTHETIC DATA, NOT FOR CLINICAL USE.

No real patient data exists for ScanSide, so this package stands in for the scanner. It renders an analytic heart
phantom (normal and six abnormal conditions with continuous severity), encodes it the way three fictional vendors
would (naming, encoding, geometry and file habits differ), and writes Part 10 DICOM files into a folder at scanner
pace. Everything is deterministic from a seed. Patient identities are synthetic ("SYNTH^..."), and the images are
a geometric phantom: they must never be used to make or support a clinical decision.
"""

from appliance.dev.synth.conditions import CONDITIONS, DEFAULT_MIX, FINDINGS, findings, sample_condition, sample_params
from appliance.dev.synth.geometry import HeartPose, ImagePlane, SaxStack
from appliance.dev.synth.phantom import HeartParams, render_points, render_slice
from appliance.dev.synth.scanner import SyntheticScanner, demo_cohort
from appliance.dev.synth.vendors import VENDORS, VendorProfile
from appliance.dev.synth.writer import (
    SeriesPlan,
    StudyPlan,
    SynthInstance,
    Truth,
    iter_instances,
    plan_study,
    write_instance,
    write_study,
)

__all__ = [
    "CONDITIONS",
    "DEFAULT_MIX",
    "FINDINGS",
    "VENDORS",
    "HeartParams",
    "HeartPose",
    "ImagePlane",
    "SaxStack",
    "SeriesPlan",
    "StudyPlan",
    "SynthInstance",
    "SyntheticScanner",
    "Truth",
    "VendorProfile",
    "demo_cohort",
    "findings",
    "iter_instances",
    "plan_study",
    "render_points",
    "render_slice",
    "sample_condition",
    "sample_params",
    "write_instance",
    "write_study",
]

# Training-side helpers (labels and report text for CLIP-style training; fast tensors without DICOM files).
from appliance.dev.synth.arrays import cine_frames, cine_geometry, study_tensor
from appliance.dev.synth.reports import LABELS as STUDY_LABELS
from appliance.dev.synth.reports import impression, study_labels, study_measurements

__all__ += [
    "STUDY_LABELS",
    "cine_frames",
    "cine_geometry",
    "impression",
    "study_labels",
    "study_measurements",
    "study_tensor",
]

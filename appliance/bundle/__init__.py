"""Engine bundles: an encoder, its label bank and the preprocessing it was trained with, checked as one unit.

Layout of `engines/<name>/`:

    manifest.json      what the bundle is, how to feed it, and the sha256 of every other file it needs
    encoder.onnx       (N, T, C, H, W) float32 -> (N, D) float32
    label_bank.json    findings with prompt embeddings, thresholds, calibration; reference stats for the OOD check

Files not listed in the manifest may sit next to these (e.g. TensorRT plans built on the target GPU); they are
ignored here. Everything listed is hashed on load, so a bundle that loads is byte-for-byte the one that was built
(or edited through `save_label_bank`).
"""

from appliance.bundle.label_bank import Finding, LabelBank, ReferenceStats
from appliance.bundle.layout import (
    ENCODER_FILE,
    FORMAT,
    FORMAT_VERSIONS,
    LABEL_BANK_FILE,
    LAYOUT,
    MANIFEST,
    BundleError,
)
from appliance.bundle.loader import Bundle, load_bundle
from appliance.bundle.writer import save_label_bank, write_bundle

__all__ = ["ENCODER_FILE", "FORMAT", "FORMAT_VERSIONS", "LABEL_BANK_FILE", "LAYOUT", "MANIFEST", "Bundle",
           "BundleError", "Finding", "LabelBank", "ReferenceStats", "load_bundle", "save_label_bank", "write_bundle"]

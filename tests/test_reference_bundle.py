"""The committed reference bundle, used the way the appliance uses it: synthetic studies written as DICOM files,
read, assembled, preprocessed, encoded in ONNX Runtime and scored, land on the right side of the thresholds.
Also: prompts edited on the appliance with the bundle's own text encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.assembly import Assembler
from appliance.bundle import load_bundle
from appliance.config import DEFAULT_BUNDLE
from appliance.dev.synth import plan_study, write_study
from appliance.handovers import SeriesRole
from appliance.inference import create_backend
from appliance.ingest.reader import read_instance
from appliance.preprocess import prepare
from appliance.prompts import Site, add_prompt, describe, remove
from appliance.scoring import ScoringPolicy, score_batch

REFERENCE = Path(__file__).resolve().parent.parent / "engines" / "reference-v1"

# (condition, severity, vendor, findings that must be positive, findings that must be negative)
CASES = [
    ("normal", 0.0, "A", (), ("lv_dilation", "lv_systolic_dysfunction", "lv_hypertrophy", "pericardial_effusion")),
    ("dcm", 0.9, "B", ("lv_dilation", "lv_systolic_dysfunction"), ("lv_hypertrophy", "hcm")),
    ("hcm", 0.9, "A", ("lv_hypertrophy", "hcm"), ("lv_dilation", "lv_systolic_dysfunction")),
    ("effusion", 0.9, "B", ("pericardial_effusion",), ("lv_dilation", "lv_systolic_dysfunction")),
]


def test_the_demo_uses_the_reference_bundle():
    assert DEFAULT_BUNDLE == REFERENCE
    bundle = load_bundle(REFERENCE)
    assert bundle.research_only and bundle.text_encoder is not None


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    bundle = load_bundle(REFERENCE)
    backend = create_backend("onnxruntime", bundle, intra_op_threads=1)
    tensors = []
    for k, (condition, severity, vendor, _, _) in enumerate(CASES):
        folder = tmp_path_factory.mktemp(f"study{k}")
        files = write_study(plan_study(seed=4242 + k, vendor=vendor, condition=condition, severity=severity), folder)
        asm = Assembler(quiet_period_s=1.0)
        done = [o.complete for f in files if (o := asm.add(read_instance(f), str(f), 0.0)).complete]
        (cine,) = [s for s in done if s.info.role is SeriesRole.CINE_SAX]
        tensors.append(prepare(cine, bundle.preprocess).tensor)
    return score_batch(backend.infer(np.stack(tensors)), bundle.label_bank, ScoringPolicy())


# A known weakness of the rebuilt model, kept visible rather than dropped from the case: it calls LV systolic
# dysfunction on this florid effusion with probability 0.83 (LVSD AUROC 0.85 on the harder cohort,
# docs/reference-model.md). Strict: a model that gets it right must remove this mark.
_LVSD_OVERCALL = pytest.mark.xfail(reason="reference-v1 over-calls LV systolic dysfunction on a florid effusion",
                                   strict=True)


@pytest.mark.parametrize("case", [pytest.param(k, id=c[0], marks=_LVSD_OVERCALL if c[0] == "effusion" else ())
                                  for k, c in enumerate(CASES)])
def test_generated_studies_are_never_confidently_wrong(scored, case):
    """Florid cases land on the right side of the thresholds, or, where the model is unsure, say so: the rebuilt
    model is at 0.85-1.00 AUROC on the harder cohort, so a call may miss, but never without `near_threshold`."""
    _, _, _, positive, negative = CASES[case]
    by_id = {f.finding_id: f for f in scored[case].findings}
    for fid in positive:
        f = by_id[fid]
        assert f.positive or "near_threshold" in f.review_reasons, f"{fid}: score {f.score:.4f} < {f.threshold:.4f}"
    for fid in negative:
        f = by_id[fid]
        assert not f.positive or "near_threshold" in f.review_reasons, f"{fid}: {f.score:.4f} >= {f.threshold:.4f}"
    assert sum(by_id[f].positive for f in positive) + sum(not by_id[f].positive for f in negative) >= \
        len(positive) + len(negative) - 1  # at most one call per case left to the human


def test_prompts_can_be_added_and_removed_without_retraining(tmp_path):
    bundle_dir = tmp_path / "bundle"
    shutil.copytree(REFERENCE, bundle_dir)
    site = Site.open(bundle_dir, tmp_path / "data")  # edits go to the data folder's overlay (test_prompts_overlay)
    edit = add_prompt(site, "lv_dilation", "the left ventricle is enlarged")
    assert len(edit.bank.finding("lv_dilation").prompts) == 4
    edit = add_prompt(site, "severe_lv_dilation", "severely dilated left ventricle", prevalence=0.05)
    new = edit.bank.finding("severe_lv_dilation")
    assert new.prompts == ("severely dilated left ventricle",) and np.isfinite(new.threshold)
    assert "severe_lv_dilation" in describe(site)
    scores = score_batch(np.ones((1, site.bundle.embedding_dim), np.float32), edit.bank, ScoringPolicy())
    assert "severe_lv_dilation" in {f.finding_id for f in scores[0].findings}
    remove(site, "severe_lv_dilation")
    remove(site, "lv_dilation", "the left ventricle is enlarged")
    after, original = site.effective().bank, load_bundle(REFERENCE).label_bank
    assert after.content_hash == original.content_hash  # back to the shipped bank exactly
    assert load_bundle(bundle_dir).label_bank.content_hash == original.content_hash  # the bundle was never written

"""Negation in prompts, read by rule (appliance/negation.py): the triggers the report extractor uses, pseudo-negations
left alone, parity of double negation; and the shipped text encoder reversing a denied statement's embedding, so a
negated prompt ranks studies opposite to its affirmative form."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.negation import WORD_TRIGGERS, Reading, read

BUNDLE = Path(__file__).resolve().parent.parent / "engines" / "reference-v1"


@pytest.mark.parametrize(("prompt", "statement", "negated"), [
    ("no pericardial effusion", "pericardial effusion", True),
    ("The left ventricle is not dilated.", "The left ventricle is dilated.", True),
    ("the right ventricle isn't dilated", "the right ventricle is dilated", True),
    ("without LV hypertrophy", "LV hypertrophy", True),
    ("negative for cardiac amyloidosis", "cardiac amyloidosis", True),
    ("absence of a regional wall motion abnormality", "a regional wall motion abnormality", True),
    ("neither dilated nor impaired", "dilated or impaired", True),  # one negation over both
    ("not without a small effusion", "a small effusion", False),
    ("dilated left ventricle", "dilated left ventricle", False),
    ("infarction cannot be excluded", "infarction cannot be excluded", False),  # pseudo-negations
    ("no change in LV size", "no change in LV size", False),
    ("amyloid not ruled out", "amyloid not ruled out", False),
    ("normal LV size", "normal LV size", False),  # "normal" is the text tower's to read
    ("notable septal thickening", "notable septal thickening", False),  # whole words only
    ("no", "no", False),  # nothing left to deny
    ("there is no pericardial effusion", "there is pericardial effusion", True),
    ("the right ventricle does not appear dilated", "the right ventricle does appear dilated", True),
])
def test_reading(prompt, statement, negated):
    assert read(prompt) == Reading(statement, negated)


@pytest.mark.parametrize("prompt", ["a dilated, poorly contracting heart without infarction",
                                    "LV dilatation with no scar", "thick septum, no obstruction"])
def test_a_negation_of_only_part_of_a_prompt_is_left_to_the_tower_and_said(prompt):
    r = read(prompt)
    assert r == Reading(prompt, False, partial=True)
    assert "only part of it is negated" in r.describe()


def test_the_triggers_are_the_report_extractors():
    from appliance.truth import extract

    assert WORD_TRIGGERS == extract._PRE_NEGATIONS


@pytest.fixture(scope="module")
def encoder():
    from appliance.bundle import load_bundle
    from appliance.text import TextEncoder

    return TextEncoder.for_bundle(load_bundle(BUNDLE))


def test_the_appliance_reverses_a_denied_statement(encoder):
    assert encoder.negation
    neg, pos = encoder.embed(["no pericardial effusion", "pericardial effusion"])
    assert float(neg @ pos) == pytest.approx(-1.0, abs=1e-5)
    assert encoder.reading("no LVH") == Reading("left ventricular hypertrophy", True)  # lexicon after negation
    raw = encoder.with_negation(False)
    assert raw.session is encoder.session
    a, b = raw.embed(["no pericardial effusion", "pericardial effusion"])
    assert float(a @ b) > 0.8  # what the tower alone makes of it: nearly the same sentence
    # any image embedding: the cosines to a negated prompt are those to its statement, sign reversed
    x = np.random.default_rng(3).normal(size=(5, neg.shape[0])).astype(np.float32)
    np.testing.assert_allclose(x @ neg, -(x @ pos), rtol=1e-5, atol=1e-5)


def test_the_shipped_prompts_are_affirmative_so_the_bank_is_unchanged(encoder):
    from appliance.bundle import load_bundle

    bank = load_bundle(BUNDLE).label_bank
    prompts = [p for f in bank.findings for p in f.prompts]
    assert not [p for p in prompts if read(p).negated]
    embedded = encoder.embed(prompts[:8])
    stored = np.vstack([f.embeddings for f in bank.findings])[:8]
    assert float(np.min(np.sum(embedded * stored, axis=1))) > 0.999

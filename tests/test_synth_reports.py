"""Synthetic study labels and report impressions: cut-offs, agreement of text and labels, variety, determinism."""

from __future__ import annotations

import dataclasses
import math
import re
from collections import Counter

import numpy as np
import pytest

from appliance.dev.synth.conditions import CONDITIONS, findings, sample_condition, sample_params
from appliance.dev.synth.phantom import HeartParams
from appliance.dev.synth.reports import LABELS, impression, study_labels, study_measurements

DIAGNOSES = ("nonischaemic_cm", "ischaemic_cm", "hcm", "amyloidosis")

# --- an independent reader of the generated text --------------------------------------------------------------------
# Deliberately written from the clinical vocabulary, not from the generator's phrase lists, so that a new phrasing
# that a reader would take the wrong way fails here.

ICASE = re.IGNORECASE
NEGATION = re.compile(r"\b(no|normal|not|without|preserved)\b", ICASE)
BOTH = r"biventricular|both ventricles|left and right ventric"
LV = re.compile(rf"(\bLV|left ventric|{BOTH})", ICASE)
RV = re.compile(rf"(\bRV|right ventric|{BOTH})", ICASE)
ENLARGED = re.compile(r"(dilat|enlarg)", ICASE)
IMPAIRED = re.compile(r"(impair|reduc|hypokines|dysfunction|depress)", ICASE)
SIZE = re.compile(r"(size|dilat|enlarg|dimension|volume|diameter|LVEDD)", ICASE)
FUNCTION = re.compile(r"(function|systolic|ejection|\bLVEF|\bRVEF|contract|hypokines|impair)", ICASE)
THICK = re.compile(r"(hypertroph|thicken|thickness|\bLVH\b)", ICASE)
EFFUSION = re.compile(r"(effusion|pericardial fluid)", ICASE)
NICM = re.compile(r"(non-?isch(a)?emic|dilated cardiomyopathy|\bDCM\b|\bNICM\b)", ICASE)
ICM = re.compile(r"((?<!non-)(?<!non)isch(a)?emic|infarct|akine|territory|regional wall motion|\bscar\b|\bICM\b)",
                 ICASE)
HCM = re.compile(r"(hypertrophic cardiomyopathy|\bHCM\b|asymmetric septal)", ICASE)
AMYLOID = re.compile(r"amyloid", ICASE)
WHOLE_STUDY = re.compile(r"(normal (study|cardiac|CMR|heart|examination)|structurally normal)", ICASE)
LGE = re.compile(r"(enhancement|\bLGE\b)", ICASE)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"[.;:\n]", text) if s.strip()]


def claims(sentence: str) -> tuple[set[str], set[str]]:
    """(labels the sentence asserts, labels it denies)."""
    if NEGATION.search(sentence):
        return set(), denied_by(sentence)
    return asserted_by(sentence), set()


def denied_by(sentence: str) -> set[str]:
    if WHOLE_STUDY.search(sentence):
        return set(LABELS)
    denied: set[str] = set()
    if re.search("cardiomyopathy", sentence, ICASE):
        denied |= set(DIAGNOSES)
    if ICM.search(sentence):
        denied.add("ischaemic_cm")
    if re.search(r"(infiltrat|amyloid)", sentence, ICASE):
        denied.add("amyloidosis")
    if LGE.search(sentence) or re.search(r"\bscar\b", sentence, ICASE):
        denied |= {"ischaemic_cm", "amyloidosis"}
    if EFFUSION.search(sentence):
        denied.add("pericardial_effusion")
    if THICK.search(sentence):
        denied.add("lv_hypertrophy")
    for side, pattern in (("lv", LV), ("rv", RV)):
        if pattern.search(sentence):
            denied |= denied_of_ventricle(sentence, side, denied)
    return denied


def denied_of_ventricle(sentence: str, side: str, denied_so_far: set[str]) -> set[str]:
    """A negated sentence about one ventricle: its size, its function, or (naming neither) both."""
    function = "lv_systolic_dysfunction" if side == "lv" else "rv_dysfunction"
    size, func = SIZE.search(sentence), FUNCTION.search(sentence)
    out = {f"{side}_dilation"} if size else set()
    if func:
        out.add(function)
    if not (size or func or denied_so_far):
        out = {f"{side}_dilation", function}
    return out


def asserted_by(sentence: str) -> set[str]:
    said: set[str] = set()
    if LV.search(sentence) and ENLARGED.search(sentence):
        said.add("lv_dilation")
    if (LV.search(sentence) and IMPAIRED.search(sentence)) or re.search("global hypokines", sentence, ICASE):
        said.add("lv_systolic_dysfunction")
    if RV.search(sentence) and ENLARGED.search(sentence):
        said.add("rv_dilation")
    if RV.search(sentence) and IMPAIRED.search(sentence):
        said.add("rv_dysfunction")
    if THICK.search(sentence):
        said.add("lv_hypertrophy")
    if EFFUSION.search(sentence):
        said.add("pericardial_effusion")
    for label, pattern in (("nonischaemic_cm", NICM), ("ischaemic_cm", ICM), ("hcm", HCM), ("amyloidosis", AMYLOID)):
        if pattern.search(sentence):
            said.add(label)
    return said


def cohort(n: int, seed: int = 0) -> list[tuple[str, HeartParams]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        condition = sample_condition(rng)
        out.append((condition, sample_params(condition, rng)))
    return out


# --- labels ---------------------------------------------------------------------------------------------------------


def test_labels_are_exactly_the_ten_ids_and_follow_findings():
    assert LABELS == ("lv_systolic_dysfunction", "lv_dilation", "lv_hypertrophy", "rv_dilation", "rv_dysfunction",
                      "pericardial_effusion", "nonischaemic_cm", "ischaemic_cm", "hcm", "amyloidosis")
    for _, p in cohort(400, seed=1):
        lab = study_labels(p)
        assert tuple(lab) == LABELS and all(isinstance(v, bool) for v in lab.values())
        f = set(findings(p))
        assert lab["lv_dilation"] == ("lv_dilated" in f)
        assert lab["lv_systolic_dysfunction"] == ("lv_systolic_dysfunction" in f)
        assert lab["rv_dilation"] == ("rv_dilated" in f)
        assert lab["rv_dysfunction"] == ("rv_systolic_dysfunction" in f)
        assert lab["pericardial_effusion"] == ("pericardial_effusion" in f)
        assert lab["ischaemic_cm"] == ("regional_wall_motion_abnormality" in f)
        assert lab["hcm"] == ("asymmetric_septal_hypertrophy" in f)
        assert sum(lab[d] for d in DIAGNOSES) <= 1, lab  # the sampled conditions never overlap


def test_cut_offs_on_hand_made_hearts():
    normal = study_labels(HeartParams())
    assert not any(normal.values())
    edge = dict(lv_ef=0.499, lv_edd_radius_mm=27.5, lv_wall_mm=12.0, rv_scale=1.15, rv_ef=0.399, effusion_mm=3.0)
    assert all(study_labels(HeartParams(**edge))[k] for k in
               ("lv_systolic_dysfunction", "lv_dilation", "lv_hypertrophy", "rv_dilation", "rv_dysfunction",
                "pericardial_effusion"))
    below = dict(lv_ef=0.50, lv_edd_radius_mm=27.4, lv_wall_mm=11.9, rv_scale=1.14, rv_ef=0.40, effusion_mm=2.9)
    assert not any(study_labels(HeartParams(**below)).values())
    # diagnoses: dysfunction alone is non-ischaemic; a territory makes it ischaemic; septal bulge makes it HCM
    dcm = study_labels(HeartParams(lv_ef=0.3, lv_edd_radius_mm=31.0))
    assert dcm["nonischaemic_cm"] and not dcm["ischaemic_cm"]
    icm = study_labels(HeartParams(lv_ef=0.3, akinetic_territory="LAD", akinetic_extent=0.6))
    assert icm["ischaemic_cm"] and not icm["nonischaemic_cm"]
    hcm = study_labels(HeartParams(septal_extra_mm=8.0, lv_wall_mm=10.0))
    assert hcm["hcm"] and hcm["lv_hypertrophy"] and not hcm["nonischaemic_cm"]
    amy = study_labels(HeartParams(lv_wall_mm=15.0, lv_ef=0.4, lge_pattern="diffuse"))
    assert amy["amyloidosis"] and amy["lv_hypertrophy"] and not amy["nonischaemic_cm"]


def test_each_condition_carries_its_labels():
    must = {"dcm": ("nonischaemic_cm", "lv_systolic_dysfunction"), "icm": ("ischaemic_cm",),
            "hcm": ("hcm", "lv_hypertrophy"), "amyloid": ("amyloidosis",), "rv_dysfunction": ("rv_dilation",),
            "effusion": ("pericardial_effusion",)}
    rng = np.random.default_rng(5)
    for condition in CONDITIONS:
        for s in (0.0, 0.5, 1.0):
            lab = study_labels(sample_params(condition, rng, s))
            if condition == "normal":
                assert not any(lab.values())
            for key in must[condition] if condition != "normal" else ():
                assert lab[key], (condition, s, key)
    severe = study_labels(sample_params("dcm", np.random.default_rng(2), 1.0))
    assert severe["lv_dilation"]


def test_measurements_match_the_params():
    p = HeartParams(lv_edd_radius_mm=30.0, lv_ef=0.35, lv_wall_mm=9.0, septal_extra_mm=6.0, rv_ef=0.3,
                    effusion_mm=7.0, long_axis_mm=90.0)
    m = study_measurements(p)
    assert m["lvef_pct"] == pytest.approx(35.0) and m["rvef_pct"] == pytest.approx(30.0)
    assert m["lvedd_mm"] == pytest.approx(60.0) and m["max_wall_mm"] == pytest.approx(15.0)
    assert m["effusion_mm"] == pytest.approx(7.0)
    normal = study_measurements(HeartParams())
    assert 80.0 < normal["lvedv_ml"] < 160.0  # a plausible adult LV
    assert m["lvedv_ml"] > 1.5 * normal["lvedv_ml"]
    # the dilation cut-off is the 55 mm LVEDD a reader uses
    for r in (27.4, 27.5):
        q = HeartParams(lv_edd_radius_mm=r)
        assert study_labels(q)["lv_dilation"] == (study_measurements(q)["lvedd_mm"] >= 55.0)


# --- impressions ----------------------------------------------------------------------------------------------------


def test_impressions_never_contradict_the_labels():
    rng = np.random.default_rng(123)
    for condition, p in cohort(1500, seed=7):
        lab = study_labels(p)
        positive = {k for k, v in lab.items() if v}
        text = impression(p, rng)
        asserted: set[str] = set()
        for s in sentences(text):
            said, denied = claims(s)
            assert not (denied & positive), (condition, s, denied & positive, text)
            assert said <= positive, (condition, s, said - positive, text)
            asserted |= said
        assert positive <= asserted, (condition, positive - asserted, text)


def test_quoted_numbers_sit_on_the_label_side_of_the_cut_off():
    rng = np.random.default_rng(9)
    seen = Counter()
    for _, p in cohort(1200, seed=8):
        lab, m = study_labels(p), study_measurements(p)
        text = impression(p, rng)
        for name, key, label, cut, below in (("LVEF", "lvef_pct", "lv_systolic_dysfunction", 50, True),
                                             ("RVEF", "rvef_pct", "rv_dysfunction", 40, True),
                                             ("LVEDD", "lvedd_mm", "lv_dilation", 55, False)):
            for value in re.findall(rf"\b{name}\D{{0,16}}?(\d+)", text):
                v = int(value)
                assert v == math.floor(round(m[key], 6)), (name, v, m[key], text)
                assert lab[label] == ((v < cut) if below else (v >= cut)), (name, v, text)
                seen[name] += 1
        for value in re.findall(r"ejection fraction (?:of |estimated at )?(\d+)", text):
            assert lab["lv_systolic_dysfunction"] == (int(value) < 50), text
    assert min(seen.values()) > 20, seen  # numbers are quoted often enough for this test to mean something


def test_severity_words_follow_the_values():
    rng = np.random.default_rng(4)
    checked = 0
    for _, p in cohort(1200, seed=3):
        m = study_measurements(p)
        for s in sentences(impression(p, rng)):
            if not (LV.search(s) and not RV.search(s) and IMPAIRED.search(s)) or ENLARGED.search(s):
                continue
            word = re.search(r"\b(mild|moderate|severe)(ly)?\b", s, ICASE)
            if word:
                ef = m["lvef_pct"]
                expected = "mild" if ef >= 40 else ("moderate" if ef >= 30 else "severe")
                assert word.group(1).lower() == expected, (s, ef)
                checked += 1
    assert checked > 50


def test_effusion_size_words_follow_the_depth():
    rng = np.random.default_rng(0)
    for mm, word in ((4.0, "small"), (14.0, "moderate"), (24.0, "large")):
        p = HeartParams(effusion_mm=mm)
        texts = [impression(p, rng) for _ in range(20)]
        said = rf"\b{word}\b[^.;]*pericardial effusion|pericardial effusion, {word}"
        assert all(re.search(said, t, ICASE) for t in texts), word


def test_impression_is_deterministic_given_the_rng():
    p = sample_params("icm", np.random.default_rng(2), 0.7)
    a = [impression(p, np.random.default_rng(s)) for s in range(10)]
    b = [impression(p, np.random.default_rng(s)) for s in range(10)]
    assert a == b
    assert len(set(a)) == 10


def test_phrasing_and_order_vary():
    p = sample_params("dcm", np.random.default_rng(0), 0.8)
    rng = np.random.default_rng(1)
    texts = [impression(p, rng) for _ in range(300)]
    assert len(set(texts)) > 250
    lv_words = Counter()
    for t in texts:
        for key, pattern in (("abbrev", r"\bLV\b"), ("words", r"left ventric"), ("dilatation", r"dilatation"),
                             ("dilation", r"dilation"), ("enlarged", r"enlarg"), ("dilated", r"dilated")):
            lv_words[key] += bool(re.search(pattern, t, ICASE))
    # every phrasing shows up in a few per cent of impressions of one patient
    assert all(lv_words[k] >= 10 for k in lv_words), lv_words
    # the abnormal finding is not pinned to the first informative sentence
    firsts = [next(x for x in sentences(t) if any(claims(x))) for t in texts]
    first_is_lv = sum(bool({"lv_dilation", "lv_systolic_dysfunction"} & claims(x)[0]) for x in firsts)
    assert 0.1 * len(texts) < first_is_lv < 0.8 * len(texts), first_is_lv


def test_normal_studies_read_normal_and_negations_appear():
    rng = np.random.default_rng(6)
    p = sample_params("normal", np.random.default_rng(1))
    texts = [impression(p, rng) for _ in range(200)]
    assert all(not claims(s)[0] for t in texts for s in sentences(t))
    joined = "\n".join(texts).lower()
    for phrase in ("normal biventricular size and function", "pericardial effusion", "hypertrophy"):
        assert phrase in joined
    # negatives also show up in abnormal studies, for the findings that are normal there
    hcm = sample_params("hcm", np.random.default_rng(1), 0.6)
    assert any(re.search(r"\bno (significant )?pericardial effusion", impression(hcm, rng), ICASE) for _ in range(50))


def test_diagnosis_wording_per_condition():
    rng = np.random.default_rng(11)
    cases = {"hcm": r"hypertrophic cardiomyopathy|\bHCM\b", "amyloid": r"amyloid",
             "icm": r"isch(a)?emic|infarct", "dcm": r"cardiomyopathy|\bDCM\b"}
    for condition, pattern in cases.items():
        p = sample_params(condition, np.random.default_rng(3), 0.8)
        hits = sum(bool(re.search(pattern, impression(p, rng), ICASE)) for _ in range(40))
        assert hits == 40, condition
    icm = dataclasses.replace(sample_params("icm", np.random.default_rng(3), 0.8), akinetic_territory="LAD")
    assert any("anterior" in impression(icm, rng).lower() for _ in range(20))

"""The report-text extractor: hand-written report sentences in styles the synthetic generator does not write
(tricky negations, scopes, other structures, abbreviations, hedges), and a small run against the generator's
known labels (the full measurement: `python -m appliance.dev.truth_measure --n 2000`, docs/ground-truth.md)."""

from __future__ import annotations

import pytest

from appliance.dev.truth_measure import measure
from appliance.truth.extract import FINDINGS, Label, extract

P, A, N = Label.PRESENT, Label.ABSENT, Label.NOT_MENTIONED

CASES: list[tuple[str, dict[str, Label]]] = [
    # plain negations and their scope
    ("No pericardial effusion.", {"pericardial_effusion": A}),
    ("There is no evidence of a pericardial effusion.", {"pericardial_effusion": A}),
    ("Pericardial effusion is not seen.", {"pericardial_effusion": A}),
    ("Small pericardial effusion measuring 6 mm.", {"pericardial_effusion": P}),
    ("Trace of pericardial fluid, physiological.", {"pericardial_effusion": A}),
    ("Bilateral pleural effusions. No pericardial collection.", {"pericardial_effusion": A}),
    ("Large left pleural effusion.", {"pericardial_effusion": N}),
    ("The left ventricle is not dilated.", {"lv_dilation": A}),
    ("The left ventricle is not dilated, but systolic function is moderately impaired.",
     {"lv_dilation": A, "lv_systolic_dysfunction": P}),
    ("No LV dilatation, hypertrophy or pericardial effusion.",
     {"lv_dilation": A, "lv_hypertrophy": A, "pericardial_effusion": A}),
    ("No evidence of amyloid, HOCM or ischemic scar.", {"amyloidosis": A, "hcm": A, "ischaemic_cm": A}),
    ("No pericardial effusion, mildly dilated right ventricle.", {"pericardial_effusion": A, "rv_dilation": P}),
    ("Without evidence of myocardial infarction, the LV is severely dilated.",
     {"ischaemic_cm": A, "lv_dilation": P}),
    ("Previously noted LV dilatation has resolved.", {"lv_dilation": A}),
    ("The right ventricle is no longer dilated.", {"rv_dilation": A}),
    ("Dilated cardiomyopathy has been excluded.", {"nonischaemic_cm": A}),
    ("LV size and systolic function have normalised since the previous study.",
     {"lv_dilation": A, "lv_systolic_dysfunction": A}),
    ("Left ventricular systolic function is not preserved.", {"lv_systolic_dysfunction": P}),
    # normal statements
    ("Normal LV size.", {"lv_dilation": A}),
    ("Normal-sized left ventricle with good systolic function.", {"lv_dilation": A, "lv_systolic_dysfunction": A}),
    ("Right ventricular volumes and function are within normal limits.",
     {"rv_dilation": A, "rv_dysfunction": A}),
    ("The RV is normal.", {"rv_dilation": A, "rv_dysfunction": A}),
    ("Biventricular size and function are normal.",
     {"lv_dilation": A, "lv_systolic_dysfunction": A, "rv_dilation": A, "rv_dysfunction": A}),
    ("Normal sized ventricles bilaterally.", {}),  # a wording it does not claim to read: nothing present
    ("Hyperdynamic LV, EF 74%.", {"lv_systolic_dysfunction": A}),
    ("Small LV cavity with concentric LVH.", {"lv_dilation": A, "lv_hypertrophy": P}),
    # subjects: the finding belongs to the structure named
    ("Dilated left atrium. Normal LV size.", {"lv_dilation": A}),
    ("Mildly dilated aortic root.", {"lv_dilation": N}),
    ("Pericardial thickening without effusion.", {"pericardial_effusion": A, "lv_hypertrophy": N}),
    ("Severely dilated RV with impaired systolic function, normal LV size and function.",
     {"rv_dilation": P, "rv_dysfunction": P, "lv_dilation": A, "lv_systolic_dysfunction": A}),
    ("Impaired systolic function of the right ventricle.", {"rv_dysfunction": P, "lv_systolic_dysfunction": N}),
    ("Dilatation of the right ventricle with flattening of the septum.", {"rv_dilation": P, "lv_dilation": N}),
    ("Enlarged, poorly contracting LV and RV.", {"lv_dilation": P, "rv_dilation": P}),
    ("Globally hypokinetic left ventricle.", {"lv_systolic_dysfunction": P}),
    ("Regional hypokinesis of the inferior wall.", {"lv_systolic_dysfunction": N, "ischaemic_cm": N}),
    ("Impaired LV relaxation (grade 1 diastolic dysfunction). Preserved LV systolic function.",
     {"lv_systolic_dysfunction": A}),
    # ejection fractions when no words say
    ("LVEF 35 %.", {"lv_systolic_dysfunction": P}),
    ("Ejection fraction 58%.", {"lv_systolic_dysfunction": A}),
    ("RVEF of 38%.", {"rv_dysfunction": P}),
    ("LV ejection fraction is reduced at 44%.", {"lv_systolic_dysfunction": P}),
    # diagnoses
    ("Features in keeping with HCM; septum 19 mm.", {"hcm": P, "lv_hypertrophy": P}),
    ("Asymmetric septal thickening with SAM of the mitral valve.", {"hcm": P, "lv_hypertrophy": P}),
    ("Non-ischemic cardiomyopathy.", {"nonischaemic_cm": P, "ischaemic_cm": N}),
    ("Idiopathic DCM.", {"nonischaemic_cm": P, "lv_dilation": P, "lv_systolic_dysfunction": P}),
    ("Ischemic dilated cardiomyopathy.", {"ischaemic_cm": P, "nonischaemic_cm": N, "lv_dilation": P,
                                          "lv_systolic_dysfunction": P}),
    ("Transmural infarct in the RCA territory.", {"ischaemic_cm": P}),
    ("Old inferior MI.", {"ischaemic_cm": P}),
    ("No RWMA.", {"ischaemic_cm": A}),
    ("Diffuse subendocardial late enhancement, typical of ATTR amyloid.", {"amyloidosis": P, "ischaemic_cm": N}),
    ("Cardiac amyloidosis cannot be excluded.", {"amyloidosis": P}),
    ("Appearances are not suggestive of an infiltrative cardiomyopathy.", {"amyloidosis": A}),
    ("No evidence of cardiomyopathy.",
     {"nonischaemic_cm": A, "ischaemic_cm": A, "hcm": A, "amyloidosis": A}),
    ("No change in the moderate pericardial effusion.", {"pericardial_effusion": P}),
    ("Mid-wall septal LGE, non-ischaemic pattern.", {"ischaemic_cm": N}),
    # a whole report in a US free-text style, with a clause boundary inside a sentence
    ("FINDINGS: The LV is mildly dilated (LVEDV 210 mL) with global hypokinesis, LVEF 31%. RV size is normal "
     "although RV systolic function is mildly reduced. No LVH. Trivial pericardial effusion. "
     "IMPRESSION: Nonischemic cardiomyopathy; no infarct.",
     {"lv_dilation": P, "lv_systolic_dysfunction": P, "rv_dilation": A, "rv_dysfunction": P, "lv_hypertrophy": A,
      "pericardial_effusion": A, "nonischaemic_cm": P, "ischaemic_cm": A, "hcm": N, "amyloidosis": N}),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:48] for c in CASES])
def test_hand_written_sentences(text: str, expected: dict[str, Label]) -> None:
    got = extract(text)
    assert {f: got.labels[f] for f in expected} == expected
    # whatever the case does not name is not read as present
    assert [f for f in FINDINGS if f not in expected and got.labels[f] is P] == []


def test_silence_reads_as_absent_and_conflicts_as_present():
    got = extract("Normal study.")
    assert got.mentioned() == ()
    assert got.as_bools() == dict.fromkeys(FINDINGS, False)
    both = extract("No pericardial effusion. Small pericardial effusion.")
    assert both.labels["pericardial_effusion"] is P and both.conflicts == ("pericardial_effusion",)


def test_the_findings_are_the_label_banks():
    from appliance.dev.synth.reports import LABELS
    from training.prompts import FINDING_IDS

    assert FINDINGS == FINDING_IDS == LABELS


def test_generated_reports_read_as_their_labels():
    result = measure(300, seed=9_300_000)
    assert min(r["accuracy"] for r in result.values()) >= 0.98

"""The label bank's findings and the prompts that describe them, in the words a CMR report would use.

Findings follow CMR-CLIP's (LV/RV size and function, hypertrophy, effusion) plus the diagnoses the paper scores
with supervised heads, here zero-shot. Prompts state the finding positively: zero-shot scoring is the mean cosine
to these prompts, with no negative prompts, as in CMR-CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FindingDef:
    id: str
    name: str
    prompts: tuple[str, ...]
    rare: bool = False


FINDINGS: tuple[FindingDef, ...] = (
    FindingDef("lv_systolic_dysfunction", "LV systolic dysfunction", (
        "left ventricular systolic function is impaired",
        "reduced left ventricular ejection fraction",
        "lv systolic dysfunction",
    )),
    FindingDef("lv_dilation", "LV dilation", (
        "the left ventricle is dilated",
        "the left ventricle is enlarged in size",
        "left ventricular dilatation",
    )),
    FindingDef("lv_hypertrophy", "LV hypertrophy", (
        "there is left ventricular hypertrophy",
        "there is septal hypertrophy",
        "the lv wall is thickened",
    )),
    FindingDef("rv_dilation", "RV dilation", (
        "the right ventricle is dilated",
        "right ventricular enlargement",
    )),
    FindingDef("rv_dysfunction", "RV dysfunction", (
        "right ventricular systolic function is impaired",
        "reduced right ventricular ejection fraction",
    )),
    FindingDef("pericardial_effusion", "Pericardial effusion", (
        "there is a pericardial effusion",
        "pericardial effusion",
    )),
    FindingDef("nonischaemic_cm", "Non-ischaemic cardiomyopathy", (
        "dilated cardiomyopathy",
        "non ischaemic dilated cardiomyopathy with global hypokinesis",
    )),
    FindingDef("ischaemic_cm", "Ischaemic cardiomyopathy", (
        "ischaemic cardiomyopathy",
        "regional wall motion abnormality in a coronary territory",
        "myocardial infarction with regional akinesia",
    )),
    FindingDef("hcm", "Hypertrophic cardiomyopathy", (
        "hypertrophic cardiomyopathy",
        "asymmetric septal hypertrophy",
    )),
    FindingDef("amyloidosis", "Cardiac amyloidosis", (
        "cardiac amyloidosis",
        "concentric biventricular thickening suggestive of amyloid",
    ), rare=True),
)

FINDING_IDS = tuple(f.id for f in FINDINGS)

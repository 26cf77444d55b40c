"""The label bank's findings and the prompts that describe them, in the words a CMR report would use.

Findings follow CMR-CLIP's (LV/RV size and function, hypertrophy, effusion) plus the diagnoses the paper scores
with supervised heads, here zero-shot. Prompts state the finding positively: zero-shot scoring is the mean cosine
to these prompts, with no negative prompts, as in CMR-CLIP.

Each finding has candidate prompts; the build keeps the two or three whose mean embedding separates the finding
best on the validation split (prompt selection, as prompt engineering is done for CLIP-style models). Why it
matters: most reports *negate* common findings ("no pericardial effusion", "no LV hypertrophy"), so a bare
"pericardial effusion" sits close to normal reports, while the phrasing readers use when a finding is present
("small pericardial effusion", "moderate concentric left ventricular hypertrophy") does not.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FindingDef:
    id: str
    name: str
    prompts: tuple[str, ...]  # the textbook phrasings, always among the candidates
    rare: bool = False
    extra: tuple[str, ...] = ()  # more candidates, in the words positive reports use

    @property
    def candidates(self) -> tuple[str, ...]:
        return self.prompts + tuple(p for p in self.extra if p not in self.prompts)


FINDINGS: tuple[FindingDef, ...] = (
    FindingDef("lv_systolic_dysfunction", "LV systolic dysfunction", (
        "left ventricular systolic function is impaired",
        "reduced left ventricular ejection fraction",
        "lv systolic dysfunction",
    ), extra=("reduced lv ejection fraction", "left ventricular ejection fraction is reduced",
              "mildly reduced left ventricular ejection fraction", "impaired lv systolic function",
              "severely impaired left ventricular systolic function", "severe global lv hypokinesis")),
    FindingDef("lv_dilation", "LV dilation", (
        "the left ventricle is dilated",
        "the left ventricle is enlarged in size",
        "left ventricular dilatation",
    ), extra=("the lv is moderately enlarged", "dilated left ventricle", "moderately dilated lv")),
    FindingDef("lv_hypertrophy", "LV hypertrophy", (
        "there is left ventricular hypertrophy",
        "there is septal hypertrophy",
        "the lv wall is thickened",
    ), extra=("moderate concentric left ventricular hypertrophy", "moderate concentric lv wall thickening",
              "severe asymmetric septal hypertrophy", "severe asymmetric lv hypertrophy, predominantly septal")),
    FindingDef("rv_dilation", "RV dilation", (
        "the right ventricle is dilated",
        "right ventricular enlargement",
    ), extra=("moderately dilated rv", "severe right ventricular dilatation")),
    FindingDef("rv_dysfunction", "RV dysfunction", (
        "right ventricular systolic function is impaired",
        "reduced right ventricular ejection fraction",
    ), extra=("rv systolic dysfunction", "severely impaired rv systolic function")),
    FindingDef("pericardial_effusion", "Pericardial effusion", (
        "there is a pericardial effusion",
        "pericardial effusion",
    ), extra=("small pericardial effusion", "moderate pericardial effusion",
              "moderate circumferential pericardial effusion", "large circumferential pericardial effusion")),
    FindingDef("nonischaemic_cm", "Non-ischaemic cardiomyopathy", (
        "dilated cardiomyopathy",
        "non ischaemic dilated cardiomyopathy with global hypokinesis",
    ), extra=("findings suggest a non ischaemic cardiomyopathy", "in keeping with a dilated cardiomyopathy")),
    FindingDef("ischaemic_cm", "Ischaemic cardiomyopathy", (
        "ischaemic cardiomyopathy",
        "regional wall motion abnormality in a coronary territory",
        "myocardial infarction with regional akinesia",
    ), extra=("prior lad territory infarction", "akinesia of the inferior wall with wall thinning",
              "appearances are consistent with ischaemic cardiomyopathy")),
    FindingDef("hcm", "Hypertrophic cardiomyopathy", (
        "hypertrophic cardiomyopathy",
        "asymmetric septal hypertrophy",
    ), extra=("severe asymmetric septal hypertrophy", "hcm phenotype",
              "appearances are consistent with hypertrophic cardiomyopathy")),
    FindingDef("amyloidosis", "Cardiac amyloidosis", (
        "cardiac amyloidosis",
        "concentric biventricular thickening suggestive of amyloid",
    ), rare=True, extra=("findings are typical of cardiac amyloidosis", "infiltrative cardiomyopathy, likely amyloid",
                         "moderate concentric lv wall thickening and small pericardial effusion")),
)

FINDING_IDS = tuple(f.id for f in FINDINGS)

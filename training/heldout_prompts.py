"""Held-out prompts: how clinicians, reports and patients phrase each finding, written for the evaluation only.

Never used in report generation (appliance/dev/synth/reports.py), training, prompt choice or threshold fitting;
the build checks that none of them appears verbatim in any training report. The evaluation report gives each
one's AUROC beside the finding's own prompts. Negated prompts should score below 0.5 (they describe the absence),
unrelated text near 0.5 (it should mean nothing to the model).
"""

from __future__ import annotations

PARAPHRASES: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": (
        "poor left ventricular function",
        "LV impairment",
        "low ejection fraction",
        "the left ventricle pumps weakly",
        "globally reduced LV contractility",
        "HFrEF",
    ),
    "lv_dilation": (
        "the LV is large",
        "the left ventricular cavity is large",
        "enlarged left ventricle",
        "left-sided chamber enlargement",
        "increased left ventricular end-diastolic volume",
        "a big left ventricle",
    ),
    "lv_hypertrophy": (
        "thickened LV myocardium",
        "thick left ventricular walls",
        "hypertrophic left ventricular walls",
        "concentric remodelling with thick walls",
        "hypertrophied left ventricle",
        "the heart muscle is thickened",
    ),
    "rv_dilation": (
        "the RV is large",
        "the right ventricular cavity is large",
        "enlarged right ventricle",
        "right heart enlargement",
        "increased right ventricular volume",
    ),
    "rv_dysfunction": (
        "poor right ventricular function",
        "RV impairment",
        "reduced RVEF",
        "the right ventricle contracts poorly",
        "impaired right heart function",
    ),
    "pericardial_effusion": (
        "fluid around the heart",
        "pericardial fluid collection",
        "effusion in the pericardial space",
        "a rim of pericardial fluid",
        "pericardial effusion present",
    ),
    "nonischaemic_cm": (
        "idiopathic DCM",
        "cardiomyopathy of non-coronary cause",
        "idiopathic dilated cardiomyopathy",
        "a dilated, poorly contracting heart without infarction",
        "nonischaemic cardiomyopathy",
    ),
    "ischaemic_cm": (
        "ischemic heart disease with scar",
        "old myocardial infarction",
        "regional akinesis from coronary disease",
        "previous heart attack",
        "infarct-related wall motion abnormality",
    ),
    "hcm": (
        "HOCM",
        "hypertrophic obstructive cardiomyopathy",
        "asymmetric thickening of the septum",
        "septal hypertrophy in keeping with HCM",
        "inherited thick heart muscle disease",
    ),
    "amyloidosis": (
        "amyloid deposition in the myocardium",
        "amyloid heart disease",
        "infiltrative heart muscle disease",
        "ATTR cardiomyopathy",
        "stiff thickened heart from amyloid deposition",
    ),
}

NEGATED: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": ("normal left ventricular systolic function", "no LV systolic impairment"),
    "lv_dilation": ("the left ventricle is not dilated", "normal LV size"),
    "lv_hypertrophy": ("no left ventricular hypertrophy", "normal LV wall thickness"),
    "rv_dilation": ("the right ventricle is not dilated", "normal RV size"),
    "rv_dysfunction": ("normal right ventricular function", "no RV dysfunction"),
    "pericardial_effusion": ("no pericardial effusion", "no fluid around the heart"),
    "nonischaemic_cm": ("no cardiomyopathy", "no evidence of dilated cardiomyopathy"),
    "ischaemic_cm": ("no myocardial infarction", "no regional wall motion abnormality"),
    "hcm": ("no hypertrophic cardiomyopathy", "no septal hypertrophy"),
    "amyloidosis": ("no features of cardiac amyloidosis", "no infiltrative cardiomyopathy"),
}

UNRELATED: tuple[str, ...] = (
    "the weather is nice",
    "the patient's knee x-ray shows a fracture",
    "please schedule a follow-up appointment",
    "a photo of a cat",
    "liver lesions on abdominal CT",
)

"""The coded concepts ScanSide's SRs use, in one place (the conformance statement lists this file's table).

Standard codes where a well-established one means what the finding means: SNOMED CT (SCT) for the conditions,
DCM for DICOM's own concepts, UCUM for units. Everything that is ScanSide's own (a zero-shot score, the quality
gate's verdict, a finding no SNOMED CT concept matches) is in the private coding scheme 99SCANSIDE, declared in
every document's Coding Scheme Identification Sequence; a private code never stands in for a standard one.

A finding is coded by its label-bank id. The SNOMED CT table holds the shipped bank's findings whose concept is
long established in the International Edition and was confirmed in more than one published code list (or in
DICOM's own tables), never guessed:

    lv_systolic_dysfunction  SCT 134401001  Left ventricular systolic dysfunction (eCQM value sets)
    lv_hypertrophy           SCT 55827005   Left ventricular hypertrophy
    pericardial_effusion     SCT 373945007  Pericardial effusion (also in DICOM CID 12236)
    hcm                      SCT 233873004  Hypertrophic cardiomyopathy (also the HPO HP:0001639 mapping)

The others stay private, the bank's own name as meaning, until a SNOMED CT browser confirms a concept:
rv_dysfunction (candidate 416158002 "Right ventricular systolic dysfunction", seen in one code list only),
ischaemic_cm (candidate 426856002 "Ischemic congestive cardiomyopathy", code lists disagree on it), lv_dilation
and rv_dilation (no concept for ventricular dilatation as a finding of its own was found), nonischaemic_cm
(SNOMED CT's "Nonischemic congestive cardiomyopathy", 111000119104, is a US Extension concept, not
International), amyloidosis (no long-standing International concept for cardiac amyloidosis as a whole; a 2026
organ-limited one, 1382129000, is narrower than this finding). Moving a finding to SNOMED CT is one table row.
A finding a site adds to its bank is private too, whatever its name.
"""

from __future__ import annotations

from functools import lru_cache

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

SCHEME = "99SCANSIDE"
SCHEME_NAME = "ScanSide local codes"
SCHEME_ORGANIZATION = "ScanSide project"

# bank id -> (SCTID, SNOMED CT preferred term)
FINDING_SNOMED: dict[str, tuple[str, str]] = {
    "lv_systolic_dysfunction": ("134401001", "Left ventricular systolic dysfunction"),
    "lv_hypertrophy": ("55827005", "Left ventricular hypertrophy"),
    "pericardial_effusion": ("373945007", "Pericardial effusion"),
    "hcm": ("233873004", "Hypertrophic cardiomyopathy"),
}


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, SCHEME, meaning)


# ScanSide's own concepts (both SR forms)
BACKEND = private("backend", "Inference backend")
BANK_VERSION = private("label-bank-version", "Label bank version")
ASSESSABLE = private("assessable", "Series assessable")
QUALITY_REASON = private("quality-reason", "Why not assessable")
NEEDS_REVIEW = private("needs-review", "Needs human review")
REVIEW_REASON = private("review-reason", "Review reason")
OOD = private("ood-distance", "Distance from the reference data")
SCORE = private("similarity", "Prompt similarity score")
THRESHOLD = private("threshold", "Decision threshold")
PROBABILITY = private("probability", "Calibrated probability")
RARE = private("rare", "Rare phenotype")
# the Comprehensive SR form's own
TITLE = private("report", "Research zero-shot cine CMR screen - not for diagnostic use")
FINDING_RESULT = private("finding-result", "Zero-shot finding result")
DECISION = private("decision", "Zero-shot decision")


def lo(text: str) -> str:
    """A string fit for a single-valued LO (64 characters, no backslash, no control characters)."""
    cleaned = "".join(" " if ord(c) < 32 else c for c in text).replace("\\", "/").strip()
    return cleaned[:64]


def finding_concept(finding_id: str, name: str) -> CodedConcept:
    """The finding's SNOMED CT concept where the table has one, else its private code (value: the bank id)."""
    if finding_id in FINDING_SNOMED:
        value, meaning = FINDING_SNOMED[finding_id]
        return CodedConcept(value, "SCT", meaning)
    return private(finding_id, lo(name) or lo(finding_id))


@lru_cache(maxsize=32)
def modality_concept(modality: str) -> CodedConcept | None:
    """The DICOM modality as its CID 29 code (MR -> (MR, DCM, "Magnetic Resonance")), None if CID 29 lacks it."""
    for keyword in dir(codes.cid29):
        code = getattr(codes.cid29, keyword)
        if code.value == modality:
            return CodedConcept(code.value, code.scheme_designator, code.meaning)
    return None

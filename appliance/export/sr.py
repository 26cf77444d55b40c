"""One scored series as a DICOM Comprehensive SR (highdicom), filed in the source study.

Content tree (codes in brackets; 99SCANSIDE is this project's private coding scheme, declared in the document's
Coding Scheme Identification Sequence):

    CONTAINER  [99SCANSIDE report] "Research zero-shot cine CMR screen - not for diagnostic use"
      HAS OBS CONTEXT  device observer: the appliance (TID 1002/1004)
      CONTAINS TEXT     [DCM 121106 Comment]  the research-use statement, in words
      CONTAINS TEXT     [DCM 111001 Algorithm Name] / [DCM 111003 Algorithm Version]  the model bundle
      CONTAINS TEXT     [99SCANSIDE label-bank-version]  the label-bank version that scored it (prompts, thresholds)
      CONTAINS TEXT     [99SCANSIDE backend]  inference backend, version and precision
      CONTAINS UIDREF   [DCM 112002 Series Instance UID]  the scored source series
      CONTAINS CODE     [99SCANSIDE assessable]  SCT Yes / No: No when the series is not a usable cine short-axis
                        stack (then no finding is present), with one TEXT [99SCANSIDE quality-reason] per reason
      CONTAINS CODE     [99SCANSIDE needs-review]  SCT Yes / No, with one TEXT per study-level reason
      CONTAINS NUM      [99SCANSIDE ood-distance]  when the bundle has reference statistics
      CONTAINS CONTAINER [99SCANSIDE finding-result], one per finding:
          CODE [DCM 121071 Finding] = the finding (99SCANSIDE code = finding id, meaning = its name)
          CODE [99SCANSIDE decision] = SCT Present / Absent
          NUM  similarity score, threshold, calibrated probability (UCUM "1": no units)
          TEXT [99SCANSIDE review-reason], one per reason

Every image of the source series is listed in the Current Requested Procedure Evidence Sequence. The document is
UNVERIFIED and PRELIMINARY: no person has signed it, and it never claims to be a final report.
"""

from __future__ import annotations

import copy
import io
import logging
import socket
import warnings
from dataclasses import dataclass

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    ComprehensiveSR,
    ContainerContentItem,
    DeviceObserverIdentifyingAttributes,
    NumContentItem,
    ObservationContext,
    ObserverContext,
    RelationshipTypeValues,
    TextContentItem,
    UIDRefContentItem,
)
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from appliance import __version__
from appliance.export.source import SourceStudy
from appliance.handovers import StudyResult

# highdicom logs source UIDs at INFO, and a patient's name when it looks malformed: neither may reach our logs.
logging.getLogger("highdicom").setLevel(logging.ERROR)

SCHEME = "99SCANSIDE"
RESEARCH_STATEMENT = ("RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE. Zero-shot scores from ScanSide, research software; "
                      "not a medical device, not reviewed by a physician.")
TITLE = CodedConcept("report", SCHEME, "Research zero-shot cine CMR screen - not for diagnostic use")
SERIES_DESCRIPTION = "ScanSide research SR - not for diagnostic use"  # LO: at most 64 characters
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"

_BACKEND = CodedConcept("backend", SCHEME, "Inference backend")
_BANK_VERSION = CodedConcept("label-bank-version", SCHEME, "Label bank version")
_ASSESSABLE = CodedConcept("assessable", SCHEME, "Series assessable")
_QUALITY_REASON = CodedConcept("quality-reason", SCHEME, "Why not assessable")
_NEEDS_REVIEW = CodedConcept("needs-review", SCHEME, "Needs human review")
_REVIEW_REASON = CodedConcept("review-reason", SCHEME, "Review reason")
_OOD = CodedConcept("ood-distance", SCHEME, "Distance from the reference data")
_FINDING_RESULT = CodedConcept("finding-result", SCHEME, "Zero-shot finding result")
_DECISION = CodedConcept("decision", SCHEME, "Zero-shot decision")
_SCORE = CodedConcept("similarity", SCHEME, "Prompt similarity score")
_THRESHOLD = CodedConcept("threshold", SCHEME, "Decision threshold")
_PROBABILITY = CodedConcept("probability", SCHEME, "Calibrated probability")
_RARE = CodedConcept("rare", SCHEME, "Rare phenotype")


@dataclass(frozen=True, slots=True)
class SrSettings:
    series_number: int = 9901
    institution_name: str = ""
    device_uid: str = ""  # Device Observer UID; default: stable per host


@dataclass(frozen=True, slots=True)
class SrDocument:
    sop_instance_uid: str
    data: bytes  # Part 10 file, Explicit VR Little Endian
    kept_as_is: tuple[str, ...] = ()  # source attributes copied unchanged although not valid DICOM (names only)


def device_uid() -> str:
    """A UID for this appliance that stays the same across restarts (hashed from the host name)."""
    return generate_uid(entropy_srcs=["scanside-appliance", socket.gethostname()])


# Type 2 in the source's Patient and General Study modules, read unconditionally by highdicom. A source without one
# gets it empty (unknown), which is what Type 2 allows; nothing is made up.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime", "ReferringPhysicianName")


def build_sr(result: StudyResult, source: SourceStudy, settings: SrSettings = SrSettings()) -> SrDocument:
    header = source.dataset()
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    # highdicom refuses some values scanners do write (sex "X", dates as "1980-01-01"): build with them empty,
    # then put the source's own elements back, so identity is copied as it was, not cleaned up or lost.
    kept = {keyword: copy.deepcopy(header[keyword]) for keyword in _refused_by_highdicom(header)}
    for keyword in kept:
        setattr(header, keyword, None)
    evidence = [header, *_evidence(header, source.instances)]
    sop_uid = hd.UID()
    with warnings.catch_warnings():
        # highdicom warns about odd person names by quoting them; a warning reaches stderr, i.e. the journal.
        warnings.simplefilter("ignore")
        sr = ComprehensiveSR(
            evidence=evidence,
            content=_content(result, settings),
            series_instance_uid=hd.UID(),
            series_number=settings.series_number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer="ScanSide (research software)",
            manufacturer_model_name=_lo(f"{result.bundle_name} {result.bundle_version}"),
            software_versions=f"scanside {__version__}",
            series_description=SERIES_DESCRIPTION,
            institution_name=_lo(settings.institution_name) or None,
            is_complete=True,
            is_final=False,
            is_verified=False,
            coding_schemes=[CodingSchemeIdentificationItem(
                designator=SCHEME, name="ScanSide local codes", responsible_organization="ScanSide project")],
            specific_character_set=_character_set(header, result, settings),
        )
        for element in kept.values():
            sr[element.tag] = element
        buf = io.BytesIO()
        sr.save_as(buf, enforce_file_format=True)
    return SrDocument(str(sop_uid), buf.getvalue(), tuple(kept))


_TEXT_VRS = ("PN", "LO", "SH", "ST", "LT", "UT", "UC")


def _character_set(header: Dataset, result: StudyResult, settings: SrSettings) -> str | None:
    """The source's own character set where it is a single one that also holds every text this appliance writes
    (what PACS showed for the images will show for the SR, and older viewers cope); otherwise UTF-8 (ISO_IR 192),
    into which any source re-encodes losslessly. Never text squeezed into a set that cannot hold it ("?")."""
    declared = header.get("SpecificCharacterSet")
    values = list(declared) if isinstance(declared, (list, tuple, MultiValue)) else [declared or ""]
    if len(values) == 1 and not values[0].startswith("ISO 2022") and values[0] in python_encoding:
        codec = "ascii" if values[0] in ("", "ISO_IR 6") else python_encoding[values[0]]
        texts = [result.bundle_name, result.bundle_version, result.backend, result.precision,
                 settings.institution_name, result.bank_version, *result.scores.review_reasons,
                 *result.scores.quality_reasons]
        texts += [t for f in result.scores.findings for t in (f.name, f.finding_id, *f.review_reasons)]
        # The source's own text too: bytes it could not decode come back as U+FFFD, which its set cannot hold.
        texts += [str(e.value) for e in header.iterall() if e.VR in _TEXT_VRS and e.value is not None]
        try:
            for text in texts:
                text.encode(codec)
            # highdicom knows the default repertoire only as "no value"; "ISO_IR 6" is pydicom's name for it.
            return None if values[0] in ("", "ISO_IR 6") else values[0]
        except (UnicodeEncodeError, LookupError):
            pass
    return "ISO_IR 192"


def _refused_by_highdicom(header: Dataset) -> list[str]:
    refused = []
    sex = header.get("PatientSex")
    if sex not in (None, "", "M", "F", "O"):
        refused.append("PatientSex")
    for keyword, kind in (("PatientBirthDate", DA), ("StudyDate", DA), ("StudyTime", TM)):
        value = header.get(keyword)
        if value in (None, ""):
            continue
        try:
            kind(value)
        except (ValueError, TypeError):
            refused.append(keyword)
    return refused


def _lo(text: str) -> str:
    """A string fit for a single-valued LO (64 characters, no backslash, no control characters)."""
    cleaned = "".join(" " if ord(c) < 32 else c for c in text).replace("\\", "/").strip()
    return cleaned[:64]


def _evidence(header: Dataset, instances: tuple[tuple[str, str], ...]) -> list[Dataset]:
    """Reference-only datasets for the series' other images (highdicom reads only their UIDs)."""
    out = []
    for sop_class, sop_instance in instances:
        if sop_instance == header.SOPInstanceUID:
            continue
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
        ds.StudyInstanceUID, ds.SeriesInstanceUID = header.StudyInstanceUID, header.SeriesInstanceUID
        out.append(ds)
    return out


def _content(result: StudyResult, settings: SrSettings) -> ContainerContentItem:
    contains = RelationshipTypeValues.CONTAINS
    scores = result.scores
    root = ContainerContentItem(name=TITLE)
    items: list = list(ObservationContext(observer_device_context=ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=settings.device_uid or device_uid(), name="ScanSide", manufacturer_name="ScanSide project",
            model_name=_lo(result.bundle_name)))))
    items += [
        TextContentItem(codes.DCM.Comment, RESEARCH_STATEMENT, relationship_type=contains),
        TextContentItem(codes.DCM.AlgorithmName, result.bundle_name, relationship_type=contains),
        TextContentItem(codes.DCM.AlgorithmVersion, result.bundle_version, relationship_type=contains),
    ]
    if result.bank_version:
        items.append(TextContentItem(_BANK_VERSION, result.bank_version, relationship_type=contains))
    items += [
        TextContentItem(_BACKEND, f"{result.backend} ({result.precision})", relationship_type=contains),
        UIDRefContentItem(codes.DCM.SeriesInstanceUID, result.info.series_uid, relationship_type=contains),
        CodeContentItem(_ASSESSABLE, codes.SCT.Yes if scores.assessable else codes.SCT.No,
                        relationship_type=contains),
    ]
    items += [TextContentItem(_QUALITY_REASON, reason, relationship_type=contains)
              for reason in scores.quality_reasons]
    items.append(CodeContentItem(_NEEDS_REVIEW, codes.SCT.Yes if scores.needs_review else codes.SCT.No,
                                 relationship_type=contains))
    items += [TextContentItem(_REVIEW_REASON, reason, relationship_type=contains) for reason in scores.review_reasons]
    if scores.ood_distance is not None:
        items.append(NumContentItem(_OOD, float(scores.ood_distance), codes.UCUM.NoUnits, relationship_type=contains))
    for f in scores.findings:
        box = ContainerContentItem(name=_FINDING_RESULT, relationship_type=contains)
        parts = [
            CodeContentItem(codes.DCM.Finding, CodedConcept(f.finding_id, SCHEME, _lo(f.name) or _lo(f.finding_id)),
                            relationship_type=contains),
            CodeContentItem(_DECISION, codes.SCT.Present if f.positive else codes.SCT.Absent,
                            relationship_type=contains),
            NumContentItem(_SCORE, float(f.score), codes.UCUM.NoUnits, relationship_type=contains),
            NumContentItem(_THRESHOLD, float(f.threshold), codes.UCUM.NoUnits, relationship_type=contains),
            NumContentItem(_PROBABILITY, float(f.probability), codes.UCUM.NoUnits, relationship_type=contains),
        ]
        if f.rare:
            parts.append(CodeContentItem(_RARE, codes.SCT.Yes, relationship_type=contains))
        parts += [TextContentItem(_REVIEW_REASON, r, relationship_type=contains) for r in f.review_reasons]
        box.ContentSequence = hd.sr.ContentSequence(parts)
        items.append(box)
    root.ContentSequence = hd.sr.ContentSequence(items)
    return root

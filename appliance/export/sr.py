"""One scored series as a DICOM SR document (highdicom, Comprehensive SR Storage), filed in the source study.

Two content forms, chosen by `[export] sr_template`: "tid1500" (the default), a TID 1500 Measurement Report
(sr_tid1500.py), which OHIF renders and IHE AI Results builds on; "comprehensive", ScanSide's own tree of the
earlier exports (sr_comprehensive.py). Both are Comprehensive SR Storage (1.2.840.10008.5.1.4.1.1.88.33): neither
has 3D coordinates, and it is the SOP class the PACS destination proposes. Codes: sr_codes.py.

What both share is built here: the patient and General Study modules copied from the kept source header (never
made up, never cleaned up), every image of the source series in the Current Requested Procedure Evidence Sequence,
the appliance as device observer, the 99SCANSIDE coding scheme declared, the character set. The document is
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
from highdicom.sr import ComprehensiveSR, DeviceObserverIdentifyingAttributes, ObservationContext, ObserverContext
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from pydicom.valuerep import DA, TM

from appliance import __version__
from appliance.config.sections import SR_TEMPLATES
from appliance.export import sr_codes, sr_comprehensive, sr_tid1500
from appliance.export.source import SourceStudy
from appliance.export.sr_codes import SCHEME, lo
from appliance.handovers import StudyResult

# highdicom logs source UIDs at INFO, and a patient's name when it looks malformed: neither may reach our logs.
logging.getLogger("highdicom").setLevel(logging.ERROR)

RESEARCH_STATEMENT = ("RESEARCH USE ONLY - NOT FOR DIAGNOSTIC USE. Zero-shot scores from ScanSide, research software; "
                      "not a medical device, not reviewed by a physician.")
SERIES_DESCRIPTION = "ScanSide research SR - not for diagnostic use"  # LO: at most 64 characters
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
TEMPLATES = SR_TEMPLATES


@dataclass(frozen=True, slots=True)
class SrSettings:
    series_number: int = 9901
    institution_name: str = ""
    device_uid: str = ""  # Device Observer UID; default: stable per host
    template: str = "tid1500"  # one of TEMPLATES


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
    if settings.template not in TEMPLATES:
        raise ValueError(f"unknown SR template {settings.template!r}: one of {', '.join(TEMPLATES)}")
    header = source.dataset()
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, None)
    # highdicom refuses some values scanners do write (sex "X", dates as "1980-01-01"): build with them empty,
    # then put the source's own elements back, so identity is copied as it was, not cleaned up or lost.
    kept = {keyword: copy.deepcopy(header[keyword]) for keyword in _refused_by_highdicom(header)}
    for keyword in kept:
        setattr(header, keyword, None)
    evidence = [header, *_evidence(header, source.referenced)]
    observation = _observation(result, settings)
    content: Dataset | Sequence
    if settings.template == "tid1500":
        content = sr_tid1500.measurement_report(result, header, source.referenced, observation, RESEARCH_STATEMENT,
                                                include_header=not source.used)
    else:
        content = sr_comprehensive.content(result, observation, RESEARCH_STATEMENT)
    sop_uid = hd.UID()
    with warnings.catch_warnings():
        # highdicom warns about odd person names by quoting them; a warning reaches stderr, i.e. the journal.
        warnings.simplefilter("ignore")
        sr = ComprehensiveSR(
            evidence=evidence,
            content=content,
            series_instance_uid=hd.UID(),
            series_number=settings.series_number,
            sop_instance_uid=sop_uid,
            instance_number=1,
            manufacturer="ScanSide (research software)",
            manufacturer_model_name=lo(f"{result.bundle_name} {result.bundle_version}"),
            software_versions=f"scanside {__version__}",
            series_description=SERIES_DESCRIPTION,
            institution_name=lo(settings.institution_name) or None,
            is_complete=True,
            is_final=False,
            is_verified=False,
            coding_schemes=[CodingSchemeIdentificationItem(
                designator=SCHEME, name=sr_codes.SCHEME_NAME, responsible_organization=sr_codes.SCHEME_ORGANIZATION)],
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


def _observation(result: StudyResult, settings: SrSettings) -> ObservationContext:
    return ObservationContext(observer_device_context=ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=settings.device_uid or device_uid(), name="ScanSide", manufacturer_name="ScanSide project",
            model_name=lo(result.bundle_name))))

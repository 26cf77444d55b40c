"""HL7 v2 ORU^R01 (observation result) messages carrying final radiology reports, and their ACKs.

What is read (the `hl7` package splits the message; the fields are picked here):

- **Message control id**, MSH-10: echoed in the ACK's MSA-2. Without it no ACK can name the message: AR.
- **Message type**, MSH-9: ORU^R01 only; anything else is answered AR (unsupported message type, HL7 table 0008).
- **Accession number**: OBR-3, the filler order number. The RIS (the order filler) issues the accession number,
  and reporting systems and interface engines return it as the filler order number of the result's OBR; where a
  sender leaves OBR-3 empty, OBR-18 (placer field 1, where IHE Radiology's Scheduled Workflow puts the Accession
  Number in the order it sends the modality side) and then ORC-3 (the order's filler number) are read, in that
  order. Only the first component (the entity identifier) is taken.
- **Study Instance UID**, where present: IHE's ZDS segment (ZDS-1, `<uid>^<app>^Application^DICOM`), else an OBX
  whose observation identifier (OBX-3) is DICOM's code for it — DCM 110180 "Study Instance UID" (or 113014
  "Study", which some senders use) — or whose identifier text says "Study Instance UID"; its OBX-5 is the UID
  (value types RP, ST, or UI). Either way it must look like a UID (digits and dots, ≤ 64 characters) or it is
  ignored. Such OBX segments are not report text.
- **Result status**, OBR-25: F final, C corrected (replaces the earlier truth), X cancelled (withdraws it) go to the
  sink; P preliminary (and R, S, I, not yet verified) is acknowledged AA and not used; anything else is AE.
- **Observation time**: OBR-7 (observation date/time), else OBR-22 (status change), else the first OBX-14.
- **Report text**: OBX-5 of the TX, FT, ST and CE-less text segments (value types TX, FT, ST), in order, repetitions
  and FT line breaks (\\.br\\) as new lines, HL7 escapes undone.

AE (application error: the message is understood but cannot be used; the sender may fix and resend) for an ORU
without an OBR, without an accession number and Study Instance UID, without text (F or C), or with an unknown
status. AR (application reject) for what is not an HL7 message, has no MSH or control id, or is not ORU^R01.
`Outcome.reason` is a short code for logs and metrics; it never quotes a value from the message.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import Enum

import hl7  # type: ignore[import-untyped]

ACCEPT, ERROR, REJECT = "AA", "AE", "AR"
_UID = re.compile(r"^[0-9]+(?:\.[0-9]+)*$")
_STUDY_UID_CODES = {"110180", "113014"}
_TEXT_TYPES = {"TX", "FT", "ST"}
_NOT_YET = {"P", "R", "S", "I"}


class ResultStatus(str, Enum):
    FINAL = "F"
    CORRECTED = "C"
    CANCELLED = "X"


@dataclass(frozen=True)
class FinalReport:
    control_id: str  # MSH-10
    # identifiers and text stay out of repr(), so a report that reaches a log line by mistake carries neither
    accession_number: str = field(repr=False)  # "" when the sender gave only a Study Instance UID
    study_instance_uid: str | None = field(repr=False)
    status: ResultStatus
    observed_at: dt.datetime | None
    text: str = field(repr=False)  # the report, lines joined with "\n"; empty for a cancellation
    sending_application: str  # MSH-3, first component
    sending_facility: str  # MSH-4, first component

    @property
    def corrected(self) -> bool:
        return self.status is ResultStatus.CORRECTED


@dataclass(frozen=True)
class Header:
    """What an ACK needs from the message's MSH (raw field texts, as sent)."""

    control_id: str = ""
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    trigger: str = "R01"
    processing_id: str = "P"
    version: str = "2.5.1"


@dataclass(frozen=True)
class Outcome:
    code: str  # the ACK code to answer: AA, AE or AR
    reason: str  # "final", "corrected", "cancelled", "preliminary", or why not (a code, no values)
    header: Header
    report: FinalReport | None = None  # for the sink: F, C and X only


def _get(seg, n: int) -> str:
    try:
        return str(seg[n])
    except IndexError:
        return ""


def _first(value: str, sep: str = "^") -> str:
    return value.split("~", 1)[0].split(sep, 1)[0].strip()


def header_of(text: str) -> Header:
    """The MSH fields an ACK echoes, read without the parser, for a message it cannot read (an AR still names it)."""
    first = re.split(r"[\r\n]", text.lstrip(), maxsplit=1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return Header()
    fs = first[3]
    f = first.split(fs)
    # f[0] "MSH", f[1] the encoding characters: MSH-n is f[n - 1]

    def at(n: int) -> str:
        return f[n - 1] if len(f) >= n else ""

    return Header(control_id=at(10), sending_application=at(3), sending_facility=at(4),
                  receiving_application=at(5), receiving_facility=at(6),
                  trigger=[*at(9).split(f[1][:1] or "^"), ""][1] or "R01", processing_id=at(11) or "P",
                  version=at(12) or "2.5.1")


def _segments(msg, name: str) -> list:
    return [s for s in msg if str(s[0]) == name]


def parse_oru(text: str) -> Outcome:
    """Read one HL7 v2 message (segments separated by CR; LF and CRLF are accepted too)."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 ")
    header = header_of(text)
    try:
        msg = hl7.parse(text)
        msh = msg.segment("MSH")
    except Exception:
        return Outcome(REJECT, "unparseable", header)
    if not header.control_id:
        return Outcome(REJECT, "no_control_id", header)
    comp = msg.separators[3]
    kind = [*_get(msh, 9).split(comp), ""]
    if kind[0] != "ORU" or kind[1] != "R01":
        return Outcome(REJECT, "unsupported_message_type", header)
    obrs = _segments(msg, "OBR")
    if not obrs:
        return Outcome(ERROR, "no_obr", header)
    obr = obrs[0]
    raw_status = _first(_get(obr, 25), comp).upper()
    if raw_status in _NOT_YET:
        return Outcome(ACCEPT, "preliminary", header)
    try:
        status = ResultStatus(raw_status)
    except ValueError:
        return Outcome(ERROR, "unknown_status", header)
    accession = _accession(msg, obr, comp)
    study_uid = _study_uid(msg, comp)
    if not accession and not study_uid:
        return Outcome(ERROR, "no_accession_or_study_uid", header)
    report_text = _report_text(msg)
    if status is not ResultStatus.CANCELLED and not report_text.strip():
        return Outcome(ERROR, "no_report_text", header)
    report = FinalReport(
        control_id=header.control_id, accession_number=accession, study_instance_uid=study_uid, status=status,
        observed_at=_observed_at(obr, msg), text=report_text,
        sending_application=_first(_get(msh, 3), comp), sending_facility=_first(_get(msh, 4), comp))
    reason = {ResultStatus.FINAL: "final", ResultStatus.CORRECTED: "corrected",
              ResultStatus.CANCELLED: "cancelled"}[status]
    return Outcome(ACCEPT, reason, header, report)


def _accession(msg, obr, comp: str) -> str:
    for value in (_get(obr, 3), _get(obr, 18)):
        if _first(value, comp):
            return msg.unescape(_first(value, comp))
    for orc in _segments(msg, "ORC"):
        if _first(_get(orc, 3), comp):
            return msg.unescape(_first(_get(orc, 3), comp))
    return ""


def _is_study_uid_obx(obx, comp: str) -> bool:
    ident = _get(obx, 3).split(comp)
    return ident[0].strip() in _STUDY_UID_CODES or "study instance uid" in " ".join(ident[:2]).lower()


def _study_uid(msg, comp: str) -> str | None:
    candidates = [_first(_get(z, 1), comp) for z in _segments(msg, "ZDS")]
    candidates += [_first(_get(o, 5), comp) for o in _segments(msg, "OBX") if _is_study_uid_obx(o, comp)]
    for uid in candidates:
        if len(uid) <= 64 and _UID.match(uid):
            return uid
    return None


def _report_text(msg) -> str:
    comp = msg.separators[3]
    lines: list[str] = []
    for obx in _segments(msg, "OBX"):
        if _first(_get(obx, 2), comp).upper() not in _TEXT_TYPES or _is_study_uid_obx(obx, comp):
            continue
        for rep in _get(obx, 5).split(msg.separators[2]):
            lines.append(msg.unescape(rep).replace("\r", "\n"))
    return "\n".join(lines).strip()


def _timestamp(value: str) -> dt.datetime | None:
    value = value.split("^", 1)[0].strip()
    if not value:
        return None
    try:
        return hl7.parse_datetime(value)
    except (ValueError, TypeError):
        return None


def _observed_at(obr, msg) -> dt.datetime | None:
    for value in (_get(obr, 7), _get(obr, 22), *(_get(o, 14) for o in _segments(msg, "OBX"))):
        when = _timestamp(value)
        if when is not None:
            return when
    return None


# --- acknowledgements ---------------------------------------------------------------------------------------------

def _clean(text: str) -> str:
    """An ACK's own text: no separators or line breaks (the reason codes never have any; this keeps it so)."""
    return re.sub(r"[|^~\\&\r\n]", " ", text)


def build_ack(header: Header, code: str, reason: str = "", application: str = "SCANSIDE", facility: str = "",
              control_id: str | None = None, now: dt.datetime | None = None) -> str:
    """An original-mode ACK (HL7 v2 chapter 2): MSH with sender and receiver swapped, ACK^<trigger>^ACK, its own
    control id; MSA-1 the code, MSA-2 the message's control id, MSA-3 the reason (a code, never a value)."""
    if code not in (ACCEPT, ERROR, REJECT):
        raise ValueError(f"not an acknowledgment code: {code!r}")
    now = now or dt.datetime.now(dt.timezone.utc)
    own = control_id or f"SS{now.strftime('%Y%m%d%H%M%S%f')}"
    msh = "|".join(["MSH", "^~\\&", _clean(application), _clean(facility), header.sending_application,
                    header.sending_facility, now.strftime("%Y%m%d%H%M%S"), "",
                    f"ACK^{_clean(header.trigger) or 'R01'}^ACK", own, header.processing_id or "P",
                    header.version or "2.5.1"])
    msa = "|".join(["MSA", code, header.control_id, _clean(reason)])
    return f"{msh}\r{msa}\r"


def ack_code(ack: str) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an ACK: what a sender reads back."""
    for seg in re.split(r"[\r\n]+", ack):
        if seg.startswith("MSA"):
            parts = seg.split(seg[3]) if len(seg) > 3 else ["MSA"]
            return (parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
    return ("", "")

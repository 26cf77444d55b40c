"""What a STOW-RS answer (PS3.18 10.5.3) says about each instance sent: stored, stored with a warning, refused for
now (tried again), or refused for good (failed at once: the same document would get the same answer).

Only codes are copied into an outcome's detail: HTTP status, Failure Reason and Warning Reason (0008,1197 / 1196).
A server's free text (a Warning header, an error comment) and its Retrieve URLs are left out: they can name the
study or quote the data.

Statuses that judge the request itself are final for the instances they concern; those that depend on the
configuration (credentials, permissions, the URL) or on the moment (timeouts, load, server errors) cost one try
each, bounded by export.max_attempts, so that mended credentials or a server back up are picked up without a
`scanside exports retry`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from pydicom.dataset import Dataset

from appliance.export.destinations import SendOutcome

# Statuses after which the same request gets the same answer: the server read it and refused what it holds.
FINAL_STATUSES: dict[int, str] = {
    HTTPStatus.BAD_REQUEST: "the server could not read the request, or an instance lacks a required attribute",
    HTTPStatus.CONFLICT: "the server refused the instances as conflicting (e.g. a SOP class it does not store)",
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE: "the server does not take application/dicom instances",
    HTTPStatus.UNPROCESSABLE_ENTITY: "the server could not process the instances",
}
# Statuses worth another try, with what to look at (anything else in 4xx is retried too, and read generically).
RETRIED_STATUSES: dict[int, str] = {
    HTTPStatus.UNAUTHORIZED: "the server did not accept our credentials (export.dicomweb_token_file, or "
                             "dicomweb_username and dicomweb_password_file)",
    HTTPStatus.FORBIDDEN: "the server refused these credentials or this client the right to store",
    HTTPStatus.NOT_FOUND: "no STOW-RS service at <export.dicomweb_url>/studies",
    HTTPStatus.METHOD_NOT_ALLOWED: "no STOW-RS service at <export.dicomweb_url>/studies (POST not allowed)",
    HTTPStatus.REQUEST_TIMEOUT: "the server timed out reading the request",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "the request is larger than the server takes",
    HTTPStatus.TOO_MANY_REQUESTS: "the server is busy (too many requests)",
    HTTPStatus.INTERNAL_SERVER_ERROR: "the server failed",
    HTTPStatus.BAD_GATEWAY: "a gateway before the server failed",
    HTTPStatus.SERVICE_UNAVAILABLE: "the server is unavailable or busy",
    HTTPStatus.GATEWAY_TIMEOUT: "a gateway before the server timed out",
}

# Failure Reason values: the C-STORE status classes of PS3.4 Annex B and the DIMSE ones of PS3.7 Annex C, which
# PS3.18 takes over for STOW-RS. The first matching one wins.
_FAILURES: tuple[tuple[int, int, str, bool], ...] = (  # (mask, value, meaning, final)
    (0xFF00, 0xA700, "refused: out of resources", False),
    (0xFF00, 0xA900, "error: data set does not match SOP class", True),
    (0xFFFF, 0xC122, "referenced transfer syntax not supported", True),
    (0xF000, 0xC000, "error: cannot understand", True),
    (0xFFFF, 0x0110, "processing failure", False),
    (0xFFFF, 0x0122, "referenced SOP class not supported", True),
    (0xFFFF, 0x0124, "refused: not authorised", False),
    (0xFFFF, 0x0213, "resource limitation", False),
)
_WARNINGS = {0xB000: "coercion of data elements", 0xB006: "elements discarded",
             0xB007: "data set does not match SOP class"}

_REFERENCED = "ReferencedSOPSequence"
_FAILED = "FailedSOPSequence"


@dataclass(frozen=True, slots=True)
class StowAnswer:
    status: int
    body: Dataset | None  # the Store Instances Response Module, where the answer carried one that could be read


def read_body(content: bytes, content_type: str) -> Dataset | None:
    """The response module of a JSON answer (application/dicom+json; a server that sends an error status may name
    no type at all, as Orthanc does). None for anything else: the status alone is then read."""
    text = content.lstrip()
    if not text or not (content_type.startswith(("application/dicom+json", "application/json"))
                        or (not content_type and text[:1] in (b"{", b"["))):
        return None
    try:
        value: Any = json.loads(text)
        if isinstance(value, list) and len(value) == 1:  # some servers wrap the one dataset in an array
            value = value[0]
        return Dataset.from_json(value) if isinstance(value, dict) else None
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def outcomes(uids: Sequence[str], answer: StowAnswer) -> list[SendOutcome]:
    """One outcome per SOP Instance UID sent, in order."""
    referenced, failed = _listed(answer.body, _REFERENCED), _listed(answer.body, _FAILED)
    return [_one(uid, answer.status, referenced, failed) for uid in uids]


def _listed(body: Dataset | None, keyword: str) -> dict[str, Dataset]:
    if body is None:
        return {}
    try:
        items = body.get(keyword) or []
        return {str(item.ReferencedSOPInstanceUID): item for item in items if "ReferencedSOPInstanceUID" in item}
    except (AttributeError, TypeError, ValueError):  # an odd answer is read by its status alone
        return {}


def _one(uid: str, status: int, referenced: Mapping[str, Dataset], failed: Mapping[str, Dataset]) -> SendOutcome:
    http = _http(status)
    final_status = status in FINAL_STATUSES
    if uid in failed:  # named as refused: that wins over anything else the answer says
        code = _code(failed[uid], "FailureReason")
        if code is None:
            return SendOutcome(False, f"refused by the DICOMweb server ({http}, no failure reason given)",
                               final=final_status)
        meaning, final_reason = _failure(code)
        return SendOutcome(False, f"refused by the DICOMweb server ({http}): failure reason 0x{code:04X} "
                                  f"({meaning})", final=final_status or final_reason)
    if uid in referenced:  # stored, whatever the status of the whole request
        code = _code(referenced[uid], "WarningReason")
        if code is None:
            return SendOutcome(True)
        return SendOutcome(True, f"stored with warning reason 0x{code:04X} "
                                 f"({_WARNINGS.get(code, 'warning')}, {http})")
    if 200 <= status < 300 and status != HTTPStatus.ACCEPTED:
        return SendOutcome(True)  # 200: every instance stored (a server need not list them)
    if status == HTTPStatus.ACCEPTED:
        return SendOutcome(False, f"{http}: the server stored only some instances and did not name this one")
    if 300 <= status < 400:
        return SendOutcome(False, f"{http}: the server redirects; set export.dicomweb_url to the address it names")
    meaning = FINAL_STATUSES.get(status) or RETRIED_STATUSES.get(status) or (
        "refused by the server" if status < 500 else "the server failed")
    return SendOutcome(False, f"{http}: {meaning}", final=final_status)


def _http(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _code(item: Dataset, keyword: str) -> int | None:
    try:
        value = item.get(keyword)
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None


def _failure(code: int) -> tuple[str, bool]:
    for mask, value, meaning, final in _FAILURES:
        if code & mask == value:
            return meaning, final
    return "failure", False

"""Storage Commitment Push Model (PS3.4 Annex J.3) as datasets: the Action Information of a request and the Event
Information of a result, made and read, and the answer to a result addressed to this appliance. The receiver
answers scanners with it (appliance/ingest/commitment_scp.py) and takes PACS' results on associations PACS opens
(appliance/ingest/receiver.py); the PACS destination asks PACS with it (appliance/export/commitment.py).

Only pydicom: no network, no database (what records a result is handed in). Whatever a peer sent that cannot be
read raises CommitmentFormatError with a message naming attributes, never a value.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from appliance.handovers import CommitmentFailure, CommitmentRequest, CommitmentResult, SopReference
from appliance.logsafe import describe

log = logging.getLogger(__name__)

SOP_CLASS_UID = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model SOP Class
SOP_INSTANCE_UID = "1.2.840.10008.1.20.1.1"  # its well-known SOP Instance (J.3.5)
ACTION_REQUEST = 1  # Action Type ID: Request Storage Commitment
EVENT_SUCCESSFUL = 1  # Event Type ID: storage commitment request successful
EVENT_FAILURES_EXIST = 2  # Event Type ID: storage commitment request complete, failures exist

# PS3.3 C.14.1.1 Failure Reasons, and their names for metric labels and log lines (a closed set).
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
SOP_CLASS_NOT_SUPPORTED = 0x0122
RESOURCE_LIMITATION = 0x0213
DUPLICATE_TRANSACTION_UID = 0x0131
FAILURE_REASONS = {
    PROCESSING_FAILURE: "processing_failure",
    NO_SUCH_OBJECT_INSTANCE: "no_such_object_instance",
    CLASS_INSTANCE_CONFLICT: "class_instance_conflict",
    SOP_CLASS_NOT_SUPPORTED: "sop_class_not_supported",
    RESOURCE_LIMITATION: "resource_limitation",
    DUPLICATE_TRANSACTION_UID: "duplicate_transaction_uid",
}
OTHER_REASON = "other"  # a reason a peer sent that the standard does not list

# One request names at most this many instances: a large cine study is a few thousand. Bounds what a peer can make
# the receiver look up in one go (the dataset itself is bounded by the receiver's message limit).
MAX_REFERENCES = 100_000

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


class CommitmentFormatError(ValueError):
    """A request or result that does not follow Table J.3-1 / J.3-2 (attributes named, never values)."""


def reason_name(reason: int | None) -> str:
    return FAILURE_REASONS.get(reason, OTHER_REASON) if reason is not None else OTHER_REASON


def new_transaction_uid() -> str:
    """A fresh Transaction UID under 2.25 (a UUID): nothing in it derives from the data."""
    return f"2.25.{uuid.uuid4().int}"


def action_information(request: CommitmentRequest) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = request.transaction_uid
    ds.ReferencedSOPSequence = Sequence([_item(ref) for ref in request.references])
    return ds


def read_action_information(ds: Dataset | None) -> CommitmentRequest:
    """The request an N-ACTION's Action Information carries. CommitmentFormatError if its Transaction UID or a
    reference's SOP Class / Instance UID is missing or not a UID, or it names no instance or too many."""
    if ds is None:
        raise CommitmentFormatError("the N-ACTION has no Action Information")
    try:
        transaction = _uid(ds, "TransactionUID", "Transaction UID (0008,1195)")
        items = ds.get("ReferencedSOPSequence")
        if not items:
            raise CommitmentFormatError("Referenced SOP Sequence (0008,1199) is missing or empty")
        if len(items) > MAX_REFERENCES:
            raise CommitmentFormatError(f"Referenced SOP Sequence names over {MAX_REFERENCES} instances")
        references = tuple(_reference(item) for item in items)
    except CommitmentFormatError:
        raise
    except Exception as exc:  # pydicom parses lazily: a malformed element surfaces here, on first access
        raise CommitmentFormatError(f"the Action Information cannot be read ({type(exc).__name__})") from None
    return CommitmentRequest(transaction, references)


def event_information(result: CommitmentResult) -> Dataset:
    """Table J.3-2: the Transaction UID, the instances committed (Referenced SOP Sequence, left out when none is)
    and those not, each with its Failure Reason (Failed SOP Sequence, only with Event Type 2)."""
    ds = Dataset()
    ds.TransactionUID = result.transaction_uid
    if result.committed:
        ds.ReferencedSOPSequence = Sequence([_item(ref) for ref in result.committed])
    if result.failed:
        failed = []
        for failure in result.failed:
            item = _item(failure.reference)
            item.FailureReason = failure.reason
            failed.append(item)
        ds.FailedSOPSequence = Sequence(failed)
    return ds


def read_event_information(ds: Dataset | None) -> CommitmentResult:
    """The result an N-EVENT-REPORT's Event Information carries. CommitmentFormatError if it cannot be read."""
    if ds is None:
        raise CommitmentFormatError("the N-EVENT-REPORT has no Event Information")
    try:
        transaction = _uid(ds, "TransactionUID", "Transaction UID (0008,1195)")
        committed = tuple(_reference(item) for item in ds.get("ReferencedSOPSequence") or ())
        failed = tuple(CommitmentFailure(_reference(item), int(item.get("FailureReason", PROCESSING_FAILURE)))
                       for item in ds.get("FailedSOPSequence") or ())
    except CommitmentFormatError:
        raise
    except Exception as exc:
        raise CommitmentFormatError(f"the Event Information cannot be read ({type(exc).__name__})") from None
    return CommitmentResult(transaction, committed, failed)


def result_of(transaction_uid: str, outcomes: Iterable[tuple[SopReference, int]]) -> CommitmentResult:
    """A result from (reference, reason) pairs, reason 0 meaning committed, in the request's order."""
    committed, failed = [], []
    for ref, reason in outcomes:
        if reason:
            failed.append(CommitmentFailure(ref, reason))
        else:
            committed.append(ref)
    return CommitmentResult(transaction_uid, tuple(committed), tuple(failed))


def answer_report(event: Any, record: Callable[[CommitmentResult], bool],
                  count: Callable[[str], None]) -> tuple[int, None]:
    """The answer to an N-EVENT-REPORT (a pynetdicom EVT_N_EVENT_REPORT event) bringing the result of one of this
    appliance's own requests: recorded by `record` (False: no request of ours waits for it) before Success, so
    the PACS is told it arrived only once it is kept. `count` hears the outcome: matched, unmatched, unreadable
    (answered 0x0113 for another event type, 0x0115 for Event Information that cannot be read) or not_recorded
    (0x0110: the PACS may send it again)."""
    handled = getattr(getattr(event.assoc, "dul", None), "message_handled", None)
    if handled is not None:
        handled()  # the receiver's in-flight memory budget
    if event.event_type not in (EVENT_SUCCESSFUL, EVENT_FAILURES_EXIST):
        count("unreadable")
        return 0x0113, None
    try:
        result = read_event_information(event.event_information)
    except Exception as exc:
        log.warning("a storage commitment report could not be read: %s", exc if isinstance(
            exc, CommitmentFormatError) else describe(exc))
        count("unreadable")
        return 0x0115, None
    try:
        matched = record(result)
    except Exception as exc:  # a full disk, a locked database
        log.error("a storage commitment report could not be recorded: %s", describe(exc))
        count("not_recorded")
        return 0x0110, None
    if not matched:
        log.warning("a storage commitment report matches no request waiting for one (late, or not ours)")
    count("matched" if matched else "unmatched")
    return 0x0000, None


def _item(ref: SopReference) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.sop_class_uid
    item.ReferencedSOPInstanceUID = ref.sop_instance_uid
    return item


def _reference(item: Dataset) -> SopReference:
    return SopReference(_uid(item, "ReferencedSOPClassUID", "Referenced SOP Class UID (0008,1150)"),
                        _uid(item, "ReferencedSOPInstanceUID", "Referenced SOP Instance UID (0008,1155)"))


def _uid(ds: Dataset, keyword: str, name: str) -> str:
    value = str(ds.get(keyword) or "").strip("\x00 ")
    if not value:
        raise CommitmentFormatError(f"{name} is missing or empty")
    if len(value) > 64 or not _UID.fullmatch(value):
        raise CommitmentFormatError(f"{name} is not a UID")
    return value

"""Sending SR documents to a PACS: one pynetdicom association per batch, one C-STORE per document.

An association that cannot be made (nothing listening, rejected, aborted, timed out) fails every document of the
batch for this try; the outbox decides about retrying. Per-document statuses are read as DICOM defines them:
success and warnings (0xB000, 0xB007, 0xB006: stored, possibly coerced) count as delivered, anything else is a
failed try with the status in the error text.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import pydicom
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

log = logging.getLogger(__name__)

_WARNINGS = (0xB000, 0xB006, 0xB007)


@dataclass(frozen=True, slots=True)
class PacsPeer:
    ae_title: str  # called AE
    host: str
    port: int
    calling_ae_title: str = "SCANSIDE"
    timeout_s: float = 30.0


@dataclass(frozen=True, slots=True)
class SendOutcome:
    delivered: bool
    detail: str = ""  # why not, or the warning status when delivered with one


def send_documents(peer: PacsPeer, documents: list[bytes]) -> list[SendOutcome]:
    """C-STORE each Part 10 document over one association; one outcome per document, in order."""
    if not documents:
        return []
    ae = AE(ae_title=peer.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout_s
    ae.connection_timeout = peer.timeout_s
    ae.add_requested_context(ComprehensiveSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    connected: list[bool] = []
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title,
                         evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))])
    if not assoc.is_established:
        why = _association_failure(assoc, bool(connected))
        return [SendOutcome(False, why)] * len(documents)
    outcomes: list[SendOutcome] = []
    try:
        for data in documents:
            if not assoc.is_established:
                outcomes.append(SendOutcome(False, "association ended before this document was sent"))
                continue
            outcomes.append(_store_one(assoc, data))
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes


def _store_one(assoc, data: bytes) -> SendOutcome:
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        status = assoc.send_c_store(ds)
    except (ValueError, AttributeError, RuntimeError) as exc:  # no accepted context, encoding failure
        return SendOutcome(False, f"not sent: {type(exc).__name__}: {exc}")
    if "Status" not in status:
        return SendOutcome(False, "no C-STORE response (timeout, abort or invalid response)")
    code = int(status.Status)
    if code == 0x0000:
        return SendOutcome(True)
    if code in _WARNINGS:
        return SendOutcome(True, f"stored with warning status 0x{code:04X}")
    return SendOutcome(False, f"C-STORE failed with status 0x{code:04X}")


def _association_failure(assoc, connected: bool) -> str:
    if not connected:  # pynetdicom reports a refused or timed-out connection as an abort
        return "no connection: the PACS did not answer (connection refused, unreachable or timed out)"
    if assoc.is_rejected:
        # The codes say whether the peer refuses us for good (result 1, e.g. reason 3: calling AE not recognised)
        # or for now (result 2: e.g. too busy); retries are bounded either way.
        answer = assoc.acceptor.primitive
        result, source, reason = (getattr(answer, name, None) for name in ("result", "result_source", "diagnostic"))
        return (f"association rejected ({'permanent' if result == 1 else 'transient'}: "
                f"{_REJECT_REASONS.get((source, reason), f'source {source}, reason {reason}')})")
    if assoc.is_aborted:
        return "association aborted by the peer"
    return "no association: the PACS accepted the connection but did not answer the association request in time"


# PS3.8 Table 9-21: (source, reason) -> meaning.
_REJECT_REASONS = {
    (1, 1): "no reason given", (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised", (1, 7): "called AE title not recognised",
    (2, 1): "no reason given", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}

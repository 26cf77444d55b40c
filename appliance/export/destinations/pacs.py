"""The "pacs" destination: SR documents over DICOM C-STORE (optionally TLS), one pynetdicom association per batch,
one C-STORE per document.

An association that cannot be made (nothing listening, rejected, aborted, timed out, SR not accepted) fails every
document of the batch for this try; the outbox decides about retrying. Per-document statuses are read by their
DICOM category: success and warnings (stored, possibly coerced) count as delivered, anything else is a failed try
with the status in the error text. `abort()` (from another thread, at shutdown) ends a send; documents not yet sent
come back as untried, which costs them no try (the one in flight, if any, counts as a try when it times out).

With export.pacs_commitment, stored is not enough: the documents stored are then put to the PACS for storage
commitment on the same association (appliance/export/commitment.py), and each is delivered only once committed. An
SR whose earlier try is still waiting for its report is not sent again but settled from the store.
"""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from appliance import identify
from appliance.commitment import SOP_CLASS_UID as STORAGE_COMMITMENT
from appliance.config import Settings
from appliance.export.commitment import PacsCommitment
from appliance.export.destinations import SendOutcome, register
from appliance.handovers import SopReference, StoredReport
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PacsPeer:
    ae_title: str  # called AE
    host: str
    port: int
    calling_ae_title: str = "SCANSIDE"
    timeout_s: float = 30.0
    tls_ca: Path | None = None  # set: DICOM TLS, the PACS' certificate verified against it (and its host name)
    tls_cert: Path | None = None  # this appliance's client certificate and key, if the PACS asks for one
    tls_key: Path | None = None

    def tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        if self.tls_ca is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.tls_ca))
        if self.tls_cert is not None:
            context.load_cert_chain(certfile=str(self.tls_cert), keyfile=str(self.tls_key) if self.tls_key else None)
        return context, self.host


@register("pacs", hint="export.pacs_ae_title")
def from_settings(settings: Settings) -> PacsSender | None:
    e = settings.export
    if not e.pacs_ae_title:
        return None
    return PacsSender(PacsPeer(e.pacs_ae_title, e.pacs_host, e.pacs_port, calling_ae_title=settings.dicom.ae_title,
                               timeout_s=e.timeout_s, tls_ca=e.tls_ca, tls_cert=e.tls_cert, tls_key=e.tls_key),
                      commitment_wait_s=e.pacs_commitment_wait_s if e.pacs_commitment else None)


class PacsSender:
    """A Destination (appliance.export.destinations)."""

    kind = "pacs"

    def __init__(self, peer: PacsPeer, commitment_wait_s: float | None = None) -> None:
        """`commitment_wait_s`: ask for storage commitment and wait this long for the report (`attach` first)."""
        self.peer = peer
        self.commitment_wait_s = commitment_wait_s
        self.commitment: PacsCommitment | None = None
        self._lock = threading.Lock()
        self._assoc: Association | None = None
        self._stopping = False

    def attach(self, store: Store, metrics: Metrics) -> None:
        if self.commitment_wait_s is not None:
            self.commitment = PacsCommitment(self.kind, store.commitment_requests, metrics, self.commitment_wait_s)

    def check(self) -> None:
        """A missing or wrong certificate file stops the start, not every later send."""
        try:
            self.peer.tls_args()
        except (OSError, ValueError) as exc:
            raise ValueError(f"export.tls_ca / tls_cert / tls_key cannot be loaded: {exc}") from None
        if self.commitment_wait_s is not None and self.commitment is None:
            raise ValueError("export.pacs_commitment: the PACS destination was not given the database (attach)")

    def deliver(self, reports: Sequence[StoredReport]) -> list[SendOutcome]:
        commitment = self.commitment
        if commitment is None:
            return self.send([report.document for report in reports])
        # An SR whose earlier try waits for its report is settled from the store, not sent again.
        outcomes = [commitment.settled(report.sop_instance_uid) for report in reports]
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        for i, outcome in zip(todo, self.send([reports[i].document for i in todo]), strict=True):
            outcomes[i] = outcome
        return [outcome or SendOutcome(False, "not sent") for outcome in outcomes]

    def abort(self) -> None:
        """Stop sending (thread-safe): abort the association in progress and refuse further sends."""
        with self._lock:
            self._stopping = True
            assoc = self._assoc
        if assoc is None:
            return
        try:
            # The peer hears an A-ABORT at once; but pynetdicom's thread waiting for an answer (ACSE or DIMSE) only
            # wakes at its timeout (measured: a silent peer holds it the full 20 s configured). Hence the service
            # does not wait for this thread at shutdown: a try cut short this way is simply made again at the next
            # start, with the same SR.
            assoc.abort(block=False)
        except Exception:
            pass

    def send(self, documents: list[bytes]) -> list[SendOutcome]:
        """C-STORE each Part 10 document over one association; one outcome per document, in order. Never raises."""
        if not documents:
            return []
        try:
            return self._send(documents)
        except Exception as exc:  # e.g. a host name that does not resolve: a failed try, not a dead exporter
            return [SendOutcome(False, f"not sent: {describe(exc)}")] * len(documents)

    def _send(self, documents: list[bytes]) -> list[SendOutcome]:
        peer = self.peer
        ae = identify(AE(ae_title=peer.calling_ae_title))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = peer.timeout_s
        ae.connection_timeout = peer.timeout_s
        ae.add_requested_context(ComprehensiveSRStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        commitment = self.commitment
        if commitment is not None:
            ae.add_requested_context(STORAGE_COMMITMENT, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        connected: list[bool] = []

        def on_connected(event: evt.Event) -> None:
            connected.append(True)
            with self._lock:
                self._assoc = event.assoc  # from here on abort() can end the negotiation too
                stopping = self._stopping
            if stopping:  # abort() came while the connection was still being made
                event.assoc.abort(block=False)
            # Nagle's algorithm holds each DIMSE message's second PDU for the peer's delayed ACK (~40 ms each).
            wrapper = event.assoc.dul.socket
            raw = wrapper.socket if wrapper is not None else None
            try:
                if raw is not None:
                    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (AttributeError, OSError):
                pass  # a TLS or unusual socket: correct, only slower

        with self._lock:
            if self._stopping:
                return [SendOutcome(False, "appliance stopping", tried=False)] * len(documents)
        handlers = [(evt.EVT_CONN_OPEN, on_connected), *(commitment.handlers if commitment is not None else [])]
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=peer.tls_args(),
                             evt_handlers=handlers)
        with self._lock:
            self._assoc = assoc
            stopping = self._stopping
        try:
            if stopping:
                return [SendOutcome(False, "appliance stopping", tried=False)] * len(documents)
            if not assoc.is_established:
                why = _association_failure(assoc, bool(connected), tls=peer.tls_ca is not None)
                return [SendOutcome(False, why)] * len(documents)
            return self._store_all(assoc, documents)
        finally:
            with self._lock:
                self._assoc = None
            if assoc.is_established:
                assoc.release()


    def _store_all(self, assoc: Association, documents: list[bytes]) -> list[SendOutcome]:
        """C-STORE each document; with storage commitment, then ask for what was stored to be committed."""
        outcomes: list[SendOutcome] = []
        stored: list[tuple[int, SopReference]] = []
        for data in documents:
            if self._stopping:
                outcomes.append(SendOutcome(False, "appliance stopping", tried=False))
            elif not assoc.is_established:
                outcomes.append(SendOutcome(False, "association ended before this document was sent"))
            else:
                outcome, ref = _store_one(assoc, data)
                if outcome.delivered and ref is not None:
                    stored.append((len(outcomes), ref))
                outcomes.append(outcome)
        commitment = self.commitment
        if commitment is None or not stored:
            return outcomes
        if self._stopping:  # stored but not asked: sent and asked again at the next start
            asked = [SendOutcome(False, "appliance stopping", tried=False)] * len(stored)
        else:
            asked = commitment.request(assoc, [ref for _, ref in stored])
        for (i, _), outcome in zip(stored, asked, strict=True):
            outcomes[i] = outcome
        return outcomes


def _store_one(assoc: Association, data: bytes) -> tuple[SendOutcome, SopReference | None]:
    """The C-STORE's outcome, and what was stored (for a storage commitment request)."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        ref = SopReference(str(ds.SOPClassUID), str(ds.SOPInstanceUID))
        status = assoc.send_c_store(ds)
    except (ValueError, AttributeError, RuntimeError) as exc:  # no accepted context, encoding failure
        return SendOutcome(False, f"not sent: {describe(exc)}"), None
    if "Status" not in status:
        return SendOutcome(False, "no C-STORE response (timeout, abort or invalid response)"), None
    code = int(status.Status)
    category = code_to_category(code)
    if category == "Success":
        return SendOutcome(True), ref
    if category == "Warning":
        return SendOutcome(True, f"stored with warning status 0x{code:04X}"), ref
    return SendOutcome(False, f"C-STORE failed with status 0x{code:04X} ({category.lower()})"), None


def _association_failure(assoc: Association, connected: bool, tls: bool) -> str:
    if not connected:  # pynetdicom reports a refused or timed-out connection (or a failed handshake) as an abort
        if tls:
            return ("no connection: the PACS did not answer, or the TLS handshake failed (its certificate not "
                    "trusted by export.tls_ca, a host name it does not name, or our client certificate refused)")
        return "no connection: the PACS did not answer (connection refused, unreachable or timed out)"
    if assoc.is_rejected:
        # The codes say whether the peer refuses us for good (result 1, e.g. reason 3: calling AE not recognised)
        # or for now (result 2: e.g. too busy); retries are bounded either way.
        answer = assoc.acceptor.primitive
        result, source, reason = (getattr(answer, name, None) for name in ("result", "result_source", "diagnostic"))
        return (f"association rejected ({'permanent' if result == 1 else 'transient'}: "
                f"{_REJECT_REASONS.get((source, reason), f'source {source}, reason {reason}')})")
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        # pynetdicom aborts by itself when the PACS accepts none of the proposed contexts: a configuration matter.
        return "the PACS does not accept Comprehensive SR Storage (no presentation context accepted)"
    if assoc.is_aborted:
        return "association aborted by the peer"
    return "no association: the PACS accepted the connection but did not answer the association request in time"


# PS3.8 Table 9-21: (source, reason) -> meaning.
_REJECT_REASONS: dict[tuple[Any, Any], str] = {
    (1, 1): "no reason given", (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised", (1, 7): "called AE title not recognised",
    (2, 1): "no reason given", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}

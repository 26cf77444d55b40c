"""The receiver's Storage Commitment Push Model SCP (PS3.4 J.3): a sender asks which of the instances it sent the
appliance holds, and is told.

An N-ACTION (Request Storage Commitment, Action Type 1) is judged at once against the receiver's durable record of
what it was sent (appliance/store/received.py), not against files, which leave the spool once their series is
scored: an instance is committed if its C-STORE was answered Success, whatever has happened to it since; otherwise
it fails with a Failure Reason (PS3.3 C.14.1.1): 0x0112 never received (or its record is older than the retention),
0x0122 never received and of a SOP class the receiver does not take, 0x0119 received as another SOP class, or the
reason its C-STORE was refused for (0x0110 not usable, 0x0119 not matching its SOP class, 0x0122 SOP class not
taken, 0x0213 out of resources). The result is written, synced, before the N-ACTION is answered Success, then it
goes out as an N-EVENT-REPORT (Event Type 1, or 2 when any instance failed):

* on the requester's association, if it is still open and idle `report_delay_s` after the N-ACTION response (a
  sender that waits for its report there needs no listening port);
* else on a new association to the requester's AE title at its address in `peers`, this appliance proposing the SCP
  role (SCP/SCU Role Selection), tried `attempts` times with a doubling wait. A report not yet delivered survives a
  restart and is sent on a new association then. One that cannot be delivered is logged and counted.

An N-ACTION that cannot be read is refused with 0x0115 (invalid argument value), another action type with 0x0123,
another SOP instance than the well-known one with 0x0112, and one that cannot be recorded with 0x0110.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.status import code_to_category

from appliance import identify
from appliance.commitment import (
    ACTION_REQUEST,
    CLASS_INSTANCE_CONFLICT,
    NO_SUCH_OBJECT_INSTANCE,
    SOP_CLASS_NOT_SUPPORTED,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    CommitmentFormatError,
    event_information,
    read_action_information,
    reason_name,
    result_of,
)
from appliance.handovers import CommitmentResult, OwedCommitmentReport, SopReference
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.store.commitment_reports import CommitmentReports
from appliance.store.received import ReceivedInstances

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_INVALID_ARGUMENT = 0x0115
STATUS_NO_SUCH_ACTION = 0x0123
STATUS_NO_SUCH_INSTANCE = 0x0112
STATUS_PROCESSING_FAILURE = 0x0110
# A requester that keeps its association open for the report answers it at once; waiting longer would only hold
# up one that was releasing just then (its release is not answered while a report waits for its response).
SAME_ASSOCIATION_RESPONSE_S = 5.0
RESPONSE_SENT_WAIT_S = 5.0  # the N-ACTION response leaves within milliseconds of the handler's return
MAX_RETRY_WAIT_S = 900.0
MAX_PARALLEL = 4  # reports on new associations at once (each waits for its peer at most timeout_s)
PRUNE_INTERVAL_S = 3600.0


@dataclass(frozen=True)
class CommitmentScpSettings:
    ae_title: str  # the receiver's: the calling AE title of a new association
    taken_sop_classes: frozenset[str]  # what the receiver stores: another class never received fails 0x0122
    peers: Mapping[str, tuple[str, int]] = field(default_factory=dict)  # requester AE title -> (host, port)
    report_delay_s: float = 0.5
    timeout_s: float = 30.0
    attempts: int = 5
    retry_s: float = 30.0
    keep_days: float = 7.0


@dataclass
class _Live:
    """The association a request came on, while its first report is due: the report may go back on it."""

    assoc: Any
    message_id: int
    answered: threading.Event = field(default_factory=threading.Event)


def judge(references: Sequence[SopReference], records: Sequence[tuple[str, int] | None],
          taken: frozenset[str]) -> list[tuple[SopReference, int]]:
    """(reference, Failure Reason or 0 for committed) for each reference, from the receiver's records of them."""
    out = []
    for ref, record in zip(references, records, strict=True):
        if record is None:
            reason = NO_SUCH_OBJECT_INSTANCE if ref.sop_class_uid in taken else SOP_CLASS_NOT_SUPPORTED
        else:
            received_as, refused_for = record
            reason = refused_for or (CLASS_INSTANCE_CONFLICT if received_as != ref.sop_class_uid else 0)
        out.append((ref, reason))
    return out


class CommitmentScp:
    """Bind `handlers` to the receiver's server; `start()` the reporter with it, `stop()` it before the server."""

    def __init__(self, settings: CommitmentScpSettings, received: ReceivedInstances, reports: CommitmentReports,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.received = received
        self.reports = reports
        self.metrics = metrics
        self._live: dict[int, _Live] = {}  # report id -> the association it may go back on
        self._inflight: set[int] = set()
        self._outbound: set[Any] = set()  # associations this SCP opened, aborted at stop()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_PARALLEL)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_N_ACTION, self.on_action), (evt.EVT_DIMSE_SENT, self.on_dimse_sent)]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scanside-commitment-scp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            outbound = list(self._outbound)
        for assoc in outbound:  # a report waiting for its peer is tried again at the next start
            try:
                assoc.abort(block=False)
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(5)

    # --- the request, on the association's thread ----------------------------------------------------------------

    def on_action(self, event: evt.Event) -> tuple[int | Dataset, None]:
        assoc = event.assoc
        handled = getattr(getattr(assoc, "dul", None), "message_handled", None)
        if handled is not None:
            handled()  # the request's dataset leaves the receiver's in-flight memory budget
        calling = str(assoc.requestor.ae_title).strip()
        if event.action_type != ACTION_REQUEST:
            return self._refuse(STATUS_NO_SUCH_ACTION, calling, "only Action Type 1 (Request Storage Commitment)")
        if str(event.request.RequestedSOPInstanceUID) != SOP_INSTANCE_UID:
            return self._refuse(STATUS_NO_SUCH_INSTANCE, calling, "not the well-known SOP Instance")
        try:
            request = read_action_information(event.action_information)
        except CommitmentFormatError as exc:
            return self._refuse(STATUS_INVALID_ARGUMENT, calling, str(exc))
        except Exception as exc:  # the Action Information does not decode at all
            return self._refuse(STATUS_INVALID_ARGUMENT, calling, f"the Action Information ({describe(exc)})")
        try:
            records = self.received.lookup(request.references)
            result = result_of(request.transaction_uid,
                               judge(request.references, records, self.settings.taken_sop_classes))
            report_id = self.reports.owe(calling, result, time.time() + self.settings.report_delay_s)
        except Exception as exc:  # a full disk, a locked database: the requester is told it was not taken
            log.error("storage commitment request from %s could not be recorded: %s", calling, describe(exc))
            self.metrics.commitment_requests.labels(side="scp", outcome="not_recorded").inc()
            return _status(STATUS_PROCESSING_FAILURE, "the request could not be recorded"), None
        with self._lock:
            self._live[report_id] = _Live(assoc, int(event.request.MessageID))
        self.metrics.commitment_requests.labels(side="scp", outcome="accepted").inc()
        self._count(result)
        log.info("storage commitment request from %s: %d instance(s), %d committed, %d failed", calling,
                 len(request.references), len(result.committed), len(result.failed))
        self._wake.set()
        return STATUS_SUCCESS, None

    def on_dimse_sent(self, event: evt.Event) -> None:
        """Notice an N-ACTION response leaving: its report may follow it on that association, never precede it."""
        message = event.message
        if not isinstance(message, N_ACTION_RSP):
            return
        responded = message.command_set.get("MessageIDBeingRespondedTo")
        with self._lock:
            for live in self._live.values():
                if live.assoc is event.assoc and live.message_id == responded:
                    live.answered.set()

    def _refuse(self, status: int, calling: str, why: str) -> tuple[Dataset, None]:
        log.warning("refused a storage commitment request from %s (0x%04X): %s", calling, status, why)
        self.metrics.commitment_requests.labels(side="scp", outcome="refused").inc()
        return _status(status, why), None

    def _count(self, result: CommitmentResult) -> None:
        if result.committed:
            self.metrics.commitment_instances.labels(side="scp", result="committed").inc(len(result.committed))
        for failure in result.failed:
            self.metrics.commitment_instances.labels(side="scp", result=reason_name(failure.reason)).inc()

    # --- the reports, on the reporter's threads ------------------------------------------------------------------

    def _run(self) -> None:
        next_prune = 0.0
        while not self._stop.is_set():
            wait = 1.0
            try:
                now = time.time()
                if now >= next_prune:
                    next_prune = now + PRUNE_INTERVAL_S
                    self._prune(now)
                for owed, due_at in self.reports.upcoming(now + wait):
                    with self._lock:
                        if owed.id in self._inflight:
                            continue
                    if due_at > now:
                        wait = min(wait, due_at - now)
                    elif self._slots.acquire(blocking=False):
                        with self._lock:
                            self._inflight.add(owed.id)
                        threading.Thread(target=self._attempt, args=(owed,), name="scanside-commitment-report",
                                         daemon=True).start()
            except Exception as exc:  # a database hiccup must not end the reporter
                log.error("storage commitment reports: %s (trying again shortly)", describe(exc))
                wait = 5.0
            self._wake.wait(max(wait, 0.01))
            self._wake.clear()

    def _prune(self, now: float) -> None:
        before = now - self.settings.keep_days * 86_400
        received, reports = self.received.prune(before), self.reports.prune(before)
        if received or reports:
            log.info("dropped the records of %d received instance(s) and %d storage commitment report(s) older "
                     "than %g days", received, reports, self.settings.keep_days)

    def _attempt(self, owed: OwedCommitmentReport) -> None:
        try:
            self._deliver(owed)
        except Exception as exc:
            log.error("storage commitment report to %s: %s", owed.calling_ae, describe(exc))
        finally:
            with self._lock:
                self._inflight.discard(owed.id)
            self._slots.release()
            self._wake.set()

    def _deliver(self, owed: OwedCommitmentReport) -> None:
        with self._lock:
            live = self._live.pop(owed.id, None)
        why = ""
        if live is not None:
            sent, why = self._on_same_association(live, owed.result)
            if sent:
                self._sent(owed, "same")
                return
        if self._stop.is_set():
            return  # left pending: the next start sends it
        peer = self.settings.peers.get(owed.calling_ae)
        if peer is None:
            error = (f"{why}; " if why else "") + "dicom.commitment_peers gives no address for this AE title"
            self.reports.record_failure(owed.id, error, None)
            self.metrics.commitment_reports.labels(side="scp", association="none", outcome="failed").inc()
            log.warning("storage commitment report to %s NOT delivered: %s", owed.calling_ae, error)
            return
        sent, why = self._on_new_association(peer, owed)
        if sent:
            self._sent(owed, "new")
            return
        if self._stop.is_set():
            return
        tries = owed.attempts + 1
        retry_at = None if tries >= self.settings.attempts else \
            time.time() + min(self.settings.retry_s * 2 ** (tries - 1), MAX_RETRY_WAIT_S)
        state = self.reports.record_failure(owed.id, why, retry_at)
        self.metrics.commitment_reports.labels(side="scp", association="new",
                                               outcome="retry" if state == "pending" else "failed").inc()
        if retry_at is None:
            log.error("storage commitment report to %s NOT delivered after %d tries: %s", owed.calling_ae, tries, why)
        else:
            log.warning("storage commitment report to %s, try %d of %d failed (%s); next in %.0f s",
                        owed.calling_ae, tries, self.settings.attempts, why, retry_at - time.time())

    def _sent(self, owed: OwedCommitmentReport, association: str) -> None:
        self.reports.sent(owed.id, association)
        self.metrics.commitment_reports.labels(side="scp", association=association, outcome="sent").inc()
        log.info("storage commitment report sent to %s on %s association (event type %d)", owed.calling_ae,
                 "its own" if association == "same" else "a new", owed.result.event_type)

    def _on_same_association(self, live: _Live, result: CommitmentResult) -> tuple[bool, str]:
        assoc = live.assoc
        if not live.answered.wait(RESPONSE_SENT_WAIT_S):
            return False, "the N-ACTION response did not go out on the requester's association"
        if not assoc.is_established:
            return False, "the requester released its association before the report"
        if isinstance(assoc.dul.peek_next_pdu(), A_RELEASE) or not assoc.dimse.msg_queue.empty():
            # It is releasing, or sending more: a report now would cross its messages.
            return False, "the requester was releasing or busy on its association"
        previous = assoc.dimse_timeout
        assoc.dimse_timeout = min(self.settings.timeout_s, SAME_ASSOCIATION_RESPONSE_S)
        try:
            return _send_report(assoc, result)
        finally:
            assoc.dimse_timeout = previous

    def _on_new_association(self, peer: tuple[str, int], owed: OwedCommitmentReport) -> tuple[bool, str]:
        host, port = peer
        timeout = self.settings.timeout_s
        ae = identify(AE(ae_title=self.settings.ae_title))
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
        ae.add_requested_context(SOP_CLASS_UID, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        connected: list[bool] = []
        try:
            # PS3.4 J.3.3.1: the requester of this association is the SCP, which it says by role selection.
            assoc = ae.associate(host, port, ae_title=owed.calling_ae,
                                 ext_neg=[build_role(SOP_CLASS_UID, scp_role=True)],
                                 evt_handlers=[(evt.EVT_CONN_OPEN, lambda event: connected.append(True))])
        except Exception as exc:  # a host name that does not resolve, for example
            return False, f"no association: {describe(exc)}"
        with self._lock:
            self._outbound.add(assoc)
        try:
            if not assoc.is_established:
                return False, _no_association(assoc, bool(connected))
            return _send_report(assoc, owed.result)
        finally:
            with self._lock:
                self._outbound.discard(assoc)
            if assoc.is_established:
                assoc.release()


def _send_report(assoc: Any, result: CommitmentResult) -> tuple[bool, str]:
    try:
        status, _ = assoc.send_n_event_report(event_information(result), result.event_type, SOP_CLASS_UID,
                                              SOP_INSTANCE_UID)
    except ValueError:  # pynetdicom: no accepted presentation context for the SOP class
        return False, "the requester does not accept Storage Commitment Push Model on this association"
    except RuntimeError as exc:  # the association ended meanwhile
        return False, f"not sent: {describe(exc)}"
    code = status.get("Status") if status is not None else None
    if code is None:
        return False, "no N-EVENT-REPORT response (timeout, abort or invalid response)"
    if code_to_category(int(code)) in ("Success", "Warning"):
        return True, ""
    return False, f"the requester answered the report with 0x{int(code):04X}"


def _no_association(assoc: Any, connected: bool) -> str:
    if not connected:
        return "no connection (refused, unreachable or timed out)"
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        return (f"association rejected (result {getattr(answer, 'result', None)}, source "
                f"{getattr(answer, 'result_source', None)}, reason {getattr(answer, 'diagnostic', None)})")
    if assoc.is_aborted:
        return "association aborted (Storage Commitment Push Model not accepted, or the peer aborted)"
    return "no association: the peer did not answer the association request in time"


def _status(code: int, comment: str) -> Dataset:
    answer = Dataset()
    answer.Status = code
    answer.ErrorComment = comment[:64]  # attribute names and reasons only, never a value from the request
    return answer


__all__ = ["CommitmentScp", "CommitmentScpSettings", "judge"]

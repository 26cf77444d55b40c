"""Storage commitment for the PACS destination (export.pacs_commitment): after an association has stored SRs, ask
the PACS to commit them on it, and settle each SR's try by the PACS' answer.

The request is recorded in the store (appliance/store/commitment_requests.py) before its N-ACTION goes, with a
fresh Transaction UID and a deadline of `wait_s`. The answer, an N-EVENT-REPORT, is taken wherever it comes: on this
association, which is held open up to LINGER_S for it (and no longer than until the report is in), or on an
association the PACS opens to the receiver (Orthanc does so), which records it in the store by Transaction UID. A
try then ends:

* committed: delivered;
* not committed (the SR is in the report's Failed SOP Sequence, or left out of it), or no report by the deadline:
  a failed try, retried by the outbox like a failed store, which sends the SR again and asks again;
* still waiting: the item waits, no try counted yet, until the report makes it due or the deadline passes.

A PACS that does not accept the Storage Commitment Push Model context, refuses the N-ACTION or does not answer it
fails the try too: an SR is never called delivered without the commitment asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from pynetdicom import evt
from pynetdicom.status import code_to_category

from appliance.commitment import (
    ACTION_REQUEST,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    action_information,
    answer_report,
    new_transaction_uid,
    reason_name,
)
from appliance.export.destinations import SendOutcome
from appliance.handovers import CommitmentRequest, PendingCommitment, SopReference
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.store.commitment_requests import CommitmentRequests

log = logging.getLogger(__name__)

# How long a try holds its association open after the N-ACTION response for a report on it. A PACS that answers
# there does so at once; one that opens its own association (Orthanc: within ~50 ms) ends the wait as soon as the
# receiver has recorded its report. Longer would only hold the batch up for a PACS that reports much later.
LINGER_S = 2.0
_POLL_S = 0.05


class PacsCommitment:
    """What the PACS destination asks and settles; `handlers` go on each association it opens."""

    def __init__(self, kind: str, requests: CommitmentRequests, metrics: Metrics, wait_s: float,
                 linger_s: float = LINGER_S) -> None:
        self.kind = kind
        self.requests = requests
        self.metrics = metrics
        self.wait_s = wait_s
        self.linger_s = linger_s

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        return [(evt.EVT_N_EVENT_REPORT, self._on_report)]

    def settled(self, sop_instance_uid: str, now: float | None = None) -> SendOutcome | None:
        """The outcome of an SR's earlier try, if its report came or its deadline passed (its request is then
        forgotten); an undecided outcome while it waits; None if no request for it is open (send it afresh)."""
        pending = self.requests.state(self.kind, sop_instance_uid)
        if pending is None:
            return None
        return self._outcome(sop_instance_uid, pending, time.time() if now is None else now)

    def request(self, assoc: Any, stored: Sequence[SopReference]) -> list[SendOutcome]:
        """Ask for the commitment of SRs just stored on `assoc`; one outcome per SR, in order."""
        if not any(cx.abstract_syntax == SOP_CLASS_UID for cx in assoc.accepted_contexts):
            self.metrics.commitment_requests.labels(side="scu", outcome="not_offered").inc()
            return [SendOutcome(False, "stored, but the PACS does not accept Storage Commitment Push Model (no "
                                "presentation context): not committed")] * len(stored)
        transaction_uid = new_transaction_uid()
        deadline = time.time() + self.wait_s
        self.requests.open(transaction_uid, self.kind, stored, deadline)  # before the N-ACTION: see the docstring
        try:
            status, _ = assoc.send_n_action(action_information(CommitmentRequest(transaction_uid, tuple(stored))),
                                            ACTION_REQUEST, SOP_CLASS_UID, SOP_INSTANCE_UID)
        except (RuntimeError, ValueError) as exc:  # the association ended; the dataset did not encode
            self.requests.drop(transaction_uid)
            self.metrics.commitment_requests.labels(side="scu", outcome="no_response").inc()
            return [SendOutcome(False, f"stored, but the commitment request was not sent: {describe(exc)}")] * \
                len(stored)
        code = status.get("Status") if status is not None else None
        if code is None or code_to_category(int(code)) not in ("Success", "Warning"):
            self.requests.drop(transaction_uid)
            outcome = "no_response" if code is None else "refused"
            self.metrics.commitment_requests.labels(side="scu", outcome=outcome).inc()
            why = ("no N-ACTION response (timeout, abort or invalid response)" if code is None
                   else f"the PACS refused the storage commitment request with 0x{int(code):04X}")
            return [SendOutcome(False, f"stored, but {why}")] * len(stored)
        self.metrics.commitment_requests.labels(side="scu", outcome="accepted").inc()
        self._linger(assoc, stored)
        now = time.time()
        return [self.settled(ref.sop_instance_uid, now) or SendOutcome(False, "stored; its commitment request was "
                                                                              "lost from the database")
                for ref in stored]

    def _linger(self, assoc: Any, stored: Sequence[SopReference]) -> None:
        """Hold the association open for a report on it, until every SR's request is decided or LINGER_S."""
        end = time.monotonic() + self.linger_s
        while time.monotonic() < end and assoc.is_established:
            states = [self.requests.state(self.kind, ref.sop_instance_uid) for ref in stored]
            if all(s is None or s.state != "waiting" for s in states):
                return
            time.sleep(_POLL_S)

    def _outcome(self, sop_instance_uid: str, pending: PendingCommitment, now: float) -> SendOutcome:
        if pending.state == "committed":
            self.requests.settle(self.kind, sop_instance_uid)
            self.metrics.commitment_instances.labels(side="scu", result="committed").inc()
            return SendOutcome(True)
        if pending.state == "failed":
            self.requests.settle(self.kind, sop_instance_uid)
            reason = pending.failure_reason
            self.metrics.commitment_instances.labels(side="scu", result=reason_name(reason)).inc()
            named = (f"Failure Reason 0x{reason:04X} ({reason_name(reason)})" if reason is not None
                     else "the report does not name this SR")
            return SendOutcome(False, f"stored, but not committed: {named}")
        if now >= pending.deadline:
            self.requests.settle(self.kind, sop_instance_uid)
            return SendOutcome(False, f"stored, but no storage commitment report within {self.wait_s:g} s")
        return SendOutcome(False, "stored; waiting for its storage commitment report", awaiting_until=pending.deadline)

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        """A report on the association that asked (PACS that answer there): recorded like one the receiver takes."""
        return answer_report(event, lambda result: self.requests.report(result, "same"),
                             lambda outcome: self.metrics.commitment_reports.labels(
                                 side="scu", association="same", outcome=outcome).inc())

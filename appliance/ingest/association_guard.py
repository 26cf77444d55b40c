"""An admitted association: pynetdicom's request handler and association, with a DUL whose PDU reader is bounded
(see appliance/ingest/dicom_guard.py for why)."""

from __future__ import annotations

import logging
import struct
import threading
import time
from copy import deepcopy
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler

from appliance.ingest.guard_limits import (
    ABORT_INVALID_PARAMETER,
    ABORT_UNRECOGNIZED_PDU,
    MAX_ASSOCIATE_RQ_BYTES,
    MAX_COMMAND_BYTES,
    MAX_CONTROL_PDU,
    PDU_MARGIN,
    GuardLimits,
    PeerClosed,
    Violation,
)

if TYPE_CHECKING:
    from appliance.ingest.dicom_guard import GuardedServer

log = logging.getLogger(__name__)


class GuardedHandler(RequestHandler):
    """pynetdicom's request handler, making a `GuardedAssociation` (with the bounded DUL) for each connection."""

    server: GuardedServer

    def handle(self) -> None:
        host = str(self.client_address[0])
        try:
            assoc = self._create_association()
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
        except BaseException:
            self.server.release(host)
            raise

    def _create_association(self) -> Association:
        server, ae = self.server, self.ae
        assoc = GuardedAssociation(ae, server, str(self.client_address[0]), server.handoff_deadline(self.request))
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"  # pynetdicom finds its acceptors by this name
        assoc.set_socket(AssociationSocket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)  # negotiation writes into them
        assoc.requestor.address_info = self.remote
        for event, handlers in server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in handlers:
                    assoc.bind(event, handler, args)
        return assoc


class GuardedAssociation(Association):
    def __init__(self, ae: Any, server: GuardedServer, host: str, deadline: float) -> None:
        super().__init__(ae, MODE_ACCEPTOR)
        self.peer_host = host
        self._guard = server
        self.dul = GuardedDUL(self, server.limits, deadline)
        # The timeouts were applied to the DUL made by Association.__init__; apply them to this one.
        self.acse_timeout = ae.acse_timeout
        self.network_timeout = ae.network_timeout

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.dul.message_handled()
            self._guard.release(self.peer_host)


class GuardedDUL(DULServiceProvider):
    """The DUL with a bounded PDU reader (see the module docstring)."""

    def __init__(self, assoc: GuardedAssociation, limits: GuardLimits, deadline: float) -> None:
        super().__init__(assoc)
        self._limits = limits
        self._deadline = deadline
        self._dataset_bytes = 0  # of the message being received
        self._command_bytes = 0
        self._reserved = 0  # in-flight budget held for the current (or last, not yet answered) dataset
        self._message_complete = False
        self._budget_lock = threading.Lock()

    def _read_pdu_data(self) -> None:
        try:
            data = self._read_bounded_pdu()
        except PeerClosed:
            self.event_queue.put("Evt17")  # transport connection closed
            return
        except Violation as exc:
            assoc = self.assoc
            assoc._guard.refused(exc.reason, assoc.peer_host, str(exc))
            self._abort_and_close(exc.diagnostic)
            return
        try:
            pdu, event = self._decode_pdu(data)
        except Exception:
            self.event_queue.put("Evt19")  # exception; its text is not logged (it can quote the bytes)
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _read_bounded_pdu(self) -> bytes:
        # Sta1 as well: the reactor may read the request before it has processed the connection's own event.
        negotiating = not self.assoc.is_established and self.state_machine.current_state in ("Sta1", "Sta2")
        # One deadline for the whole PDU, not per read: a peer that trickles a byte now and then must not hold
        # an association (and a per-peer slot) for ever.
        if negotiating:
            deadline, late = self._deadline, "negotiation_timeout"
        else:
            deadline, late = time.monotonic() + self._limits.idle_timeout_s, "stalled"
        header = self._recv_exact(6, deadline, late)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if not 0x01 <= pdu_type <= 0x07 or (negotiating and pdu_type not in (0x01, 0x07)):
            raise Violation("invalid_pdu", f"a PDU of type 0x{pdu_type:02X} where it cannot be",
                             ABORT_UNRECOGNIZED_PDU)
        if pdu_type == 0x01:
            limit = MAX_ASSOCIATE_RQ_BYTES
        elif pdu_type == 0x04:
            limit = self._limits.max_pdu_bytes + PDU_MARGIN
        else:
            limit = MAX_CONTROL_PDU
        if length > limit:
            raise Violation("pdu_too_large", f"a PDU of {length} bytes announced (at most {limit})",
                             ABORT_INVALID_PARAMETER)
        body = self._recv_exact(length, deadline, late)
        if pdu_type == 0x04:
            self._count_message(body)
        return bytes(header + body)

    def _count_message(self, body: bytearray) -> None:
        """Bound one DIMSE message across PDUs (sum its PDV values until the fragment marked last), and all the
        datasets held in memory together."""
        at = 0
        while at + 6 <= len(body):
            item_length = struct.unpack_from(">L", body, at)[0]
            if item_length < 2:
                return  # malformed: pynetdicom's decoder refuses the PDU
            control = body[at + 5]
            size = item_length - 2
            if control & 0x01:  # command
                self._command_bytes += size
                if self._command_bytes > MAX_COMMAND_BYTES:
                    raise Violation("message_too_large", f"a DIMSE command of over {MAX_COMMAND_BYTES} bytes",
                                     ABORT_INVALID_PARAMETER)
                if control & 0x02:
                    self._command_bytes = 0
            else:
                if self._message_complete:  # a new dataset: the last one has been answered by now
                    self.message_handled()
                self._dataset_bytes += size
                if self._dataset_bytes > self._limits.max_message_bytes:
                    raise Violation("message_too_large", f"a dataset of over {self._limits.max_message_bytes} "
                                     "bytes", ABORT_INVALID_PARAMETER)
                if not self.assoc._guard.reserve(size):
                    raise Violation("inflight_budget", "the datasets in memory would pass "
                                     f"{self._limits.max_inflight_bytes} bytes")
                with self._budget_lock:
                    self._reserved += size
                if control & 0x02:
                    self._dataset_bytes = 0
                    self._message_complete = True
            at += 4 + item_length

    def message_handled(self) -> None:
        """The last dataset was answered (or the association ended): its bytes leave the in-flight budget."""
        with self._budget_lock:
            reserved, self._reserved = self._reserved, 0
            self._message_complete = False
        if reserved:
            self.assoc._guard.unreserve(reserved)

    def _recv_exact(self, n: int, deadline: float, late: str) -> bytearray:
        sock = self.socket.socket if self.socket is not None else None
        if sock is None:
            raise PeerClosed()
        buf = bytearray()
        while len(buf) < n:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise Violation(late, "the association request did not arrive in time" if late != "stalled"
                                 else f"a PDU took longer than {self._limits.idle_timeout_s:g} s to arrive")
            try:
                sock.settimeout(wait)
                chunk = sock.recv(min(n - len(buf), 1 << 16))
            except TimeoutError:
                continue  # the deadline check above raises
            except OSError:
                raise PeerClosed() from None
            if not chunk:
                raise PeerClosed()
            buf += chunk
        return buf

    def _abort_and_close(self, diagnostic: int) -> None:
        pdu = A_ABORT_RQ()
        pdu.source = 0x02  # service provider
        pdu.reason_diagnostic = diagnostic
        sock = self.socket
        if sock is not None and sock.socket is not None:
            try:
                sock.socket.sendall(pdu.encode())
            except OSError:
                pass
            sock.close()  # puts Evt17 on the event queue: the state machine ends the association
        else:
            self.event_queue.put("Evt17")

"""What stands between the network and pynetdicom: admission of connections and bounds on what a peer may send.

pynetdicom's own server gives every TCP connection two threads and an association slot before it has read a byte,
waits ~30 s for a peer that says nothing, checks the calling AE title only after that, and buffers whatever PDU
length a peer announces. On a hospital network that lets idle or junk connections lock the scanner out. Here:

* Connections are admitted by one selector thread (`GuardedServer.serve_forever`). Until a connection has sent a
  complete, well-formed A-ASSOCIATE-RQ (read with MSG_PEEK, so pynetdicom still reads it itself) it costs no thread,
  and it must do so within `negotiation_timeout_s` of connecting. At most `max_pending` such connections are held;
  a new one evicts the oldest connection of the peer holding the most, so a flood from one address can neither
  refuse a new connection nor crowd out other peers. Junk (not an A-ASSOCIATE-RQ, or one beyond 64 KiB) is closed
  at once; a calling AE title that is not allowed, or a peer over its association limit, gets an A-ASSOCIATE-RJ
  from here, before any thread exists. With DICOM TLS the handshake runs here too (non-blocking), and a connection
  is handed on once it has sent data after the handshake.
* Handed on, an association runs in pynetdicom with a DUL whose PDU reader (`GuardedDUL`) refuses PDUs larger
  than this receiver negotiated (plus a small margin) before buffering them, bounds the bytes of one DIMSE
  message (the instance), keeps the negotiation deadline, and never blocks in a read for longer than
  `idle_timeout_s`. A violation aborts the association (A-ABORT, then the connection is closed).

Associations are bounded in total and per peer address. Every refusal is counted by reason.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from appliance.ingest.reader import DEFAULT_MAX_INSTANCE_BYTES
from appliance.logsafe import RateLimitedLog, describe

log = logging.getLogger(__name__)

# An A-ASSOCIATE-RQ proposing the 128 presentation contexts pynetdicom allows, each with a few transfer syntaxes,
# is ~15 KiB; 64 KiB leaves room for many more syntaxes and extended negotiation while bounding what a stranger
# can make the receiver hold. The listening socket's receive buffer is sized so that a whole one can be peeked.
MAX_ASSOCIATE_RQ_BYTES = 64 << 10
_RECV_BUFFER = 256 << 10
# PS3.8 9.3.1: a P-DATA-TF PDU's variable field is at most the Maximum Length the receiver announced. Some older
# senders count only the PDV values against it, so their PDUs run a few 6-byte PDV headers over; 1 KiB tolerates
# that without letting a peer make the receiver buffer more than one PDU's worth.
PDU_MARGIN = 1024
_MAX_CONTROL_PDU = 64 << 10  # release, abort, and anything else that is not P-DATA
_MAX_COMMAND_BYTES = 64 << 10  # a DIMSE command set is a few hundred bytes
_SELECT_S = 0.05  # how often deadlines are checked and incomplete requests peeked at again
_PEEK_AGAIN_S = 0.02

# The reasons a connection or association is refused here: closed sets for the metric label.
REASONS = ("calling_ae", "association_limit", "evicted", "negotiation_timeout", "invalid_pdu", "pdu_too_large",
           "message_too_large", "inflight_budget", "stalled", "tls_handshake")

_RJ_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE title not recognised
_RJ_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, service-provider (presentation), local limit exceeded


@dataclass(frozen=True)
class GuardLimits:
    negotiation_timeout_s: float = 5.0  # connect (and TLS handshake) to a complete A-ASSOCIATE-RQ
    idle_timeout_s: float = 60.0  # an association silent this long is aborted; no read blocks longer
    max_pending: int = 64  # connections not yet associated, held without a thread
    max_associations: int = 16
    max_associations_per_peer: int = 4
    max_pdu_bytes: int = 65536  # the Maximum Length this receiver announces
    max_message_bytes: int = DEFAULT_MAX_INSTANCE_BYTES  # the dataset of one C-STORE as received
    # Datasets held in memory by all associations together (pynetdicom buffers each one whole until it is
    # answered); an association whose next fragment would pass it is aborted, and its sender retries.
    max_inflight_bytes: int = 4 * DEFAULT_MAX_INSTANCE_BYTES
    allowed_calling_aets: tuple[str, ...] = ()  # empty: any


_ABORT_NOT_SPECIFIED, _ABORT_UNRECOGNIZED_PDU, _ABORT_INVALID_PARAMETER = 0x00, 0x01, 0x06  # PS3.8 9.3.8


class _Violation(Exception):
    def __init__(self, reason: str, detail: str, diagnostic: int = _ABORT_NOT_SPECIFIED) -> None:
        super().__init__(detail)
        self.reason = reason
        self.diagnostic = diagnostic


class _PeerClosed(Exception):
    pass


@dataclass
class _Pending:
    sock: socket.socket  # an ssl.SSLSocket once TLS is wrapped around it (tls=True)
    address: tuple[Any, ...]
    started: float
    tls: bool = False
    handshaken: bool = False
    registered: int = 0  # the selector events it waits for; 0 while it waits for a timed re-peek
    peek_at: float = 0.0

    @property
    def host(self) -> str:
        return str(self.address[0])


def _reject_pdu(result: int, source: int, reason: int) -> bytes:
    return bytes((0x03, 0x00)) + struct.pack(">L", 4) + bytes((0x00, result, source, reason))


def check_associate_rq(data: bytes, allowed_calling_aets: tuple[str, ...]) -> tuple[str, str] | None:
    """Judge the first bytes a peer sent: None while an A-ASSOCIATE-RQ is still arriving, ("ok", calling AE
    title) once it is whole and acceptable here, or (reason, detail) for a refusal."""
    if data[0] != 0x01:
        return "invalid_pdu", f"the first PDU is of type 0x{data[0]:02X}, not an A-ASSOCIATE-RQ"
    if len(data) < 6:
        return None
    length = struct.unpack_from(">L", data, 2)[0]
    if length > MAX_ASSOCIATE_RQ_BYTES:
        return "pdu_too_large", f"an A-ASSOCIATE-RQ of {length} bytes announced (at most {MAX_ASSOCIATE_RQ_BYTES})"
    if length < 68:  # protocol version, reserved, two AE titles, 32 reserved bytes
        return "invalid_pdu", f"an A-ASSOCIATE-RQ of {length} bytes is too short to be one"
    if len(data) < 6 + length:
        return None
    calling = data[26:42].decode("ascii", "replace").strip(" \x00")
    if allowed_calling_aets and calling not in allowed_calling_aets:
        return "calling_ae", "the calling AE title is not allowed"
    return "ok", calling


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with its accept loop replaced by the admission loop described above. Made by
    `ApplicationEntity.make_server(..., server_class=GuardedServer, limits=..., ...)`; run `serve_forever()` in a
    thread; `shutdown()` stops it."""

    daemon_threads = True  # a request thread only starts the association's own threads
    request_queue_size = 128  # the listen backlog: a burst of connections waits for the admission loop

    def __init__(self, ae: Any, address: tuple[str, int], ae_title: str, contexts: list, ssl_context: Any = None,
                 evt_handlers: list | None = None, *, limits: GuardLimits,
                 tls_context: ssl.SSLContext | None = None,
                 on_refused: Callable[[str], None] = lambda reason: None,
                 on_counts: Callable[[int, int], None] = lambda pending, associated: None) -> None:
        self.limits = limits
        self.tls_context = tls_context
        self.on_refused = on_refused
        self.on_counts = on_counts
        self._pending: dict[int, _Pending] = {}
        self._live: Counter[str] = Counter()  # peer host -> associations handed to pynetdicom, not yet ended
        self._live_lock = threading.Lock()
        self._inflight = 0  # dataset bytes held by all associations (see GuardLimits.max_inflight_bytes)
        self._deadlines: dict[int, float] = {}  # socket fd -> negotiation deadline, read by the handler
        self._stop = threading.Event()
        self._done = threading.Event()
        self._log = RateLimitedLog(log, seconds=10.0)
        # ssl_context stays None for pynetdicom: the handshake is done here, without blocking the accept loop.
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers, request_handler=GuardedHandler)

    # --- the listening socket ----------------------------------------------------------------------------------

    def server_bind(self) -> None:
        # Set before listen() so that accepted sockets inherit it: a whole A-ASSOCIATE-RQ must fit to be peeked.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECV_BUFFER)
        super().server_bind()
        self.socket.setblocking(False)

    def serve_forever(self, poll_interval: float = _SELECT_S) -> None:
        selector = selectors.DefaultSelector()
        self._selector = selector
        selector.register(self.socket, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=poll_interval):
                    self._guarded(self._accept_all if key.data is None else self._advance, key.data)
                self._guarded(self._tick, None)
        finally:
            for p in list(self._pending.values()):
                self._drop(p)
            selector.close()
            self._done.set()

    def _guarded(self, step: Callable[..., None], p: _Pending | None) -> None:
        """One step of the loop; whatever it raises costs at most that connection, never the loop itself (which
        would silently stop the receiver taking anything)."""
        if p is not None and p.sock.fileno() not in self._pending:
            return  # closed earlier in this round
        try:
            step() if p is None else step(p)
        except Exception as exc:
            self._log.warning("loop", "the DICOM admission loop hit %s; the connection involved is closed",
                              describe(exc))
            if p is not None and p.sock.fileno() in self._pending:
                self._drop(p)

    def shutdown(self) -> None:
        self._stop.set()
        self._done.wait(5)
        self.server_close()
        if self in self.ae._servers:
            self.ae._servers.remove(self)

    # --- admission -----------------------------------------------------------------------------------------------

    def _accept_all(self) -> None:
        while True:
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, for example: try again on the next wake-up
                self._log.warning("accept", "could not accept a DICOM connection: %s", exc.strerror or exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            p = _Pending(sock, address, time.monotonic())
            self._make_room(p.host)
            if self.tls_context is not None:
                try:
                    p.sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError):
                    self._refuse(p, "tls_handshake", "the TLS layer could not be set up")
                    continue
                p.tls = True
            self._pending[p.sock.fileno()] = p
            self._watch(p, selectors.EVENT_READ)
            self._counts()

    def _make_room(self, newcomer: str) -> None:
        """At the cap, evict the oldest pending connection of the peer holding the most (the newcomer's own, if it
        is that peer): new connections are never refused, and one peer's flood costs only that peer."""
        if len(self._pending) < self.limits.max_pending:
            return
        per_host = Counter(p.host for p in self._pending.values())
        per_host[newcomer] += 1
        heavy = max(per_host, key=lambda h: per_host[h])
        victims = [p for p in self._pending.values() if p.host == heavy] or list(self._pending.values())
        self._refuse(min(victims, key=lambda p: p.started), "evicted",
                     "evicted: too many connections were waiting to associate")

    def _advance(self, p: _Pending) -> None:
        if p.tls and not p.handshaken:
            self._handshake(p)
        elif p.tls:
            self._hand_off(p)  # it sent data after the handshake: the request is on its way
        else:
            self._peek(p)

    def _handshake(self, p: _Pending) -> None:
        try:
            assert isinstance(p.sock, ssl.SSLSocket)
            p.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(p, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(p, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError):
            self._refuse(p, "tls_handshake", "the TLS handshake failed")
            return
        p.handshaken = True
        if isinstance(p.sock, ssl.SSLSocket) and p.sock.pending():
            self._hand_off(p)
        else:
            self._watch(p, selectors.EVENT_READ)

    def _peek(self, p: _Pending) -> None:
        try:
            data = p.sock.recv(MAX_ASSOCIATE_RQ_BYTES + 6, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(p)
            return
        if not data:
            self._drop(p)  # the peer went away before asking anything
            return
        verdict = check_associate_rq(data, self.limits.allowed_calling_aets)
        if verdict is None:
            # Part of a request: wait for the rest without spinning on a socket that stays readable.
            self._watch(p, 0)
            p.peek_at = time.monotonic() + _PEEK_AGAIN_S
            return
        reason, detail = verdict
        if reason == "calling_ae":
            self._refuse(p, reason, detail, _reject_pdu(*_RJ_CALLING_AE), consume=len(data))
        elif reason != "ok":
            self._refuse(p, reason, detail)
        else:
            self._hand_off(p, consume_on_refusal=len(data))

    def _hand_off(self, p: _Pending, consume_on_refusal: int = 0) -> None:
        host = p.host
        with self._live_lock:
            total = sum(self._live.values())
            if total >= self.limits.max_associations or self._live[host] >= self.limits.max_associations_per_peer:
                over = True
            else:
                over = False
                self._live[host] += 1
        if over:
            # Over TLS the request cannot be peeked at, so there is no A-ASSOCIATE-RJ to answer it with in place.
            rj = None if p.tls else _reject_pdu(*_RJ_LOCAL_LIMIT)
            self._refuse(p, "association_limit", "too many associations from this peer or in all", rj,
                         consume=consume_on_refusal)
            return
        self._forget(p)
        sock = p.sock
        try:
            sock.setblocking(True)
            sock.settimeout(self.limits.idle_timeout_s)  # pynetdicom's reads must never block forever
            self._deadlines[sock.fileno()] = p.started + self.limits.negotiation_timeout_s
            self.process_request(sock, p.address)
        except Exception:
            self._deadlines.pop(sock.fileno(), None)
            self.release(host)
            _close(sock)
            raise
        finally:
            self._counts()

    def _tick(self) -> None:
        now = time.monotonic()
        for p in list(self._pending.values()):
            if now - p.started > self.limits.negotiation_timeout_s:
                self._refuse(p, "negotiation_timeout",
                             f"no complete association request within {self.limits.negotiation_timeout_s:g} s")
            elif not p.registered and now >= p.peek_at:
                self._peek(p)

    # --- bookkeeping ---------------------------------------------------------------------------------------------

    def _watch(self, p: _Pending, events: int) -> None:
        if events == p.registered:
            return
        if p.registered:
            self._selector.unregister(p.sock)
        if events:
            self._selector.register(p.sock, events, p)
        p.registered = events

    def _forget(self, p: _Pending) -> None:
        self._watch(p, 0)
        self._pending.pop(p.sock.fileno(), None)

    def _drop(self, p: _Pending) -> None:
        self._forget(p)
        _close(p.sock)
        self._counts()

    def _refuse(self, p: _Pending, reason: str, detail: str, answer: bytes | None = None, consume: int = 0) -> None:
        self.on_refused(reason)  # counted first: whoever sees the answer sees the count
        if answer is not None:
            try:
                if consume:
                    p.sock.recv(consume)  # unread data would turn the close into a reset that loses the answer
                p.sock.send(answer)
            except OSError:
                pass
        self._log.warning(reason, "refused a DICOM connection from %s: %s", p.host, detail)
        self._drop(p)

    def handoff_deadline(self, sock: socket.socket) -> float:
        return self._deadlines.pop(sock.fileno(), time.monotonic() + self.limits.negotiation_timeout_s)

    def release(self, host: str) -> None:
        """An association handed on has ended (or never started)."""
        with self._live_lock:
            self._live[host] -= 1
            if self._live[host] <= 0:
                del self._live[host]
        self._counts()

    def reserve(self, size: int) -> bool:
        """Take `size` bytes of the in-flight budget; False (nothing taken) if that would pass it."""
        with self._live_lock:
            if self._inflight + size > self.limits.max_inflight_bytes:
                return False
            self._inflight += size
            return True

    def unreserve(self, size: int) -> None:
        with self._live_lock:
            self._inflight -= size

    def refused(self, reason: str, host: str, detail: str) -> None:
        """A refusal made inside an association (by its DUL)."""
        self._log.warning(reason, "aborted a DICOM association from %s: %s", host, detail)
        self.on_refused(reason)

    def _counts(self) -> None:
        with self._live_lock:
            live = sum(self._live.values())
        self.on_counts(len(self._pending), live)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


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
        except _PeerClosed:
            self.event_queue.put("Evt17")  # transport connection closed
            return
        except _Violation as exc:
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
            raise _Violation("invalid_pdu", f"a PDU of type 0x{pdu_type:02X} where it cannot be",
                             _ABORT_UNRECOGNIZED_PDU)
        if pdu_type == 0x01:
            limit = MAX_ASSOCIATE_RQ_BYTES
        elif pdu_type == 0x04:
            limit = self._limits.max_pdu_bytes + PDU_MARGIN
        else:
            limit = _MAX_CONTROL_PDU
        if length > limit:
            raise _Violation("pdu_too_large", f"a PDU of {length} bytes announced (at most {limit})",
                             _ABORT_INVALID_PARAMETER)
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
                if self._command_bytes > _MAX_COMMAND_BYTES:
                    raise _Violation("message_too_large", f"a DIMSE command of over {_MAX_COMMAND_BYTES} bytes",
                                     _ABORT_INVALID_PARAMETER)
                if control & 0x02:
                    self._command_bytes = 0
            else:
                if self._message_complete:  # a new dataset: the last one has been answered by now
                    self.message_handled()
                self._dataset_bytes += size
                if self._dataset_bytes > self._limits.max_message_bytes:
                    raise _Violation("message_too_large", f"a dataset of over {self._limits.max_message_bytes} "
                                     "bytes", _ABORT_INVALID_PARAMETER)
                if not self.assoc._guard.reserve(size):
                    raise _Violation("inflight_budget", "the datasets in memory would pass "
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
            raise _PeerClosed()
        buf = bytearray()
        while len(buf) < n:
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise _Violation(late, "the association request did not arrive in time" if late != "stalled"
                                 else f"a PDU took longer than {self._limits.idle_timeout_s:g} s to arrive")
            try:
                sock.settimeout(wait)
                chunk = sock.recv(min(n - len(buf), 1 << 16))
            except TimeoutError:
                continue  # the deadline check above raises
            except OSError:
                raise _PeerClosed() from None
            if not chunk:
                raise _PeerClosed()
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


__all__ = ["REASONS", "GuardLimits", "GuardedServer", "check_associate_rq"]

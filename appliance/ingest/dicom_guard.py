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
from dataclasses import dataclass
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from appliance.ingest.association_guard import GuardedHandler
from appliance.ingest.guard_limits import MAX_ASSOCIATE_RQ_BYTES, REASONS, GuardLimits, close_quietly
from appliance.logsafe import RateLimitedLog, describe

log = logging.getLogger(__name__)

_RECV_BUFFER = 256 << 10
_SELECT_S = 0.05  # how often deadlines are checked and incomplete requests peeked at again
_PEEK_AGAIN_S = 0.02
_RJ_CALLING_AE = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE title not recognised
_RJ_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, service-provider (presentation), local limit exceeded


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
            close_quietly(sock)
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
        close_quietly(p.sock)
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


__all__ = ["REASONS", "GuardLimits", "GuardedServer", "check_associate_rq"]

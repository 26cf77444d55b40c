"""The MLLP listener: final reports as HL7 v2 ORU^R01 from the RIS, the reporting system or an interface engine.

MLLP (HL7 v2 Minimal Lower Layer Protocol, release 2): each message is framed as 0x0b <message> 0x1c 0x0d on a TCP
connection the sender keeps open for many messages, one at a time, each answered by an ACK in the same framing.

Blocking sockets, one thread per connection, and not asyncio: the sink stores the report durably (a blocking
SQLite transaction) before the ACK may go out, TLS on a blocking socket is the ssl module's plain path, and a site
has one or two senders holding long-lived connections, so a thread each costs nothing. The accept loop and the
connections are bounded (`max_connections`; a connection beyond it is closed at once and counted).

- **Bind address** 127.0.0.1 unless configured: the senders are named explicitly, as for the other listeners.
- **Allowed senders** two ways, both optional: `allowed_peers`, peer IP addresses or networks (CIDR), checked when
  the connection is accepted, before a byte is read (a refused peer is closed without an answer); and
  `allowed_applications`, MSH-3 (sending application, first component), checked per message and answered AR. The
  peer address is what the network vouches for; MSH-3 is what the sender says about itself, a routing check
  against a misconfigured interface engine, not authentication. Authentication is mutual TLS (`tls_client_ca`).
- **TLS**: `tls_cert` and `tls_key` turn it on; `tls_client_ca` requires a client certificate signed by that CA.
  The handshake runs in the connection's thread under the idle timeout, so a silent peer holds nothing long.
- **Limits**: a message larger than `max_message_bytes` is answered AR (naming its control id when its MSH was
  read) and the connection closed, since the rest of the frame cannot be trusted; a connection silent for
  `idle_timeout_s` is closed. Bytes outside a frame other than whitespace close the connection.
- **ACK after the sink**: a report (F, C or X) is handed to `on_report`; only when it returns is AA sent. If it
  raises, AE goes back (the sender keeps the message and retries) and the listener serves on. A preliminary result is
  AA without the sink. Whatever a message does, the listener keeps serving: every failure ends in an ACK or a closed
  connection, never in a stopped thread.
- **Logs** name message control ids, reason codes and counts only: never a name, MRN, accession number or UID
  (the control id is the sender's message sequence number).
- **Settings**: `[hl7]` (`appliance.config.Hl7Config`), the one place they are defined.
- **Counts**: `on_message(ack, reason)` for each ACK sent (ack AA/AE/AR, reason from the closed set `ACK_REASONS`)
  and `on_refusal(reason)` for each connection refused or closed (`REFUSALS`): the composition root points them at
  `scanside_hl7_messages_total` and `scanside_hl7_refusals_total` (appliance/metrics.py). `MllpListener.counts`
  keeps the same numbers for a caller without metrics.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable

from appliance.config import Hl7Config
from appliance.logsafe import describe
from appliance.truth.oru import ACCEPT, ERROR, REJECT, FinalReport, build_ack, header_of, parse_oru

log = logging.getLogger(__name__)

START_BLOCK, END_BLOCK, CARRIAGE_RETURN = b"\x0b", b"\x1c", b"\x0d"
FRAME_END = END_BLOCK + CARRIAGE_RETURN
DEFAULT_PORT = 2575  # the port IANA registers for HL7 over MLLP


# Every (ACK code, reason) the listener answers with: the label set of scanside_hl7_messages_total.
ACK_REASONS: tuple[tuple[str, str], ...] = (
    (ACCEPT, "final"), (ACCEPT, "corrected"), (ACCEPT, "cancelled"), (ACCEPT, "preliminary"),
    (ERROR, "no_obr"), (ERROR, "unknown_status"), (ERROR, "no_accession_or_study_uid"), (ERROR, "no_report_text"),
    (ERROR, "not_stored"),
    (REJECT, "unparseable"), (REJECT, "no_control_id"), (REJECT, "unsupported_message_type"),
    (REJECT, "sending_application_not_allowed"), (REJECT, "message_too_large"), (REJECT, "unreadable"),
)
# Connections refused or closed by the listener: scanside_hl7_refusals_total{reason}.
REFUSALS = ("peer", "connection_limit", "tls", "framing", "idle")


class MllpListener:
    def __init__(self, settings: Hl7Config, on_report: Callable[[FinalReport], None],
                 on_message: Callable[[str, str], None] = lambda ack, reason: None,
                 on_refusal: Callable[[str], None] = lambda reason: None,
                 before_message: Callable[[], object] = lambda: None) -> None:
        """`before_message` is called before each message is read (the pipeline's: wait while a series is being
        scored, pipeline/priority.py); the ACK waits with it."""
        self.settings = settings
        self.before_message = before_message
        self.on_report = on_report
        self.on_message, self.on_refusal = on_message, on_refusal
        self.counts: Counter[str] = Counter()
        self._networks = [ipaddress.ip_network(p, strict=False) for p in settings.allowed_peers]
        self._tls = self._ssl_context()
        self._sock: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[int, socket.socket] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        sock = socket.create_server((s.host, s.port), family=socket.AF_INET6 if ":" in s.host else socket.AF_INET,
                                    reuse_port=False)
        sock.settimeout(0.5)  # the accept loop looks at the stop flag this often
        self._sock = sock
        self._accept_thread = threading.Thread(target=self._accept_loop, name="scanside-mllp-accept", daemon=True)
        self._accept_thread.start()
        log.info("MLLP listener on %s:%d%s", s.host, self.port, " (TLS)" if self._tls else "")

    @property
    def open_connections(self) -> int:
        """Connections being served now (scanside_hl7_connections): a RIS that holds one open and idle, or many."""
        with self._lock:
            return len(self._conns)

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1] if self._sock is not None else self.settings.port

    def stop(self) -> None:
        self._stopping.set()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)
        log.info("MLLP listener stopped")

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile=str(s.tls_cert), keyfile=str(s.tls_key) if s.tls_key else None)
        if s.tls_client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(s.tls_client_ca))
        return ctx

    # --- connections ----------------------------------------------------------------------------------------------
    def _peer_allowed(self, ip: str) -> bool:
        if not self._networks:
            return True
        try:
            addr = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._networks)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            sock = self._sock
            if sock is None:
                return
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            if not self._peer_allowed(peer[0]):
                self._refuse(conn, "peer")
                continue
            with self._lock:
                self._threads = [t for t in self._threads if t.is_alive()]
                if len(self._conns) >= self.settings.max_connections:
                    full = True
                else:
                    full = False
                    self._conns[id(conn)] = conn
            if full:
                self._refuse(conn, "connection_limit")
                continue
            t = threading.Thread(target=self._serve, args=(conn,), name="scanside-mllp-conn", daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _refuse(self, conn: socket.socket, reason: str) -> None:
        self._refused(reason)
        log.warning("MLLP connection refused (%s)", reason)
        conn.close()

    def _serve(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        try:
            raw.settimeout(self.settings.idle_timeout_s)
            if self._tls is not None:
                try:
                    conn = self._tls.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    self._refused("tls")
                    log.warning("MLLP TLS handshake failed: %s", describe(exc))
                    return
            self._read_messages(conn)
        except TimeoutError:
            self.counts["closed_idle"] += 1
            self.on_refusal("idle")
        except OSError as exc:
            if not self._stopping.is_set():
                log.info("MLLP connection ended: %s", describe(exc))
        except Exception as exc:  # a bug here must end this connection, never the listener
            log.error("MLLP connection failed: %s", describe(exc))
        finally:
            with self._lock:
                self._conns.pop(id(raw), None)
            try:
                conn.close()
            except OSError:
                pass

    def _read_messages(self, conn: socket.socket) -> None:
        limit = self.settings.max_message_bytes
        buf = bytearray()
        while not self._stopping.is_set():
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
            while True:
                # between frames only whitespace may sit (some senders add a newline after the frame end)
                start = buf.find(START_BLOCK)
                junk = buf if start < 0 else buf[:start]
                if junk.strip(b" \r\n\t"):
                    self._refused("framing")
                    log.warning("MLLP bytes outside a frame: connection closed")
                    return
                if start < 0:
                    buf.clear()
                    break
                del buf[:start]
                end = buf.find(FRAME_END)
                if end < 0:
                    if len(buf) - 1 > limit:
                        self._too_large(conn, bytes(buf[1:4096]))
                        return
                    break
                body = bytes(buf[1:end])
                del buf[:end + 2]
                if len(body) > limit:
                    self._too_large(conn, body[:4096])
                    return
                conn.sendall(START_BLOCK + self.handle(body).encode("utf-8") + FRAME_END)

    def _too_large(self, conn: socket.socket, head: bytes) -> None:
        header = header_of(_decode(head))
        self.counts["too_large"] += 1
        log.warning("MLLP message %s larger than %d bytes: AR, connection closed", header.control_id or "(no id)",
                    self.settings.max_message_bytes)
        self.on_message(REJECT, "message_too_large")
        conn.sendall(START_BLOCK + self._ack(header, REJECT, "message_too_large").encode("utf-8") + FRAME_END)

    # --- one message ----------------------------------------------------------------------------------------------
    def handle(self, body: bytes) -> str:
        """The ACK for one message (unframed): parsed, checked, handed to the sink. Never raises."""
        try:
            self.before_message()
        except Exception as exc:  # a hook must never cost the report
            log.error("HL7 message hook failed: %s", describe(exc))
        try:
            outcome = parse_oru(_decode(body))
        except Exception as exc:  # parse_oru catches the parser's errors; this is for its own bugs
            log.error("HL7 message could not be read: %s", describe(exc))
            self.counts["reject"] += 1
            return self._answer(header_of(_decode(body)), REJECT, "unreadable")
        cid = outcome.header.control_id or "(no id)"
        allowed = self.settings.allowed_applications
        if allowed and outcome.header.sending_application.split("^", 1)[0] not in allowed:
            self.counts["sender_refused"] += 1
            log.warning("HL7 message %s from a sending application not allowed: AR", cid)
            return self._answer(outcome.header, REJECT, "sending_application_not_allowed")
        if outcome.report is not None:
            try:
                self.on_report(outcome.report)
            except Exception as exc:
                self.counts["sink_error"] += 1
                log.error("HL7 message %s could not be stored (%s): AE, the sender retries", cid, describe(exc))
                return self._answer(outcome.header, ERROR, "not_stored")
        key = {ACCEPT: outcome.reason, ERROR: "error", REJECT: "reject"}[outcome.code]
        self.counts[key] += 1
        log.info("HL7 message %s: %s %s", cid, outcome.code, outcome.reason)
        return self._answer(outcome.header, outcome.code, outcome.reason)

    def _refused(self, reason: str) -> None:
        self.counts[f"refused_{reason}"] += 1
        self.on_refusal(reason)

    def _answer(self, header, code: str, reason: str) -> str:
        try:
            self.on_message(code, reason)
        except Exception as exc:  # counting must never cost the ACK
            log.error("HL7 message count failed: %s", describe(exc))
        return self._ack(header, code, reason)

    def _ack(self, header, code: str, reason: str) -> str:
        return build_ack(header, code, reason, self.settings.receiving_application, self.settings.receiving_facility)


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")  # HL7 v2's older default character sets: every byte reads as something

"""A scripted, misbehaving DICOM peer on raw sockets: association requests built byte by byte (PS3.8 9.3), so a test
can send exactly what a careless or hostile neighbour sends — silence, junk, oversized PDUs — and read the answer."""

from __future__ import annotations

import socket
import struct
import time

VERIFICATION = "1.2.840.10008.1.1"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def associate_rq(called: str = "SCANSIDE", calling: str = "MRI1",
                 abstract_syntaxes: tuple[str, ...] = (VERIFICATION, MR_IMAGE_STORAGE),
                 max_pdu: int = 16384) -> bytes:
    variable = _item(0x10, b"1.2.840.10008.3.1.1.1")  # DICOM application context
    for n, uid in enumerate(abstract_syntaxes):
        body = bytes((2 * n + 1, 0, 0, 0)) + _item(0x30, uid.encode()) + _item(0x40, EXPLICIT_LE.encode()) \
            + _item(0x40, IMPLICIT_LE.encode())
        variable += _item(0x20, body)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, b"1.2.826.0.1.3680043.9.7156.1")
    variable += _item(0x50, user)
    fixed = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + bytes(32)
    body = fixed + variable
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def connect(port: int, host: str = "127.0.0.1", source: str | None = None, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if source is not None:
        sock.bind((source, 0))
    sock.connect((host, port))
    return sock


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """(PDU type, body) of the next PDU; (0, b"") when the peer closed the connection."""
    header = _read_exact(sock, 6)
    if len(header) < 6:
        return 0, b""
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, _read_exact(sock, length)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except (ConnectionResetError, BrokenPipeError):
            return buf
        if not chunk:
            return buf
        buf += chunk
    return buf


def associate(port: int, calling: str = "MRI1", source: str | None = None) -> tuple[socket.socket, int, bytes]:
    """Open a connection and ask for an association: (socket, answer PDU type, answer body)."""
    sock = connect(port, source=source)
    sock.sendall(associate_rq(calling=calling))
    kind, body = read_pdu(sock)
    return sock, kind, body


def closed_by_peer(sock: socket.socket, within_s: float = 10.0) -> bool:
    """True once the peer has closed the connection (a read gives end of file or a reset)."""
    deadline = time.monotonic() + within_s
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return True
        if not data:
            return True
    return False

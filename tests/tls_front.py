"""A TLS terminator on a loopback port in front of a plain TCP server, as nginx or stunnel sits in front of a PACS'
web server: clients speak TLS to it (Python's ssl, that is OpenSSL, with the certificate it is given) and it relays
the decrypted bytes to the server, both ways, one thread per connection.

Tests need it because Orthanc 1.10.1's own HTTPS ("SslEnabled") cannot be used on Debian 12: its civetweb (1.15)
loads OpenSSL 3 at run time and Orthanc dies of a segmentation fault on the first TLS connection (a call through a
null function pointer in a civetweb worker thread, seen with gdb), whatever the key type.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


class TlsFront:
    def __init__(self, key: Path, cert: Path, target_port: int, port: int = 0) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile=str(cert), keyfile=str(key))
        self.target_port = target_port
        self._server = socket.create_server((LOOPBACK, port))
        self.port = int(self._server.getsockname()[1])
        self.handshakes_failed = 0  # connections whose client refused (or broke off) the TLS handshake
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> TlsFront:
        self._thread = threading.Thread(target=self._accept, name="tls-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> TlsFront:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._relay, args=(conn,), name="tls-front-conn", daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            self.handshakes_failed += 1
            conn.close()
            return
        try:
            upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=30)
        except OSError:  # the server behind is down: the client sees the connection closed
            tls.close()
            return
        # Relayed writes are small and split; with Nagle's algorithm each waits for a delayed ACK (~40 ms).
        for sock in (tls, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # One thread reads both sides in turn: an SSL socket must not be read and written from two threads at once.
        with tls, upstream:
            while not self._stopping.is_set():
                ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], 1.0)[0]
                for side in ready:
                    try:
                        data = side.recv(65536)
                        if not data:
                            return
                        (upstream if side is tls else tls).sendall(data)
                    except (ssl.SSLError, OSError):
                        return

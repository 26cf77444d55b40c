"""The page's HTTP server: Python's own http.server, threaded, on loopback, with server-sent events.

    GET /             the page            GET /display.js, /display.css   its script and style
    GET /events       text/event-stream: the board as JSON at once and after every change (a comment every 15 s
                      keeps idle connections open); the browser's EventSource reconnects by itself
    GET /api/state    the same JSON, once
    GET /thumb/<series key>/<position>.png   a slice the model saw

Every answer is `Cache-Control: no-store` (the page can carry exam identity) under a Content-Security-Policy that
allows this origin only (no CDN, no inline script). Requests naming another Host are refused, so a web page
elsewhere cannot reach this one through DNS rebinding. Requests are not logged: a URL carries only opaque keys, but
there is nothing in one a technologist needs in a log.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from appliance.display.board import Board
from appliance.display.page import CSS, HTML
from appliance.display.script import JS

KEEPALIVE_S = 15.0
_THUMB = re.compile(r"^/thumb/([0-9A-Za-z_-]{1,64})/([0-9])\.png$")
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_STATIC = {
    "/": ("text/html; charset=utf-8", HTML),
    "/index.html": ("text/html; charset=utf-8", HTML),
    "/display.css": ("text/css; charset=utf-8", CSS),
    "/display.js": ("text/javascript; charset=utf-8", JS),
}


class DisplayServer:
    """`host`, `port` (0: a free one; `port` tells which after construction). start() serves on a thread."""

    def __init__(self, board: Board, host: str, port: int) -> None:
        self.board = board
        self.closing = threading.Event()
        handler = type("Handler", (_Handler,), {"display": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, int(self.httpd.server_address[1])
        names = {host, "localhost", "127.0.0.1", "[::1]", f"[{host}]"}
        self.allowed_hosts = {f"{n}:{self.port}" for n in names} | ({*names} if self.port == 80 else set())
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="scanside-display-http", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    display: DisplayServer
    server_version = "ScanSideDisplay"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("Host", "") not in self.display.allowed_hosts:
            self._send(HTTPStatus.MISDIRECTED_REQUEST, "text/plain; charset=utf-8", b"unknown Host\n")
            return
        path = self.path.split("?", 1)[0]
        if path in _STATIC:
            kind, text = _STATIC[path]
            self._send(HTTPStatus.OK, kind, text.encode("utf-8"))
        elif path == "/api/state":
            self._send(HTTPStatus.OK, "application/json", json.dumps(self.display.board.snapshot()).encode())
        elif path == "/events":
            self._events()
        elif (m := _THUMB.match(path)) and (png := self.display.board.thumbnail(m[1], int(m[2]))) is not None:
            self._send(HTTPStatus.OK, "image/png", png)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _headers(self, status: HTTPStatus, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")

    def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
        self._headers(status, kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        self.close_connection = True
        self._headers(HTTPStatus.OK, "text/event-stream")
        self.end_headers()
        board, closing = self.display.board, self.display.closing
        version, quiet_since = -1, time.monotonic()
        try:
            while not closing.is_set():
                if board.version != version:
                    snapshot = board.snapshot()
                    version = snapshot["version"]
                    self.wfile.write(b"data: " + json.dumps(snapshot).encode() + b"\n\n")
                elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                    self.wfile.write(b": keepalive\n\n")
                else:
                    board.wait(version, 1.0)  # short, so that stopping the server ends this stream soon
                    continue
                self.wfile.flush()
                quiet_since = time.monotonic()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away

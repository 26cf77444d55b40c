"""`scanside display`: the technologist's page, served on this host, fed by the appliance over gRPC.

    scanside display --config /etc/scanside/scanside.toml            # the appliance that file describes
    scanside display --address mr-appliance:50051 --tls-ca ca.pem --token-file console.token --listen 127.0.0.1:8088

`register(subparsers)` adds the command to the `scanside` parser; `run(args)` is what it runs (tests call it with a
`stop` event).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

from appliance.config import is_loopback, load_settings
from appliance.config.client import Connection, GrpcTarget, connection, grpc_target
from appliance.display.board import Board
from appliance.display.feed import Feed
from appliance.display.web import DisplayServer
from appliance.serve.client import ApplianceClient

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8088"
DEFAULT_ADDRESS = "127.0.0.1:50051"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("display", help="serve the technologists' live results page on this host",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="the appliance's configuration: [client], else [grpc] (address, TLS, token)")
    p.add_argument("--address", help=f"the appliance's gRPC address (default: from --config, else {DEFAULT_ADDRESS})")
    p.add_argument("--listen", default=DEFAULT_LISTEN,
                   help=f"where the page is served, a loopback host:port (default {DEFAULT_LISTEN})")
    p.add_argument("--tls-ca", type=Path, help="verify the appliance's TLS certificate against this CA "
                   "(default with --config: the appliance's own grpc.tls_cert)")
    p.add_argument("--tls-cert", type=Path, help="client certificate, for an appliance that requires one")
    p.add_argument("--tls-key", type=Path, help="the client certificate's key")
    p.add_argument("--server-name", help="the name to check the appliance's certificate for")
    p.add_argument("--token-file", type=Path,
                   help="file holding this display's client token (or set SCANSIDE_TOKEN); with TLS, the page "
                        "then shows the patient's name, ID and accession number")
    p.add_argument("--studies", type=int, default=50, help="how many of the newest studies the page keeps (50)")
    p.set_defaults(func=run)


def target(args: argparse.Namespace) -> Connection:
    """Where the appliance is and how to reach it: the flags first, then --config as every client command reads it
    ([client], else [grpc]: its host and port, its own certificate as the CA), then the defaults. Raises ValueError
    (a ConfigError) saying what is wrong."""
    base = GrpcTarget(DEFAULT_ADDRESS, None, None, None, None, None)
    if args.config:
        base = grpc_target(load_settings(args.config))
    return connection(base, address=args.address, tls_ca=args.tls_ca, tls_cert=args.tls_cert, tls_key=args.tls_key,
                      server_name=args.server_name, token_file=args.token_file)


def listen_address(text: str) -> tuple[str, int]:
    """host:port (IPv6 in brackets) on loopback. The page shows what this display may read, patient identity
    included, to whoever reaches it, and it has no login of its own: it stays on the console's own host."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected host:port, e.g. {DEFAULT_LISTEN}")
    if host == "localhost":
        host = "127.0.0.1"
    if not is_loopback(host):
        raise ValueError(f"--listen {text!r}: the page has no login, so it is served on loopback only "
                         "(127.0.0.1 or ::1); open it on the console itself")
    return host, int(port)


def run(args: argparse.Namespace, stop: threading.Event | None = None,
        started: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or `stop` is set). `started` is set once the page is served; then
    `args.display` holds the DisplayServer and `args.board` the Board (for tests)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        where = target(args)
        host, port = listen_address(args.listen)
        if args.studies < 1:
            raise ValueError("--studies must be at least 1")
    except ValueError as exc:
        log.error("%s", exc)
        return 2

    def connect() -> ApplianceClient:
        return ApplianceClient(where.address, tls_ca=where.tls_ca, tls_cert=where.tls_cert, tls_key=where.tls_key,
                               token=where.token, server_name=where.server_name)

    board = Board(keep_studies=args.studies)
    try:
        server = DisplayServer(board, host, port)
    except OSError as exc:
        log.error("cannot serve the page on %s: %s", args.listen, exc.strerror or exc)
        return 1
    feed = Feed(connect, board)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    server.start()
    feed.start()
    args.display, args.board = server, board
    log.info("display on %s, following the appliance at %s (%s)", server.url, where.address,
             "TLS" if where.tls_ca or where.tls_cert else "plaintext")
    if started is not None:
        started.set()
    try:
        stop.wait()
    finally:
        feed.stop()
        server.stop()
        log.info("display stopped")
    return 0

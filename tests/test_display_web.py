"""The display's own parts, without an appliance or a browser: the board's once-each, in-order bookkeeping, the HTTP
server's answers (Host check, no-store, CSP, server-sent events), and the command's checks of its options."""

from __future__ import annotations

import argparse
import http.client
import json
import logging

import pytest

from appliance.display.board import Board
from appliance.display.cli import run, target
from appliance.display.web import DisplayServer
from appliance.display.words import person_name


def view(key: str, scored_at: float = 1.0, needs_review: bool = False) -> dict:
    return {"key": key, "kind": "scored", "needs_review": needs_review, "scored_at": scored_at,
            "sr": {"state": "pending", "text": "SR to PACS pending"}}


def test_the_board_applies_each_event_once_in_order_and_keeps_the_newest_studies():
    board = Board(keep_studies=2)
    assert board.apply(1, "1.2.1", view("a"), {0: b"png-a"})
    assert not board.apply(1, "1.2.1", view("a"), {})  # a repeat changes nothing
    assert board.apply(2, "1.2.2", view("b", needs_review=True), {})
    assert board.apply(4, "1.2.3", view("c"), {})  # 3 never came: a gap
    done = {**view("b", needs_review=True), "sr": {"state": "delivered", "text": "SR in PACS"}}
    assert board.apply(5, "1.2.2", done, {}, sr_only=True)
    snap = board.snapshot()
    assert snap["feed"] == {"last_event_id": 5, "applied": 4, "repeats": 1, "gaps": 1, "reconnects": 0}
    assert [[v["key"] for v in s["series"]] for s in snap["studies"]] == [["c"], ["b"]]  # "a" fell off the end
    assert snap["studies"][1]["needs_review"] and snap["studies"][1]["series"][0]["sr"]["state"] == "delivered"
    assert board.thumbnail("a", 0) is None  # dropped with its study
    assert "1.2." not in json.dumps(snap)  # no UID on the page: studies go by an opaque key


@pytest.mark.parametrize(("pn", "shown"), [
    ("SYNTH^P000001", "SYNTH, P000001"), ("Doe^John^Q^Dr", "Doe, Dr John Q"), ("Solo", "Solo"), ("^Given", "Given"),
    ("Yamada^Tarou=山田^太郎", "Yamada, Tarou")])
def test_person_names_read_family_first(pn, shown):
    assert person_name(pn) == shown


@pytest.fixture
def served_board():
    board = Board()
    board.apply(1, "1.2.9", view("k1"), {1: b"\x89PNG-mid"})
    server = DisplayServer(board, "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def get(server: DisplayServer, path: str, host: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{server.port}"})
    return conn.getresponse()


def test_the_page_server_answers_its_own_host_only_uncached_under_a_strict_policy(served_board):
    page = get(served_board, "/")
    assert page.status == 200 and b'src="/display.js"' in page.read()
    assert page.getheader("Cache-Control") == "no-store"
    assert "default-src 'none'" in page.getheader("Content-Security-Policy")
    assert get(served_board, "/", host=f"localhost:{served_board.port}").status == 200
    assert get(served_board, "/", host="rebound.example:8088").status == 421  # DNS rebinding
    thumb = get(served_board, "/thumb/k1/1.png")
    assert thumb.status == 200 and thumb.getheader("Content-Type") == "image/png" and thumb.read() == b"\x89PNG-mid"
    for missing in ("/thumb/k1/0.png", "/thumb/../x.png", "/nothing"):
        assert get(served_board, missing).status == 404
    events = get(served_board, "/events")
    assert events.getheader("Content-Type") == "text/event-stream"
    first = events.readline()
    assert first.startswith(b"data: ") and json.loads(first[6:])["studies"][0]["series"][0]["key"] == "k1"


def args(**options) -> argparse.Namespace:
    base = dict(config=None, address=None, listen="127.0.0.1:0", tls_ca=None, tls_cert=None, tls_key=None,
                server_name=None, token_file=None, studies=50)
    return argparse.Namespace(**{**base, **options})


def test_the_page_is_served_on_loopback_only(caplog):
    caplog.set_level(logging.ERROR)
    assert run(args(listen="0.0.0.0:8088")) == 2
    assert "loopback only" in caplog.text
    assert run(args(listen="8088")) == 2 and "expected host:port" in caplog.text


def test_the_appliance_is_found_from_its_configuration(tmp_path, monkeypatch):
    cert = tmp_path / "appliance.crt"
    cert.write_text("-")
    config = tmp_path / "scanside.toml"
    config.write_text(f'[grpc]\nhost = "127.0.0.1"\nport = 50123\ntls_cert = "{cert}"\ntls_key = "{cert}"\n')
    monkeypatch.delenv("SCANSIDE_TOKEN", raising=False)
    found = target(args(config=str(config)))
    assert (found.address, found.tls_ca, found.token) == ("127.0.0.1:50123", cert, None)
    assert target(args(config=str(config), address="mr1:7000")).address == "mr1:7000"
    assert target(args()).address == "127.0.0.1:50051"
    monkeypatch.setenv("SCANSIDE_TOKEN", " tok \n")
    assert target(args()).token == "tok"
    with pytest.raises(ValueError, match="token file"):
        target(args(token_file=tmp_path / "absent"))
    with pytest.raises(ValueError, match="go together"):
        target(args(tls_cert=cert))
    token = tmp_path / "console.token"  # a [client] section is what every client command reads first
    token.write_text("secret-token\n")
    config.write_text(f'[client]\naddress = "mr-appliance:50051"\ntoken_file = "{token}"\n')
    # The environment overrides the file, as it does for every setting; --token-file overrides both.
    assert target(args(config=str(config))).token == "tok"
    assert target(args(config=str(config), token_file=token)).token == "secret-token"
    monkeypatch.delenv("SCANSIDE_TOKEN")
    found = target(args(config=str(config)))
    assert (found.address, found.token) == ("mr-appliance:50051", "secret-token")


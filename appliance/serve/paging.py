"""Page tokens for ListResults: opaque to clients, signed by the appliance, bound to the query they page.

A token carries the id the next page starts below and the `since_unix` of the query, and an HMAC under a key kept
in the database, so that it stays valid across restarts and anything the server did not issue (a hand-made
"-5", a 26-digit number that overflows SQLite, a token from another appliance) is refused as INVALID_ARGUMENT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct

_VERSION = 1
_BODY = struct.Struct(">BQd")  # version, before_id, since_unix
_MAC_BYTES = 16


class BadPageToken(ValueError):
    """The token was not issued by this appliance for this query."""


class PageTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the page-token key must be at least 16 bytes")
        self._key = key

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, before_id: int, since_unix: float) -> str:
        body = _BODY.pack(_VERSION, before_id, since_unix)
        return base64.urlsafe_b64encode(body + self._mac(body)).rstrip(b"=").decode("ascii")

    def read(self, token: str, since_unix: float) -> int:
        """The id the page starts below. Raises BadPageToken with a message for the client."""
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise BadPageToken("page_token is not one this server issued") from None
        if len(raw) != _BODY.size + _MAC_BYTES:
            raise BadPageToken("page_token is not one this server issued")
        body, mac = raw[: _BODY.size], raw[_BODY.size :]
        if not hmac.compare_digest(mac, self._mac(body)):
            raise BadPageToken("page_token is not one this server issued")
        version, before_id, since = _BODY.unpack(body)
        if version != _VERSION:
            raise BadPageToken("page_token is from another version of the appliance; start again without one")
        if since != since_unix:
            raise BadPageToken("page_token was issued for another since_unix; keep the query the same while paging")
        return before_id

"""Who may call the gRPC API, and for what: client identities, roles, and result streams shared fairly.

A caller is identified, per call, by

1. a bearer token (`authorization: Bearer <token>` metadata) listed in the clients file; tokens are random, made
   by `scanside clients add`, shown once and kept only as their SHA-256 (high-entropy secrets need no slow hash);
2. else its TLS client certificate (mutual TLS, `[grpc] tls_client_ca`), by the certificate's common name;
3. else it is anonymous: a caller on this host (loopback) gets `anonymous_roles` (display and ops unless
   configured), a caller from any other host gets no role at all.

Roles: `display` reads results (and, where enabled, patient identity); `ops` reads status and model information;
`admin` may do everything, including the calls that change prompts or configuration and record feedback. A call
outside the caller's roles is PERMISSION_DENIED, an unknown token UNAUTHENTICATED; both are counted and logged
with the caller's name and the method, never with request contents. Health and reflection answer everyone: an
orchestrator's probe must not need a secret, and reflection shows only the API's shape.

Streams (result streams, but also health Watch and reflection sessions, which anyone may open) hold a server thread
each, so they are capped in all and per caller (RESOURCE_EXHAUSTED says which cap): one client cannot take every
thread.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import grpc

from appliance.config import API_ROLES, is_loopback
from appliance.fileio import PRIVATE_FILE_MODE, write_bytes_atomic
from appliance.logsafe import RateLimitedLog

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

log = logging.getLogger(__name__)

ROLES = API_ROLES
SERVICE = "scanside.v1.Appliance"
# Which roles may call each method of the Appliance service; admin may call every one. A method missing here is
# refused to all but admin, so a new RPC is closed until someone decides who may use it.
METHOD_ROLES: dict[str, frozenset[str]] = {
    "GetStudyResult": frozenset({"display"}),
    "ListResults": frozenset({"display"}),
    "StreamResults": frozenset({"display"}),
    "GetSeriesStatus": frozenset({"display", "ops"}),
    "GetModelInfo": frozenset({"display", "ops"}),
    "AssessResult": frozenset(),  # ground truth for the evidence: admin only (a radiologist's or RIS's client)
    "GetSeriesPreview": frozenset({"display"}),  # thumbnails; exam identity only as `identity_withheld` allows
}
# In shadow mode (appliance.mode) results are measured, not shown: these calls are admin-only then, so no display
# (nor an ops dashboard, nor an anonymous caller on this host) sees a result, while `scanside results` with an admin
# token still works for the people validating the model. GetSeriesStatus and GetModelInfo stay as they are: a
# series' state says it was scored, never what was found.
RESULT_METHODS = ("GetStudyResult", "ListResults", "StreamResults", "GetSeriesPreview")


def identity_withheld(identity: Identity | None, context: grpc.ServicerContext) -> str:
    """Why this caller may not see exam identity (accession number, patient ID and name), or "" when it may: a named
    client (token or certificate) with the display or admin role, over TLS. An anonymous caller on this host reads
    results, never who they belong to; a token sent in plaintext could have been read on the way."""
    if identity is None or identity.name == "anonymous":
        return "exam identity is shown to named clients only (scanside clients add), over TLS"
    if not identity.roles & {"display", "admin"}:
        return f"exam identity needs the role display or admin; this caller ({identity.name}) has neither"
    security = (context.auth_context() or {}).get("transport_security_type") or []
    if b"ssl" not in security:
        return "exam identity is sent over TLS only (grpc.tls_cert / tls_key)"
    return ""


def method_roles(shadow: bool) -> dict[str, frozenset[str]]:
    """METHOD_ROLES in force: in shadow mode the result calls are left to admin alone."""
    if not shadow:
        return METHOD_ROLES
    return {method: frozenset() if method in RESULT_METHODS else roles for method, roles in METHOD_ROLES.items()}


DENIAL_REASONS = ("unauthenticated", "permission_denied", "stream_limit")
_TOKEN_BYTES = 32


class AccessError(ValueError):
    """The clients file is missing, malformed or inconsistent. The message says where."""


@dataclass(frozen=True)
class Client:
    name: str
    roles: frozenset[str]
    token_sha256: str = ""  # hex; empty for a certificate-only client
    certificate_cn: str = ""  # the common name of its TLS client certificate; empty for a token-only client


@dataclass(frozen=True)
class Identity:
    name: str  # a client's name, or "anonymous"; never anything from a request
    roles: frozenset[str]
    key: str  # what stream slots are counted by: the client, or an anonymous caller's address


@dataclass(frozen=True)
class AccessPolicy:
    clients: tuple[Client, ...] = ()
    anonymous_roles: frozenset[str] = frozenset({"display", "ops"})
    max_streams: int = 8
    max_streams_per_client: int = 4
    shadow: bool = False  # appliance.mode "shadow": results go to admin callers only (RESULT_METHODS)

    def __post_init__(self) -> None:
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise AccessError("client names must be unique")
        if not 1 <= self.max_streams_per_client <= self.max_streams:
            raise AccessError("max_streams_per_client must be in [1, max_streams]")
        for roles in [self.anonymous_roles, *(c.roles for c in self.clients)]:
            unknown = set(roles) - set(ROLES)
            if unknown:
                raise AccessError(f"unknown role(s) {', '.join(sorted(unknown))}; roles are {', '.join(ROLES)}")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- the clients file -------------------------------------------------------------------------------------------

def load_clients(path: Path) -> tuple[Client, ...]:
    """Clients from a TOML file of `[[client]]` tables: name, roles, token_sha256 and/or certificate_cn."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise AccessError(f"clients file {path} does not exist (scanside clients add makes it)") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise AccessError(f"clients file {path} cannot be read: {exc}") from None
    unknown = set(raw) - {"client"}
    if unknown:
        raise AccessError(f"clients file {path}: unknown table(s) {', '.join(sorted(unknown))}")
    out = []
    for n, entry in enumerate(raw.get("client", []), start=1):
        where = f"clients file {path}, client {n}"
        if not isinstance(entry, dict):
            raise AccessError(f"{where}: must be a table")
        extra = set(entry) - {"name", "roles", "token_sha256", "certificate_cn"}
        if extra:
            raise AccessError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        name, roles = entry.get("name"), entry.get("roles", [])
        token, cn = entry.get("token_sha256", ""), entry.get("certificate_cn", "")
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            raise AccessError(f"{where}: name must be a printable, non-empty string")
        if not isinstance(roles, list) or not roles or not all(r in ROLES for r in roles):
            raise AccessError(f"{where}: roles must be a non-empty list of {', '.join(ROLES)}")
        if not isinstance(token, str) or (token and (len(token) != 64 or not _is_hex(token))):
            raise AccessError(f"{where}: token_sha256 must be 64 hex digits")
        if not isinstance(cn, str) or not (token or cn):
            raise AccessError(f"{where}: needs token_sha256 or certificate_cn (or both)")
        out.append(Client(name, frozenset(roles), token.lower(), cn))
    return tuple(out)


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
        return True
    except ValueError:
        return False


def save_clients(path: Path, clients: Iterable[Client]) -> None:
    """Write the clients file atomically, 0640 (it names who may read patient data)."""
    lines = ["# ScanSide gRPC clients: written by `scanside clients`; tokens are kept only as SHA-256.", ""]
    for c in clients:
        lines.append("[[client]]")
        lines.append(f"name = {json.dumps(c.name)}")
        lines.append(f"roles = [{', '.join(json.dumps(r) for r in sorted(c.roles))}]")
        if c.token_sha256:
            lines.append(f'token_sha256 = "{c.token_sha256}"')
        if c.certificate_cn:
            lines.append(f"certificate_cn = {json.dumps(c.certificate_cn)}")
        lines.append("")
    write_bytes_atomic(Path(path), "\n".join(lines).encode("utf-8"), mode=PRIVATE_FILE_MODE)


def new_token() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


# --- identifying callers and enforcing roles ----------------------------------------------------------------------

class StreamSlots:
    """Result-stream slots, in all and per caller."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def acquire(self, key: str) -> str | None:
        """None when a slot was taken; otherwise why not."""
        with self._lock:
            if self._held[key] >= self.per_client:
                return (f"this client has {self.per_client} result streams open already (the most one client may "
                        "hold); close one or poll ListResults")
            if sum(self._held.values()) >= self.total:
                return f"{self.total} result streams are open already; close one or poll ListResults"
            self._held[key] += 1
            return None

    def release(self, key: str) -> None:
        with self._lock:
            self._held[key] -= 1
            if self._held[key] <= 0:
                del self._held[key]


class AccessControl(grpc.ServerInterceptor):
    """Identifies the caller of every Appliance call, checks its roles, and counts stream slots."""

    def __init__(self, policy: AccessPolicy, on_denied: Callable[[str, str], None] = lambda method, reason: None):
        self.policy = policy
        self.on_denied = on_denied
        self.streams = StreamSlots(policy.max_streams, policy.max_streams_per_client)
        self.method_roles = method_roles(policy.shadow)
        self._by_token = {c.token_sha256: c for c in policy.clients if c.token_sha256}
        self._by_cn = {c.certificate_cn: c for c in policy.clients if c.certificate_cn}
        self._log = RateLimitedLog(log, seconds=10.0)

    def identify(self, context: grpc.ServicerContext) -> Identity | None:
        """The caller, or None for a token this appliance never issued."""
        token = _bearer(context.invocation_metadata())
        if token is not None:
            digest = hash_token(token)
            for known, client in self._by_token.items():
                if hmac.compare_digest(known, digest):
                    return Identity(client.name, client.roles, f"client:{client.name}")
            return None
        cn = _common_name(context.auth_context())
        if cn is not None and cn in self._by_cn:
            client = self._by_cn[cn]
            return Identity(client.name, client.roles, f"client:{client.name}")
        host = _peer_host(context.peer())
        roles = self.policy.anonymous_roles if host == "local" or is_loopback(host) else frozenset()
        return Identity("anonymous", roles, f"anonymous:{host}")

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        service, _, method = details.method.lstrip("/").partition("/")
        ours = service == SERVICE
        allowed = self.method_roles.get(method, frozenset())
        label = method if ours and method in METHOD_ROLES else "other"

        def admit(context: grpc.ServicerContext) -> Identity:
            # Health and reflection answer everyone; the Appliance service by role.
            return self._authorize(context, label, allowed) if ours else self.identify_or_anonymous(context)

        def checked(inner: Callable) -> Callable:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                admit(context)
                return inner(request, context)
            return call

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(checked(handler.unary_unary), handler.request_deserializer,
                                                       handler.response_serializer)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(checked(handler.stream_unary), handler.request_deserializer,
                                                        handler.response_serializer)
        # Streams that answer over time (result streams, health Watch, reflection sessions) each hold a server
        # thread as long as they are open: every one of them takes a stream slot, whoever calls.
        streaming = handler.unary_stream or handler.stream_stream
        make = (grpc.unary_stream_rpc_method_handler if handler.unary_stream is not None
                else grpc.stream_stream_rpc_method_handler)

        def stream(request: Any, context: grpc.ServicerContext) -> Any:
            identity = admit(context)
            refusal = self.streams.acquire(identity.key)
            if refusal is not None:
                self._deny(context, label, "stream_limit", grpc.StatusCode.RESOURCE_EXHAUSTED, refusal, identity)
            try:
                yield from streaming(request, context)
            finally:
                self.streams.release(identity.key)

        return make(stream, handler.request_deserializer, handler.response_serializer)

    def identify_or_anonymous(self, context: grpc.ServicerContext) -> Identity:
        """For the calls open to everyone: an unknown token counts as no token (it is not refused there)."""
        identity = self.identify(context)
        if identity is None:
            host = _peer_host(context.peer())
            return Identity("anonymous", frozenset(), f"anonymous:{host}")
        return identity

    def _authorize(self, context: grpc.ServicerContext, method: str, allowed: frozenset[str]) -> Identity:
        identity = self.identify(context)
        if identity is None:
            self._deny(context, method, "unauthenticated", grpc.StatusCode.UNAUTHENTICATED,
                       "the bearer token is not one this appliance issued", None)
        if "admin" in identity.roles or identity.roles & allowed:
            return identity
        need = " or ".join(sorted(allowed | {"admin"}))
        why = (" (the appliance is in shadow mode: results are scored and sealed but shown to admin only)"
               if self.policy.shadow and method in RESULT_METHODS else "")
        self._deny(context, method, "permission_denied", grpc.StatusCode.PERMISSION_DENIED,
                   f"{method} needs the role {need}; this caller ({identity.name}) has "
                   f"{', '.join(sorted(identity.roles)) or 'none'}{why}", identity)

    def _deny(self, context: grpc.ServicerContext, method: str, reason: str, code: grpc.StatusCode, message: str,
              identity: Identity | None) -> NoReturn:
        self.on_denied(method if method in METHOD_ROLES else "other", reason)
        who = identity.name if identity is not None else "a caller with an unknown token"
        where = _peer_host(context.peer())
        self._log.warning(f"{reason}:{method}", "gRPC %s refused (%s) to %s from %s", method, reason, who, where)
        context.abort(code, message)
        raise AssertionError("context.abort returned")  # it raises; this keeps the type checker honest


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def _common_name(auth: dict[str, list[bytes]] | None) -> str | None:
    values = (auth or {}).get("x509_common_name") or []
    return values[0].decode("utf-8", "replace") if values else None


def _peer_host(peer: str) -> str:
    """ "ipv4:10.0.0.5:51234" -> "10.0.0.5"; "ipv6:[::1]:5" -> "::1"."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:].split("]", 1)[0]
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "unix":
        return "local"
    return kind or "unknown"


__all__ = [
    "METHOD_ROLES",
    "RESULT_METHODS",
    "ROLES",
    "AccessControl",
    "AccessError",
    "AccessPolicy",
    "Client",
    "Identity",
    "hash_token",
    "identity_withheld",
    "load_clients",
    "method_roles",
    "new_token",
    "save_clients",
]

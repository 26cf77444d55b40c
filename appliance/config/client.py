"""Where this host's gRPC commands find the appliance a configuration file describes: the address, TLS and token
(from [client], else derived from [grpc]), with a command's own flags over them; and the metrics URL (from
[metrics])."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from appliance.config.sections import ClientConfig, ConfigError, Settings

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "::1"}


@dataclass(frozen=True)
class GrpcTarget:
    address: str  # host:port
    tls_ca: Path | None  # set: TLS, the appliance's certificate verified against it
    tls_cert: Path | None
    tls_key: Path | None
    server_name: str | None
    token_file: Path | None


def reachable(host: str, port: int) -> str:
    """host:port to connect to a listener bound to `host`: a wildcard address is reached on loopback."""
    host = _WILDCARDS.get(host, host)
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


def grpc_target(s: Settings, c: ClientConfig | None = None) -> GrpcTarget:
    """[client] (`c`; None: the one read with `s`, Settings.client) where set; else the [grpc] listener,
    with its own certificate as the trust anchor (a self-signed certificate, or a chain file holding its CA; set
    client.tls_ca otherwise)."""
    c, g = c or s.client, s.grpc
    tls_ca = c.tls_ca if c.tls_ca is not None else g.tls_cert
    return GrpcTarget(c.address or reachable(g.host, g.port), tls_ca, c.tls_cert, c.tls_key, c.server_name or None,
                      c.token_file)


@dataclass(frozen=True)
class Connection:
    """A GrpcTarget with every flag applied and the token read: what an ApplianceClient is built from."""
    address: str
    tls_ca: Path | None
    tls_cert: Path | None
    tls_key: Path | None
    server_name: str | None
    token: str | None


def connection(base: GrpcTarget, *, address: str | None = None, tls_ca: Path | None = None,
               tls_cert: Path | None = None, tls_key: Path | None = None, server_name: str | None = None,
               token_file: str | os.PathLike[str] | None = None,
               env: Mapping[str, str] | None = None) -> Connection:
    """`base` (what the configuration says) with a command's flags over it. The token: --token-file, else the
    SCANSIDE_TOKEN environment variable, else the configuration's token_file (the environment overrides the file, as
    it does for every other setting). Raises ConfigError saying what is wrong."""
    env = os.environ if env is None else env
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if tls_cert is None:
        tls_cert, tls_key = base.tls_cert, base.tls_key
    token_file = token_file or (None if env.get("SCANSIDE_TOKEN") else base.token_file)
    token = None
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"token file {token_file} cannot be read: {exc.strerror or exc}") from None
    elif env.get("SCANSIDE_TOKEN"):
        token = env["SCANSIDE_TOKEN"].strip()
    return Connection(address or base.address, tls_ca or base.tls_ca, tls_cert, tls_key,
                      server_name or base.server_name, token)


def metrics_url(s: Settings) -> str | None:
    """The Prometheus endpoint, or None when [metrics] is off."""
    m = s.metrics
    return f"http://{reachable(m.host, m.port)}/metrics" if m.enabled else None

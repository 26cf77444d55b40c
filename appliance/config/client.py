"""Where this host's gRPC commands find the appliance a configuration file describes: the address, TLS and token
(from [client], else derived from [grpc]), and the metrics URL (from [metrics])."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.config.sections import ClientConfig, Settings

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


def metrics_url(s: Settings) -> str | None:
    """The Prometheus endpoint, or None when [metrics] is off."""
    m = s.metrics
    return f"http://{reachable(m.host, m.port)}/metrics" if m.enabled else None

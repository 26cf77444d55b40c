"""Where the Triton backend finds its server and how patiently it talks to it: the [triton] settings as the
inference room sees them (no tritonclient import, so BackendOptions can carry them on any box)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TritonTarget:
    url: str  # host:port of the gRPC endpoint
    model_name: str = "scanside_encoder"
    model_version: str = ""  # "": the server's version policy picks; each answer says which version ran
    timeout_s: float = 10.0  # one inference request
    health_timeout_s: float = 5.0  # each start-up check
    retries: int = 2  # further tries of a request that failed for a reason that can pass
    retry_backoff_s: float = 0.5  # before the first retry; doubles
    recheck_s: float = 30.0  # after a batch fell back to local ONNX Runtime: Triton skipped this long
    verify_min_cosine: float = 0.999  # start-up probe against local ONNX Runtime
    tls_ca: Path | None = None  # set: TLS, the server's certificate checked against it
    tls_cert: Path | None = None  # mutual TLS
    tls_key: Path | None = None
    fallback_to_onnxruntime: bool = True  # a batch Triton fails after its retries runs locally instead of failing

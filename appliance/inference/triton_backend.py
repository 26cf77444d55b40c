"""Triton backend: the encoder runs on a Triton Inference Server, over KServe v2 gRPC (tritonclient), behind the
same protocol as ONNX Runtime.

At start (all on the calling thread, so create_backend's fallback catches every refusal):

- server live, server ready, model ready (the pinned version, or whichever the server's policy serves), each with
  triton.health_timeout_s; a model that is not ready is named with the state and reason the repository index gives;
- the model's metadata and configuration against the bundle: one FP32 input of the bundle's name and shape
  (N, T, C, H, W), one FP32 output (N, D); a `scanside_onnx_sha256` parameter (`scanside triton-repo` writes it)
  must name the bundle's encoder;
- a probe batch through Triton against local ONNX Runtime: a model that does not compute the bundle's encoder
  (cosine below triton.verify_min_cosine) is refused, because its embeddings would be scored against this bundle's
  label bank.

Each request has triton.timeout_s; one that fails for a reason that can pass (unavailable, deadline exceeded,
resource exhausted, aborted, internal, unknown) is tried again up to triton.retries times with a doubling pause.
A batch that still fails runs on local ONNX Runtime (fallback_to_onnxruntime, the default): its results say
"onnxruntime", GetModelInfo's backend note and scanside_triton_up say Triton is out, and for triton.recheck_s the
next batches go straight to ONNX Runtime before Triton is tried again. Without the fallback the batch fails: its
series are marked failed at the inference stage and their images set aside, as for any engine failure.

Every answer carries the model name and the version that computed it; each result records them as its backend,
"triton:<model>/<version>".
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from appliance.bundle import Bundle
from appliance.inference.backend import BackendError, EngineTag, as_batch
from appliance.inference.onnxruntime_backend import OnnxRuntimeBackend
from appliance.inference.triton_options import TritonTarget

if TYPE_CHECKING:
    from appliance.inference import BackendOptions

log = logging.getLogger(__name__)

T = TypeVar("T")

# gRPC status codes (as tritonclient spells them) after which the same request may well succeed: the server is
# restarting or overloaded, the network dropped, the Python backend's stub was restarted. Anything else (invalid
# argument, not found, unauthenticated, ...) is the same on every try.
TRANSIENT = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED",
                       "StatusCode.ABORTED", "StatusCode.INTERNAL", "StatusCode.UNKNOWN"})
SHA256_PARAMETER = "scanside_onnx_sha256"  # written by `scanside triton-repo`: the encoder the model serves
PRECISION_PARAMETER = "scanside_precision"  # fp32 | fp16, written by `scanside triton-repo`
PROBE_SEED = 20261204


class TritonUnavailable(BackendError):
    """tritonclient is missing, or the server or the model cannot be reached or is not ready."""


class TritonModelMismatch(BackendError):
    """The server's model is not the bundle's encoder (signature, hash or numbers)."""


class TritonRequestFailed(BackendError):
    """One inference request failed after its tries; `status` is the gRPC status ("" for a client-side error)."""

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        self.status = status


def tritonclient_installed() -> bool:
    return importlib.util.find_spec("tritonclient") is not None


def import_client() -> tuple[Any, type[Exception]]:
    """(tritonclient.grpc, InferenceServerException), or TritonUnavailable saying what to install."""
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError as exc:
        raise TritonUnavailable(f"Triton client not installed ({exc}): pip install 'scanside[triton]' "
                                "(tritonclient)") from exc
    return grpcclient, InferenceServerException


@dataclass
class TritonStats:
    """What scanside_triton_* export, read at scrape time."""

    up: bool = False  # the last exchange with the server succeeded
    requests: dict[str, int] = field(default_factory=lambda: {"ok": 0, "retried": 0, "failed": 0})
    local_batches: int = 0  # batches run on local ONNX Runtime because Triton failed them
    model: str = ""
    model_version: str = ""  # of the last answer
    server_version: str = ""


class TritonBackend:
    name = "triton"

    def __init__(self, bundle: Bundle, target: TritonTarget, max_batch: int = 8,
                 local: OnnxRuntimeBackend | None = None, intra_op_threads: int = 0) -> None:
        """Connect, check health, signature and numbers; TritonUnavailable or TritonModelMismatch (BackendErrors)
        say why not. `local`: the ONNX Runtime backend used for the start-up comparison and as the fallback (made
        from the bundle if not given)."""
        if not isinstance(max_batch, int) or max_batch < 1:
            raise BackendError(f"max_batch must be a positive integer, got {max_batch!r}")
        self._gc, self._error_type = import_client()
        self._target = target
        self._bundle = bundle
        self._input, self._output = bundle.input_name, bundle.output_name
        self._sample_shape = tuple(bundle.sample_shape)
        self._dim = bundle.embedding_dim
        self._lock = threading.Lock()
        self._stats = TritonStats(model=target.model_name)
        self._degraded = ""  # why batches run locally now; "" while Triton serves
        self._local_until = 0.0  # monotonic time before which batches skip Triton
        self._start_note: str | None = None
        self._closed = False
        self._client = self._connect()
        self._local: OnnxRuntimeBackend | None = None
        try:
            server_version = self._check_health()
            config = self._check_model()
            self._fixed_batch = self._batch_rule(config)
            self.max_batch = self._fixed_batch or (min(max_batch, config.max_batch_size) if config.max_batch_size > 0
                                                   else max_batch)
            params = {k: v.string_value for k, v in config.parameters.items()}
            self.precision = params.get(PRECISION_PARAMETER) or (
                "fp32" if (config.backend or config.platform) in ("onnxruntime", "onnxruntime_onnx", "python")
                else "unknown")
            self._check_hash(params)
            self._local = local if local is not None else OnnxRuntimeBackend(
                bundle, intra_op_threads=intra_op_threads, max_batch=self.max_batch)
            version = self._verify()
        except BaseException:
            self._client.close()
            raise
        self._stats.server_version = server_version
        self._stats.model_version = version
        self._stats.up = True
        self.version = f"{server_version} ({target.model_name}/{version})"
        self.engine_info = {"triton_url": target.url, "triton_model": target.model_name, "triton_model_version":
                            version, "triton_server_version": server_version,
                            "triton_platform": config.backend or config.platform,
                            "triton_max_batch": str(self.max_batch), "tls": "on" if target.tls_ca else "off"}
        log.info("Triton %s at %s: model %s version %s (%s, %s, batch <= %d) verified against ONNX Runtime",
                 server_version, target.url, target.model_name, version, config.backend or config.platform,
                 self.precision, self.max_batch)

    # --- start-up checks -----------------------------------------------------------------------------------------

    def _connect(self) -> Any:
        t = self._target
        try:
            if t.tls_ca is not None:
                return self._gc.InferenceServerClient(
                    t.url, ssl=True, root_certificates=str(t.tls_ca),
                    private_key=str(t.tls_key) if t.tls_key else None,
                    certificate_chain=str(t.tls_cert) if t.tls_cert else None)
            return self._gc.InferenceServerClient(t.url)
        except (OSError, ValueError) as exc:  # an unreadable certificate file, a malformed url
            raise TritonUnavailable(f"Triton at {t.url}: cannot set up the client: {exc}") from exc

    def _ask(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except self._error_type as exc:
            raise TritonUnavailable(f"Triton at {self._target.url} is not reachable ({what}): "
                                    f"{_describe(exc)}") from exc

    def _check_health(self) -> str:
        t, c, timeout = self._target, self._client, self._target.health_timeout_s
        if not self._ask("server live", lambda: c.is_server_live(client_timeout=timeout)):
            raise TritonUnavailable(f"Triton at {t.url} is not live")
        if not self._ask("server ready", lambda: c.is_server_ready(client_timeout=timeout)):
            raise TritonUnavailable(f"Triton at {t.url} is live but not ready (still loading models?)")
        if not self._ask("model ready", lambda: c.is_model_ready(t.model_name, t.model_version,
                                                                   client_timeout=timeout)):
            raise TritonUnavailable(f"Triton at {t.url}: model {self._model_label()} is not ready: "
                                    f"{self._index_state()}")
        meta = self._ask("server metadata", lambda: c.get_server_metadata(client_timeout=timeout))
        return str(meta.version)

    def _model_label(self) -> str:
        t = self._target
        return f"{t.model_name!r}" + (f" version {t.model_version}" if t.model_version else "")

    def _index_state(self) -> str:
        """What the repository index says of the model: its versions' states and reasons."""
        try:
            index = self._client.get_model_repository_index(client_timeout=self._target.health_timeout_s)
        except self._error_type as exc:
            return f"(repository index not readable: {_describe(exc)})"
        states = [f"version {m.version or '?'} {m.state or 'unknown'}" + (f" ({m.reason})" if m.reason else "")
                  for m in index.models if m.name == self._target.model_name]
        if not states:
            others = sorted({m.name for m in index.models})
            return f"the server has no such model (it has: {', '.join(others) or 'none'})"
        return "; ".join(states)

    def _check_model(self) -> Any:
        t, c, timeout = self._target, self._client, self._target.health_timeout_s
        meta = self._ask("model metadata", lambda: c.get_model_metadata(t.model_name, t.model_version,
                                                                         client_timeout=timeout))
        config = self._ask("model config", lambda: c.get_model_config(t.model_name, t.model_version,
                                                                       client_timeout=timeout)).config
        where = f"Triton model {self._model_label()} at {t.url}"
        inputs = {i.name: i for i in meta.inputs}
        outputs = {o.name: o for o in meta.outputs}
        if list(inputs) != [self._input]:
            raise TritonModelMismatch(f"{where}: inputs {sorted(inputs)}, the bundle feeds one named {self._input!r}")
        if self._output not in outputs:
            raise TritonModelMismatch(f"{where}: no output {self._output!r} (it has {sorted(outputs)})")
        inp, out = inputs[self._input], outputs[self._output]
        for tensor in (inp, out):
            if tensor.datatype != "FP32":
                raise TritonModelMismatch(f"{where}: {tensor.name!r} is {tensor.datatype}, the bundle needs FP32")
        shape, oshape = list(inp.shape), list(out.shape)
        if len(shape) != 1 + len(self._sample_shape) or tuple(shape[1:]) != self._sample_shape:
            raise TritonModelMismatch(f"{where}: input shape {shape}, the bundle needs "
                                      f"[N, {', '.join(map(str, self._sample_shape))}]")
        if len(oshape) != 2 or oshape[1] != self._dim:
            raise TritonModelMismatch(f"{where}: output shape {oshape}, the bundle needs [N, {self._dim}]")
        self._meta_batch = int(shape[0])
        return config

    def _batch_rule(self, config: Any) -> int | None:
        """The model's fixed batch size (no batching in Triton and a fixed first dimension), else None."""
        if config.max_batch_size > 0 or self._meta_batch < 1:
            return None
        return self._meta_batch

    def _check_hash(self, params: dict[str, str]) -> None:
        claimed = params.get(SHA256_PARAMETER, "")
        want = self._bundle.files.get(str(self._bundle.manifest.get("encoder", "")), "")
        if claimed and want and claimed != want:
            raise TritonModelMismatch(
                f"Triton model {self._model_label()} at {self._target.url} serves encoder sha256 {claimed[:16]}..., "
                f"bundle {self._bundle.name} {self._bundle.version} has {want[:16]}...: write its repository again "
                "with `scanside triton-repo`")

    def _verify(self) -> str:
        """Run a fixed probe through Triton and ONNX Runtime; refuse the model if they disagree. Returns the model
        version that answered."""
        assert self._local is not None
        n = min(2, self.max_batch)
        probe = np.random.default_rng(PROBE_SEED).random((n, *self._sample_shape), dtype=np.float32)
        try:
            remote, version = self._request(probe)
        except TritonRequestFailed as exc:
            raise TritonUnavailable(f"Triton at {self._target.url}: the start-up probe failed: {exc}") from exc
        local = self._local.infer(probe)
        cos = np.sum(remote * local, axis=1) / np.maximum(
            np.linalg.norm(remote, axis=1) * np.linalg.norm(local, axis=1), 1e-12)
        worst = float(np.min(cos))
        diff = float(np.max(np.abs(remote - local)))
        log.info("Triton probe against ONNX Runtime: min cosine %.6f, max |diff| %.2e", worst, diff)
        if not worst >= self._target.verify_min_cosine:  # NaN fails too
            raise TritonModelMismatch(
                f"Triton model {self._model_label()} at {self._target.url} does not compute bundle "
                f"{self._bundle.name} {self._bundle.version}'s encoder: min cosine {worst:.4f} against ONNX Runtime "
                f"(triton.verify_min_cosine {self._target.verify_min_cosine})")
        return version

    # --- requests -----------------------------------------------------------------------------------------------

    def _request(self, chunk: np.ndarray) -> tuple[np.ndarray, str]:
        """One inference request with its retries: ((m, D) float32, the model version that answered)."""
        t, gc = self._target, self._gc
        m = chunk.shape[0]
        if self._fixed_batch and m < self._fixed_batch:
            chunk = np.concatenate([chunk, np.zeros((self._fixed_batch - m, *chunk.shape[1:]), np.float32)])
        inp = gc.InferInput(self._input, list(chunk.shape), "FP32")
        inp.set_data_from_numpy(chunk)
        wanted = [gc.InferRequestedOutput(self._output)]
        pause = t.retry_backoff_s
        for attempt in range(t.retries + 1):
            try:
                result = self._client.infer(t.model_name, [inp], model_version=t.model_version, outputs=wanted,
                                            client_timeout=t.timeout_s)
                return self._answer(result, m)
            except self._error_type as exc:
                status = str(exc.status() or "")  # type: ignore[attr-defined]
                if status not in TRANSIENT or attempt == t.retries:
                    with self._lock:
                        self._stats.requests["failed"] += 1
                    tries = f"after {attempt + 1} tries" if attempt else "at the first try"
                    raise TritonRequestFailed(f"Triton at {t.url} failed a batch of {m} {tries}: {_describe(exc)}",
                                              status) from exc
                with self._lock:
                    self._stats.requests["retried"] += 1
                log.warning("Triton at %s: a batch of %d failed (%s); trying again in %.2g s", t.url, m,
                            status.removeprefix("StatusCode."), pause)
                time.sleep(pause)
                pause *= 2
        raise AssertionError("unreachable")  # the loop returns or raises

    def _answer(self, result: Any, m: int) -> tuple[np.ndarray, str]:
        t = self._target
        response = result.get_response()
        out = result.as_numpy(self._output)
        if out is None or out.ndim != 2 or out.shape[1] != self._dim or out.shape[0] < m:
            raise TritonRequestFailed(f"Triton at {t.url} answered shape {None if out is None else out.shape}, "
                                      f"expected ({m}, {self._dim})")
        version = str(response.model_version)
        if response.model_name != t.model_name or (t.model_version and version != t.model_version):
            raise TritonRequestFailed(f"Triton at {t.url} answered from model {response.model_name!r} version "
                                      f"{version}, asked {self._model_label()}")
        with self._lock:
            self._stats.requests["ok"] += 1
        return np.array(out[:m], dtype=np.float32), version

    # --- the protocol -------------------------------------------------------------------------------------------

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.infer_tagged(batch)[0]

    def infer_tagged(self, batch: np.ndarray) -> tuple[np.ndarray, tuple[EngineTag, ...]]:
        """Embeddings and, per row, what computed it: Triton's model and version, or local ONNX Runtime."""
        if self._closed:
            raise BackendError("backend is closed")
        x = as_batch(batch, self._sample_shape)
        if x.shape[0] == 0:
            return np.empty((0, self._dim), dtype=np.float32), ()
        parts: list[np.ndarray] = []
        tags: list[EngineTag] = []
        for i in range(0, x.shape[0], self.max_batch):
            chunk = x[i: i + self.max_batch]
            out, tag = self._chunk(chunk)
            parts.append(out)
            tags.extend([tag] * chunk.shape[0])
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return np.ascontiguousarray(out, dtype=np.float32), tuple(tags)

    def _chunk(self, chunk: np.ndarray) -> tuple[np.ndarray, EngineTag]:
        if self._target.fallback_to_onnxruntime and time.monotonic() < self._local_until:
            return self._run_local(chunk)
        try:
            out, version = self._request(chunk)
        except TritonRequestFailed as exc:
            with self._lock:
                self._stats.up = False
            if not self._target.fallback_to_onnxruntime:
                raise
            self._degrade(str(exc))
            return self._run_local(chunk)
        self._recover(version)
        return out, EngineTag(f"triton:{self._target.model_name}/{version}", self.precision)

    def _run_local(self, chunk: np.ndarray) -> tuple[np.ndarray, EngineTag]:
        assert self._local is not None
        out = self._local.infer(chunk)
        with self._lock:
            self._stats.local_batches += 1
        return out, EngineTag(self._local.name, self._local.precision)

    def _degrade(self, reason: str) -> None:
        with self._lock:
            first = not self._degraded
            self._degraded = f"Triton out since {time.strftime('%H:%M:%S')}, batches on local ONNX Runtime: {reason}"
            self._local_until = time.monotonic() + self._target.recheck_s
        if first:
            log.error("%s; local ONNX Runtime scores the series meanwhile (Triton tried again every %g s)", reason,
                      self._target.recheck_s)

    def _recover(self, version: str) -> None:
        with self._lock:
            was, self._degraded = self._degraded, ""
            self._stats.up = True
            self._stats.model_version = version
        if was:
            log.warning("Triton at %s answers again (model %s version %s): batches go to it", self._target.url,
                        self._target.model_name, version)

    @property
    def fallback_reason(self) -> str | None:
        """Why results come from local ONNX Runtime now (GetModelInfo's backend note), or None while Triton serves."""
        with self._lock:
            return self._degraded or self._start_note

    @fallback_reason.setter
    def fallback_reason(self, value: str | None) -> None:  # create_backend clears it for a backend that started
        self._start_note = value

    def stats(self) -> TritonStats:
        with self._lock:
            return TritonStats(self._stats.up, dict(self._stats.requests), self._stats.local_batches,
                               self._stats.model, self._stats.model_version, self._stats.server_version)

    def warm_up(self) -> None:
        """Batch 1 and the largest batch through Triton (its queue and instances) and through the local fallback."""
        assert self._local is not None
        for n in sorted({1, self.max_batch}):
            self.infer(np.zeros((n, *self._sample_shape), dtype=np.float32))
        self._local.warm_up()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close()
        except Exception as exc:  # closing a broken channel must not stop the shutdown
            log.warning("closing the Triton client failed: %s", exc)
        if self._local is not None:
            self._local.close()

    def __repr__(self) -> str:
        return f"TritonBackend(url={self._target.url!r}, model={self._target.model_name!r}, max_batch={self.max_batch})"


def _describe(exc: BaseException) -> str:
    """tritonclient's exception as one line: status and message, without the gRPC debug string (which repeats it)."""
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None)
    s = status() if callable(status) else None
    m = message() if callable(message) else str(exc)
    text = f"[{str(s).removeprefix('StatusCode.')}] {m}" if s else str(m)
    return " ".join(text.split())


def available() -> bool:
    return tritonclient_installed()


def create(bundle: Bundle, options: BackendOptions) -> TritonBackend:
    if options.triton is None or not options.triton.url:
        raise TritonUnavailable('backend "triton" needs triton.url (host:port of the server\'s gRPC endpoint)')
    return TritonBackend(bundle, options.triton, max_batch=options.max_batch,
                         intra_op_threads=options.intra_op_threads)


__all__ = ["SHA256_PARAMETER", "TritonBackend", "TritonModelMismatch", "TritonRequestFailed", "TritonStats",
           "TritonUnavailable", "import_client", "tritonclient_installed"]

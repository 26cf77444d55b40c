"""Inference backends behind one protocol, chosen by name from configuration.

- "onnxruntime": ONNX Runtime on the CPU (FP32), the reference every other backend is compared against.
- "tensorrt":    a TensorRT plan built on this GPU by build_engine.py (FP16). If it cannot be used (no TensorRT, no
                 GPU, no matching or a corrupted plan), start-up fails with the reason, or, with
                 fallback_to_onnxruntime, logs the reason and runs ONNX Runtime instead.
- "auto":        TensorRT when TensorRT, a GPU and a matching plan are all present; otherwise ONNX Runtime, with the
                 reason logged. On a machine without TensorRT this costs one import lookup.
- "triton":      a Triton Inference Server over KServe v2 gRPC (triton_backend.py, [triton]); if it is unreachable,
                 not ready or not serving the bundle's encoder at start, start-up fails or, with
                 fallback_to_onnxruntime, ONNX Runtime runs instead, as for TensorRT. Never chosen by "auto".

A backend that stands in for the one asked for carries the reason in `fallback_reason` (None otherwise), so the
service can log it, export it as a metric and show it in GetModelInfo.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.bundle import Bundle
from appliance.inference.backend import BackendError, InferenceBackend
from appliance.inference.onnxruntime_backend import OnnxRuntimeBackend
from appliance.inference.triton_options import TritonTarget

log = logging.getLogger(__name__)

# kind -> the module that builds it, with `create(bundle, options) -> InferenceBackend` and `available() -> bool`
# (whether its runtime is installed here). A module is imported only when its kind is configured, so a GPU library
# never loads on a CPU box. A new backend is one module and one line here.
BACKENDS: dict[str, str] = {
    "onnxruntime": "appliance.inference.onnxruntime_backend",
    "tensorrt": "appliance.inference.tensorrt_backend",
    "triton": "appliance.inference.triton_backend",
}
REFERENCE = "onnxruntime"  # the CPU backend every other one falls back to and is compared against
AUTO = "tensorrt"  # what "auto" tries first, where its runtime is installed
BACKEND_KINDS = ("auto", *BACKENDS)


@dataclass(frozen=True)
class BackendOptions:
    """What any backend may need to know; each one reads its own fields."""

    max_batch: int = 8  # series per inference call (backends split larger batches themselves)
    intra_op_threads: int = 0  # ONNX Runtime threads (0: its default)
    plan_dirs: tuple[Path, ...] = ()  # where TensorRT plans live, in order
    min_max_batch: int = 1  # refuse TensorRT plans whose profile accepts fewer
    device: int = 0  # GPU index
    triton: TritonTarget | None = None  # the server, for backend "triton"


def _module(kind: str) -> Any:
    return importlib.import_module(BACKENDS[kind])


def _plan_dirs(bundle: Bundle, plan_dir: str | Path | None) -> tuple[Path, ...]:
    # A configured plan folder (e.g. a writable volume) first, then the bundle's own folder.
    dirs = [Path(plan_dir)] if plan_dir else []
    if bundle.root not in dirs:
        dirs.append(bundle.root)
    return tuple(dirs)


def create_backend(kind: str, bundle: Bundle, *, max_batch: int = 8, intra_op_threads: int = 0,
                   plan_dir: str | Path | None = None, trt_max_batch: int = 0,
                   fallback_to_onnxruntime: bool = False, device: int = 0,
                   triton: TritonTarget | None = None) -> InferenceBackend:
    """Build the backend `kind` for `bundle`.

    plan_dir: where TensorRT plans live besides the bundle folder.
    trt_max_batch: refuse TensorRT plans whose profile accepts fewer than this (0: max_batch).
    fallback_to_onnxruntime: for any other kind, run ONNX Runtime (and say why) instead of failing.
    triton: the server for kind "triton" (its own fallback_to_onnxruntime rules batches that fail mid-run).
    """
    k = kind.strip().lower()
    if k not in BACKEND_KINDS:
        raise BackendError(f"unknown inference backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")
    options = BackendOptions(max_batch=max_batch, intra_op_threads=intra_op_threads,
                             plan_dirs=_plan_dirs(bundle, plan_dir),
                             min_max_batch=trt_max_batch if trt_max_batch > 0 else max_batch, device=device,
                             triton=triton)

    def reference(reason: str | None) -> InferenceBackend:
        backend = _module(REFERENCE).create(bundle, options)
        backend.fallback_reason = reason
        return backend

    if k == REFERENCE:
        return reference(None)
    target = AUTO if k == "auto" else k
    if k == "auto" and not _module(target).available():
        log.info("backend auto: ONNX Runtime (TensorRT is not installed)")
        return reference(None)
    try:
        backend = _module(target).create(bundle, options)
    except BackendError as exc:
        if k == "auto":
            log.warning("backend auto: ONNX Runtime, because %s cannot be used: %s", target, exc)
            return reference(f"auto: {_first_line(exc)}")
        if fallback_to_onnxruntime:
            log.error("backend %s refused, falling back to ONNX Runtime (engine.fallback_to_onnxruntime): %s",
                      target, exc)
            return reference(_first_line(exc))
        raise
    backend.fallback_reason = None
    return backend


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def describe_backend(backend: Any) -> dict[str, str]:
    """Labels for an info metric / log line: name, precision, version, and for TensorRT the plan it runs."""
    out = {"backend": str(getattr(backend, "name", "?")), "precision": str(getattr(backend, "precision", "?")),
           "version": str(getattr(backend, "version", "?")),
           "fallback_reason": str(getattr(backend, "fallback_reason", None) or "")}
    out.update({k: str(v) for k, v in (getattr(backend, "engine_info", None) or {}).items()})
    return out


__all__ = ["BACKENDS", "BACKEND_KINDS", "BackendError", "BackendOptions", "InferenceBackend", "OnnxRuntimeBackend",
           "TritonTarget", "create_backend", "describe_backend"]


def __getattr__(name: str) -> Any:  # lazy: `from appliance.inference import TensorRTBackend` without importing TRT
    if name == "TensorRTBackend":
        from appliance.inference.tensorrt_backend import TensorRTBackend

        return TensorRTBackend
    raise AttributeError(name)


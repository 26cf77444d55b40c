"""Inference backends behind one protocol, chosen by name from configuration."""

from __future__ import annotations

from typing import Any

from appliance.bundle import Bundle
from appliance.inference.backend import BackendError, InferenceBackend
from appliance.inference.onnxruntime_backend import OnnxRuntimeBackend

BACKEND_KINDS = ("auto", "onnxruntime", "tensorrt")


def create_backend(kind: str, bundle: Bundle, **opts: Any) -> InferenceBackend:
    """Build the backend `kind` for `bundle`; `opts` go to its constructor (e.g. max_batch, intra_op_threads)."""
    k = kind.strip().lower()
    if k in ("auto", "onnxruntime"):
        # "auto" will prefer TensorRT once it exists and a GPU is present; ONNX Runtime is the only backend now.
        return OnnxRuntimeBackend(bundle, **opts)
    if k == "tensorrt":
        raise BackendError("the TensorRT backend is not available in this build yet; use 'onnxruntime' or 'auto'")
    raise BackendError(f"unknown inference backend {kind!r}; choose one of {', '.join(BACKEND_KINDS)}")


__all__ = ["BACKEND_KINDS", "BackendError", "InferenceBackend", "OnnxRuntimeBackend", "create_backend"]

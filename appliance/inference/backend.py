"""The seam between the service and whatever runs the encoder (ONNX Runtime now, TensorRT on the GPU appliance)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class BackendError(RuntimeError):
    """The backend cannot be built for this bundle or failed to run it; the message says which and why."""


@runtime_checkable
class InferenceBackend(Protocol):
    name: str  # e.g. "onnxruntime"; stored with every result
    precision: str  # e.g. "fp32"
    version: str  # version of the runtime library
    max_batch: int  # larger batches are split by the backend itself
    fallback_reason: str | None  # set by create_backend: why this runs instead of the backend asked for

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """(N, T, C, H, W) float32 -> (N, D) float32 embeddings, one row per input."""
        ...

    def warm_up(self) -> None:
        """Run dummy batches so the first real study does not pay for lazy initialisation."""
        ...

    def close(self) -> None: ...


def as_batch(batch: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
    """The batch as contiguous float32 (N, *sample_shape), or BackendError saying what shape it has instead."""
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 1 + len(sample_shape) or x.shape[1:] != tuple(sample_shape):
        raise BackendError(f"batch must be (N, {', '.join(map(str, sample_shape))}), got {np.shape(batch)}")
    return x


@dataclass(frozen=True, slots=True)
class EngineTag:
    """What computed one embedding, as its result records it: the backend ("onnxruntime", "tensorrt", or for a
    remote server its model and the version that answered, "triton:scanside_encoder/1") and the precision."""

    backend: str
    precision: str


def infer_tagged(backend: InferenceBackend, batch: np.ndarray) -> tuple[np.ndarray, tuple[EngineTag, ...]]:
    """Embeddings and, per row, what computed it. A backend whose engine can change between calls (a Triton server
    answering with another model version, or local ONNX Runtime standing in for it) has `infer_tagged` itself; for
    the others every row is the backend's own name and precision."""
    tagged = getattr(backend, "infer_tagged", None)
    if tagged is not None:
        out, tags = tagged(batch)
        return out, tuple(tags)
    out = backend.infer(batch)
    return out, (EngineTag(str(backend.name), str(backend.precision)),) * len(out)

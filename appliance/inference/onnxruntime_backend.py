"""CPU inference with ONNX Runtime: the reference backend every other backend is compared against."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from appliance.bundle import Bundle
from appliance.inference.backend import BackendError, as_batch

if TYPE_CHECKING:
    from appliance.inference import BackendOptions


class OnnxRuntimeBackend:
    name = "onnxruntime"
    fallback_reason: str | None = None
    precision = "fp32"
    version: str = ort.__version__

    def __init__(self, bundle: Bundle, intra_op_threads: int = 0, max_batch: int = 8) -> None:
        if not isinstance(max_batch, int) or max_batch < 1:
            raise BackendError(f"max_batch must be a positive integer, got {max_batch!r}")
        if not isinstance(intra_op_threads, int) or intra_op_threads < 0:
            raise BackendError(f"intra_op_threads must be >= 0 (0 = ONNX Runtime default), got {intra_op_threads!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.log_severity_level = 3  # warnings about unused initialisers etc. are noise in the service log
        try:
            self._session: ort.InferenceSession | None = ort.InferenceSession(
                str(bundle.encoder_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, NoSuchFile, ...)
            raise BackendError(f"ONNX Runtime cannot load {bundle.encoder_path}: {exc}") from exc
        self._bundle = bundle
        self._input = bundle.input_name
        self._output = bundle.output_name
        self._sample_shape = bundle.sample_shape
        self._dim = bundle.embedding_dim
        self._fixed_batch = self._validate(self._session, bundle)
        self.max_batch = self._fixed_batch or max_batch

    @staticmethod
    def _validate(session: ort.InferenceSession, bundle: Bundle) -> int | None:
        """Check the graph against the manifest; return the graph's fixed batch size, if it has one."""
        where = f"encoder {bundle.encoder_path.name} of bundle {bundle.name}"
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name: o for o in session.get_outputs()}
        if bundle.input_name not in inputs:
            raise BackendError(f"{where}: has no input {bundle.input_name!r} (graph inputs: {sorted(inputs)})")
        extra = sorted(set(inputs) - {bundle.input_name})
        if extra:
            raise BackendError(f"{where}: needs inputs {extra} that the manifest does not describe")
        if bundle.output_name not in outputs:
            raise BackendError(f"{where}: has no output {bundle.output_name!r} (graph outputs: {sorted(outputs)})")
        inp, out = inputs[bundle.input_name], outputs[bundle.output_name]
        if inp.type != "tensor(float)":
            raise BackendError(f"{where}: input {inp.name!r} is {inp.type}, expected tensor(float)")
        if len(inp.shape) != 5:
            raise BackendError(
                f"{where}: input {inp.name!r} has rank {len(inp.shape)}, manifest says 5 (N, T, C, H, W)"
            )
        # Symbolic (str/None) dims accept any size, so only concrete ones can disagree.
        for axis, (got, want) in enumerate(zip(inp.shape[1:], bundle.sample_shape, strict=True), start=1):
            if isinstance(got, int) and got != want:
                raise BackendError(
                    f"{where}: input {inp.name!r} dim {axis} is {got}, manifest says {want} (shape {inp.shape} vs "
                    f"{list(bundle.input_shape)})"
                )
        if len(out.shape) != 2:
            raise BackendError(f"{where}: output {out.name!r} has rank {len(out.shape)}, expected 2 (N, D)")
        if isinstance(out.shape[1], int) and out.shape[1] != bundle.embedding_dim:
            raise BackendError(
                f"{where}: output {out.name!r} has {out.shape[1]} values per study, "
                f"manifest says {bundle.embedding_dim}"
            )
        batch = inp.shape[0]
        if isinstance(batch, int) and batch > 0:
            if bundle.batch_size not in (None, batch):
                raise BackendError(f"{where}: graph batch size is {batch}, manifest says {bundle.batch_size}")
            return batch
        return None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        session = self._session
        if session is None:
            raise BackendError("backend is closed")
        x = as_batch(batch, self._sample_shape)
        n = x.shape[0]
        if n == 0:
            return np.empty((0, self._dim), dtype=np.float32)
        parts = [self._run(session, x[i : i + self.max_batch]) for i in range(0, n, self.max_batch)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _run(self, session: ort.InferenceSession, chunk: np.ndarray) -> np.ndarray:
        m = chunk.shape[0]
        if self._fixed_batch and m < self._fixed_batch:
            # A fixed-batch graph needs exactly its batch; pad with zeros and drop the extra rows.
            pad = np.zeros((self._fixed_batch - m, *chunk.shape[1:]), dtype=np.float32)
            chunk = np.concatenate([chunk, pad], axis=0)
        try:
            (out,) = session.run([self._output], {self._input: chunk})
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed on a batch of {m}: {exc}") from exc
        if out.ndim != 2 or out.shape[1] != self._dim or out.shape[0] < m:
            raise BackendError(f"encoder returned shape {out.shape}, expected ({chunk.shape[0]}, {self._dim})")
        return out[:m]

    def warm_up(self) -> None:
        """Run once at batch 1 and at max_batch so the first real study does not pay for allocation/optimisation."""
        for n in sorted({1, self.max_batch}):
            self.infer(np.zeros((n, *self._sample_shape), dtype=np.float32))

    def close(self) -> None:
        self._session = None

    def __repr__(self) -> str:
        return f"OnnxRuntimeBackend(bundle={self._bundle.name!r}, max_batch={self.max_batch})"


def available() -> bool:
    return True  # a runtime dependency of the appliance


def create(bundle: Bundle, options: BackendOptions) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(bundle, intra_op_threads=options.intra_op_threads, max_batch=options.max_batch)

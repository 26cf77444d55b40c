"""ONNX export (opset 17, dynamic batch) and the check that ONNX Runtime
gives what PyTorch gives (per-row cosine >= 0.9999), for the image encoders."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.models import VideoEncoder

OPSET = 17
MIN_COSINE = 0.9999


class ExportError(RuntimeError):
    pass


def _export(model: torch.nn.Module, args: tuple, input_names: list[str], output_name: str,
            dynamic: dict[str, dict[int, str]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter is the one that writes LayerNormalization as one op at opset 17 without
        # onnxscript; torch marks it deprecated but it is what TensorRT 10.3 and 11 both read well.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, args, buffer,  # type: ignore[arg-type]  # a file object works; the stub says path
                          dynamo=False, opset_version=OPSET, input_names=input_names,
                          output_names=[output_name], dynamic_axes=dynamic, do_constant_folding=True)
    data = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def export_video(model: VideoEncoder, sample: np.ndarray, input_name: str = "study",
                 output_name: str = "embedding") -> bytes:
    model.eval()
    x = torch.from_numpy(np.asarray(sample, dtype=np.float32))
    data = _export(model, (x,), [input_name], output_name, {input_name: {0: "batch"}, output_name: {0: "batch"}})
    with torch.no_grad():
        expected = model(x).numpy()
    _check(data, {input_name: x.numpy()}, expected, "image encoder")
    return data


def _check(data: bytes, feeds: dict[str, np.ndarray], expected: np.ndarray, what: str) -> float:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, feeds)
    cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    if cos.min() < MIN_COSINE:
        raise ExportError(f"{what}: ONNX Runtime differs from PyTorch (min cosine {cos.min():.6f} < {MIN_COSINE})")
    return float(cos.min())


def onnx_cosine(data: bytes, feeds: dict[str, np.ndarray], expected: np.ndarray) -> float:
    """The smallest per-row cosine between ONNX Runtime's output and `expected` (for the evaluation report)."""
    return _check(data, feeds, expected, "model")

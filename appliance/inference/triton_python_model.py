"""The model.py of a Triton Python-backend model that runs the bundle's encoder with ONNX Runtime on the CPU.

`scanside triton-repo --backend python` copies this file, unchanged, next to the encoder as `<version>/model.py`.
It runs inside Triton's Python backend stub, never in the appliance: for a Triton without its ONNX Runtime backend
(PyTriton's tritonserver, which the tests start), or to serve from CPU-only hosts. The stub's Python must have numpy
and onnxruntime (docs/triton.md: how the tests point it at a virtual environment).

Tensors cross the stub's boundary by DLPack, both ways: the stub's `as_numpy()` and `Tensor(name, array)` read the
array header as NumPy 1.x lays it out, and under NumPy 2 `as_numpy()` returned the right shape over the wrong bytes
(seen with Triton 2.51's stub from nvidia-pytriton 0.7.0). Requests the dynamic batcher groups are run as one batch.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads") or 0)
        options.log_severity_level = 3
        self.session = ort.InferenceSession(os.path.join(here, params.get("onnx_file") or "model.onnx"),
                                            sess_options=options, providers=["CPUExecutionProvider"])

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs, failed = [], {}
        for n, request in enumerate(requests):
            try:
                x = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, self.input))
                inputs.append((n, np.ascontiguousarray(x, dtype=np.float32)))
            except Exception as exc:  # one bad request must not fail the others batched with it
                failed[n] = str(exc)
        outputs: dict[int, np.ndarray] = {}
        if inputs:
            try:
                batch = np.concatenate([x for _, x in inputs]) if len(inputs) > 1 else inputs[0][1]
                (y,) = self.session.run([self.output], {self.input: batch})
                start = 0
                for n, x in inputs:
                    outputs[n] = np.ascontiguousarray(y[start: start + x.shape[0]], dtype=np.float32)
                    start += x.shape[0]
            except Exception as exc:
                failed.update({n: f"ONNX Runtime failed: {exc}" for n, _ in inputs})
        responses = []
        for n in range(len(requests)):
            if n in failed:
                responses.append(pb_utils.InferenceResponse(output_tensors=[],
                                                            error=pb_utils.TritonError(failed[n])))
            else:
                tensor = pb_utils.Tensor.from_dlpack(self.output, outputs[n])
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def finalize(self) -> None:
        self.session = None

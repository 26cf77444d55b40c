"""The FP16 ONNX for TensorRT 11: the precision lives in the graph, because it only builds strongly typed networks.

TensorRT 10.x (JetPack 6 ships 10.3) can still be asked for FP16 with a builder flag on the FP32 ONNX. TensorRT 11
removed that flag (and the other weak-typing flags: INT8, BF16, OBEY/PREFER_PRECISION_CONSTRAINTS); every network
is strongly typed, so a tensor computes in the type the ONNX gives it. This module makes that ONNX from the bundle's
FP32 encoder with a maintained converter, onnxconverter-common's `float16.convert_float_to_float16`:

- the graph's inputs and outputs stay float32 (`keep_io_types`), so the bundle's contract does not change;
- LayerNormalization, Softmax and every reduction stay in FP32 (`op_block_list`): their sums and exponentials are
  where FP16's 10-bit mantissa and 65504 range go wrong first; the converter wraps them in Casts;
- weights are rounded to FP16 (tiny magnitudes clamp to 1e-7 and huge ones to 1e4, the converter's defaults).

The result is checked before anyone uses it: ONNX checker, strict type inference, float32 I/O, and FP32 inside every
kept op. It runs in ONNX Runtime on the CPU, which is how tests/test_fp16.py measures its agreement with FP32 on a
machine without a GPU. (ONNX Runtime's CPU provider computes some FP16 ops by casting to FP32 around them, so that
measurement captures FP16 weights and FP16 activations between ops, not FP16 arithmetic inside a kernel; TensorRT
accumulates FP16 convolutions and matrix products in FP32 as well. build_engine.py's on-GPU comparison is the
final word.)
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field

import onnx
from onnx import TensorProto

# Ops that compute in FP32 inside the FP16 graph. Softmax/LogSoftmax and LayerNormalization are the ones the issue
# names; "reductions" are all Reduce* ops plus the global pools, which are reductions over H x W.
KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
)

_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
METADATA_KEY = "scanside.fp16"


class FP16ConversionError(RuntimeError):
    """The converter is missing, or its output failed a check; the message says which."""


@dataclass(frozen=True)
class FP16Report:
    source_sha256: str
    fp16_sha256: str
    converter: str
    kept_fp32_ops: tuple[str, ...]
    ops_fp16: dict[str, int] = field(default_factory=dict)  # op type -> count computing in FP16
    ops_fp32: dict[str, int] = field(default_factory=dict)  # op type -> count computing in FP32 (kept ones)
    casts_added: int = 0

    def to_dict(self) -> dict:
        return {
            "source_sha256": self.source_sha256,
            "fp16_sha256": self.fp16_sha256,
            "converter": self.converter,
            "kept_fp32_ops": list(self.kept_fp32_ops),
            "ops_fp16": dict(sorted(self.ops_fp16.items())),
            "ops_fp32": dict(sorted(self.ops_fp32.items())),
            "casts_added": self.casts_added,
        }


def _converter():
    try:
        import onnxconverter_common
        from onnxconverter_common import float16
    except ImportError as exc:  # an optional dependency: only the strongly typed (TensorRT 11) path needs it
        raise FP16ConversionError(
            "onnxconverter-common is not installed; it makes the FP16 ONNX that TensorRT 11 builds from "
            "(pip install 'onnxconverter-common>=1.14,<2')"
        ) from exc
    return float16, f"onnxconverter-common {getattr(onnxconverter_common, '__version__', '?')}"


def _name_nodes(graph: onnx.GraphProto) -> None:
    # The converter derives the names of the Casts it inserts from node names; two unnamed nodes in the block list
    # would give two Casts with the same output name (an invalid graph), so every node gets a unique name first.
    used: set[str] = set()
    for i, node in enumerate(graph.node):
        if not node.name or node.name in used:
            base = f"{node.op_type}_{i}"
            name, k = base, 0
            while name in used:
                k += 1
                name = f"{base}_{k}"
            node.name = name
        used.add(node.name)


def _io_types(model: onnx.ModelProto) -> dict[str, int]:
    return {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    for node in g.node:  # Constant nodes carry their tensor's type in the attribute
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t is not None:
                    types[node.output[0]] = attr.t.data_type
    return types


def _repair_casts(out: onnx.ModelProto, original_casts: set[str]) -> None:
    """Casts to float32 of the source that the converter retyped to FP16: make their 'to' say so."""
    types = _tensor_types(onnx.shape_inference.infer_shapes(out))
    for node in out.graph.node:
        if node.name in original_casts and node.op_type == "Cast" and types.get(node.output[0]) == TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to":
                    attr.i = TensorProto.FLOAT16


def _count_precisions(inferred: onnx.ModelProto, keep_fp32_ops: tuple[str, ...]) -> tuple[Counter[str], Counter[str]]:
    """(ops computing in FP16, ops computing in FP32) by op type; FP16ConversionError if a kept op is not FP32."""
    types = _tensor_types(inferred)
    ops16: Counter[str] = Counter()
    ops32: Counter[str] = Counter()
    for node in inferred.graph.node:
        if node.op_type == "Cast":
            continue
        float_io = [types.get(t) for t in list(node.input) + list(node.output) if t and types.get(t) in _FLOAT_TYPES]
        if node.op_type in keep_fp32_ops:
            if any(t != TensorProto.FLOAT for t in float_io):
                raise FP16ConversionError(f"node {node.name!r} ({node.op_type}) must compute in FP32 but has FP16 "
                                          "inputs or outputs after conversion")
            ops32[node.op_type] += 1
        elif float_io and all(t == TensorProto.FLOAT16 for t in float_io):
            ops16[node.op_type] += 1
        elif float_io:
            ops32[node.op_type] += 1
    return ops16, ops32


def convert(model: onnx.ModelProto,
            keep_fp32_ops: tuple[str, ...] = KEEP_FP32_OPS) -> tuple[onnx.ModelProto, FP16Report]:
    """FP32 ONNX model -> (checked FP16 model with FP32 I/O and FP32 islands, report)."""
    float16, converter = _converter()
    source_bytes = model.SerializeToString()
    src = onnx.ModelProto()
    src.CopyFrom(model)
    _name_nodes(src.graph)
    for value in list(src.graph.input) + list(src.graph.output):
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise FP16ConversionError(f"graph I/O {value.name!r} is not float32; only float32 encoders are converted")
    # Casts to float32 that are already in the source: onnxconverter-common 1.15+ retypes their outputs to FP16
    # without changing their 'to' attribute (microsoft/onnxconverter-common#320, fix pending in #326/#328), which
    # makes an invalid graph. Remember them and repair them below.
    original_casts = {n.name for n in src.graph.node if n.op_type == "Cast"
                      and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)}
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(keep_fp32_ops))
    try:
        out = float16.convert_float_to_float16(src, keep_io_types=True, op_block_list=block)
    except Exception as exc:  # the converter raises plain Exceptions/ValueErrors with its own messages
        raise FP16ConversionError(f"{converter} could not convert the encoder: {exc}") from exc

    _repair_casts(out, original_casts)

    # --- checks: a converted graph that is wrong must never reach TensorRT -------------------------------------
    try:
        onnx.checker.check_model(out)
        inferred = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise FP16ConversionError(f"the FP16 graph from {converter} is invalid: {exc}") from exc
    if _io_types(out) != _io_types(model):
        raise FP16ConversionError(f"graph I/O types changed in conversion: {_io_types(model)} -> {_io_types(out)}")
    ops16, ops32 = _count_precisions(inferred, keep_fp32_ops)
    casts_added = sum(1 for n in out.graph.node if n.op_type == "Cast") - sum(
        1 for n in model.graph.node if n.op_type == "Cast")

    meta = {
        "converter": converter,
        "source_sha256": hashlib.sha256(source_bytes).hexdigest(),
        "kept_fp32_ops": list(keep_fp32_ops),
        "keep_io_types": True,
    }
    entry = out.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta, sort_keys=True)
    report = FP16Report(
        source_sha256=meta["source_sha256"],
        fp16_sha256=hashlib.sha256(out.SerializeToString()).hexdigest(),
        converter=converter,
        kept_fp32_ops=tuple(keep_fp32_ops),
        ops_fp16=dict(ops16),
        ops_fp32=dict(ops32),
        casts_added=casts_added,
    )
    return out, report


def convert_bytes(fp32_onnx: bytes, keep_fp32_ops: tuple[str, ...] = KEEP_FP32_OPS) -> tuple[bytes, FP16Report]:
    """Serialized FP32 ONNX -> (serialized FP16 ONNX, report). The same input always gives the same bytes."""
    try:
        model = onnx.load_from_string(fp32_onnx)
    except Exception as exc:
        raise FP16ConversionError(f"the encoder is not a readable ONNX model: {exc}") from exc
    out, report = convert(model, keep_fp32_ops)
    return out.SerializeToString(), report


__all__ = ["KEEP_FP32_OPS", "METADATA_KEY", "FP16ConversionError", "FP16Report", "convert", "convert_bytes"]

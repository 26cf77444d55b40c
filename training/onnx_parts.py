"""An ONNX model stored as its graph plus weight files of bounded size, with the same numbers.

The text tower is 45 MB (MiniLM's weights stored as float16), more than a repository should hold in one file. ONNX's
external data keeps the graph small and puts the weights in files beside it, which ONNX Runtime reads when it loads
the graph from its path; the files are bin-packed to at most `max_part_bytes` each. A single weight larger than that
(MiniLM's 30,522 x 384 word-embedding table, 23 MB) is split along its first axis into initializers that a Concat
puts back together; ONNX Runtime folds that constant Concat once, when the session is made. Nothing is quantised:
the outputs are bit for bit those of the original model (tests/test_onnx_parts.py).
"""

from __future__ import annotations

import math

import numpy as np

ALIGN = 4096  # each weight starts on a page boundary in its file (ONNX Runtime may then map it)


def split_model(model_bytes: bytes, stem: str, max_part_bytes: int) -> dict[str, bytes]:
    """{f"{stem}.onnx": the graph, f"{stem}.weights-<k>": weights, ...}: files to write into one folder."""
    import onnx
    from onnx import external_data_helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    budget = max_part_bytes - ALIGN
    for t in [t for t in graph.initializer if _nbytes(t) > budget]:
        _split_initializer(graph, t, math.ceil(_nbytes(t) / budget))
    parts: list[bytearray] = []
    for t in sorted(graph.initializer, key=_nbytes, reverse=True):
        if _nbytes(t) < 1024:  # small constants stay inside the graph
            continue
        data = numpy_helper.to_array(t).tobytes()
        k = next((i for i, p in enumerate(parts) if _aligned(len(p)) + len(data) <= max_part_bytes), len(parts))
        if k == len(parts):
            parts.append(bytearray())
        part = parts[k]
        part.extend(b"\0" * (_aligned(len(part)) - len(part)))
        offset = len(part)
        part.extend(data)
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            t.ClearField(field)
        t.raw_data = data  # set_external_data wants it there, as a weight saved normally has it
        external_data_helper.set_external_data(t, location=f"{stem}.weights-{k}", offset=offset, length=len(data))
        t.data_location = onnx.TensorProto.EXTERNAL
        t.ClearField("raw_data")
    files = {f"{stem}.weights-{k}": bytes(p) for k, p in enumerate(parts)}
    files[f"{stem}.onnx"] = model.SerializeToString()
    return files


def _nbytes(t) -> int:
    return int(np.prod(t.dims, dtype=np.int64)) * _itemsize(t.data_type)


def _itemsize(data_type: int) -> int:
    from onnx import helper

    return int(np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _split_initializer(graph, t, pieces: int) -> None:
    """Replace initializer `t` by `pieces` row blocks and a Concat, first in the graph, producing its name."""
    from onnx import helper, numpy_helper

    array = numpy_helper.to_array(t)
    if array.ndim == 0 or array.shape[0] < pieces:
        raise ValueError(f"initializer {t.name!r} ({_nbytes(t)} bytes) cannot be split along its first axis")
    names = []
    for k, block in enumerate(np.array_split(array, pieces, axis=0)):
        names.append(f"{t.name}__part{k}")
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(block), names[-1]))
    name = t.name
    graph.initializer.remove(t)
    graph.node.insert(0, helper.make_node("Concat", names, [name], axis=0, name=f"{name}__concat"))

"""A model stored as a graph plus bounded weight files (training/onnx_parts.py) computes exactly what it did, and
no file of the shipped bundle is one a repository should not hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from training.onnx_parts import split_model  # noqa: E402

BUNDLE = Path(__file__).resolve().parent.parent / "engines" / "reference-v1"


def _model() -> bytes:
    """A lookup table (fp16 behind a Cast, as the text tower stores it) then a MatMul: ids -> (N, 8)."""
    rng = np.random.default_rng(5)
    table = numpy_helper.from_array(rng.normal(size=(300, 16)).astype(np.float16), "table__fp16")
    weight = numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "w")
    nodes = [helper.make_node("Cast", ["table__fp16"], ["table"], to=TensorProto.FLOAT),
             helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
             helper.make_node("MatMul", ["rows", "w"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 8])],
                              initializer=[table, weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def test_a_split_model_gives_exactly_the_same_outputs(tmp_path):
    src = _model()
    files = split_model(src, "m", max_part_bytes=8192)  # the 9.6 kB table must be split, the weight packed apart
    assert set(files) >= {"m.onnx", "m.weights-0", "m.weights-1"}
    assert all(len(v) <= 8192 for k, v in files.items() if k != "m.onnx")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    ids = np.array([0, 149, 150, 299, 7], dtype=np.int64)
    (want,) = ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    (got,) = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    np.testing.assert_array_equal(got, want)
    graph = onnx.load(str(tmp_path / "m.onnx"), load_external_data=False).graph
    external = {t.name for t in graph.initializer if t.data_location == TensorProto.EXTERNAL}
    # the 9.6 kB table in pieces of at most 4 kB (a part less its alignment); the 512-byte weight stays in the graph
    assert external == {f"table__fp16__part{k}" for k in range(3)}


def test_a_weight_that_cannot_be_split_is_refused():
    big = numpy_helper.from_array(np.zeros((2, 4096), dtype=np.float32), "big")  # 2 rows, 32 pieces needed
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4096])
    graph = helper.make_graph([helper.make_node("Identity", ["big"], ["out"])], "g", [], [out], initializer=[big])
    with pytest.raises(ValueError, match="cannot be split"):
        split_model(helper.make_model(graph).SerializeToString(), "m", max_part_bytes=4096 + 1024)


def test_no_file_of_the_shipped_bundle_is_over_20_mib():
    sizes = {p.name: p.stat().st_size for p in BUNDLE.iterdir()}
    assert sizes and max(sizes.values()) <= 20 * 2**20, sizes

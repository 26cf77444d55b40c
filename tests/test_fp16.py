"""The FP16 ONNX that TensorRT 11 builds from, measured on the CPU against the FP32 encoder.

TensorRT 11 only builds strongly typed networks, so FP16 has to be in the ONNX (appliance.inference.fp16). That
graph runs in ONNX Runtime on the CPU, so its agreement with FP32 is measured here without a GPU: per-study
embedding cosine, the zero-shot decisions, and the change in each finding's AUROC on ~40 generated studies, using
engines/reference-v1 when it exists and loads, else engines/placeholder-v0. (The placeholder's scores are
meaningless, but FP16 must still reproduce them.) The numbers are printed.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from appliance.bundle import BundleError, load_bundle
from appliance.config import DEFAULT_BUNDLE
from appliance.inference import fp16
from appliance.inference.onnxruntime_backend import OnnxRuntimeBackend
from appliance.scoring import finding_scores

ROOT = Path(__file__).resolve().parent.parent
N_STUDIES = 40
SEED = 7000


def _build_engine_module():
    spec = importlib.util.spec_from_file_location("build_engine", ROOT / "build_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def _types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _tiny_transformerish() -> onnx.ModelProto:
    """x (N, 8) -> MatMul -> LayerNormalization -> Relu -> Cast(to float) -> Softmax -> ReduceMean -> ... -> y (N, 4).
    Nodes unnamed on purpose (the converter names its Casts after nodes), and a Cast to float32 already in the graph
    (onnxconverter-common 1.15+ retypes its output without changing 'to')."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 16)).astype(np.float32), "w1"),
        numpy_helper.from_array(np.ones(16, np.float32), "ln_scale"),
        numpy_helper.from_array(np.zeros(16, np.float32), "ln_bias"),
        numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("LayerNormalization", ["h", "ln_scale", "ln_bias"], ["n"], axis=-1, epsilon=1e-5),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("Cast", ["r"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Softmax", ["c"], ["s"], axis=-1),
        helper.make_node("Mul", ["s", "c"], ["m"]),
        helper.make_node("ReduceMean", ["m"], ["pooled"], axes=[1], keepdims=1),
        helper.make_node("Add", ["m", "pooled"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_layernorm_softmax_and_reductions_stay_fp32_and_io_stays_float32() -> None:
    model = _tiny_transformerish()
    converted, report = fp16.convert(model)
    onnx.checker.check_model(converted)
    assert [v.type.tensor_type.elem_type for v in converted.graph.input] == [TensorProto.FLOAT]
    assert [v.type.tensor_type.elem_type for v in converted.graph.output] == [TensorProto.FLOAT]
    types = _types(converted)
    for node in converted.graph.node:
        float_io = [types[t] for t in list(node.input) + list(node.output)
                    if t in types and types[t] in (TensorProto.FLOAT, TensorProto.FLOAT16)]
        if node.op_type in ("LayerNormalization", "Softmax", "ReduceMean"):
            assert set(float_io) == {TensorProto.FLOAT}, node
        elif node.op_type in ("MatMul", "Relu", "Mul", "Add"):
            assert set(float_io) == {TensorProto.FLOAT16}, node
    assert report.ops_fp32 == {"LayerNormalization": 1, "ReduceMean": 1, "Softmax": 1}
    assert report.ops_fp16["MatMul"] == 2
    assert {p.key for p in converted.metadata_props} == {fp16.METADATA_KEY}

    x = np.random.default_rng(4).normal(size=(6, 8)).astype(np.float32)
    (want,) = _session(model.SerializeToString()).run(None, {"x": x})
    (got,) = _session(converted.SerializeToString()).run(None, {"x": x})
    assert got.dtype == np.float32
    cos = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cos.min() > 0.999


def test_conversion_is_deterministic_and_refuses_non_float_io() -> None:
    data = _tiny_transformerish().SerializeToString()
    a, ra = fp16.convert_bytes(data)
    b, rb = fp16.convert_bytes(data)
    assert a == b and ra.fp16_sha256 == rb.fp16_sha256
    bad = _tiny_transformerish()
    bad.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(fp16.FP16ConversionError, match="not float32"):
        fp16.convert(bad)
    with pytest.raises(fp16.FP16ConversionError, match="not a readable ONNX"):
        fp16.convert_bytes(b"not onnx")


# --- the measurement on generated studies -------------------------------------------------------------------------


def _bundle():
    reference = ROOT / "engines" / "reference-v1"
    if (reference / "manifest.json").is_file():
        try:
            return load_bundle(reference)
        except BundleError:
            pass  # half-written or being rebuilt: measure the placeholder instead
    return load_bundle(DEFAULT_BUNDLE if DEFAULT_BUNDLE.is_dir() else ROOT / "engines" / "placeholder-v0")


@pytest.fixture(scope="module")
def measured():
    from appliance.dev.synth import plan_study
    from appliance.dev.synth.arrays import study_tensor
    from appliance.dev.synth.reports import study_labels

    started = time.perf_counter()
    bundle = _bundle()
    plans = [plan_study(SEED + i, "ABC"[i % 3]) for i in range(N_STUDIES)]
    x = np.stack([study_tensor(p, bundle.preprocess) for p in plans]).astype(np.float32)
    labels = [study_labels(p.params) for p in plans]
    reference = OnnxRuntimeBackend(bundle, intra_op_threads=1, max_batch=8).infer(x)
    data, report = fp16.convert_bytes(bundle.encoder_path.read_bytes())
    session = _session(data)
    candidate = np.concatenate([session.run([bundle.output_name], {bundle.input_name: x[i: i + 8]})[0]
                                for i in range(0, len(x), 8)])
    return bundle, labels, reference, candidate, report, time.perf_counter() - started


def test_fp16_onnx_agrees_with_fp32_on_generated_studies(measured, capsys) -> None:
    from training.evalmath import auroc

    bundle, labels, reference, candidate, report, seconds = measured
    comparison = _build_engine_module().compare_embeddings(reference, candidate, bundle.label_bank)
    s32 = finding_scores(reference, bundle.label_bank)
    s16 = finding_scores(candidate, bundle.label_bank)
    rows = []
    for j, finding in enumerate(bundle.label_bank.findings):
        y = np.array([lab.get(finding.id, False) for lab in labels], dtype=bool)
        a32, a16 = auroc(s32[:, j], y), auroc(s16[:, j], y)
        rows.append((finding.id, int(y.sum()), a32, a16))
    with capsys.disabled():
        print(f"\nFP16 ONNX vs FP32, {bundle.name}-{bundle.version}, {len(reference)} generated studies "
              f"(seeds {SEED}..{SEED + len(reference) - 1}), ONNX Runtime CPU, {seconds:.1f} s")
        print(f"  converter {report.converter}; FP16 ops {report.ops_fp16}; FP32 ops {report.ops_fp32}")
        print(f"  cosine min {comparison['min_cosine']:.7f} mean {comparison['mean_cosine']:.7f}; max |score diff| "
              f"{comparison['max_abs_score_diff']:.2e}; decision mismatches {len(comparison['decision_mismatches'])}")
        for fid, pos, a32, a16 in rows:
            print(f"  {fid:<26} positives {pos:>2}  AUROC fp32 {a32:.4f}  fp16 {a16:.4f}  change {a16 - a32:+.4f}")

    assert comparison["min_cosine"] >= 0.999, comparison["min_cosine"]
    assert comparison["decision_mismatches"] == [], comparison["decision_mismatches"]
    assert comparison["passed"]
    for fid, pos, a32, a16 in rows:
        if np.isnan(a32):
            assert np.isnan(a16)
            continue
        # One positive/negative pair changing order moves AUROC by 1/(P*N); allow at most two such swaps.
        assert abs(a16 - a32) * pos * (len(labels) - pos) <= 2 + 1e-9, (fid, a32, a16)


def test_fp16_measurement_runs_within_budget(measured) -> None:
    assert measured[-1] < 60.0, f"the FP16 measurement took {measured[-1]:.1f} s"

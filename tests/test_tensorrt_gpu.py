"""TensorRT on a real GPU: build a plan with build_engine.py, verify and install it, load it, run it, refuse a
corrupted one, fall back, and read GPU statistics. Marked `gpu`; skipped, with the reason, where TensorRT, a CUDA
binding (pycuda or cuda-python) or a GPU is absent. Nothing here is simulated.

Run on a Jetson or T4 host (or in the deploy/ containers) with:
    python -m pytest -q -m gpu tests/test_tensorrt_gpu.py
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.bundle import load_bundle, write_bundle
from appliance.inference import OnnxRuntimeBackend, create_backend
from appliance.inference.plans import Requirements, read_sidecar, select_plan, sidecar_path
from appliance.scoring import normalise

ROOT = Path(__file__).resolve().parent.parent


def _why_not() -> str | None:
    from appliance.inference.cuda_memory import CudaError, open_cuda
    from appliance.inference.tensorrt_backend import tensorrt_installed

    if not tensorrt_installed():
        return "TensorRT is not installed (no 'tensorrt' module)"
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        return f"TensorRT does not import: {exc}"
    try:
        open_cuda()
    except CudaError as exc:
        return f"no usable GPU: {exc}"
    return None


WHY_NOT = _why_not()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(WHY_NOT is not None, reason=f"needs a GPU with TensorRT: {WHY_NOT}")]


@pytest.fixture(scope="module")
def be():
    spec = importlib.util.spec_from_file_location("build_engine", ROOT / "build_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(be, tiny_bundle, tmp_path_factory):
    plan_dir = tmp_path_factory.mktemp("plans")
    rc = be.main(["--bundle", str(tiny_bundle), "--plan-dir", str(plan_dir), "--max-batch", "4",
                  "--workspace-mib", "256", "--verify-studies", "6"])
    assert rc == 0
    return load_bundle(tiny_bundle), plan_dir


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (normalise(a, a.shape[1]) * normalise(b, b.shape[1])).sum(axis=1)


def test_build_verifies_and_installs_a_named_plan_with_its_sidecar(built) -> None:
    import tensorrt as trt

    _bundle, plan_dir = built
    plans = list(plan_dir.glob("*.plan"))
    assert len(plans) == 1
    plan = plans[0]
    assert f".trt{'.'.join(trt.__version__.split('.')[:3])}.plan" in plan.name and ".sm" in plan.name
    info = read_sidecar(sidecar_path(plan))
    assert info.tensorrt_version == trt.__version__ and info.precision == "fp16"
    assert info.verification["passed"] is True and info.verification["min_cosine"] >= 0.999
    assert info.profile.max_batch == 4 and info.builder["workspace_bytes"] == 256 << 20
    report = json.loads(Path(str(plan) + ".verify.json").read_text())
    assert report["passed"] and len(report["per_study"]) == 6
    assert list(plan_dir.glob("*.timing-cache"))


def test_a_second_run_skips_and_force_reuses_the_timing_cache(be, built, capsys) -> None:
    bundle, plan_dir = built
    assert be.main(["--bundle", str(bundle.root), "--plan-dir", str(plan_dir), "--max-batch", "4"]) == 0
    assert "already there" in capsys.readouterr().out
    assert be.main(["--bundle", str(bundle.root), "--plan-dir", str(plan_dir), "--max-batch", "4",
                    "--workspace-mib", "256", "--verify-studies", "3", "--force"]) == 0
    (plan,) = plan_dir.glob("*.plan")
    assert read_sidecar(sidecar_path(plan)).builder["timing_cache"]["loaded_bytes"] > 0
    assert be.main(["--bundle", str(bundle.root), "--plan-dir", str(plan_dir), "--check"]) == 0


def test_the_backend_matches_onnxruntime_and_splits_large_batches(built) -> None:
    from appliance.inference.tensorrt_backend import TensorRTBackend

    bundle, plan_dir = built
    backend = TensorRTBackend(bundle, plan_dirs=[plan_dir])
    try:
        backend.warm_up()
        assert backend.name == "tensorrt" and backend.precision == "fp16" and backend.max_batch == 4
        x = np.random.default_rng(0).random((6, *bundle.sample_shape), dtype=np.float32)  # 6 > max batch 4
        got = backend.infer(x)
        want = OnnxRuntimeBackend(bundle).infer(x)
        assert got.shape == want.shape and got.dtype == np.float32
        assert _cosines(want, got).min() >= 0.999
        assert backend.infer(x[:0]).shape == (0, bundle.embedding_dim)
    finally:
        backend.close()


def test_one_execution_context_per_thread(built) -> None:
    from appliance.inference.tensorrt_backend import TensorRTBackend

    bundle, plan_dir = built
    backend = TensorRTBackend(bundle, plan_dirs=[plan_dir])
    x = np.random.default_rng(1).random((3, *bundle.sample_shape), dtype=np.float32)
    try:
        expected = backend.infer(x)
        results: list[np.ndarray] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(5):
                    results.append(backend.infer(x))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors and len(results) == 15
        for r in results:
            np.testing.assert_allclose(r, expected, rtol=1e-5, atol=1e-6)
        assert len(backend._states) == 4  # the main thread's and one per worker thread
    finally:
        backend.close()


def test_auto_takes_tensorrt_when_a_matching_plan_exists(built) -> None:
    bundle, plan_dir = built
    backend = create_backend("auto", bundle, plan_dir=plan_dir, max_batch=4)
    try:
        assert backend.name == "tensorrt" and backend.fallback_reason is None
        assert backend.engine_info["precision"] == "fp16"
    finally:
        backend.close()


def test_a_corrupted_plan_is_refused_and_the_fallback_says_why(built, tmp_path: Path) -> None:
    from appliance.inference.tensorrt_backend import PlanNotFound

    bundle, plan_dir = built
    copy = tmp_path / "plans"
    shutil.copytree(plan_dir, copy)
    (plan,) = copy.glob("*.plan")
    data = bytearray(plan.read_bytes())
    data[len(data) // 2] ^= 0xFF
    plan.write_bytes(bytes(data))
    with pytest.raises(PlanNotFound, match="corrupted or replaced"):
        create_backend("tensorrt", bundle, plan_dir=copy, max_batch=4)
    backend = create_backend("tensorrt", bundle, plan_dir=copy, max_batch=4, fallback_to_onnxruntime=True)
    assert backend.name == "onnxruntime" and "no TensorRT plan" in backend.fallback_reason
    auto = create_backend("auto", bundle, plan_dir=copy, max_batch=4)
    assert auto.name == "onnxruntime" and auto.fallback_reason.startswith("auto:")


def test_a_plan_for_a_larger_batch_than_built_is_refused(built) -> None:
    from appliance.inference.tensorrt_backend import PlanNotFound

    bundle, plan_dir = built
    with pytest.raises(PlanNotFound, match="accepts batches up to 4, the configuration needs 8"):
        create_backend("tensorrt", bundle, plan_dir=plan_dir, max_batch=8)


def test_strongly_typed_build_from_the_fp16_onnx(be, built, tmp_path: Path) -> None:
    import tensorrt as trt

    from appliance.inference.tensorrt_backend import TensorRTCapabilities

    caps = TensorRTCapabilities.of(trt)
    if not caps.has_strongly_typed_flag and caps.has_fp16_flag:
        pytest.skip(f"TensorRT {caps.version} has no strongly typed networks")
    bundle, _ = built
    assert be.main(["--bundle", str(bundle.root), "--plan-dir", str(tmp_path), "--typing", "strong",
                    "--max-batch", "2", "--workspace-mib", "256", "--verify-studies", "4"]) == 0
    choice = select_plan(tmp_path, read_sidecar(next(tmp_path.glob("*.plan.json"))).target,
                         Requirements.for_bundle(bundle), "encoder")
    assert choice.info.typing == "strong" and (tmp_path / "encoder.fp16.onnx").is_file()
    assert choice.info.built_from_sha256 != choice.info.onnx_sha256  # built from the FP16 graph


def test_onnx_parser_errors_name_the_node_and_op(be, built, tmp_path: Path, capsys) -> None:
    from onnx import TensorProto, helper

    bundle, _ = built
    shape = ["N", *bundle.sample_shape]
    graph = helper.make_graph(
        [helper.make_node("Frobnicate", ["study"], ["embedding"], name="frob_1", domain="com.example")],
        "bad", [helper.make_tensor_value_info("study", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", bundle.embedding_dim])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    bad = write_bundle(tmp_path / "bad", "bad", "0", model.SerializeToString(), bundle.label_bank, bundle.preprocess,
                       "study", "embedding", bundle.embedding_dim, {"kind": "test"}, "unsupported op for the parser")
    assert be.main(["--bundle", str(bad), "--plan-dir", str(tmp_path / "plans"), "--typing", "weak"]) == be.EXIT_PARSE
    err = capsys.readouterr().err
    assert "ONNX parser failed at node 0 'frob_1' (op Frobnicate)" in err


def test_gpu_statistics_on_this_gpu() -> None:
    import time

    from appliance.inference.gpu_stats import open_sampler

    sampler = open_sampler("auto", interval_ms=200)
    if sampler is None:
        pytest.skip("neither NVML nor tegrastats nor jetson-stats works here")
    try:
        sample = None
        for _ in range(20):
            sample = sampler.sample()
            if sample is not None:
                break
            time.sleep(0.2)
        assert sample is not None and sample.source in ("nvml", "tegrastats", "jtop")
        assert sample.memory_total_bytes and sample.memory_total_bytes > 0
    finally:
        sampler.close()

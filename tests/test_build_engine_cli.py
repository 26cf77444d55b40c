"""build_engine.py on a machine without a GPU: its help, its argument checks, its error paths (no TensorRT, no GPU),
the FP16 ONNX it writes for TensorRT 11, the wording of ONNX parser errors, and the comparison that decides whether
a plan is installed. The build itself needs a GPU: tests/test_tensorrt_gpu.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from appliance.bundle import load_bundle
from appliance.inference.cuda_memory import installed_bindings
from appliance.inference.plans import Profile
from appliance.inference.tensorrt_backend import tensorrt_installed

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "build_engine.py"
no_tensorrt = pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here")


@pytest.fixture(scope="module")
def be():
    spec = importlib.util.spec_from_file_location("build_engine", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_documents_the_whole_flow() -> None:
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    for needle in ("1. Look:", "2. Skip:", "3. Type:", "4. Build:", "5. Verify:", "6. Install:",
                   "FP16 builder flag", "strongly typed", "onnxconverter-common", "LayerNorm, Softmax and reductions",
                   "timing cache", "--opt-level", "--workspace-mib", "--max-batch", "cosine >= --min-cosine",
                   "zero-shot decisions", "<plan>.verify.json", "<plan>.json", "sha256", "--fp16-onnx-only",
                   "--probe", "Exit codes", "3 no TensorRT/CUDA/GPU", "4 ONNX parser error", "5 out of GPU memory"):
        assert needle in text, needle


@no_tensorrt
def test_without_tensorrt_it_says_so_and_exits_3(tmp_path: Path, tiny_bundle: Path) -> None:
    out = _run("--bundle", str(tiny_bundle), "--plan-dir", str(tmp_path))
    assert out.returncode == 3
    assert "TensorRT missing" in out.stderr and "not installed" in out.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-made
    assert _run("--bundle", str(tiny_bundle), "--plan-dir", str(tmp_path), "--check").returncode == 3


@no_tensorrt
def test_probe_reports_what_is_missing() -> None:
    out = _run("--probe")
    assert out.returncode == 3
    assert "TensorRT: TensorRT is not installed" in out.stdout
    assert "CUDA bindings installed:" in out.stdout
    if not installed_bindings():
        assert "GPU: no CUDA Python binding" in out.stdout


@pytest.mark.parametrize("args, message", [
    (("--max-batch", "0"), "--min-batch (1) <= --max-batch (0)"),
    (("--max-batch", "4", "--opt-batch", "8"), "--opt-batch 8 must lie in"),
    (("--workspace-mib", "1"), "too small"),
    (("--min-cosine", "1.5"), "--min-cosine 1.5"),
])
def test_bad_arguments_are_refused_before_anything_runs(args, message, tiny_bundle: Path) -> None:
    out = _run("--bundle", str(tiny_bundle), *args)
    assert out.returncode == 1 and message in out.stderr


def test_a_bad_bundle_is_named(tmp_path: Path) -> None:
    out = _run("--bundle", str(tmp_path / "nope"))
    assert out.returncode == 1 and "not a directory" in out.stderr


def test_fp16_onnx_only_needs_no_gpu(tmp_path: Path, tiny_bundle: Path) -> None:
    out = _run("--bundle", str(tiny_bundle), "--plan-dir", str(tmp_path), "--fp16-onnx-only")
    assert out.returncode == 0, out.stderr
    path = tmp_path / "encoder.fp16.onnx"
    assert path.is_file() and str(path) in out.stdout
    model = onnx.load(path)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.FLOAT]
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    bundle = load_bundle(tiny_bundle)
    x = np.random.default_rng(1).random((2, *bundle.sample_shape), dtype=np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    (y16,) = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"study": x})
    (y32,) = ort.InferenceSession(str(bundle.encoder_path), options, providers=["CPUExecutionProvider"]).run(
        None, {"study": x})
    assert y16.dtype == np.float32
    np.testing.assert_allclose(y16, y32, rtol=2e-2, atol=2e-2)


def test_parser_errors_name_the_node_and_its_op(be) -> None:
    data = (ROOT / "engines" / "placeholder-v0" / "encoder.onnx").read_bytes()
    name, op = be.onnx_node(data, 3)
    assert op == "ReduceMean" and name == "#3 (unnamed)"  # the placeholder's nodes have no names
    assert be.onnx_node(data, 999) == (None, None)
    text = be.format_parser_error(3, name, op, "UNSUPPORTED_NODE", "Assertion failed: axes must be constant")
    assert text == ("ONNX parser failed at node 3 '#3 (unnamed)' (op ReduceMean): UNSUPPORTED_NODE: "
                    "Assertion failed: axes must be constant")
    assert be.format_parser_error(-1, None, None, "INVALID_GRAPH", "x").startswith("ONNX parser failed at the graph")


def test_out_of_memory_messages_say_what_to_lower(be) -> None:
    class Log:
        def last(self, n=5):
            return "[defaultAllocator.cpp::allocate] Error Code 1: Cuda Runtime (out of memory)"

    assert be._is_oom(Log().last())
    msg = be._build_failure("build_serialized_network returned nothing", Log(), 1 << 30,
                            Profile.for_batches("study", (16, 3, 96, 96), 1, 4, 4))
    assert "--workspace-mib (now 1024)" in msg and "--max-batch (now 4)" in msg
    assert not be._is_oom("Network has dynamic or shape inputs, but no optimization profile")


def test_comparison_passes_only_with_high_cosine_and_the_same_decisions(be, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, bundle.embedding_dim))
    same = be.compare_embeddings(ref, ref * 1.0001, bundle.label_bank)
    assert same["passed"] and same["min_cosine"] > 0.9999999 and same["decision_mismatches"] == []
    assert len(same["per_study"]) == 6 and "PASSED" in be.format_comparison(same, "t")

    noisy = ref + rng.normal(scale=0.3, size=ref.shape)
    worse = be.compare_embeddings(ref, noisy, bundle.label_bank)
    assert not worse["passed"] and worse["min_cosine"] < 0.999
    assert "FAILED" in be.format_comparison(worse, "t")

    # push one study across one finding's threshold while keeping its cosine high
    axis = bundle.label_bank.findings[0].axis
    unit = ref[0] / np.linalg.norm(ref[0])
    score = unit @ axis
    target = bundle.label_bank.findings[0].threshold + (-1e-3 if score >= bundle.label_bank.findings[0].threshold
                                                          else 1e-3)
    shifted = ref.copy()
    shifted[0] = unit + (target - score) * axis / (axis @ axis)
    flipped = be.compare_embeddings(ref, shifted, bundle.label_bank, min_cosine=0.0)
    assert not flipped["passed"]
    assert [m["study"] for m in flipped["decision_mismatches"]] == [0]
    assert "flips" in be.format_comparison(flipped, "t")

    nan = ref.copy()
    nan[2, 0] = np.nan
    bad = be.compare_embeddings(ref, nan, bundle.label_bank)
    assert not bad["passed"] and "not finite" in bad["error"]


def test_verification_studies_come_from_the_synthetic_scanner(be, tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    x, conditions = be.generate_studies(bundle, 2, 90_000)
    assert x.shape == (2, *bundle.sample_shape) and x.dtype == np.float32 and np.isfinite(x).all()
    assert [c.split("/")[1] for c in conditions] == ["A", "B"]


def test_settings_come_from_the_appliance_configuration(be, tmp_path: Path, tiny_bundle: Path, monkeypatch) -> None:
    config = tmp_path / "scanside.toml"
    config.write_text(f'[paths]\ndata_dir = "{tmp_path / "data"}"\n[engine]\nbundle = "{tiny_bundle}"\nmax_batch = 3\n')
    args = be.build_parser().parse_args(["--config", str(config)])
    be.apply_config(args)
    assert args.bundle == tiny_bundle and args.max_batch == 3 and args.plan_dir is None
    args = be.build_parser().parse_args(["--config", str(config), "--max-batch", "6", "--bundle", "/x"])
    be.apply_config(args)
    assert args.max_batch == 6 and args.bundle == Path("/x")  # explicit options win
    monkeypatch.setenv("SCANSIDE_ENGINE_MAX_BATCH", "2")
    args = be.build_parser().parse_args(["--config-env"])
    be.apply_config(args)
    assert args.max_batch == 2
    args = be.build_parser().parse_args([])
    be.apply_config(args)
    assert args.max_batch == 4 and args.bundle is None

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from appliance.bundle import Bundle, load_bundle, write_bundle
from appliance.inference import BackendError, InferenceBackend, OnnxRuntimeBackend, create_backend
from appliance.scoring import normalise
from tests.bundle_factory import TINY_SPEC, make_tiny_bundle
from training.placeholder_bundle import build_placeholder_bundle, reference_features


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("ort") / "tiny")


@pytest.fixture(scope="module")
def bundle(bundle_root: Path) -> Bundle:
    return load_bundle(bundle_root)


def studies(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *TINY_SPEC.tensor_shape), dtype=np.float32)


def test_runs_the_placeholder_encoder(bundle: Bundle) -> None:
    backend = OnnxRuntimeBackend(bundle, intra_op_threads=1)
    assert isinstance(backend, InferenceBackend)
    assert (backend.name, backend.precision, backend.max_batch) == ("onnxruntime", "fp32", 8)
    assert backend.version
    backend.warm_up()
    x = studies(3)
    out = backend.infer(x)
    assert out.shape == (3, 64) and out.dtype == np.float32 and np.isfinite(out).all()
    # The graph computes exactly the NumPy reference features, projected.
    model = onnx.load(str(bundle.encoder_path))
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    expected = reference_features(x, TINY_SPEC) @ weights["projection"] + weights["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert backend.infer(np.empty((0, *TINY_SPEC.tensor_shape), np.float32)).shape == (0, 64)


def test_batch_splitting_equals_single_runs(bundle: Bundle) -> None:
    backend = OnnxRuntimeBackend(bundle, max_batch=2)
    x = studies(5, seed=1)
    together = backend.infer(x)
    one_by_one = np.concatenate([backend.infer(x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6)


def test_bad_input_and_closed_backend_are_refused(bundle: Bundle) -> None:
    backend = OnnxRuntimeBackend(bundle)
    with pytest.raises(BackendError, match=r"batch must be \(N, 8, 3, 48, 48\)"):
        backend.infer(np.zeros((1, 8, 3, 32, 32), np.float32))
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer(studies(1))


def edited_copy(root: Path, tmp_path: Path, edit) -> Bundle:
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return load_bundle(copy)


def test_input_name_mismatch_is_refused(bundle_root: Path, tmp_path: Path) -> None:
    b = edited_copy(bundle_root, tmp_path, lambda m: m["input"].update(name="frames"))
    with pytest.raises(BackendError, match=r"has no input 'frames' \(graph inputs: \['study'\]\)"):
        OnnxRuntimeBackend(b)


def test_output_name_mismatch_is_refused(bundle_root: Path, tmp_path: Path) -> None:
    b = edited_copy(bundle_root, tmp_path, lambda m: m["output"].update(name="features"))
    with pytest.raises(BackendError, match="has no output 'features'"):
        OnnxRuntimeBackend(b)


def test_shape_mismatch_is_refused(bundle_root: Path, tmp_path: Path) -> None:
    def smaller(m: dict) -> None:
        m["preprocessing"]["size"] = [40, 40]
        m["input"]["shape"] = [-1, 8, 3, 40, 40]

    b = edited_copy(bundle_root, tmp_path, smaller)
    with pytest.raises(BackendError, match="dim 3 is 48, manifest says 40"):
        OnnxRuntimeBackend(b)


def test_fixed_batch_graph_is_padded(bundle: Bundle, tmp_path: Path) -> None:
    model = onnx.load(str(bundle.encoder_path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    fixed = write_bundle(
        tmp_path / "fixed",
        name="fixed",
        version="1",
        encoder_onnx_bytes=model.SerializeToString(),
        label_bank=bundle.label_bank,
        preprocess=bundle.preprocess,
        input_name="study",
        output_name="embedding",
        dim=64,
        made_by={"test": "fixed batch"},
        description="test",
    )
    backend = OnnxRuntimeBackend(load_bundle(fixed), max_batch=16)
    assert backend.max_batch == 4
    x = studies(5, seed=2)
    np.testing.assert_allclose(backend.infer(x), OnnxRuntimeBackend(bundle).infer(x), rtol=1e-5, atol=1e-6)


def test_create_backend(bundle: Bundle) -> None:
    assert isinstance(create_backend("auto", bundle, max_batch=3), OnnxRuntimeBackend)
    assert create_backend("onnxruntime", bundle, max_batch=3).max_batch == 3
    if importlib.util.find_spec("tensorrt") is None:
        with pytest.raises(BackendError, match="TensorRT is not installed"):
            create_backend("tensorrt", bundle)
    with pytest.raises(BackendError, match="unknown inference backend 'cuda'"):
        create_backend("cuda", bundle)


def test_a_backend_kind_no_module_registers_is_a_configuration_error_naming_the_setting(bundle: Bundle) -> None:
    from appliance.config import ConfigError, Settings
    from appliance.pipeline.build import build_backend

    with pytest.raises(ConfigError,
                       match=r"engine\.backend must be one of auto, onnxruntime, tensorrt, triton, not 'cuda'"):
        build_backend(Settings().replace(engine={"backend": "cuda"}), bundle)


def test_a_registered_backend_module_is_built_by_its_kind(bundle: Bundle, monkeypatch) -> None:
    """What a new backend (e.g. a remote Triton server) takes: one module with create() and available(), one line
    in BACKENDS; the fallback to ONNX Runtime comes with it."""
    import sys
    import types

    from appliance import inference

    module = types.ModuleType("appliance.inference.echo_backend")
    made = []

    def create(b: Bundle, options: inference.BackendOptions) -> OnnxRuntimeBackend:
        if options.device == 7:
            raise BackendError("echo server unreachable")
        made.append(options)
        backend = OnnxRuntimeBackend(b, max_batch=options.max_batch)
        backend.name = "echo"
        return backend

    module.create, module.available = create, lambda: True
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(inference.BACKENDS, "echo", module.__name__)
    monkeypatch.setattr(inference, "BACKEND_KINDS", ("auto", *inference.BACKENDS))
    backend = create_backend("echo", bundle, max_batch=2)
    assert backend.name == "echo" and backend.fallback_reason is None and made[0].max_batch == 2
    fallback = create_backend("echo", bundle, device=7, fallback_to_onnxruntime=True)
    assert fallback.name == "onnxruntime" and fallback.fallback_reason == "echo server unreachable"
    with pytest.raises(BackendError, match="unreachable"):
        create_backend("echo", bundle, device=7)


def test_placeholder_calibration_puts_thresholds_at_the_median(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    calibration = (rng.random((12, 1, 3, 1, 1)) * rng.random((12, *TINY_SPEC.tensor_shape))).astype(np.float32)
    b = load_bundle(build_placeholder_bundle(tmp_path / "cal", calibration_tensors=calibration, spec=TINY_SPEC))
    unit = normalise(OnnxRuntimeBackend(b).infer(calibration), 64)
    for f in b.label_bank.findings:
        scores = unit @ f.embeddings.mean(axis=0)
        assert f.threshold == pytest.approx(np.median(scores), abs=1e-5)
        q25, q75 = np.quantile(scores, [0.25, 0.75])
        prob = 1 / (1 + np.exp(-(f.slope * np.array([q25, f.threshold, q75]) + f.intercept)))
        # The interquartile range spans 0.5 of probability when symmetric, no less than 0.4 when skewed.
        assert prob[1] == pytest.approx(0.5) and 0.4 - 1e-9 <= prob[2] - prob[0] <= 0.5 + 1e-9
    assert "12 caller-supplied" in b.manifest["made_by"]["calibration"]


def test_appliance_runtime_does_not_import_onnx_or_torch() -> None:
    code = (
        "import sys, appliance.preprocess, appliance.bundle, appliance.scoring, appliance.inference, "
        "appliance.service, appliance.cli, appliance.prompts, appliance.text, appliance.dev.synth.arrays; "
        "sys.exit(bool({'onnx', 'torch'} & set(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0

"""Everything about TensorRT plans that is decided on the CPU: names, sidecars, which plan a GPU may load, why a plan
is refused, backend selection and fallback, GPU statistics parsing and their metrics.

The plan files here are bytes written into temporary folders and the "current GPU" and "TensorRT version" are plain
values handed to the selector: the selection rules are pure, so they are tested as such. Nothing here pretends to be
TensorRT; what needs TensorRT is in test_tensorrt_gpu.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from appliance.bundle import load_bundle
from appliance.inference import OnnxRuntimeBackend, create_backend, describe_backend
from appliance.inference.backend import BackendError
from appliance.inference.cuda_memory import CudaUnavailable, installed_bindings, open_cuda
from appliance.inference.gpu_stats import GpuSample, open_sampler, parse_tegrastats_line
from appliance.inference.plans import (
    GpuTarget,
    NoMatchingPlan,
    PlanError,
    PlanInfo,
    Profile,
    Requirements,
    gpu_slug,
    parse_compute_capability,
    plan_filename,
    read_sidecar,
    select_plan,
    sha256_file,
    short_trt_version,
    sidecar_path,
    timing_cache_path,
    verify_report_path,
    write_json_atomic,
)
from appliance.inference.tensorrt_backend import TensorRTUnavailable, tensorrt_installed
from appliance.metrics import GpuMetrics, Metrics

ORIN = GpuTarget("Orin", (8, 7), "10.3.0.30")
T4 = GpuTarget("Tesla T4", (7, 5), "10.3.0.30")
no_tensorrt = pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed here: these tests are about "
                                 "machines without it")


# --- names --------------------------------------------------------------------------------------------------------


def test_names_carry_gpu_compute_capability_and_tensorrt_version(tmp_path: Path) -> None:
    assert gpu_slug("NVIDIA Tesla T4") == "nvidia-tesla-t4"
    assert gpu_slug("  Orin (nvgpu) ") == "orin-nvgpu"
    assert short_trt_version("10.3.0.30") == "10.3.0" and short_trt_version("11.1") == "11.1"
    assert parse_compute_capability("8.7") == (8, 7) == parse_compute_capability("sm87")
    assert parse_compute_capability("sm_120") == (12, 0) and parse_compute_capability([7, 5]) == (7, 5)
    assert plan_filename("encoder", ORIN) == "encoder.orin.sm87.trt10.3.0.plan"
    assert plan_filename("encoder", T4) == "encoder.tesla-t4.sm75.trt10.3.0.plan"
    plan = tmp_path / plan_filename("encoder", T4)
    assert sidecar_path(plan).name == "encoder.tesla-t4.sm75.trt10.3.0.plan.json"
    assert verify_report_path(plan).name == "encoder.tesla-t4.sm75.trt10.3.0.plan.verify.json"
    assert timing_cache_path(tmp_path, T4).name == "tesla-t4.sm75.trt10.3.0.timing-cache"
    for bad in ("", "---"):
        with pytest.raises(PlanError):
            gpu_slug(bad)
    with pytest.raises(PlanError):
        short_trt_version("ten")
    with pytest.raises(PlanError):
        parse_compute_capability("eighty-seven")


def test_profile_rules() -> None:
    p = Profile.for_batches("study", (16, 3, 96, 96), 1, 2, 4)
    assert p.max_batch == 4 and p.sample_shape == (16, 3, 96, 96)
    assert Profile.from_dict(p.to_dict()) == p
    with pytest.raises(PlanError, match="min <= opt <= max"):
        Profile.for_batches("study", (16, 3, 96, 96), 2, 1, 4)
    with pytest.raises(PlanError, match="only the batch"):
        Profile("study", (1, 16), (1, 16), (4, 17))


# --- sidecars and selection -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


def _write_plan(folder: Path, bundle, target: GpuTarget = ORIN, payload: bytes = b"serialized engine bytes",
                max_batch: int = 4, verified: bool = True, built_at: str = "2026-11-30T12:00:00+00:00",
                name: str | None = None, **changes) -> Path:
    """A plan file (any bytes: the selector never parses them) and the sidecar build_engine.py would write."""
    folder.mkdir(parents=True, exist_ok=True)
    plan = folder / (name or plan_filename(bundle.encoder_path.stem, target))
    plan.write_bytes(payload)
    needs = Requirements.for_bundle(bundle)
    info = PlanInfo(
        plan_file=plan.name, plan_sha256=sha256_file(plan), plan_bytes=len(payload),
        tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
        compute_capability=target.compute_capability, precision="fp16", typing="weak",
        onnx_file="encoder.onnx", onnx_sha256=needs.onnx_sha256, built_from_sha256=needs.onnx_sha256,
        input_name=bundle.input_name, output_name=bundle.output_name, embedding_dim=bundle.embedding_dim,
        profile=Profile.for_batches(bundle.input_name, bundle.sample_shape, 1, max_batch, max_batch),
        built_at=built_at, build_seconds=12.5, builder={"workspace_bytes": 1 << 30, "optimization_level": 3},
        bundle_name=bundle.name, bundle_version=bundle.version,
        verification={"passed": True, "studies": 12, "min_cosine": 0.9999} if verified else None,
    )
    info = dataclasses.replace(info, **changes)
    write_json_atomic(sidecar_path(plan), info.to_dict())
    return plan


def test_sidecar_round_trip(tmp_path: Path, bundle) -> None:
    plan = _write_plan(tmp_path, bundle)
    info = read_sidecar(sidecar_path(plan))
    data = json.loads(sidecar_path(plan).read_text())
    for key in ("tensorrt_version", "gpu_name", "compute_capability", "onnx_sha256", "precision", "profile",
                "built_at", "builder", "verification", "typing"):
        assert key in data
    assert data["compute_capability"] == "8.7" and data["gpu_slug"] == "orin"
    assert info.target == ORIN and info.profile.max_batch == 4
    assert PlanInfo.from_dict(info.to_dict()) == info


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(format="something-else"), "format is"),
    (lambda d: d.update(format_version=99), "format_version 99"),
    (lambda d: d.pop("onnx_sha256"), "missing onnx_sha256"),
    (lambda d: d.update(plan_sha256="abc"), "plan_sha256 must be 64"),
    (lambda d: d.update(plan_file="../elsewhere.plan"), "plain '\\*.plan' file name"),
    (lambda d: d.update(precision="int8"), "precision 'int8'"),
    (lambda d: d.update(typing="loose"), "typing 'loose'"),
    (lambda d: d.update(compute_capability="eighty"), "compute capability"),
    (lambda d: d["profile"].update(min=[0, 16, 3, 96, 96]), "1 <= min <= opt <= max"),
])
def test_malformed_sidecars_are_refused_with_the_reason(tmp_path: Path, bundle, mutate, message) -> None:
    plan = _write_plan(tmp_path, bundle)
    data = json.loads(sidecar_path(plan).read_text())
    mutate(data)
    sidecar_path(plan).write_text(json.dumps(data))
    with pytest.raises(PlanError, match=message):
        read_sidecar(sidecar_path(plan))
    with pytest.raises(NoMatchingPlan, match=message):
        select_plan(tmp_path, ORIN, Requirements.for_bundle(bundle))


def test_the_matching_plan_is_selected(tmp_path: Path, bundle) -> None:
    plan = _write_plan(tmp_path, bundle)
    _write_plan(tmp_path, bundle, target=T4)  # another GPU's plan beside it is simply not chosen
    choice = select_plan(tmp_path, ORIN, Requirements.for_bundle(bundle, min_max_batch=4))
    assert choice.plan_path == plan and choice.info.gpu_name == "Orin"
    assert select_plan(tmp_path, T4, Requirements.for_bundle(bundle)).info.gpu_name == "Tesla T4"


@pytest.mark.parametrize("target, needs_change, sidecar_change, reason", [
    (GpuTarget("Orin", (8, 7), "10.3.0.26"), {}, {}, "built with TensorRT 10.3.0.30, this is TensorRT 10.3.0.26"),
    (GpuTarget("Orin", (8, 7), "11.0.0"), {}, {}, "only loads in the TensorRT build that made it"),
    (GpuTarget("Orin", (8, 6), "10.3.0.30"), {}, {}, "built for compute capability 8.7, this GPU is 8.6"),
    (GpuTarget("NVIDIA A10", (8, 7), "10.3.0.30"), {}, {}, "built on a 'Orin', this GPU is a 'NVIDIA A10'"),
    (ORIN, {"onnx_sha256": "f" * 64}, {}, "the bundle changed since the build"),
    (ORIN, {"min_max_batch": 8}, {}, "accepts batches up to 4, the configuration needs 8"),
    (ORIN, {"embedding_dim": 128}, {}, "embedding dim 64 differs"),
    (ORIN, {"input_name": "frames"}, {}, "I/O names"),
    (ORIN, {}, {"verification": None}, "not verified against ONNX Runtime FP32"),
    (ORIN, {}, {"verification": {"passed": False}}, "not verified"),
    (ORIN, {}, {"profile": Profile.for_batches("study", (8, 3, 48, 48), 2, 4, 4)}, "the appliance needs batch 1"),
])
def test_mismatched_plans_are_refused_with_the_reason(tmp_path: Path, bundle, target, needs_change, sidecar_change,
                                                      reason) -> None:
    _write_plan(tmp_path, bundle, **sidecar_change)
    needs = dataclasses.replace(Requirements.for_bundle(bundle), **needs_change)
    with pytest.raises(NoMatchingPlan) as info:
        select_plan(tmp_path, target, needs)
    assert reason in str(info.value)
    assert "build_engine.py" in str(info.value)  # says how to get a plan
    assert len(info.value.rejected) == 1


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1]), "bytes, the sidecar says"),
    (lambda p: p.write_bytes(b"X" + p.read_bytes()[1:]), "does not match the sidecar"),
    (lambda p: p.unlink(), "is missing"),
])
def test_corrupted_plans_are_refused(tmp_path: Path, bundle, damage, reason) -> None:
    plan = _write_plan(tmp_path, bundle)
    damage(plan)
    with pytest.raises(NoMatchingPlan, match=reason):
        select_plan(tmp_path, ORIN, Requirements.for_bundle(bundle))


def test_plans_without_a_sidecar_or_in_a_missing_folder_are_never_loaded(tmp_path: Path, bundle) -> None:
    (tmp_path / plan_filename("encoder", ORIN)).write_bytes(b"half-written")
    (tmp_path / "rejected.plan.rejected").write_bytes(b"kept for inspection")  # not a '*.plan' file
    with pytest.raises(NoMatchingPlan, match="has no sidecar") as info:
        select_plan(tmp_path, ORIN, Requirements.for_bundle(bundle))
    assert len(info.value.rejected) == 1
    with pytest.raises(NoMatchingPlan, match="plan folder does not exist"):
        select_plan(tmp_path / "nowhere", ORIN, Requirements.for_bundle(bundle))


def test_a_sidecar_must_sit_beside_its_plan(tmp_path: Path, bundle) -> None:
    plan = _write_plan(tmp_path, bundle)
    sidecar_path(plan).rename(tmp_path / "other.plan.json")
    with pytest.raises(NoMatchingPlan, match="must sit beside its plan"):
        select_plan(tmp_path, ORIN, Requirements.for_bundle(bundle))


def test_preference_expected_name_then_newest_and_folders_in_order(tmp_path: Path, bundle) -> None:
    old = _write_plan(tmp_path / "a", bundle, built_at="2026-01-01T00:00:00+00:00")
    new = _write_plan(tmp_path / "a", bundle, name="encoder.copy.plan", built_at="2026-06-01T00:00:00+00:00")
    needs = Requirements.for_bundle(bundle)
    assert select_plan(tmp_path / "a", ORIN, needs).plan_path == old  # the name made for this target wins
    old.unlink()
    sidecar_path(old).unlink()
    assert select_plan(tmp_path / "a", ORIN, needs).plan_path == new
    # a configured plan folder and the bundle folder are both searched; rejections from both are reported
    _write_plan(tmp_path / "b", bundle, target=T4)
    assert select_plan([tmp_path / "b", tmp_path / "a"], ORIN, needs).plan_path == new


# --- backend selection and fallback on a machine without TensorRT -------------------------------------------------


@no_tensorrt
def test_auto_runs_onnxruntime_without_tensorrt(bundle) -> None:
    backend = create_backend("auto", bundle, max_batch=3, intra_op_threads=1)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.fallback_reason is None
    assert describe_backend(backend)["backend"] == "onnxruntime"


@no_tensorrt
def test_tensorrt_without_tensorrt_fails_clearly_or_falls_back_when_configured(bundle) -> None:
    with pytest.raises(TensorRTUnavailable, match="TensorRT is not installed"):
        create_backend("tensorrt", bundle)
    backend = create_backend("tensorrt", bundle, fallback_to_onnxruntime=True, intra_op_threads=1)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert "TensorRT is not installed" in backend.fallback_reason
    assert describe_backend(backend)["fallback_reason"] == backend.fallback_reason
    x = np.zeros((2, *bundle.sample_shape), dtype=np.float32)
    assert backend.infer(x).shape == (2, bundle.embedding_dim)
    with pytest.raises(BackendError, match="unknown inference backend 'cuda'"):
        create_backend("cuda", bundle)


@pytest.mark.skipif(bool(installed_bindings()), reason="a CUDA binding is installed here")
def test_cuda_without_a_binding_says_what_to_install() -> None:
    with pytest.raises(CudaUnavailable, match="pycuda or cuda-python"):
        open_cuda()


# --- GPU statistics ---------------------------------------------------------------------------------------------

# In the format tegrastats prints on an Orin with JetPack 6 (L4T r36): RAM and SWAP in MB, per-core CPU load,
# GR3D_FREQ (the GPU's load), temperatures as name@<C>, power rails as current/average mW.
ORIN_LINE = ("11-30-2026 20:41:07 RAM 3120/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
             "CPU [12%@1510,8%@1510,off,off,3%@1510,5%@1510] GR3D_FREQ 37% cpu@49.25C soc2@47.8C soc0@48.1C "
             "gpu@50.312C tj@51C soc1@47.9C VDD_IN 7211mW/6890mW VDD_CPU_GPU_CV 2114mW/1980mW VDD_SOC 1802mW/1766mW")
# Older layouts: GPU frequency after the load, no gpu@ sensor (junction instead), a disabled sensor at -256C.
OLDER_LINE = ("RAM 14384/62841MB (lfb 303x4MB) SWAP 0/31420MB (cached 0MB) CPU [2%@729,3%@729] "
              "GR3D_FREQ 99%@[1300,1300] cpu@48.75C soc0@45C tj@53.5C PMIC@-256C VDD_GPU_SOC 3192mW/3192mW")


def test_tegrastats_lines_are_parsed() -> None:
    s = parse_tegrastats_line(ORIN_LINE, at=5.0)
    assert s == GpuSample("tegrastats", 3120 * 2**20, 7620 * 2**20, 0.37, 50.312, memory_shared=True, at=5.0)
    s = parse_tegrastats_line(OLDER_LINE)
    assert s.utilization == 0.99 and s.temperature_c == 53.5 and s.memory_total_bytes == 62841 * 2**20
    assert parse_tegrastats_line("tegrastats: interval 1000 ms") is None
    assert parse_tegrastats_line("GR3D_FREQ 0%").utilization == 0.0


def test_gpu_metrics_from_a_sampler(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    gpu = GpuMetrics(registry)
    gpu.set_engine({"plan": "encoder.orin.sm87.trt10.3.0.plan", "precision": "fp16", "tensorrt_version": "10.3.0.30"})
    latest: list[GpuSample | None] = [parse_tegrastats_line(ORIN_LINE)]
    gpu.watch_gpu(lambda: latest[0], "tegrastats")
    text = generate_latest(registry).decode()
    assert 'scanside_gpu_stats_up{source="tegrastats"} 1.0' in text
    assert 'scanside_gpu_memory_used_bytes{memory="shared"} 3.27155712e+09' in text
    assert "scanside_gpu_utilization_ratio 0.37" in text
    assert "scanside_gpu_temperature_celsius 50.312" in text
    assert 'scanside_engine_build_info{plan="encoder.orin.sm87.trt10.3.0.plan"' in text
    assert "scanside_backend_fallback 0.0" in text
    latest[0] = None  # sampler has nothing recent: only "up 0", no stale values
    text = generate_latest(registry).decode()
    assert 'scanside_gpu_stats_up{source="tegrastats"} 0.0' in text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    stale = ("scanside_gpu_memory", "scanside_gpu_temp", "scanside_gpu_util")
    assert not any(line.startswith(stale) for line in samples)

    def broken():
        raise RuntimeError("sampler died")

    gpu.watch_gpu(broken, "nvml")
    assert 'scanside_gpu_stats_up{source="nvml"} 0.0' in generate_latest(registry).decode()


def test_no_gpu_statistics_source_here_is_not_an_error() -> None:
    with pytest.raises(ValueError, match="unknown GPU stats source"):
        open_sampler("smi")
    assert open_sampler("off") is None
    sampler = open_sampler("auto")
    if sampler is not None:  # a GPU host: NVML or tegrastats works
        sampler.close()
        pytest.skip(f"this machine has GPU statistics ({sampler.source})")


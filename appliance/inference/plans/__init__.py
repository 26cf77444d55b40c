"""TensorRT plans on disk: their names, their JSON sidecars, and which plan (if any) this GPU may load.

A TensorRT plan is only valid for the GPU model (compute capability) and the exact TensorRT build that made it, and
only for the ONNX it was built from. `build_engine.py` therefore writes, next to each plan, a sidecar that says all
of that, and the backend picks a plan by reading sidecars, never by trusting a file name:

    engines/<bundle>/encoder.<gpu-slug>.sm<major><minor>.trt<x.y.z>.plan        the serialized engine
    engines/<bundle>/encoder.<gpu-slug>.sm<major><minor>.trt<x.y.z>.plan.json   its sidecar (written last)
    engines/<bundle>/encoder.<gpu-slug>.sm<major><minor>.trt<x.y.z>.plan.verify.json   the FP32 comparison

Everything here is plain Python: the "current GPU" and the "TensorRT version" are values handed in by the caller
(the backend asks CUDA and TensorRT for them), so the selection rules run, and are tested, on machines without a GPU.

The package: `target` (the GPU and TensorRT a plan is tied to, file names, errors), `sidecar` (what a plan's
sidecar says, read and checked), `selection` (which plan fits). Everything is importable from here.
"""

from __future__ import annotations

from appliance.fileio import sha256_file, write_bytes_atomic, write_json_atomic
from appliance.inference.plans.selection import PlanChoice, Requirements, check_plan_file, mismatches, select_plan
from appliance.inference.plans.sidecar import PlanInfo, Profile, read_sidecar, utc_now
from appliance.inference.plans.target import (
    PLAN_FORMAT,
    PLAN_FORMAT_VERSIONS,
    PLAN_SUFFIX,
    PRECISIONS,
    SIDECAR_SUFFIX,
    TYPINGS,
    GpuTarget,
    NoMatchingPlan,
    PlanError,
    fp16_onnx_path,
    gpu_slug,
    parse_compute_capability,
    plan_filename,
    short_trt_version,
    sidecar_path,
    timing_cache_path,
    verify_report_path,
)

__all__ = [
    "PLAN_FORMAT",
    "PLAN_FORMAT_VERSIONS",
    "PLAN_SUFFIX",
    "PRECISIONS",
    "SIDECAR_SUFFIX",
    "TYPINGS",
    "GpuTarget",
    "NoMatchingPlan",
    "PlanChoice",
    "PlanError",
    "PlanInfo",
    "Profile",
    "Requirements",
    "check_plan_file",
    "fp16_onnx_path",
    "gpu_slug",
    "mismatches",
    "parse_compute_capability",
    "plan_filename",
    "read_sidecar",
    "select_plan",
    "sha256_file",
    "short_trt_version",
    "sidecar_path",
    "timing_cache_path",
    "utc_now",
    "verify_report_path",
    "write_bytes_atomic",
    "write_json_atomic",
]

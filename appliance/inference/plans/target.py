"""What a TensorRT plan is tied to, and how its files are named: the GPU (model and compute capability) and the
TensorRT build, the errors every part of plan handling raises, and the formats, precisions and typings known here."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PLAN_FORMAT = "scanside-trt-plan"
PLAN_FORMAT_VERSIONS = (1,)
PLAN_SUFFIX = ".plan"
SIDECAR_SUFFIX = ".plan.json"
PRECISIONS = ("fp16", "fp32")
# How the reduced precision got into the engine:
#   "weak":   the FP32 ONNX plus the FP16 builder flag (TensorRT 10.x, e.g. JetPack 6's 10.3)
#   "strong": a strongly typed network built from an FP16 ONNX made by appliance.inference.fp16 (TensorRT 11.x,
#             where the precision flags are gone, and optionally 10.x)
TYPINGS = ("weak", "strong")


class PlanError(RuntimeError):
    """A plan or its sidecar cannot be used; the message names the file and the reason."""


class NoMatchingPlan(PlanError):
    """No plan in the folder fits this GPU, this TensorRT and this bundle; `rejected` says why for each one."""

    def __init__(self, message: str, rejected: Sequence[tuple[Path, str]] = ()) -> None:
        super().__init__(message)
        self.rejected = list(rejected)


# --- the target: which GPU, which TensorRT ------------------------------------------------------------------------


def gpu_slug(name: str) -> str:
    """'NVIDIA Tesla T4' -> 'nvidia-tesla-t4', 'Orin (nvgpu)' -> 'orin-nvgpu': safe in file names, stable."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(name).strip().lower()).strip("-")
    if not slug:
        raise PlanError(f"GPU name {name!r} gives an empty slug")
    return slug


def short_trt_version(version: str) -> str:
    """'10.3.0.30' -> '10.3.0' (the file name carries three parts; the sidecar keeps the full string)."""
    parts = str(version).strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:3] if p):
        raise PlanError(f"TensorRT version {version!r} is not of the form MAJOR.MINOR[.PATCH[.BUILD]]")
    return ".".join(parts[:3])


def parse_compute_capability(value: object) -> tuple[int, int]:
    """(8, 7), [8, 7], '8.7' or 'sm87' -> (8, 7)."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    text = str(value).strip().lower()
    m = re.fullmatch(r"(\d+)\.(\d+)", text) or re.fullmatch(r"sm_?(\d+?)(\d)", text)
    if not m:
        raise PlanError(f"compute capability {value!r} is not of the form '8.7' or 'sm87'")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class GpuTarget:
    """The GPU and TensorRT build a plan is made for, or that wants to load one."""

    gpu_name: str
    compute_capability: tuple[int, int]
    tensorrt_version: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "compute_capability", parse_compute_capability(self.compute_capability))
        short_trt_version(self.tensorrt_version)  # validates
        gpu_slug(self.gpu_name)

    @property
    def slug(self) -> str:
        return gpu_slug(self.gpu_name)

    @property
    def sm(self) -> str:
        major, minor = self.compute_capability
        return f"sm{major}{minor}"

    @property
    def cc_text(self) -> str:
        return "{}.{}".format(*self.compute_capability)

    @property
    def tag(self) -> str:
        """'nvidia-tesla-t4.sm75.trt10.3.0': the part of every file name that ties it to this target."""
        return f"{self.slug}.{self.sm}.trt{short_trt_version(self.tensorrt_version)}"

    def describe(self) -> str:
        return f"{self.gpu_name} (sm {self.cc_text}), TensorRT {self.tensorrt_version}"


def plan_filename(encoder_stem: str, target: GpuTarget) -> str:
    return f"{encoder_stem}.{target.tag}{PLAN_SUFFIX}"


def sidecar_path(plan_path: Path) -> Path:
    return Path(str(plan_path) + ".json")


def verify_report_path(plan_path: Path) -> Path:
    """'<plan>.verify.json': the FP32 comparison build_engine.py ran before accepting the plan."""
    return Path(str(plan_path) + ".verify.json")


def timing_cache_path(plan_dir: Path, target: GpuTarget) -> Path:
    """Timing caches are only meaningful for one GPU model and TensorRT build, so they are named like plans."""
    return Path(plan_dir) / f"{target.tag}.timing-cache"


def fp16_onnx_path(plan_dir: Path, encoder_stem: str) -> Path:
    return Path(plan_dir) / f"{encoder_stem}.fp16.onnx"

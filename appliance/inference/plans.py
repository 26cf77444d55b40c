"""TensorRT plans on disk: their names, their JSON sidecars, and which plan (if any) this GPU may load.

A TensorRT plan is only valid for the GPU model (compute capability) and the exact TensorRT build that made it, and
only for the ONNX it was built from. `build_engine.py` therefore writes, next to each plan, a sidecar that says all
of that, and the backend picks a plan by reading sidecars, never by trusting a file name:

    engines/<bundle>/encoder.<gpu-slug>.sm<major><minor>.trt<x.y.z>.plan        the serialized engine
    engines/<bundle>/encoder.<gpu-slug>.sm<major><minor>.trt<x.y.z>.plan.json   its sidecar (written last)
    engines/<bundle>/encoder.<gpu-slug>.sm<major><minor>.trt<x.y.z>.plan.verify.json   the FP32 comparison

Everything here is plain Python: the "current GPU" and the "TensorRT version" are values handed in by the caller
(the backend asks CUDA and TensorRT for them), so the selection rules run, and are tested, on machines without a GPU.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.fileio import read_json, sha256_file, write_bytes_atomic, write_json_atomic

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


# --- the sidecar --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """The optimisation profile of the plan's one input: batch sizes min <= opt <= max, the rest fixed."""

    input_name: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        shapes = (self.min_shape, self.opt_shape, self.max_shape)
        if not (len(self.min_shape) == len(self.opt_shape) == len(self.max_shape) >= 1):
            raise PlanError(f"profile shapes must have the same rank: {shapes}")
        for a, b, c in zip(*shapes, strict=True):
            if not (1 <= a <= b <= c):
                raise PlanError(f"profile shapes must satisfy 1 <= min <= opt <= max in every dim: {shapes}")
        if self.min_shape[1:] != self.max_shape[1:] or self.opt_shape[1:] != self.max_shape[1:]:
            raise PlanError(f"only the batch dimension may vary in the profile: {shapes}")

    @classmethod
    def for_batches(cls, input_name: str, sample_shape: Sequence[int], min_batch: int, opt_batch: int,
                    max_batch: int) -> Profile:
        s = tuple(int(v) for v in sample_shape)
        return cls(input_name, (min_batch, *s), (opt_batch, *s), (max_batch, *s))

    @property
    def max_batch(self) -> int:
        return self.max_shape[0]

    @property
    def min_batch(self) -> int:
        return self.min_shape[0]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.max_shape[1:]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input_name, "min": list(self.min_shape), "opt": list(self.opt_shape),
                "max": list(self.max_shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        try:
            return cls(str(data["input"]), tuple(int(v) for v in data["min"]), tuple(int(v) for v in data["opt"]),
                       tuple(int(v) for v in data["max"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"profile is malformed: {exc}") from None


@dataclass(frozen=True)
class PlanInfo:
    """What the sidecar says about a plan. Written by build_engine.py; read by the backend before it loads a plan."""

    plan_file: str  # the plan's file name, relative to the sidecar's folder
    plan_sha256: str
    plan_bytes: int
    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    typing: str
    onnx_file: str  # the bundle's FP32 encoder, as the manifest names it
    onnx_sha256: str  # ... and its hash: a plan from another encoder is never loaded
    built_from_sha256: str  # the ONNX TensorRT actually parsed (the FP16 one for strong typing)
    input_name: str
    output_name: str
    embedding_dim: int
    profile: Profile
    built_at: str
    build_seconds: float
    builder: Mapping[str, Any] = field(default_factory=dict)
    bundle_name: str = ""
    bundle_version: str = ""
    verification: Mapping[str, Any] | None = None

    @property
    def target(self) -> GpuTarget:
        return GpuTarget(self.gpu_name, self.compute_capability, self.tensorrt_version)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "format_version": PLAN_FORMAT_VERSIONS[-1],
            "plan_file": self.plan_file,
            "plan_sha256": self.plan_sha256,
            "plan_bytes": self.plan_bytes,
            "tensorrt_version": self.tensorrt_version,
            "gpu_name": self.gpu_name,
            "gpu_slug": gpu_slug(self.gpu_name),
            "compute_capability": "{}.{}".format(*self.compute_capability),
            "precision": self.precision,
            "typing": self.typing,
            "bundle": {"name": self.bundle_name, "version": self.bundle_version},
            "onnx_file": self.onnx_file,
            "onnx_sha256": self.onnx_sha256,
            "built_from_sha256": self.built_from_sha256,
            "input_name": self.input_name,
            "output_name": self.output_name,
            "embedding_dim": self.embedding_dim,
            "profile": self.profile.to_dict(),
            "built_at": self.built_at,
            "build_seconds": round(float(self.build_seconds), 3),
            "builder": dict(self.builder),
            "verification": dict(self.verification) if self.verification is not None else None,
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "sidecar") -> PlanInfo:
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: must be a JSON object")
        if data.get("format") != PLAN_FORMAT:
            raise PlanError(f"{where}: format is {data.get('format')!r}, expected {PLAN_FORMAT!r}")
        if data.get("format_version") not in PLAN_FORMAT_VERSIONS:
            raise PlanError(f"{where}: format_version {data.get('format_version')!r} is not supported "
                            f"(this build reads {', '.join(map(str, PLAN_FORMAT_VERSIONS))})")
        _check_fields(data, where)
        plan_file = data["plan_file"]
        bundle = data.get("bundle") or {}
        verification = data.get("verification")
        if verification is not None and not isinstance(verification, Mapping):
            raise PlanError(f"{where}: verification must be an object or null")
        try:
            return cls(
                plan_file=plan_file,
                plan_sha256=data["plan_sha256"],
                plan_bytes=data["plan_bytes"],
                tensorrt_version=data["tensorrt_version"],
                gpu_name=data["gpu_name"],
                compute_capability=parse_compute_capability(data["compute_capability"]),
                precision=data["precision"],
                typing=data["typing"],
                onnx_file=data["onnx_file"],
                onnx_sha256=data["onnx_sha256"],
                built_from_sha256=data["built_from_sha256"],
                input_name=data["input_name"],
                output_name=data["output_name"],
                embedding_dim=data["embedding_dim"],
                profile=Profile.from_dict(data["profile"]),
                built_at=data["built_at"],
                build_seconds=float(data["build_seconds"]),
                builder=dict(data.get("builder") or {}),
                bundle_name=str(bundle.get("name", "")) if isinstance(bundle, Mapping) else "",
                bundle_version=str(bundle.get("version", "")) if isinstance(bundle, Mapping) else "",
                verification=dict(verification) if verification is not None else None,
            )
        except PlanError as exc:
            raise PlanError(f"{where}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise PlanError(f"{where}: {exc}") from None


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def read_sidecar(path: Path) -> PlanInfo:
    path = Path(path)
    data = read_json(path, PlanError, f"sidecar {path}")
    return PlanInfo.from_dict(data, where=f"sidecar {path.name}")


# --- matching -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirements:
    """What the loading side needs from a plan, besides the target: the bundle's encoder and its I/O."""

    onnx_sha256: str
    input_name: str
    output_name: str
    sample_shape: tuple[int, ...]
    embedding_dim: int
    min_max_batch: int = 1  # the plan's profile must accept at least this batch size

    @classmethod
    def for_bundle(cls, bundle: Any, min_max_batch: int = 1) -> Requirements:
        """From an appliance.bundle.Bundle (its manifest hash of the encoder is what the plan must be built from)."""
        encoder_rel = bundle.encoder_path.relative_to(bundle.root).as_posix()
        return cls(onnx_sha256=bundle.files[encoder_rel], input_name=bundle.input_name,
                   output_name=bundle.output_name, sample_shape=tuple(bundle.sample_shape),
                   embedding_dim=bundle.embedding_dim, min_max_batch=max(1, int(min_max_batch)))


def mismatches(info: PlanInfo, target: GpuTarget, needs: Requirements) -> list[str]:
    """Every reason this plan must not be loaded here, in plain words; empty when it fits."""
    reasons = []
    if info.tensorrt_version != target.tensorrt_version:
        reasons.append(f"built with TensorRT {info.tensorrt_version}, this is TensorRT {target.tensorrt_version} "
                       "(a plan only loads in the TensorRT build that made it)")
    if info.compute_capability != target.compute_capability:
        reasons.append(f"built for compute capability {'{}.{}'.format(*info.compute_capability)}, "
                       f"this GPU is {target.cc_text}")
    if gpu_slug(info.gpu_name) != target.slug:
        reasons.append(f"built on a {info.gpu_name!r}, this GPU is a {target.gpu_name!r}")
    if info.onnx_sha256 != needs.onnx_sha256:
        reasons.append(f"built from another encoder (ONNX sha256 {info.onnx_sha256[:12]}..., the bundle's is "
                       f"{needs.onnx_sha256[:12]}...): the bundle changed since the build")
    if info.input_name != needs.input_name or info.output_name != needs.output_name:
        reasons.append(f"I/O names {info.input_name!r} -> {info.output_name!r} differ from the bundle's "
                       f"{needs.input_name!r} -> {needs.output_name!r}")
    if info.profile.input_name != needs.input_name:
        reasons.append(f"profile is for input {info.profile.input_name!r}, the bundle's input is {needs.input_name!r}")
    if tuple(info.profile.sample_shape) != tuple(needs.sample_shape):
        reasons.append(f"profile sample shape {list(info.profile.sample_shape)} differs from the bundle's "
                       f"{list(needs.sample_shape)}")
    if info.embedding_dim != needs.embedding_dim:
        reasons.append(f"embedding dim {info.embedding_dim} differs from the bundle's {needs.embedding_dim}")
    if info.profile.min_batch != 1:
        # The worker sends whatever is ready, often one series, and the backend does not pad up to a minimum.
        reasons.append(f"profile's smallest batch is {info.profile.min_batch}; the appliance needs batch 1")
    if info.profile.max_batch < needs.min_max_batch:
        reasons.append(f"profile accepts batches up to {info.profile.max_batch}, the configuration needs "
                       f"{needs.min_max_batch}")
    verification = info.verification
    if verification is None or verification.get("passed") is not True:
        reasons.append("not verified against ONNX Runtime FP32 (no passing verification in the sidecar)")
    return reasons


def check_plan_file(plan_path: Path, info: PlanInfo) -> list[str]:
    """Reasons the plan file itself is unusable: missing, wrong size, wrong hash (corrupted or replaced)."""
    if not plan_path.is_file():
        return [f"plan file {plan_path.name} is missing"]
    size = plan_path.stat().st_size
    if size != info.plan_bytes:
        return [f"plan file is {size} bytes, the sidecar says {info.plan_bytes}: corrupted or replaced"]
    digest = sha256_file(plan_path)
    if digest != info.plan_sha256:
        return [f"plan file sha256 {digest[:12]}... does not match the sidecar's {info.plan_sha256[:12]}...: "
                "corrupted or replaced"]
    return []


@dataclass(frozen=True)
class PlanChoice:
    plan_path: Path
    info: PlanInfo

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.plan_path)


def select_plan(plan_dirs: Path | Iterable[Path], target: GpuTarget, needs: Requirements,
                encoder_stem: str = "encoder") -> PlanChoice:
    """The plan this GPU and TensorRT should load for this bundle, or NoMatchingPlan with every rejection.

    Sidecars are what count: a plan without one is never loaded, and a sidecar that does not match its plan byte
    for byte (size and sha256) is refused as corrupted. Among several fitting plans, the one named for this target
    wins, then the most recently built.
    """
    dirs = [Path(plan_dirs)] if isinstance(plan_dirs, (str, os.PathLike)) else [Path(p) for p in plan_dirs]
    rejected: list[tuple[Path, str]] = []
    fitting: list[PlanChoice] = []
    seen_plans: set[Path] = set()
    for folder in dirs:
        if not folder.is_dir():
            rejected.append((folder, "plan folder does not exist"))
            continue
        for side in sorted(folder.glob("*" + SIDECAR_SUFFIX)):
            try:
                info = read_sidecar(side)
            except PlanError as exc:
                rejected.append((side, str(exc)))
                continue
            plan_path = side.parent / info.plan_file
            seen_plans.add(plan_path.resolve())
            if sidecar_path(plan_path) != side:
                rejected.append((side, f"names plan {info.plan_file!r}, but a sidecar must sit beside its plan as "
                                       f"'<plan>.json'"))
                continue
            reasons = mismatches(info, target, needs)
            if not reasons:
                reasons = check_plan_file(plan_path, info)  # hash only the plans that would otherwise be chosen
            if reasons:
                rejected.append((plan_path, "; ".join(reasons)))
            else:
                fitting.append(PlanChoice(plan_path, info))
        for plan in sorted(folder.glob("*" + PLAN_SUFFIX)):
            if plan.resolve() not in seen_plans:
                rejected.append((plan, "has no sidecar (<plan>.json); it may be half-written or was not made by "
                                       "build_engine.py"))
    if fitting:
        expected = plan_filename(encoder_stem, target)
        fitting.sort(key=lambda c: (c.plan_path.name == expected, c.info.built_at), reverse=True)
        return fitting[0]
    where = ", ".join(str(d) for d in dirs)
    lines = [f"no TensorRT plan for {target.describe()} in {where}"]
    lines += [f"  {p.name}: {why}" for p, why in rejected]
    lines.append("  build one on this machine with: python build_engine.py --bundle <bundle> "
                 + (f"--plan-dir {dirs[0]}" if dirs else ""))
    raise NoMatchingPlan("\n".join(lines), rejected)


__all__ = [
    "PLAN_FORMAT",
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


_REQUIRED = ("plan_file", "plan_sha256", "plan_bytes", "tensorrt_version", "gpu_name", "compute_capability",
             "precision", "typing", "onnx_file", "onnx_sha256", "built_from_sha256", "input_name", "output_name",
             "embedding_dim", "profile", "built_at", "build_seconds")


def _check_fields(data: Mapping[str, Any], where: str) -> None:
    """A sidecar's fields, each of its type and form; PlanError naming the first that is not."""
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise PlanError(f"{where}: missing {', '.join(missing)}")
    for key in ("plan_sha256", "onnx_sha256", "built_from_sha256"):
        if not _is_sha256(data[key]):
            raise PlanError(f"{where}: {key} must be 64 lowercase hex digits, got {data[key]!r}")
    plan_file = data["plan_file"]
    if not isinstance(plan_file, str) or not plan_file.endswith(PLAN_SUFFIX) or "/" in plan_file \
            or "\\" in plan_file or plan_file.startswith("."):
        raise PlanError(f"{where}: plan_file must be a plain '*.plan' file name, got {plan_file!r}")
    if data["precision"] not in PRECISIONS:
        raise PlanError(f"{where}: precision {data['precision']!r} is not one of {', '.join(PRECISIONS)}")
    if data["typing"] not in TYPINGS:
        raise PlanError(f"{where}: typing {data['typing']!r} is not one of {', '.join(TYPINGS)}")
    for key in ("plan_bytes", "embedding_dim"):
        if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1:
            raise PlanError(f"{where}: {key} must be a positive integer, got {data[key]!r}")
    for key in ("tensorrt_version", "gpu_name", "input_name", "output_name", "onnx_file", "built_at"):
        if not isinstance(data[key], str) or not data[key]:
            raise PlanError(f"{where}: {key} must be a non-empty string")
    if not isinstance(data["profile"], Mapping):
        raise PlanError(f"{where}: profile must be an object")

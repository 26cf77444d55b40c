"""A plan's JSON sidecar: the optimisation profile, everything `build_engine.py` records about a plan, and reading
one back with every field checked."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.fileio import read_json
from appliance.inference.plans.target import (
    PLAN_FORMAT,
    PLAN_FORMAT_VERSIONS,
    PLAN_SUFFIX,
    PRECISIONS,
    TYPINGS,
    GpuTarget,
    PlanError,
    gpu_slug,
    parse_compute_capability,
)


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

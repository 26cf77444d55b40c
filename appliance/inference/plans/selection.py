"""Which plan, if any, this GPU and TensorRT may load for a bundle: every reason a plan does not fit, the plan file
checked against its sidecar, and the choice among the plans that do."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.fileio import sha256_file
from appliance.inference.plans.sidecar import PlanInfo, read_sidecar
from appliance.inference.plans.target import (
    PLAN_SUFFIX,
    SIDECAR_SUFFIX,
    GpuTarget,
    NoMatchingPlan,
    PlanError,
    gpu_slug,
    plan_filename,
    sidecar_path,
)


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

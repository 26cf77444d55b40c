#!/usr/bin/env python3
"""Build a TensorRT FP16 plan for a ScanSide bundle on the GPU this runs on, verify it, and put it beside the bundle.

A TensorRT plan only loads on the GPU model and the TensorRT build that made it, so it is built on the target (a
Jetson with JetPack 6, a T4 host), normally by the container's entrypoint at first start. The flow:

 1. Look:   import TensorRT, open CUDA (pycuda, else cuda-python), read the GPU's name and compute capability.
            No TensorRT, no CUDA binding or driver, or no GPU: exit 3 with what is missing.
 2. Skip:   if a verified plan for this GPU, this TensorRT and this exact encoder (sha256) is already in the plan
            folder, say so and exit 0 (--force rebuilds; --check only reports: exit 0 present, 6 missing).
 3. Type:   TensorRT 10.x still has the FP16 builder flag: the FP32 ONNX is parsed and FP16 is enabled with the flag
            ("weak" typing; JetPack 6 ships 10.3). TensorRT 11.x builds strongly typed networks only: the precision
            must be in the ONNX, so the FP32 encoder is converted with onnxconverter-common (inputs/outputs stay
            float32; LayerNorm, Softmax and reductions stay FP32) and saved as <encoder>.fp16.onnx ("strong"
            typing). Which one is found by asking the API (hasattr BuilderFlag.FP16), not by parsing versions;
            --typing forces one (strong also works on 10.x).
 4. Build:  one optimisation profile, batch --min-batch ... --max-batch (optimised for --opt-batch), workspace limit
            --workspace-mib, builder optimisation level --opt-level (0-5, TensorRT's default 3), and a timing cache
            kept in the plan folder (<gpu>.sm<XY>.trt<x.y.z>.timing-cache) and reused by the next build on the same
            GPU and TensorRT. ONNX parser errors name the node and its op (exit 4); running out of GPU memory says
            which setting to lower (exit 5).
 5. Verify: the new plan and ONNX Runtime FP32 embed the same generated studies (appliance.dev.synth; --verify-studies,
            --verify-seed); every study must have embedding cosine >= --min-cosine (0.999) and the same zero-shot
            decisions (positives per finding after thresholds). The table is printed and saved as
            <plan>.verify.json. Any failure: the plan is kept as <plan>.rejected for inspection, nothing is
            installed, exit 2.
 6. Install: <encoder>.<gpu-slug>.sm<XY>.trt<x.y.z>.plan, then its sidecar <plan>.json (TensorRT version, GPU,
            compute capability, ONNX sha256, precision, typing, profile, build time, builder settings,
            verification). The appliance loads only plans whose sidecar matches its GPU, TensorRT and bundle and
            whose bytes match the sidecar's sha256.

Without a GPU, --fp16-onnx-only writes the FP16 ONNX (step 3) and exits, and --probe reports what is installed.
Exit codes: 0 done (or already there), 1 other error, 2 verification failed, 3 no TensorRT/CUDA/GPU,
4 ONNX parser error, 5 out of GPU memory, 6 --check found no plan.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from appliance.bundle import Bundle, BundleError, load_bundle  # noqa: E402
from appliance.inference import fp16  # noqa: E402
from appliance.inference.plans import (  # noqa: E402
    GpuTarget,
    NoMatchingPlan,
    PlanChoice,
    PlanInfo,
    Profile,
    Requirements,
    fp16_onnx_path,
    plan_filename,
    select_plan,
    sha256_file,
    sidecar_path,
    timing_cache_path,
    utc_now,
    verify_report_path,
    write_bytes_atomic,
    write_json_atomic,
)
from appliance.scoring import ScoringPolicy, normalise, score_batch  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_VERIFY, EXIT_ENV, EXIT_PARSE, EXIT_OOM, EXIT_NO_PLAN = 0, 1, 2, 3, 4, 5, 6
MIN_COSINE = 0.999
_OOM_WORDS = ("out of memory", "outofmemory", "cudaerrormemoryallocation", "requested amount of gpu memory",
              "insufficient memory", "failed to allocate")


class BuildError(RuntimeError):
    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- arguments ------------------------------------------------------------------------------------------------------


def default_bundle() -> Path:
    """engines/reference-v1 when it exists, else the configured default (engines/placeholder-v0)."""
    from appliance.config import DEFAULT_BUNDLE

    reference = ROOT / "engines" / "reference-v1"
    return reference if (reference / "manifest.json").is_file() else DEFAULT_BUNDLE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_engine.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None,
                   help="the appliance's scanside.toml: its engine.bundle, engine.plan_dir and engine.trt_max_batch "
                        "(else engine.max_batch) become the defaults of --bundle, --plan-dir and --max-batch, with "
                        "SCANSIDE_ENGINE_* environment overrides applied as the service applies them")
    p.add_argument("--config-env", action="store_true",
                   help="like --config without a file: the built-in defaults plus SCANSIDE_ENGINE_* environment "
                        "variables, as `scanside serve` without --config reads them (the containers use this)")
    p.add_argument("--bundle", type=Path, default=None,
                   help="bundle folder (default: from --config, else engines/reference-v1 if present, else "
                        "engines/placeholder-v0)")
    p.add_argument("--plan-dir", type=Path, default=None,
                   help="where plan, sidecar, timing cache and FP16 ONNX go (default: from --config, else the bundle "
                        "folder; use a writable volume when the bundle is read-only, and set engine.plan_dir to it)")
    p.add_argument("--max-batch", type=int, default=None, help="largest batch the plan accepts (default: from "
                   "--config, else 4, the appliance's engine.max_batch default)")
    p.add_argument("--opt-batch", type=int, default=None, help="batch size TensorRT tunes for (default: max)")
    p.add_argument("--min-batch", type=int, default=1, help="smallest batch the plan accepts (default 1)")
    p.add_argument("--workspace-mib", type=int, default=1024,
                   help="builder workspace limit in MiB (default 1024; lower it on an 8 GB Jetson if the build runs "
                        "out of memory)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(0, 6), metavar="{0..5}",
                   help="builder optimisation level: higher searches longer for faster kernels (default 3)")
    p.add_argument("--timing-cache", type=Path, default=None,
                   help="timing cache file to load and save (default: <gpu>.sm<XY>.trt<ver>.timing-cache in the "
                        "plan folder)")
    p.add_argument("--no-timing-cache", action="store_true", help="neither load nor save a timing cache")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="default fp16")
    p.add_argument("--typing", choices=("auto", "weak", "strong"), default="auto",
                   help="auto: the FP16 builder flag where TensorRT has it (10.x), else a strongly typed network from "
                        "the FP16 ONNX (11.x); strong works on 10.x too")
    p.add_argument("--verify-studies", type=int, default=12, help="generated studies compared with ONNX Runtime "
                   "FP32 (default 12; 0 skips verification, and the appliance then refuses the plan)")
    p.add_argument("--verify-seed", type=int, default=90_000, help="first synth seed of the verification studies")
    p.add_argument("--min-cosine", type=float, default=MIN_COSINE,
                   help=f"per-study cosine floor (default {MIN_COSINE})")
    p.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching verified plan exists")
    p.add_argument("--check", action="store_true", help="only report whether a matching plan exists (exit 0/6)")
    p.add_argument("--fp16-onnx-only", action="store_true",
                   help="write <encoder>.fp16.onnx (what TensorRT 11 parses) and exit; needs no GPU")
    p.add_argument("--probe", action="store_true", help="print TensorRT, CUDA and GPU availability and exit")
    p.add_argument("--verbose", action="store_true", help="TensorRT's INFO messages too")
    return p


def apply_config(args: argparse.Namespace) -> None:
    """Fill --bundle/--plan-dir/--max-batch from the appliance's configuration, so the plan is built for exactly
    what the service will load. engine.plan_dir and engine.trt_max_batch are read only if this build has them."""
    if args.config is None and not args.config_env:
        if args.max_batch is None:
            args.max_batch = 4
        return
    from appliance.config import ConfigError, load_settings

    try:
        engine = load_settings(args.config).engine  # None: defaults + environment
    except ConfigError as exc:
        raise BuildError(f"{'--config ' + str(args.config) if args.config else '--config-env'}: {exc}") from exc
    if args.bundle is None:
        args.bundle = Path(engine.bundle)
    plan_dir = getattr(engine, "plan_dir", None)
    if args.plan_dir is None and plan_dir:
        args.plan_dir = Path(plan_dir)
    if args.max_batch is None:
        trt_max = getattr(engine, "trt_max_batch", 0) or 0
        args.max_batch = int(trt_max) if trt_max > 0 else int(engine.max_batch)


def check_args(args: argparse.Namespace) -> None:
    if not 1 <= args.min_batch <= args.max_batch:
        raise BuildError(f"need 1 <= --min-batch ({args.min_batch}) <= --max-batch ({args.max_batch})")
    if args.opt_batch is None:
        args.opt_batch = args.max_batch
    if not args.min_batch <= args.opt_batch <= args.max_batch:
        raise BuildError(f"--opt-batch {args.opt_batch} must lie in [--min-batch {args.min_batch}, --max-batch "
                         f"{args.max_batch}]")
    if args.workspace_mib < 16:
        raise BuildError(f"--workspace-mib {args.workspace_mib} is too small (>= 16)")
    if not 0.0 < args.min_cosine <= 1.0:
        raise BuildError(f"--min-cosine {args.min_cosine} must lie in (0, 1]")
    if args.verify_studies < 0:
        raise BuildError("--verify-studies must be >= 0")


# --- comparison (pure numpy: also used by tests/test_fp16.py on the CPU) -----------------------------------------


def compare_embeddings(reference: np.ndarray, candidate: np.ndarray, bank: Any,
                       policy: ScoringPolicy | None = None, min_cosine: float = MIN_COSINE) -> dict[str, Any]:
    """Per-study cosine and zero-shot decisions of `candidate` against `reference` (both (N, D)); `passed` when
    every cosine >= min_cosine and every finding's positive/negative decision agrees."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise ValueError(f"embeddings must have the same (N, D) shape, got {ref.shape} and {cand.shape}")
    if not np.isfinite(cand).all():
        bad = int((~np.isfinite(cand).all(axis=1)).sum())
        return {"passed": False, "studies": len(cand), "error": f"{bad} candidate embeddings are not finite",
                "min_cosine": float("nan"), "decision_mismatches": []}
    cos = (normalise(ref, ref.shape[1]) * normalise(cand, cand.shape[1])).sum(axis=1)
    policy = policy or ScoringPolicy()
    ref_scores = score_batch(ref, bank, policy)
    cand_scores = score_batch(cand, bank, policy)
    rows: list[dict[str, Any]] = []
    mismatches: list[dict[str, Any]] = []
    for i, (r, c) in enumerate(zip(ref_scores, cand_scores, strict=True)):
        flips = []
        for fr, fc in zip(r.findings, c.findings, strict=True):
            if fr.positive != fc.positive:
                flips.append({"finding": fr.finding_id, "reference_score": fr.score, "candidate_score": fc.score,
                              "threshold": fr.threshold})
        mismatches.extend({"study": i, **f} for f in flips)
        rows.append({
            "study": i,
            "cosine": float(cos[i]),
            "max_abs_score_diff": float(max(abs(fr.score - fc.score)
                                            for fr, fc in zip(r.findings, c.findings, strict=True))),
            "positives_reference": [f.finding_id for f in r.findings if f.positive],
            "positives_candidate": [f.finding_id for f in c.findings if f.positive],
            "same_decisions": not flips,
        })
    worst = float(cos.min()) if len(cos) else 1.0
    return {
        "passed": bool(worst >= min_cosine and not mismatches),
        "studies": len(cos),
        "min_cosine_required": min_cosine,
        "min_cosine": worst,
        "mean_cosine": float(cos.mean()) if len(cos) else 1.0,
        "max_abs_score_diff": float(max((row["max_abs_score_diff"] for row in rows), default=0.0)),
        "decision_mismatches": mismatches,
        "per_study": rows,
    }


def format_comparison(report: dict[str, Any], title: str) -> str:
    lines = [title, f"  {'study':>5}  {'cosine':>10}  {'max|dscore|':>11}  same decisions"]
    for row in report.get("per_study", []):
        lines.append(f"  {row['study']:>5}  {row['cosine']:>10.6f}  {row['max_abs_score_diff']:>11.2e}  "
                     f"{'yes' if row['same_decisions'] else 'NO'}")
    for m in report.get("decision_mismatches", []):
        lines.append(f"  study {m['study']}: {m['finding']} flips ({m['reference_score']:.4f} vs "
                     f"{m['candidate_score']:.4f}, threshold {m['threshold']:.4f})")
    if "error" in report:
        lines.append(f"  {report['error']}")
    required = report.get("min_cosine_required", MIN_COSINE)
    lines.append(f"  min cosine {report['min_cosine']:.6f} (required >= {required})"
                 f", decision mismatches {len(report['decision_mismatches'])}: "
                 f"{'PASSED' if report['passed'] else 'FAILED'}")
    return "\n".join(lines)


def generate_studies(bundle: Bundle, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """(n, T, C, H, W) tensors of synthetic studies (vendors A, B, C in turn) with their conditions."""
    from appliance.dev.synth import plan_study
    from appliance.dev.synth.arrays import study_tensor

    tensors, conditions = [], []
    for i in range(n):
        plan = plan_study(seed + i, "ABC"[i % 3])
        tensors.append(study_tensor(plan, bundle.preprocess))
        conditions.append(f"{plan.condition}/{plan.vendor}")
    return np.stack(tensors).astype(np.float32), conditions


# --- ONNX parser errors ---------------------------------------------------------------------------------------------


def onnx_node(model_bytes: bytes, index: int) -> tuple[str | None, str | None]:
    """(name, op_type) of the top-level ONNX node at `index`, or (None, None)."""
    try:
        import onnx

        nodes = onnx.load_from_string(model_bytes).graph.node
    except Exception:
        return None, None
    if 0 <= index < len(nodes):
        return nodes[index].name or f"#{index} (unnamed)", nodes[index].op_type
    return None, None


def format_parser_error(index: int, name: str | None, op: str | None, code: str, desc: str) -> str:
    where = f"node {index}" if index >= 0 else "the graph"
    if name or op:
        where += f" {name!r}" if name else ""
        where += f" (op {op})" if op else ""
    return f"ONNX parser failed at {where}: {code}: {desc}"


def parser_errors(parser: Any, model_bytes: bytes) -> list[str]:
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        index = int(err.node())
        # ParserError.node_name()/node_operator() exist where the C++ IParserError has nodeName()/nodeOperator()
        # (TensorRT 10.x); fall back to looking the index up in the ONNX graph ourselves.
        name = _call_str(err, "node_name")
        op = _call_str(err, "node_operator")
        if not name or not op:
            n2, op2 = onnx_node(model_bytes, index)
            name, op = name or n2, op or op2
        out.append(format_parser_error(index, name, op, str(err.code()), str(err.desc())))
    return out


def _call_str(obj: Any, method: str) -> str | None:
    fn = getattr(obj, method, None)
    if fn is None:
        return None
    try:
        value = fn()
    except Exception:
        return None
    return str(value) if value else None


# --- the build ------------------------------------------------------------------------------------------------------


def _is_oom(text: str) -> bool:
    t = text.lower()
    return any(w in t for w in _OOM_WORDS)


def pin_fp32_layers(trt: Any, network: Any) -> int:
    """Weak typing only: ask for FP32 in normalisation, softmax and reduce layers, as the FP16 ONNX does for strong
    typing. ILayer.type/.precision/.set_output_type and BuilderFlag.PREFER_PRECISION_CONSTRAINTS (8.2+) belong to
    weak typing and are gone in 11.x, where this is never called. LayerType.NORMALIZATION exists since 8.6."""
    kinds = {getattr(trt.LayerType, n) for n in ("NORMALIZATION", "SOFTMAX", "REDUCE") if hasattr(trt.LayerType, n)}
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in kinds:
            layer.precision = trt.DataType.FLOAT
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.DataType.FLOAT)
            pinned += 1
    return pinned


def _check_network_io(network: Any, bundle: Bundle, profile: Profile) -> None:
    """The parsed network's inputs and outputs are the bundle's, and its batch fits the profile."""
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    if [t.name for t in inputs] != [bundle.input_name] or [t.name for t in outputs] != [bundle.output_name]:
        raise BuildError(f"the parsed network's I/O is {[t.name for t in inputs]} -> {[t.name for t in outputs]}, the "
                         f"bundle says [{bundle.input_name!r}] -> [{bundle.output_name!r}]")
    shape = tuple(inputs[0].shape)
    if shape[1:] != tuple(bundle.sample_shape):
        raise BuildError(f"the network's input shape {list(shape)} does not end in the bundle's sample shape "
                         f"{list(bundle.sample_shape)}")
    if shape[0] != -1 and not profile.min_shape[0] == profile.max_shape[0] == shape[0]:
        raise BuildError(f"the encoder has a fixed batch of {shape[0]}; build with --min-batch = --max-batch = "
                         f"{shape[0]}")


def _use_timing_cache(config: Any, cache_path: Path | None) -> dict[str, Any]:
    """Load the timing cache into the builder config (a fresh one if it is unusable); what was loaded, for the
    sidecar."""
    cache_info: dict[str, Any] = {"path": None, "loaded_bytes": 0, "saved_bytes": 0}
    if cache_path is not None:
        cache_info["path"] = str(cache_path)
        loaded = cache_path.read_bytes() if cache_path.is_file() else b""
        try:
            cache = config.create_timing_cache(loaded)
        except (RuntimeError, TypeError):  # a damaged cache file: whether TensorRT raises or returns None
            cache = None
        if cache is None or not config.set_timing_cache(cache, False):
            print(f"warning: timing cache {cache_path} is unusable (other TensorRT build or GPU?); starting afresh",
                  file=sys.stderr)
            loaded = b""
            config.set_timing_cache(config.create_timing_cache(b""), False)
        cache_info["loaded_bytes"] = len(loaded)
    return cache_info


def build_serialized(trt: Any, caps: Any, logger: Any, onnx_bytes: bytes, bundle: Bundle, *, typing: str,
                     precision: str, profile: Profile, workspace_bytes: int, opt_level: int,
                     cache_path: Path | None) -> tuple[bytes, dict[str, Any]]:
    """Parse, configure, build. Returns (plan bytes, builder settings for the sidecar). Call with the CUDA context
    pushed. TensorRT names: Builder, create_network, NetworkDefinitionCreationFlag.STRONGLY_TYPED, OnnxParser.parse,
    create_builder_config, set_memory_pool_limit(MemoryPoolType.WORKSPACE) (8.4+), builder_optimization_level
    (8.6+), set_flag(BuilderFlag.FP16) (10.x only), create_optimization_profile/set_shape/add_optimization_profile,
    create_timing_cache/set_timing_cache/get_timing_cache().serialize(), build_serialized_network (8.0+)."""
    builder = trt.Builder(logger)
    network_flags: list[str] = []
    flags = 0
    if typing == "strong":
        if caps.has_strongly_typed_flag:
            # Required on 10.x to get a strongly typed network; accepted and ignored on 11.x (always strong).
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
            network_flags.append("STRONGLY_TYPED")
        elif caps.has_fp16_flag:
            raise BuildError(f"TensorRT {caps.version} has neither strongly typed networks nor is it 11.x; use "
                             "--typing weak", EXIT_ENV)
    network = builder.create_network(flags)  # EXPLICIT_BATCH is not passed: ignored since 10.0
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = parser_errors(parser, onnx_bytes) or [f"ONNX parser failed: {logger.last()}"]
        raise BuildError("\n".join(errors), EXIT_PARSE)
    _check_network_io(network, bundle, profile)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    builder_flags: list[str] = []
    if caps.has_optimization_level:
        config.builder_optimization_level = int(opt_level)
    if precision == "fp16" and typing == "weak":
        if not caps.has_fp16_flag:
            raise BuildError(f"TensorRT {caps.version} has no FP16 builder flag (removed in 11.0): use --typing "
                             "strong", EXIT_ENV)
        config.set_flag(trt.BuilderFlag.FP16)
        builder_flags.append("FP16")
        pinned = pin_fp32_layers(trt, network)
        if pinned and hasattr(trt.BuilderFlag, "PREFER_PRECISION_CONSTRAINTS"):
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
            builder_flags.append("PREFER_PRECISION_CONSTRAINTS")
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(profile.input_name, profile.min_shape, profile.opt_shape, profile.max_shape)
    if config.add_optimization_profile(opt_profile) < 0:
        raise BuildError(f"TensorRT refused the optimisation profile {profile.to_dict()}: {logger.last()}")

    cache_info = _use_timing_cache(config, cache_path)

    started = time.perf_counter()
    try:
        serialized = builder.build_serialized_network(network, config)
    except (MemoryError, RuntimeError) as exc:
        raise BuildError(_build_failure(f"{type(exc).__name__}: {exc}", logger, workspace_bytes, profile),
                         EXIT_OOM if _is_oom(str(exc)) or _is_oom(logger.last(20)) else EXIT_ERROR) from exc
    seconds = time.perf_counter() - started
    if serialized is None:
        raise BuildError(_build_failure("build_serialized_network returned nothing", logger, workspace_bytes, profile),
                         EXIT_OOM if _is_oom(logger.last(20)) else EXIT_ERROR)
    plan = bytes(memoryview(serialized))
    if cache_path is not None:
        data = bytes(memoryview(config.get_timing_cache().serialize()))
        write_bytes_atomic(cache_path, data)
        cache_info["saved_bytes"] = len(data)
    settings = {
        "workspace_bytes": int(workspace_bytes),
        "optimization_level": int(opt_level) if caps.has_optimization_level else None,
        "builder_flags": builder_flags,
        "fp32_layers": "LayerNorm/Softmax/Reduce pinned to FP32" if "PREFER_PRECISION_CONSTRAINTS" in builder_flags
        else ("FP32 in the ONNX (strong typing)" if typing == "strong" else None),
        "network_flags": network_flags,
        "timing_cache": cache_info,
        "builder_seconds": round(seconds, 3),
    }
    return plan, settings


def _build_failure(what: str, logger: Any, workspace_bytes: int, profile: Profile) -> str:
    msg = f"TensorRT build failed: {what}. TensorRT said: {logger.last(8)}"
    if _is_oom(what) or _is_oom(logger.last(20)):
        msg += (f". This is a GPU out-of-memory failure: lower --workspace-mib (now {workspace_bytes >> 20}) or "
                f"--max-batch (now {profile.max_batch}), and stop other GPU processes")
    return msg


# --- verification ---------------------------------------------------------------------------------------------------


def verify_plan(bundle: Bundle, choice: PlanChoice, studies: int, seed: int, min_cosine: float,
                device: int, logger: Any | None = None) -> dict[str, Any]:
    from appliance.inference.onnxruntime_backend import OnnxRuntimeBackend
    from appliance.inference.tensorrt_backend import TensorRTBackend

    x, conditions = generate_studies(bundle, studies, seed)
    reference = OnnxRuntimeBackend(bundle, max_batch=choice.info.profile.max_batch).infer(x)
    backend = TensorRTBackend(bundle, plan=choice, device=device, logger=logger)  # the builder's: one per process
    try:
        candidate = backend.infer(x)
    finally:
        backend.close()
    report = compare_embeddings(reference, candidate, bundle.label_bank, ScoringPolicy(), min_cosine)
    for row, cond in zip(report["per_study"], conditions, strict=True):
        row["condition"] = cond
    report.update({"reference": "onnxruntime fp32 (CPU)", "candidate": f"tensorrt {choice.info.precision}",
                   "seed": seed, "checked_at": utc_now()})
    return report


# --- commands -------------------------------------------------------------------------------------------------------


def probe() -> int:
    from appliance.inference.cuda_memory import CudaError, installed_bindings, open_cuda
    from appliance.inference.tensorrt_backend import TensorRTCapabilities, TensorRTUnavailable, import_tensorrt

    ok = True
    try:
        trt = import_tensorrt()
        caps = TensorRTCapabilities.of(trt)
        print(f"TensorRT {caps.version}: FP16 builder flag {'yes' if caps.has_fp16_flag else 'no'}, "
              f"STRONGLY_TYPED flag {'yes' if caps.has_strongly_typed_flag else 'no'}, "
              f"default typing {caps.default_typing}")
    except TensorRTUnavailable as exc:
        print(f"TensorRT: {exc}")
        ok = False
    print(f"CUDA bindings installed: {', '.join(installed_bindings()) or 'none'}")
    try:
        cuda = open_cuda()
        for i in range(cuda.device_count()):
            d = cuda.device_info(i)
            print(f"GPU {i}: {d.name}, compute capability {d.compute_capability[0]}.{d.compute_capability[1]}, "
                  f"{d.total_memory >> 20} MiB ({cuda.binding})")
    except CudaError as exc:
        print(f"GPU: {exc}")
        ok = False
    try:
        import onnxconverter_common  # noqa: F401

        print("onnxconverter-common: installed (FP16 ONNX for strongly typed builds)")
    except ImportError:
        print("onnxconverter-common: not installed (needed for strongly typed builds, i.e. TensorRT 11)")
    return EXIT_OK if ok else EXIT_ENV


def write_fp16_onnx(bundle: Bundle, plan_dir: Path) -> tuple[Path, bytes, fp16.FP16Report]:
    data, report = fp16.convert_bytes(bundle.encoder_path.read_bytes())
    path = fp16_onnx_path(plan_dir, bundle.encoder_path.stem)
    write_bytes_atomic(path, data)
    return path, data, report


def run(args: argparse.Namespace) -> int:
    if args.probe:
        return probe()
    apply_config(args)
    check_args(args)
    bundle_dir = args.bundle or default_bundle()
    try:
        bundle = load_bundle(bundle_dir)
    except BundleError as exc:
        raise BuildError(str(exc)) from exc
    plan_dir = Path(args.plan_dir) if args.plan_dir else bundle.root
    plan_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(plan_dir, os.W_OK) and not args.check:
        raise BuildError(f"plan folder {plan_dir} is not writable; pass --plan-dir on a writable volume")
    stem = bundle.encoder_path.stem

    if args.fp16_onnx_only:
        path, _, report = write_fp16_onnx(bundle, plan_dir)
        print(f"wrote {path} ({report.converter}; FP16 ops {report.ops_fp16}; FP32 ops {report.ops_fp32}; "
              f"{report.casts_added} casts added)")
        return EXIT_OK

    from appliance.inference.cuda_memory import CudaError, open_cuda
    from appliance.inference.tensorrt_backend import (
        TensorRTCapabilities,
        TensorRTUnavailable,
        current_target,
        import_tensorrt,
        make_logger,
    )

    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as exc:
        raise BuildError(f"TensorRT missing: {exc}", EXIT_ENV) from exc
    caps = TensorRTCapabilities.of(trt)
    try:
        cuda = open_cuda()
        target: GpuTarget = current_target(cuda, trt, args.device)
    except CudaError as exc:
        raise BuildError(f"no GPU: {exc}", EXIT_ENV) from exc
    print(f"target: {target.describe()}; TensorRT typing available: FP16 flag "
          f"{'yes' if caps.has_fp16_flag else 'no'}, strongly typed {'yes' if caps.has_strongly_typed_flag else 'no'}")

    needs = Requirements.for_bundle(bundle, min_max_batch=args.max_batch)
    try:
        existing = select_plan([plan_dir], target, needs, stem)
    except NoMatchingPlan as exc:
        existing = None
        missing_reason = str(exc)
    if args.check:
        if existing is None:
            print(missing_reason)
            return EXIT_NO_PLAN
        print(f"present: {existing.plan_path}")
        return EXIT_OK
    if existing is not None and not args.force:
        print(f"a verified plan for {target.describe()} and this encoder is already there: {existing.plan_path} "
              "(--force rebuilds it)")
        return EXIT_OK

    typing = caps.default_typing if args.typing == "auto" else args.typing
    source = bundle.encoder_path.read_bytes()
    if args.precision == "fp16" and typing == "strong":
        path, onnx_bytes, report = write_fp16_onnx(bundle, plan_dir)
        print(f"strongly typed build: FP16 ONNX {path.name} ({report.converter}; FP32 kept in {report.ops_fp32})")
    else:
        onnx_bytes = source
    profile = Profile.for_batches(bundle.input_name, bundle.sample_shape, args.min_batch, args.opt_batch,
                                  args.max_batch)
    cache_path = None if args.no_timing_cache else (args.timing_cache or timing_cache_path(plan_dir, target))
    logger = make_logger(trt, verbose=args.verbose)

    ctx = cuda.retain_primary_context(args.device)
    try:
        with ctx.active():
            free, total = cuda.mem_get_info()
            print(f"GPU memory: {free >> 20} MiB free of {total >> 20} MiB; building ({args.precision}, {typing} "
                  f"typing, batch {args.min_batch}..{args.opt_batch}..{args.max_batch}, workspace "
                  f"{args.workspace_mib} MiB, optimisation level {args.opt_level})...")
            started = time.perf_counter()
            plan_bytes, settings = build_serialized(
                trt, caps, logger, onnx_bytes, bundle, typing=typing, precision=args.precision, profile=profile,
                workspace_bytes=args.workspace_mib << 20, opt_level=args.opt_level, cache_path=cache_path)
            build_seconds = time.perf_counter() - started
    finally:
        ctx.release()
    settings.update({"cuda_binding": cuda.binding, "device": args.device})
    cache = settings["timing_cache"]
    print(f"built in {build_seconds:.1f} s, plan {len(plan_bytes) >> 10} KiB; timing cache "
          f"{'reused (' + str(cache['loaded_bytes']) + ' bytes)' if cache['loaded_bytes'] else 'new'}"
          f"{', saved to ' + str(cache['path']) if cache['path'] else ''}")

    plan_path = plan_dir / plan_filename(stem, target)
    staging = plan_path.with_name(plan_path.name + ".staging")
    write_bytes_atomic(staging, plan_bytes)
    encoder_rel = bundle.encoder_path.relative_to(bundle.root).as_posix()
    info = PlanInfo(
        plan_file=plan_path.name, plan_sha256=sha256_file(staging), plan_bytes=len(plan_bytes),
        tensorrt_version=target.tensorrt_version, gpu_name=target.gpu_name,
        compute_capability=target.compute_capability, precision=args.precision, typing=typing,
        onnx_file=encoder_rel, onnx_sha256=bundle.files[encoder_rel],
        built_from_sha256=hashlib.sha256(onnx_bytes).hexdigest(), input_name=bundle.input_name,
        output_name=bundle.output_name, embedding_dim=bundle.embedding_dim, profile=profile, built_at=utc_now(),
        build_seconds=build_seconds, builder=settings, bundle_name=bundle.name, bundle_version=bundle.version)

    if args.verify_studies == 0:
        verification: dict[str, Any] = {"passed": False, "skipped": True, "studies": 0}
        print("verification skipped (--verify-studies 0): the appliance will refuse this plan")
    else:
        print(f"verifying against ONNX Runtime FP32 on {args.verify_studies} generated studies...")
        try:
            verification = verify_plan(bundle, PlanChoice(staging, info), args.verify_studies, args.verify_seed,
                                       args.min_cosine, args.device, logger=logger)
        except Exception as exc:  # the new plan failed to load or run: keep it for inspection, install nothing
            rejected = plan_path.with_name(plan_path.name + ".rejected")
            os.replace(staging, rejected)
            raise BuildError(f"VERIFICATION FAILED: the new plan could not be run ({type(exc).__name__}: {exc}); "
                             f"kept as {rejected}, nothing installed", EXIT_VERIFY) from exc
        write_json_atomic(verify_report_path(plan_path), verification)
        print(format_comparison(verification, f"{plan_path.name}: TensorRT {args.precision} vs ONNX Runtime FP32"))
        print(f"comparison saved to {verify_report_path(plan_path)}")
    kept = ("passed", "skipped", "studies", "min_cosine", "mean_cosine", "max_abs_score_diff", "seed", "checked_at")
    summary: dict[str, Any] = {k: verification.get(k) for k in kept if k in verification}
    summary["decision_mismatches"] = len(verification.get("decision_mismatches", []))
    info = dataclasses.replace(info, verification=summary)
    if not verification.get("passed") and not verification.get("skipped"):
        rejected = plan_path.with_name(plan_path.name + ".rejected")
        os.replace(staging, rejected)
        write_json_atomic(Path(str(rejected) + ".json"), info.to_dict())  # not '*.plan.json': never selected
        raise BuildError(f"VERIFICATION FAILED: the plan does not reproduce ONNX Runtime FP32 (min cosine "
                         f"{verification.get('min_cosine', float('nan')):.6f}, "
                         f"{summary['decision_mismatches']} decision mismatches); kept as {rejected} for inspection, "
                         "nothing installed", EXIT_VERIFY)
    os.replace(staging, plan_path)
    write_json_atomic(sidecar_path(plan_path), info.to_dict())  # last: the sidecar is what makes a plan loadable
    print(f"installed {plan_path}\n          {sidecar_path(plan_path)}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BuildError as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return exc.exit_code
    except fp16.FP16ConversionError as exc:
        print(f"build_engine: FP16 conversion failed: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

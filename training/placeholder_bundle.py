"""Deterministic PLACEHOLDER engine bundle for the demo and tests, until a trained reference model exists.

The encoder is an untrained random projection of coarse image and motion statistics; its scores carry no clinical
or even synthetic meaning. It exists so that every stage of the appliance (bundle loading, ONNX inference, scoring,
review flags, OOD check) runs on a real bundle with the real formats.

    python -m training.placeholder_bundle --out engines/placeholder-v0
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from appliance.bundle import BundleError, Finding, LabelBank, write_bundle
from appliance.preprocess import PreprocessSpec
from appliance.scoring import fit_reference_stats, normalise

NAME = "placeholder"
VERSION = "0"
INPUT_NAME = "study"
OUTPUT_NAME = "embedding"
EMBEDDING_DIM = 64
GRID = 4  # pooled cells per image side
OPSET = 17
IR_VERSION = 8  # the IR that goes with opset 17; older TensorRT/ORT parsers refuse newer IRs
CALIBRATION_SAMPLES = 64
MIN_CALIBRATION = 4

WARNING = (
    "PLACEHOLDER: untrained random projection. Scores carry no clinical or even synthetic meaning. "
    "Research software, not for clinical use."
)

# (id, name, prompts, placeholder prevalence, rare)
FINDINGS: tuple[tuple[str, str, tuple[str, ...], float, bool], ...] = (
    (
        "lv_systolic_dysfunction",
        "LV systolic dysfunction",
        (
            "cine short-axis MRI with reduced left ventricular ejection fraction",
            "the left ventricle contracts poorly in systole",
            "globally hypokinetic left ventricle",
        ),
        0.20,
        False,
    ),
    (
        "lv_dilation",
        "LV dilation",
        ("dilated left ventricle on cine MRI", "increased left ventricular end-diastolic volume"),
        0.15,
        False,
    ),
    (
        "lv_hypertrophy",
        "LV hypertrophy",
        ("thickened left ventricular myocardium", "increased left ventricular wall thickness and mass"),
        0.15,
        False,
    ),
    (
        "rv_dilation",
        "RV dilation",
        ("dilated right ventricle", "enlarged right ventricular cavity on short-axis cine"),
        0.10,
        False,
    ),
    (
        "rv_dysfunction",
        "RV dysfunction",
        ("reduced right ventricular ejection fraction", "the right ventricle contracts poorly"),
        0.10,
        False,
    ),
    (
        "pericardial_effusion",
        "Pericardial effusion",
        ("fluid collection in the pericardial space", "pericardial effusion surrounding the heart"),
        0.08,
        False,
    ),
    (
        "nonischaemic_cm",
        "Non-ischaemic cardiomyopathy",
        ("non-ischaemic dilated cardiomyopathy", "cardiomyopathy without coronary artery disease"),
        0.10,
        False,
    ),
    (
        "ischaemic_cm",
        "Ischaemic cardiomyopathy",
        (
            "ischaemic cardiomyopathy with regional wall motion abnormality",
            "thinned akinetic myocardial segment after infarction",
        ),
        0.12,
        False,
    ),
    (
        "hcm",
        "Hypertrophic cardiomyopathy",
        (
            "hypertrophic cardiomyopathy with asymmetric septal hypertrophy",
            "markedly thickened interventricular septum",
        ),
        0.05,
        False,
    ),
    (
        "amyloidosis",
        "Cardiac amyloidosis",
        (
            "cardiac amyloidosis with concentric wall thickening",
            "infiltrative cardiomyopathy with small ventricular cavity",
            "biatrial enlargement and thick ventricular walls",
        ),
        0.01,
        True,
    ),
)


def _pool_geometry(spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """(kernel_h, kernel_w, cells_h, cells_w) of the non-overlapping average pool."""
    h, w = spec.size
    kh, kw = max(h // GRID, 1), max(w // GRID, 1)
    return kh, kw, h // kh, w // kw


def feature_count(spec: PreprocessSpec) -> int:
    _, _, gh, gw = _pool_geometry(spec)
    return 2 * spec.channels * gh * gw


def reference_features(x: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """NumPy twin of the ONNX graph's features (N, T, C, H, W) -> (N, 2*C*gh*gw); tests compare the two."""
    n, t, c, _, _ = x.shape
    kh, kw, gh, gw = _pool_geometry(spec)
    cropped = x[:, :, :, : gh * kh, : gw * kw].astype(np.float64)
    pooled = cropped.reshape(n, t, c, gh, kh, gw, kw).mean(axis=(4, 6)).reshape(n, t, c * gh * gw)
    motion = np.abs(pooled[:, 1:] - pooled[:, :-1]).mean(axis=1)
    return np.concatenate([pooled.mean(axis=1), motion], axis=1)


def _encoder_model(spec: PreprocessSpec, weight: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    t, c, h, w = spec.tensor_shape
    kh, kw, gh, gw = _pool_geometry(spec)
    cells = c * gh * gw
    init = [
        numpy_helper.from_array(np.array([0, t * c, h, w], dtype=np.int64), "shape_frames"),
        numpy_helper.from_array(np.array([0, t, cells], dtype=np.int64), "shape_cells"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array([t], dtype=np.int64), "t_end"),
        numpy_helper.from_array(np.array([t - 1], dtype=np.int64), "t_last"),
        numpy_helper.from_array(weight.astype(np.float32), "projection"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "shape_frames"], ["frames"]),
        helper.make_node("AveragePool", ["frames"], ["pooled"], kernel_shape=[kh, kw], strides=[kh, kw]),
        helper.make_node("Reshape", ["pooled", "shape_cells"], ["cells"]),
        helper.make_node("ReduceMean", ["cells"], ["appearance"], axes=[1], keepdims=0),
        helper.make_node("Slice", ["cells", "one", "t_end", "one"], ["later"]),
        helper.make_node("Slice", ["cells", "zero", "t_last", "one"], ["earlier"]),
        helper.make_node("Sub", ["later", "earlier"], ["change"]),
        helper.make_node("Abs", ["change"], ["abs_change"]),
        helper.make_node("ReduceMean", ["abs_change"], ["motion"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["appearance", "motion"], ["features"], axis=1),
        helper.make_node("MatMul", ["features", "projection"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "scanside_placeholder_encoder",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", t, c, h, w])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", weight.shape[1]])],
        initializer=init,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="scanside.training.placeholder_bundle",
        doc_string=WARNING,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def _random_studies(
    rng: np.random.Generator, count: int, spec: PreprocessSpec, chunk: int = 16
) -> Iterator[np.ndarray]:
    """Seeded stand-in studies: blocky images with per-cell cyclic motion, so features vary between studies."""
    t, c, h, w = spec.tensor_shape
    kh, kw, gh, gw = _pool_geometry(spec)
    phase = 2 * np.pi * np.arange(t) / t
    for start in range(0, count, chunk):
        m = min(chunk, count - start)
        base = rng.uniform(0.1, 0.9, (m, 1, c, gh, gw))
        amp = rng.uniform(0.0, 0.3, (m, 1, c, gh, gw)) * rng.uniform(0.2, 1.0, (m, 1, 1, 1, 1))
        shift = rng.uniform(0, 2 * np.pi, (m, 1, 1, 1, 1))
        cells = np.clip(base + amp * np.sin(phase[None, :, None, None, None] + shift), 0.0, 1.0)
        full = np.zeros((m, t, c, h, w), dtype=np.float32)
        full[..., : gh * kh, : gw * kw] = cells.repeat(kh, axis=3).repeat(kw, axis=4)
        yield full


def _unit_rows(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((rows, dim))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build_placeholder_bundle(
    out_dir: Path,
    calibration_tensors: np.ndarray | None = None,
    seed: int = 0,
    spec: PreprocessSpec | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the placeholder bundle to `out_dir` and return it. Same seed, spec and calibration -> same files."""
    spec = spec or PreprocessSpec()
    rng = np.random.default_rng(seed)
    n_features = feature_count(spec)
    weight = rng.standard_normal((n_features, EMBEDDING_DIM)) / math.sqrt(n_features)

    if calibration_tensors is None:
        batches = list(_random_studies(rng, CALIBRATION_SAMPLES, spec))
        calibration_note = f"{CALIBRATION_SAMPLES} seeded random blocky studies (seed {seed}); no real data"
    else:
        cal = np.asarray(calibration_tensors, dtype=np.float32)
        if cal.ndim != 5 or cal.shape[1:] != spec.tensor_shape:
            wanted = ", ".join(map(str, spec.tensor_shape))
            raise ValueError(f"calibration_tensors must be (N, {wanted}), got {cal.shape}")
        if cal.shape[0] < MIN_CALIBRATION:
            raise ValueError(f"need at least {MIN_CALIBRATION} calibration tensors, got {cal.shape[0]}")
        batches = [cal[i : i + 16] for i in range(0, cal.shape[0], 16)]
        calibration_note = f"{cal.shape[0]} caller-supplied preprocessed studies"
    features = np.concatenate([reference_features(b, spec) for b in batches])
    # Centre the projection on the calibration set, otherwise all-positive image statistics give embeddings that
    # point the same way and every cosine is nearly equal.
    bias = -(features.mean(axis=0) @ weight)
    embeddings = features @ weight + bias

    prompt_vectors = [_unit_rows(rng, len(prompts), EMBEDDING_DIM) for _, _, prompts, _, _ in FINDINGS]
    unit = normalise(embeddings, EMBEDDING_DIM)
    findings = []
    for (fid, name, prompts, prevalence, rare), vectors in zip(FINDINGS, prompt_vectors, strict=True):
        scores = unit @ vectors.mean(axis=0)
        q25, median, q75 = np.quantile(scores, [0.25, 0.5, 0.75])
        iqr = float(q75 - q25)
        if not iqr > 1e-9:
            raise ValueError("calibration studies give (nearly) identical scores; cannot calibrate")
        slope = 2.0 * math.log(3.0) / iqr  # the quartiles map to probabilities of about 0.25 and 0.75
        findings.append(
            Finding(
                id=fid,
                name=name,
                prompts=prompts,
                embeddings=vectors,
                threshold=float(median),
                slope=slope,
                intercept=-slope * float(median),
                prevalence=prevalence,
                rare=rare,
            )
        )
    bank = LabelBank(findings=tuple(findings), reference=fit_reference_stats(embeddings, k=8, quantile=0.99))

    model = _encoder_model(spec, weight, bias)
    made_by = {
        "kind": "PLACEHOLDER",
        "warning": WARNING,
        "builder": "training.placeholder_bundle",
        "seed": seed,
        "training_commit": None,
        "training_data": "none: the encoder is an untrained random projection",
        "calibration": calibration_note,
        "prompt_embeddings": "seeded random unit vectors; there is no text encoder yet",
        "prevalence": "made-up placeholder values",
        "onnx": onnx.__version__,
        "numpy": np.__version__,
    }
    description = (
        f"{WARNING} Encoder: average-pooled {GRID}x{GRID} appearance and frame-to-frame motion, randomly projected "
        f"to {EMBEDDING_DIM} dimensions. Label bank prompts are real text but their embeddings are random."
    )
    return write_bundle(
        out_dir,
        name=NAME,
        version=VERSION,
        encoder_onnx_bytes=model.SerializeToString(),
        label_bank=bank,
        preprocess=spec,
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        dim=EMBEDDING_DIM,
        made_by=made_by,
        description=description,
        overwrite=overwrite,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Build the placeholder engine bundle. {WARNING}")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory, e.g. engines/placeholder-v0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--calibration", type=Path, help=".npy of preprocessed studies (N, T, C, H, W) to set thresholds from"
    )
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="calibrate on N synthetic studies (vendors A and B) made through the appliance's own "
                             "preprocessing")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle in --out")
    args = parser.parse_args(argv)
    if (args.out / "manifest.json").exists() and not args.force:
        parser.exit(1, f"error: {args.out} already holds a bundle; pass --force to replace it\n")
    calibration = np.load(args.calibration) if args.calibration else None
    if args.synthetic:
        from training.synthetic_cohort import cohort_tensors

        calibration = cohort_tensors(args.synthetic, seed=args.seed + 10_000, spec=PreprocessSpec())
    try:
        path = build_placeholder_bundle(args.out, calibration_tensors=calibration, seed=args.seed, overwrite=args.force)
    except (BundleError, ValueError) as exc:
        parser.exit(1, f"error: {exc}\n")
    print(f"wrote {path} ({WARNING})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Engine bundles: an encoder, its label bank and the preprocessing it was trained with, checked as one unit.

Layout of `engines/<name>/`:

    manifest.json      what the bundle is, how to feed it, and the sha256 of every other file it needs
    encoder.onnx       (N, T, C, H, W) float32 -> (N, D) float32
    label_bank.json    findings with prompt embeddings, thresholds, calibration; reference stats for the OOD check

Files not listed in the manifest may sit next to these (e.g. TensorRT plans built on the target GPU); they are
ignored here. Everything listed is hashed on load, so a bundle that loads is byte-for-byte the one that was built
(or edited through `save_label_bank`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from appliance.fileio import read_json, sha256_file, write_bytes_atomic
from appliance.preprocess import PreprocessError, PreprocessSpec

FORMAT = "scanside-bundle"
FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.onnx"
LABEL_BANK_FILE = "label_bank.json"
LAYOUT = "NTCHW"


class BundleError(ValueError):
    """The bundle or label bank is unusable; the message names the file and what is wrong."""


# --- label bank ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Finding:
    id: str
    name: str
    prompts: tuple[str, ...]
    embeddings: np.ndarray  # (P, D), rows L2-normalised
    threshold: float  # on the mean cosine over prompts
    slope: float  # probability = sigmoid(slope * score + intercept)
    intercept: float
    prevalence: float
    rare: bool

    def __post_init__(self) -> None:
        where = f"finding {self.id!r}"
        # The id becomes a code value in the DICOM SR, the name a code meaning: no ':' (review reasons use it), no
        # backslash (DICOM's value separator), no control characters.
        if (not isinstance(self.id, str) or not self.id.strip() or any(c in self.id for c in ":\\")
                or any(ord(c) < 32 for c in self.id)):
            raise BundleError(f"finding id must be a non-empty string without ':', '\\' or control characters, "
                              f"got {self.id!r}")
        if not isinstance(self.name, str) or not self.name.strip():
            raise BundleError(f"{where}: name must be a non-empty string")
        prompts = tuple(self.prompts)
        if not prompts:
            raise BundleError(f"{where}: has no prompts; need at least one")
        if not all(isinstance(p, str) and p.strip() for p in prompts):
            raise BundleError(f"{where}: prompts must be non-empty strings")
        emb = np.array(self.embeddings, dtype=np.float64)
        if emb.ndim != 2 or emb.shape[0] != len(prompts) or emb.shape[1] < 1:
            raise BundleError(
                f"{where}: embeddings must be one vector per prompt ({len(prompts)} x D), got shape {emb.shape}"
            )
        if not np.isfinite(emb).all():
            raise BundleError(f"{where}: embeddings contain non-finite values")
        norms = np.linalg.norm(emb, axis=1)
        if (norms < 1e-12).any():
            raise BundleError(f"{where}: prompt {int(np.argmin(norms))} has a zero embedding")
        emb = emb / norms[:, None]
        emb.setflags(write=False)
        for label in ("threshold", "slope", "intercept", "prevalence"):
            value = getattr(self, label)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BundleError(f"{where}: {label} must be a finite number, got {value!r}")
        if not 0.0 <= self.prevalence <= 1.0:
            raise BundleError(f"{where}: prevalence must be in [0, 1], got {self.prevalence!r}")
        if not isinstance(self.rare, bool):
            raise BundleError(f"{where}: rare must be true or false, got {self.rare!r}")
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "embeddings", emb)
        for label in ("threshold", "slope", "intercept", "prevalence"):
            object.__setattr__(self, label, float(getattr(self, label)))

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def axis(self) -> np.ndarray:
        """Mean of the normalised prompt embeddings: the mean cosine over prompts is one dot product with it."""
        return self.embeddings.mean(axis=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prompts": list(self.prompts),
            "embeddings": self.embeddings.tolist(),
            "threshold": self.threshold,
            "calibration": {"slope": self.slope, "intercept": self.intercept},
            "prevalence": self.prevalence,
            "rare": self.rare,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        if not isinstance(data, Mapping):
            raise BundleError(f"each finding must be a JSON object, got {type(data).__name__}")
        fid = data.get("id")
        _require(data, ("id", "name", "prompts", "embeddings", "threshold", "calibration"), f"finding {fid!r}")
        cal = data["calibration"]
        if not isinstance(cal, Mapping) or "slope" not in cal or "intercept" not in cal:
            raise BundleError(f"finding {fid!r}: calibration must be {{'slope': a, 'intercept': b}}")
        if not isinstance(data["prompts"], list):
            raise BundleError(f"finding {fid!r}: prompts must be a list of strings")
        try:
            embeddings = np.array(data["embeddings"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise BundleError(f"finding {fid!r}: embeddings are not a numeric matrix ({exc})") from exc
        return cls(
            id=fid,
            name=data["name"],
            prompts=tuple(data["prompts"]),
            embeddings=embeddings,
            threshold=data["threshold"],
            slope=cal["slope"],
            intercept=cal["intercept"],
            prevalence=data.get("prevalence", 0.0),
            rare=data.get("rare", False),
        )


@dataclass(frozen=True, eq=False)
class ReferenceStats:
    """Where training embeddings live, for the out-of-distribution check (see scoring.ood_distance)."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (k, D), orthonormal rows
    variances: np.ndarray  # (k,), > 0
    residual_variance: float  # per dimension, outside the k components
    threshold: float  # distance above which an embedding is out of distribution

    def __post_init__(self) -> None:
        mean = np.array(self.mean, dtype=np.float64)
        comps = np.array(self.components, dtype=np.float64)
        var = np.array(self.variances, dtype=np.float64)
        if mean.ndim != 1 or mean.size < 1:
            raise BundleError(f"reference mean must be a vector, got shape {mean.shape}")
        d = mean.size
        if comps.size == 0:
            comps = comps.reshape(0, d)
        if comps.ndim != 2 or comps.shape[1] != d:
            raise BundleError(f"reference components must be k x {d}, got shape {comps.shape}")
        if var.shape != (comps.shape[0],):
            raise BundleError(
                f"reference variances must have one value per component ({comps.shape[0]}), got {var.shape}"
            )
        for label, arr in (("mean", mean), ("components", comps), ("variances", var)):
            if not np.isfinite(arr).all():
                raise BundleError(f"reference {label} contain non-finite values")
        if (var <= 0).any():
            raise BundleError("reference variances must be positive")
        for label in ("residual_variance", "threshold"):
            value = getattr(self, label)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BundleError(f"reference {label} must be a finite number, got {value!r}")
        if self.residual_variance <= 0 or self.threshold <= 0:
            raise BundleError("reference residual_variance and threshold must be positive")
        for arr in (mean, comps, var):
            arr.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "variances", var)
        object.__setattr__(self, "residual_variance", float(self.residual_variance))
        object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def dim(self) -> int:
        return int(self.mean.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "variances": self.variances.tolist(),
            "residual_variance": self.residual_variance,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceStats:
        if not isinstance(data, Mapping):
            raise BundleError(f"reference must be a JSON object or null, got {type(data).__name__}")
        _require(data, ("mean", "components", "variances", "residual_variance", "threshold"), "reference")
        try:
            arrays = [np.array(data[k], dtype=np.float64) for k in ("mean", "components", "variances")]
        except (TypeError, ValueError) as exc:
            raise BundleError(f"reference statistics are not numeric arrays ({exc})") from exc
        return cls(*arrays, residual_variance=data["residual_variance"], threshold=data["threshold"])


@dataclass(frozen=True, eq=False)
class LabelBank:
    findings: tuple[Finding, ...]
    reference: ReferenceStats | None = None

    def __post_init__(self) -> None:
        findings = tuple(self.findings)
        if not findings:
            raise BundleError("label bank has no findings")
        dims = {f.dim for f in findings}
        if len(dims) != 1:
            raise BundleError(f"label bank findings have different embedding sizes {sorted(dims)}")
        ids = [f.id for f in findings]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise BundleError(f"label bank has duplicate finding ids {duplicates}")
        if self.reference is not None and self.reference.dim != findings[0].dim:
            raise BundleError(
                f"label bank reference stats are {self.reference.dim}-dimensional, prompts are {findings[0].dim}"
            )
        object.__setattr__(self, "findings", findings)

    @property
    def dim(self) -> int:
        return self.findings[0].dim

    def finding(self, finding_id: str) -> Finding:
        for f in self.findings:
            if f.id == finding_id:
                return f
        raise KeyError(finding_id)

    @functools.cached_property
    def axes(self) -> np.ndarray:
        """(F, D) mean prompt embedding per finding; scores of normalised embeddings E are E @ axes.T."""
        axes = np.stack([f.axis for f in self.findings])
        axes.setflags(write=False)
        return axes

    def to_dict(self) -> dict[str, Any]:
        return {
            "findings": [f.to_dict() for f in self.findings],
            "reference": self.reference.to_dict() if self.reference is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelBank:
        if not isinstance(data, Mapping) or not isinstance(data.get("findings"), list):
            raise BundleError("label bank must be a JSON object with a 'findings' list")
        ref = data.get("reference")
        return cls(
            findings=tuple(Finding.from_dict(f) for f in data["findings"]),
            reference=ReferenceStats.from_dict(ref) if ref is not None else None,
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> LabelBank:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"label bank is not valid JSON: {exc}") from exc
        return cls.from_dict(data)


# --- bundle -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Bundle:
    root: Path
    name: str
    version: str
    description: str
    research_only: bool
    input_name: str
    output_name: str
    input_shape: tuple[int, ...]  # (batch, T, C, H, W); batch -1 = dynamic
    embedding_dim: int
    preprocess: PreprocessSpec
    encoder_path: Path
    label_bank_path: Path
    label_bank: LabelBank
    text_encoder: Mapping[str, Any] | None
    manifest: Mapping[str, Any]
    files: Mapping[str, str]  # relative path -> sha256 hex

    @property
    def batch_size(self) -> int | None:
        """Fixed batch size of the encoder, or None when the batch dimension is dynamic."""
        return None if self.input_shape[0] < 0 else self.input_shape[0]

    @property
    def sample_shape(self) -> tuple[int, int, int, int]:
        return tuple(self.input_shape[1:])  # type: ignore[return-value]


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    root = Path(path)
    where = f"bundle {root}"
    if not root.is_dir():
        raise BundleError(f"{where}: not a directory")
    manifest = read_json(root / MANIFEST, BundleError, f"{where}: {MANIFEST}")
    if not isinstance(manifest, dict):
        raise BundleError(f"{where}: {MANIFEST} must be a JSON object")
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{where}: {MANIFEST} format is {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("format_version") not in FORMAT_VERSIONS:
        raise BundleError(
            f"{where}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this build reads {', '.join(map(str, FORMAT_VERSIONS))})"
        )
    _require(
        manifest,
        ("name", "version", "research_only", "input", "output", "preprocessing", "encoder", "label_bank", "files"),
        f"{where}: {MANIFEST}",
    )
    for key in ("name", "version"):
        if not isinstance(manifest[key], str) or not manifest[key]:
            raise BundleError(f"{where}: {key} must be a non-empty string")
    if not isinstance(manifest["research_only"], bool):
        raise BundleError(f"{where}: research_only must be true or false")

    files = _check_file_table(root, manifest["files"], where)
    encoder = _listed(manifest["encoder"], "encoder", files, where)
    bank_name = _listed(manifest["label_bank"], "label_bank", files, where)
    text_encoder = manifest.get("text_encoder")
    if text_encoder is not None:
        if not isinstance(text_encoder, dict):
            raise BundleError(f"{where}: text_encoder must be an object or null")
        for key in ("path", "vocabulary", "reference_embeddings"):
            if key in text_encoder:
                _listed(text_encoder[key], f"text_encoder.{key}", files, where)
    _verify_hashes(root, files, where)

    try:
        spec = PreprocessSpec.from_dict(manifest["preprocessing"])
    except PreprocessError as exc:
        raise BundleError(f"{where}: {exc}") from exc
    input_name, input_shape = _check_input(manifest["input"], spec, where)
    output_name, dim = _check_output(manifest["output"], where)

    bank_path = root / bank_name
    try:
        bank = LabelBank.from_json(bank_path.read_bytes())
    except BundleError as exc:
        raise BundleError(f"{where}: {bank_name}: {exc}") from exc
    if bank.dim != dim:
        raise BundleError(f"{where}: {bank_name} embeddings are {bank.dim}-dimensional but the encoder outputs {dim}")

    return Bundle(
        root=root,
        name=manifest["name"],
        version=manifest["version"],
        description=str(manifest.get("description", "")),
        research_only=manifest["research_only"],
        input_name=input_name,
        output_name=output_name,
        input_shape=input_shape,
        embedding_dim=dim,
        preprocess=spec,
        encoder_path=root / encoder,
        label_bank_path=bank_path,
        label_bank=bank,
        text_encoder=text_encoder,
        manifest=manifest,
        files=files,
    )


def _require(data: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)}")


def _check_file_table(root: Path, table: object, where: str) -> dict[str, str]:
    if not isinstance(table, dict) or not table:
        raise BundleError(f"{where}: 'files' must be a non-empty object of relative path -> sha256")
    for rel, digest in table.items():
        pure = PurePosixPath(rel)
        if pure.is_absolute() or ".." in pure.parts or rel != pure.as_posix() or rel in ("", "."):
            raise BundleError(f"{where}: listed file {rel!r} must be a plain relative path inside the bundle")
        if rel == MANIFEST:
            raise BundleError(f"{where}: {MANIFEST} cannot list itself")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise BundleError(f"{where}: sha256 of {rel!r} must be 64 lowercase hex digits, got {digest!r}")
    return dict(table)


def _listed(rel: object, label: str, files: Mapping[str, str], where: str) -> str:
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{where}: {label} must name a file")
    if rel not in files:
        raise BundleError(f"{where}: {label} file {rel!r} is not listed in 'files', so it cannot be verified")
    return rel


def _verify_hashes(root: Path, files: Mapping[str, str], where: str) -> None:
    for rel, expected in files.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{where}: listed file {rel!r} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{where}: {rel!r} does not match the manifest (sha256 expected {expected}, file has {actual}); "
                "it was modified or corrupted"
            )


def _check_input(data: object, spec: PreprocessSpec, where: str) -> tuple[str, tuple[int, ...]]:
    if not isinstance(data, dict):
        raise BundleError(f"{where}: input must be an object")
    _require(data, ("name", "layout", "shape", "dtype"), f"{where}: input")
    if not isinstance(data["name"], str) or not data["name"]:
        raise BundleError(f"{where}: input name must be a non-empty string")
    if data["layout"] != LAYOUT:
        raise BundleError(f"{where}: input layout {data['layout']!r} is not supported (expected {LAYOUT!r})")
    if data["dtype"] != "float32":
        raise BundleError(f"{where}: input dtype {data['dtype']!r} is not supported (expected 'float32')")
    shape = data["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 5
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
        or not (shape[0] == -1 or shape[0] >= 1)
    ):
        raise BundleError(f"{where}: input shape must be [batch (-1 = dynamic), T, C, H, W], got {shape!r}")
    if tuple(shape[1:]) != spec.tensor_shape:
        raise BundleError(
            f"{where}: input shape {shape[1:]} (T, C, H, W) disagrees with preprocessing, "
            f"which makes {list(spec.tensor_shape)}"
        )
    return data["name"], tuple(shape)


def _check_output(data: object, where: str) -> tuple[str, int]:
    if not isinstance(data, dict):
        raise BundleError(f"{where}: output must be an object")
    _require(data, ("name", "dim"), f"{where}: output")
    if not isinstance(data["name"], str) or not data["name"]:
        raise BundleError(f"{where}: output name must be a non-empty string")
    dim = data["dim"]
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise BundleError(f"{where}: output dim must be a positive integer, got {dim!r}")
    return data["name"], dim


# --- writing ------------------------------------------------------------------------------------------------------


def write_bundle(
    directory: str | os.PathLike[str],
    name: str,
    version: str,
    encoder_onnx_bytes: bytes,
    label_bank: LabelBank,
    preprocess: PreprocessSpec,
    input_name: str,
    output_name: str,
    dim: int,
    made_by: Mapping[str, Any],
    description: str,
    extra_files: Mapping[str, bytes] | None = None,
    text_encoder: Mapping[str, Any] | None = None,
    created: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a complete bundle and return its directory. The manifest is written last, so a half-written bundle
    has no manifest and is refused rather than loaded."""
    root = Path(directory)
    if (root / MANIFEST).exists() and not overwrite:
        raise BundleError(f"bundle {root}: already exists (pass overwrite=True to replace it)")
    if label_bank.dim != dim:
        raise BundleError(f"bundle {root}: label bank is {label_bank.dim}-dimensional but dim is {dim}")
    root.mkdir(parents=True, exist_ok=True)
    contents: dict[str, bytes] = {
        ENCODER_FILE: encoder_onnx_bytes,
        LABEL_BANK_FILE: label_bank.to_json().encode("utf-8"),
    }
    for rel, data in (extra_files or {}).items():
        if rel in contents or rel == MANIFEST:
            raise BundleError(f"bundle {root}: extra file {rel!r} clashes with a file the bundle writes itself")
        contents[rel] = data
    _check_file_table(root, {rel: "0" * 64 for rel in contents}, f"bundle {root}")

    if overwrite:
        (root / MANIFEST).unlink(missing_ok=True)
    for rel, data in contents.items():
        write_bytes_atomic(root / rel, data)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSIONS[-1],
        "name": name,
        "version": version,
        "description": description,
        "research_only": True,
        "created": created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "made_by": dict(made_by),
        "input": {
            "name": input_name,
            "layout": LAYOUT,
            "shape": [-1, *preprocess.tensor_shape],
            "dtype": "float32",
        },
        "output": {"name": output_name, "dim": dim},
        "preprocessing": preprocess.to_dict(),
        "encoder": ENCODER_FILE,
        "label_bank": LABEL_BANK_FILE,
        "text_encoder": dict(text_encoder) if text_encoder is not None else None,
        "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in sorted(contents.items())},
    }
    write_bytes_atomic(root / MANIFEST, _manifest_bytes(manifest))
    return root


def save_label_bank(bundle: Bundle, bank: LabelBank) -> Bundle:
    """Replace the bundle's label bank (e.g. edited prompts) and its hash in the manifest; return the reloaded bundle.

    Each file is replaced atomically (temp file + os.replace), label bank first. A crash between the two replaces
    leaves a hash mismatch that load_bundle reports, never a silently half-updated bundle.
    """
    if bank.dim != bundle.embedding_dim:
        raise BundleError(
            f"bundle {bundle.root}: new label bank is {bank.dim}-dimensional "
            f"but the encoder outputs {bundle.embedding_dim}"
        )
    manifest_path = bundle.root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"bundle {bundle.root}: cannot re-read {MANIFEST}: {exc}") from exc
    rel = manifest.get("label_bank")
    if not isinstance(rel, str) or rel not in manifest.get("files", {}):
        raise BundleError(f"bundle {bundle.root}: {MANIFEST} no longer lists its label bank")
    data = bank.to_json().encode("utf-8")
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    write_bytes_atomic(bundle.root / rel, data)
    write_bytes_atomic(manifest_path, _manifest_bytes(manifest))
    return load_bundle(bundle.root)


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode("utf-8")



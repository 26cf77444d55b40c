"""Loading a bundle: the manifest validated field by field and every listed file hashed, so a bundle that
loads is byte-for-byte the one that was built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from appliance.bundle.label_bank import LabelBank
from appliance.bundle.layout import (
    FORMAT,
    FORMAT_VERSIONS,
    LAYOUT,
    MANIFEST,
    BundleError,
    require_keys,
)
from appliance.fileio import read_json, sha256_file
from appliance.preprocess import PreprocessError, PreprocessSpec


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
    require_keys(
        manifest,
        ("name", "version", "research_only", "input", "output", "preprocessing", "encoder", "label_bank", "files"),
        f"{where}: {MANIFEST}",
    )
    for key in ("name", "version"):
        if not isinstance(manifest[key], str) or not manifest[key]:
            raise BundleError(f"{where}: {key} must be a non-empty string")
    if not isinstance(manifest["research_only"], bool):
        raise BundleError(f"{where}: research_only must be true or false")

    files = check_file_table(root, manifest["files"], where)
    encoder = _listed(manifest["encoder"], "encoder", files, where)
    bank_name = _listed(manifest["label_bank"], "label_bank", files, where)
    text_encoder = manifest.get("text_encoder")
    if text_encoder is not None:
        if not isinstance(text_encoder, dict):
            raise BundleError(f"{where}: text_encoder must be an object or null")
        for key in ("path", "vocabulary", "tokenizer", "abbreviations", "reference_embeddings"):
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


def check_file_table(root: Path, table: object, where: str) -> dict[str, str]:
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
    require_keys(data, ("name", "layout", "shape", "dtype"), f"{where}: input")
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
    require_keys(data, ("name", "dim"), f"{where}: output")
    if not isinstance(data["name"], str) or not data["name"]:
        raise BundleError(f"{where}: output name must be a non-empty string")
    dim = data["dim"]
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise BundleError(f"{where}: output dim must be a positive integer, got {dim!r}")
    return data["name"], dim

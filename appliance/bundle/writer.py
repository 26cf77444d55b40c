"""Writing a bundle (training and the placeholder builder) and replacing its label bank (prompt edits), each
file atomically and the manifest last."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from appliance.bundle.label_bank import LabelBank
from appliance.bundle.layout import (
    ENCODER_FILE,
    FORMAT,
    FORMAT_VERSIONS,
    LABEL_BANK_FILE,
    LAYOUT,
    MANIFEST,
    BundleError,
)
from appliance.bundle.loader import Bundle, check_file_table, load_bundle
from appliance.fileio import write_bytes_atomic
from appliance.preprocess import PreprocessSpec


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
    check_file_table(root, {rel: "0" * 64 for rel in contents}, f"bundle {root}")

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

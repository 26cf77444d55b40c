"""What a bundle directory holds: the file names and format versions of its manifest, and the one error
every bundle problem raises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

FORMAT = "scanside-bundle"
FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
ENCODER_FILE = "encoder.onnx"
LABEL_BANK_FILE = "label_bank.json"
LAYOUT = "NTCHW"


class BundleError(ValueError):
    """The bundle or label bank is unusable; the message names the file and what is wrong."""


def require_keys(data: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise BundleError(f"{where}: missing {', '.join(missing)}")

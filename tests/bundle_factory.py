"""Builds tiny placeholder bundles for tests: small enough that building one takes well under a second."""

from __future__ import annotations

from pathlib import Path

from appliance.preprocess import PreprocessSpec
from training.placeholder_bundle import build_placeholder_bundle

TINY_SPEC = PreprocessSpec(frames=8, size=(48, 48), fov_mm=240.0)


def make_tiny_bundle(directory: Path, seed: int = 0, spec: PreprocessSpec = TINY_SPEC) -> Path:
    return build_placeholder_bundle(Path(directory), seed=seed, spec=spec)

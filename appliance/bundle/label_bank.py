"""The label bank: findings with their prompt embeddings, thresholds and calibration, and the reference
statistics of the training images for the out-of-distribution check."""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.bundle.layout import BundleError, require_keys


@dataclass(frozen=True, eq=False)
class Finding:
    id: str
    name: str
    prompts: tuple[str, ...]
    embeddings: np.ndarray  # (P, D), rows L2-normalised
    threshold: float  # on the mean cosine over prompts
    slope: float  # probability = sigmoid(slope * (score - threshold)); > 0
    # Always -slope * threshold (set here, whatever a file says): the calibration passes through probability 0.5 at
    # the threshold, so a finding called positive never shows a probability under one half, nor a negative one over.
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
        # Rows already of unit length are kept bit for bit: normalising again would move their last bits, and a
        # bank written and read back must be the same bank (its content hash is its version).
        emb = np.where(np.abs(norms - 1.0)[:, None] < 1e-12, emb, emb / norms[:, None])
        emb.setflags(write=False)
        for label in ("threshold", "slope", "intercept", "prevalence"):
            value = getattr(self, label)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BundleError(f"{where}: {label} must be a finite number, got {value!r}")
        if not self.slope > 0:
            raise BundleError(f"{where}: calibration slope must be positive (probability rises with the score), "
                              f"got {self.slope!r}")
        if not 0.0 <= self.prevalence <= 1.0:
            raise BundleError(f"{where}: prevalence must be in [0, 1], got {self.prevalence!r}")
        if not isinstance(self.rare, bool):
            raise BundleError(f"{where}: rare must be true or false, got {self.rare!r}")
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "embeddings", emb)
        for label in ("threshold", "slope", "prevalence"):
            object.__setattr__(self, label, float(getattr(self, label)))
        object.__setattr__(self, "intercept", -self.slope * self.threshold)

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
        require_keys(data, ("id", "name", "prompts", "embeddings", "threshold", "calibration"), f"finding {fid!r}")
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
            id=data["id"],
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
        require_keys(data, ("mean", "components", "variances", "residual_variance", "threshold"), "reference")
        try:
            mean, components, variances = (np.array(data[k], dtype=np.float64)
                                           for k in ("mean", "components", "variances"))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"reference statistics are not numeric arrays ({exc})") from exc
        return cls(mean, components, variances, residual_variance=data["residual_variance"],
                   threshold=data["threshold"])


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

    @functools.cached_property
    def content_hash(self) -> str:
        """The first 12 hex digits of the SHA-256 of the bank's canonical JSON (sorted keys, no spaces): the same
        findings, prompts, embeddings, thresholds and calibration give the same hash. The shipped bank's version."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @classmethod
    def from_json(cls, text: str | bytes) -> LabelBank:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"label bank is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

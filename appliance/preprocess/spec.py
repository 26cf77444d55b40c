"""What a bundle says about its input: the preprocessing parameters, validated, and the algorithm they belong to."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Identifies the algorithm below. A bundle trained with a different algorithm must not be fed by this one, so the
# manifest carries this string and `PreprocessSpec.from_dict` refuses any other.
ALGORITHM = "scanside.cine_sax/1"


class PreprocessError(ValueError):
    """The series cannot be turned into a model input; the message says why."""


@dataclass(frozen=True)
class PreprocessSpec:
    frames: int = 16
    size: tuple[int, int] = (96, 96)
    fov_mm: float = 240.0
    slice_fractions: tuple[float, ...] = (0.2, 0.5, 0.8)
    percentiles: tuple[float, float] = (1.0, 99.5)

    def __post_init__(self) -> None:
        _check_int("frames", self.frames, minimum=2)
        if not isinstance(self.size, (tuple, list)) or len(self.size) != 2:
            raise PreprocessError(f"preprocessing size must be (height, width), got {self.size!r}")
        _check_int("size[0]", self.size[0], minimum=4)
        _check_int("size[1]", self.size[1], minimum=4)
        if not _is_real(self.fov_mm) or not self.fov_mm > 0:
            raise PreprocessError(f"preprocessing fov_mm must be a positive finite number, got {self.fov_mm!r}")
        fractions = self.slice_fractions
        if not isinstance(fractions, (tuple, list)) or not fractions:
            raise PreprocessError(f"preprocessing slice_fractions must be a non-empty list, got {fractions!r}")
        for f in fractions:
            if not _is_real(f) or not 0.0 <= f <= 1.0:
                raise PreprocessError(f"preprocessing slice_fractions must lie in [0, 1], got {fractions!r}")
        pct = self.percentiles
        if (
            not isinstance(pct, (tuple, list))
            or len(pct) != 2
            or not all(_is_real(p) for p in pct)
            or not 0.0 <= pct[0] < pct[1] <= 100.0
        ):
            raise PreprocessError(
                f"preprocessing percentiles must be (low, high) with 0 <= low < high <= 100, got {pct!r}"
            )
        # Normalise lists (from JSON) to tuples so specs compare and hash by value.
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        object.__setattr__(self, "fov_mm", float(self.fov_mm))
        object.__setattr__(self, "slice_fractions", tuple(float(f) for f in fractions))
        object.__setattr__(self, "percentiles", (float(pct[0]), float(pct[1])))

    @property
    def channels(self) -> int:
        return len(self.slice_fractions)

    @property
    def tensor_shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.channels, self.size[0], self.size[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "algorithm": ALGORITHM,
            "frames": self.frames,
            "size": list(self.size),
            "fov_mm": self.fov_mm,
            "slice_fractions": list(self.slice_fractions),
            "intensity_percentiles": list(self.percentiles),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        if not isinstance(data, Mapping):
            raise PreprocessError(f"preprocessing must be a JSON object, got {type(data).__name__}")
        expected = {"algorithm", "frames", "size", "fov_mm", "slice_fractions", "intensity_percentiles"}
        missing = sorted(expected - data.keys())
        unknown = sorted(data.keys() - expected)
        if missing:
            raise PreprocessError(f"preprocessing is missing {', '.join(missing)}")
        # An unknown key is a setting this code would silently ignore, so the tensor would differ from training.
        if unknown:
            raise PreprocessError(f"preprocessing has unknown settings {', '.join(unknown)}")
        if data["algorithm"] != ALGORITHM:
            raise PreprocessError(
                f"preprocessing algorithm {data['algorithm']!r} is not supported (this build implements {ALGORITHM!r})"
            )
        return cls(
            frames=data["frames"],
            size=tuple(data["size"]) if isinstance(data["size"], list) else data["size"],
            fov_mm=data["fov_mm"],
            slice_fractions=tuple(data["slice_fractions"])
            if isinstance(data["slice_fractions"], list)
            else data["slice_fractions"],
            percentiles=tuple(data["intensity_percentiles"])
            if isinstance(data["intensity_percentiles"], list)
            else data["intensity_percentiles"],
        )


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(label: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PreprocessError(f"preprocessing {label} must be an integer >= {minimum}, got {value!r}")

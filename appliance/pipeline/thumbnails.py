"""The model tensor's slices as small 8-bit grayscale PNGs, for the technologist's display.

Made from the tensor itself (not a second read of the series): what is shown is what the model saw, after
resampling to the bundle's field of view and intensity scaling. One image per channel (base, mid, apex), of the
first output phase. PNG is written here with zlib (stdlib): no imaging library on the serving path.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from appliance.handovers import Thumbnail

LABELS = ("base", "mid", "apex")
_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_gray8(image: np.ndarray) -> bytes:
    """An (H, W) uint8 array as a PNG (colour type 0, bit depth 8, no interlace, filter 0 on every row)."""
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError("png_gray8 takes an (H, W) uint8 array")
    h, w = image.shape
    rows = np.empty((h, w + 1), dtype=np.uint8)
    rows[:, 0] = 0
    rows[:, 1:] = image
    return (_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def thumbnails(tensor: np.ndarray) -> list[Thumbnail]:
    """(T, C, H, W) float tensor scaled to [0, 1] -> one Thumbnail per channel, from phase 0."""
    if tensor.ndim != 4:
        raise ValueError(f"expected a (T, C, H, W) tensor, got shape {tensor.shape}")
    out = []
    for c in range(tensor.shape[1]):
        image = np.rint(np.clip(np.nan_to_num(tensor[0, c]), 0.0, 1.0) * 255.0).astype(np.uint8)
        label = LABELS[c] if c < len(LABELS) else f"slice {c + 1}"
        out.append(Thumbnail(c, label, int(image.shape[1]), int(image.shape[0]), png_gray8(image)))
    return out

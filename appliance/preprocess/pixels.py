"""Pixel data of one frame, read from the spool: the raw little-endian path for uncompressed data (no pydicom
dataset is built), pydicom's handlers for everything else."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from appliance.handovers import PixelRef
from appliance.preprocess.spec import PreprocessError


def load_frame(ref: PixelRef) -> np.ndarray:
    """The frame's modality values (rescale applied) as float32 (rows, columns)."""
    out = np.empty((ref.rows, ref.columns), dtype=np.float32)
    load_into(ref, out)
    return out


def load_into(ref: PixelRef, out: np.ndarray) -> None:
    # Converting straight into the caller's buffer saves a copy per frame on the latency-critical path.
    raw = _decode_with_pydicom(ref) if ref.decode_with_pydicom else _read_raw(ref)
    if raw.shape != out.shape:
        raise PreprocessError(f"{ref.path}: pixels are {raw.shape}, expected {out.shape}")
    np.copyto(out, raw, casting="unsafe")
    if ref.rescale_slope != 1.0 or ref.rescale_intercept != 0.0:
        out *= np.float32(ref.rescale_slope)
        out += np.float32(ref.rescale_intercept)


def load_stack(refs: Sequence[PixelRef], out: np.ndarray) -> None:
    """Frames of one slice into `out` (n, rows, columns) float32: what `load_into` gives frame by frame. When all
    are uncompressed with one stored type, they are read straight into one buffer of that type and converted and
    rescaled together (a multiply by 1 and an add of 0 leave a float32 as it is: frames without a rescale come out
    the same); anything else goes frame by frame."""
    if len(refs) != out.shape[0]:
        raise ValueError(f"{len(refs)} frames for a stack of {out.shape[0]}")
    if not refs or any(r.decode_with_pydicom or r.dtype != refs[0].dtype for r in refs):
        for ref, plane in zip(refs, out, strict=True):
            load_into(ref, plane)
        return
    try:
        stored = np.empty(out.shape, dtype=np.dtype(refs[0].dtype))
    except TypeError as exc:
        raise PreprocessError(f"{refs[0].path}: unknown pixel dtype {refs[0].dtype!r}") from exc
    for ref, plane in zip(refs, stored, strict=True):
        _read_raw_into(ref, plane)
    np.copyto(out, stored, casting="unsafe")
    slopes = np.array([r.rescale_slope for r in refs], dtype=np.float32)
    intercepts = np.array([r.rescale_intercept for r in refs], dtype=np.float32)
    if (slopes != 1.0).any() or (intercepts != 0.0).any():
        out *= slopes[:, None, None]
        out += intercepts[:, None, None]


def _read_raw_into(ref: PixelRef, plane: np.ndarray) -> None:
    """One uncompressed frame's stored values read into `plane` (of its stored type; the dtype names the byte
    order): a plain byte range of the file, no pydicom dataset built."""
    if (ref.rows, ref.columns) != plane.shape:
        raise PreprocessError(f"{ref.path}: pixels are {(ref.rows, ref.columns)}, expected {plane.shape}")
    if ref.offset < 0:
        raise PreprocessError(f"{ref.path}: no byte offset for the pixel data and decode_with_pydicom is not set")
    if not 0 <= ref.frame_index < max(ref.number_of_frames, 1):
        raise PreprocessError(f"{ref.path}: frame index {ref.frame_index} outside 0..{ref.number_of_frames - 1}")
    size = plane.nbytes
    start = ref.offset + ref.frame_index * size
    try:
        fd = os.open(ref.path, os.O_RDONLY)
    except OSError as exc:
        raise PreprocessError(f"{ref.path}: cannot open pixel data: {exc.strerror}") from exc
    try:
        if hasattr(os, "preadv"):  # straight into the buffer
            got = os.preadv(fd, [plane.data.cast("B")], start)
        else:
            data = os.pread(fd, size, start)
            got = len(data)
            plane.reshape(-1).view(np.uint8)[:got] = np.frombuffer(data, dtype=np.uint8)
    finally:
        os.close(fd)
    if got != size:
        raise PreprocessError(
            f"{ref.path}: file too short for frame {ref.frame_index}: needed {size} bytes at offset {start}, "
            f"got {got}"
        )


def _read_raw(ref: PixelRef) -> np.ndarray:
    try:
        plane = np.empty((ref.rows, ref.columns), dtype=np.dtype(ref.dtype))
    except TypeError as exc:
        raise PreprocessError(f"{ref.path}: unknown pixel dtype {ref.dtype!r}") from exc
    _read_raw_into(ref, plane)
    return plane


def _decode_with_pydicom(ref: PixelRef) -> np.ndarray:
    # Imported here: the fast path never needs pydicom's pixel handlers.
    from pydicom.pixels import pixel_array

    index = ref.frame_index if ref.number_of_frames > 1 else None
    try:
        arr = pixel_array(ref.path, index=index, decoding_plugin=ref.decoder)
    except Exception as exc:  # pydicom raises many types (missing codec, bad data, I/O)
        raise PreprocessError(f"{ref.path}: pydicom could not decode frame {ref.frame_index}: {exc}") from exc
    if arr.ndim == 3 and index is None:
        arr = arr[ref.frame_index]
    if arr.shape != (ref.rows, ref.columns):
        raise PreprocessError(
            f"{ref.path}: decoded frame is {arr.shape}, expected ({ref.rows}, {ref.columns}) (colour or wrong frame?)"
        )
    return arr

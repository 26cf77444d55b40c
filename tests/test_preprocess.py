from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from appliance.handovers import CompleteSeries, Frame, PixelRef, PreparedSeries, SeriesInfo, SeriesRole
from appliance.preprocess import (
    ALGORITHM,
    ArrayFrame,
    PreprocessError,
    PreprocessSpec,
    load_frame,
    phase_weights,
    prepare,
    series_to_tensor,
    stack_from_arrays,
)

BASE_TO_APEX = np.array([1.0, -1.0, -1.0]) / math.sqrt(3.0)


def sax_orientation(flip: bool = False) -> tuple[float, ...]:
    """Row/column directions whose normal is the base->apex axis (or its opposite when flip)."""
    n = BASE_TO_APEX
    r = np.cross(n, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    c = np.cross(n, r)  # r x c == n
    if flip:
        r = -r  # (-r) x c == -n: same plane, normal sign reversed
    return tuple(float(v) for v in (*r, *c))


def make_stack(
    image_fn,
    slices: int = 10,
    phases: int = 20,
    shape: tuple[int, int] = (64, 64),
    spacing: tuple[float, float] = (4.0, 4.0),
    flip: bool = False,
    rr_ms: float = 850.0,
    t0_ms: float = 25.0,
    gap_mm: float = 8.0,
) -> list[ArrayFrame]:
    """Anatomical slice s (0 = base) lies s*gap_mm along the base->apex axis; image_fn(s, p) gives its pixels."""
    orient = sax_orientation(flip)
    origin = np.array([-20.0, 30.0, 10.0])
    frames = []
    for s in range(slices):
        pos = origin + s * gap_mm * BASE_TO_APEX
        for p in range(phases):
            frames.append(
                ArrayFrame(
                    pixels=np.asarray(image_fn(s, p), dtype=np.float32) * np.ones(shape, np.float32),
                    position=tuple(float(v) for v in pos),
                    orientation=orient,
                    pixel_spacing=spacing,
                    trigger_time=t0_ms + p * rr_ms / phases,
                )
            )
    return frames


FULL_RANGE = PreprocessSpec(frames=8, size=(32, 32), fov_mm=200.0, percentiles=(0.0, 100.0))


# --- spec ---------------------------------------------------------------------------------------------------------


def test_spec_round_trips_through_dict() -> None:
    spec = PreprocessSpec(frames=12, size=(64, 80), fov_mm=220.0, slice_fractions=(0.1, 0.5, 0.9), percentiles=(2, 98))
    d = spec.to_dict()
    assert d["algorithm"] == ALGORITHM
    assert PreprocessSpec.from_dict(d) == spec
    assert spec.tensor_shape == (12, 3, 64, 80)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frames": 1}, "frames"),
        ({"size": (96,)}, "size"),
        ({"fov_mm": -1.0}, "fov_mm"),
        ({"slice_fractions": (0.2, 1.5)}, "slice_fractions"),
        ({"percentiles": (99.0, 1.0)}, "percentiles"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(PreprocessError, match=message):
        PreprocessSpec(**kwargs)


def test_spec_from_dict_refuses_unknown_settings_and_algorithms() -> None:
    d = PreprocessSpec().to_dict()
    with pytest.raises(PreprocessError, match="unknown settings crop"):
        PreprocessSpec.from_dict({**d, "crop": True})
    with pytest.raises(PreprocessError, match="algorithm"):
        PreprocessSpec.from_dict({**d, "algorithm": "other/2"})
    del d["fov_mm"]
    with pytest.raises(PreprocessError, match="missing fov_mm"):
        PreprocessSpec.from_dict(d)


# --- pixels -------------------------------------------------------------------------------------------------------


def write_raw(path: Path, frames: np.ndarray, header: int = 132) -> PixelRef:
    """A DICOM-like file: `header` junk bytes then the frames' pixels back to back."""
    if frames.ndim == 2:
        frames = frames[None]
    with open(path, "wb") as f:
        f.write(b"\x07" * header)
        f.write(np.ascontiguousarray(frames).tobytes())
    return PixelRef(
        path=str(path),
        offset=header,
        rows=frames.shape[1],
        columns=frames.shape[2],
        dtype=frames.dtype.str,
        number_of_frames=frames.shape[0],
    )


def test_load_frame_reads_the_right_frame_and_rescales(tmp_path: Path) -> None:
    data = np.arange(3 * 4 * 5, dtype="<i2").reshape(3, 4, 5) - 20
    ref = write_raw(tmp_path / "multi.raw", data)
    ref = replace(ref, frame_index=2, rescale_slope=2.0, rescale_intercept=-3.0)
    out = load_frame(ref)
    assert out.dtype == np.float32 and out.shape == (4, 5)
    np.testing.assert_array_equal(out, data[2].astype(np.float32) * 2 - 3)


def test_load_frame_refuses_short_file(tmp_path: Path) -> None:
    ref = write_raw(tmp_path / "short.raw", np.zeros((1, 8, 8), "<u2"))
    ref = replace(ref, rows=9)
    with pytest.raises(PreprocessError, match=r"too short.*needed 144 bytes.*got 128"):
        load_frame(ref)


def write_dicom(path: Path, frames: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.NumberOfFrames = frames.shape[0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = frames.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_load_frame_with_pydicom_matches_raw_read(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 4096, size=(3, 6, 7)).astype("<u2")
    path = tmp_path / "mf.dcm"
    write_dicom(path, frames)
    # Pixel Data is the last element, so the raw frames end the file.
    offset = path.stat().st_size - frames.nbytes
    common = dict(path=str(path), rows=6, columns=7, dtype="<u2", frame_index=1, number_of_frames=3, rescale_slope=0.5)
    decoded = load_frame(PixelRef(offset=-1, decode_with_pydicom=True, **common))
    raw = load_frame(PixelRef(offset=offset, **common))
    np.testing.assert_array_equal(decoded, frames[1].astype(np.float32) * 0.5)
    np.testing.assert_array_equal(decoded, raw)


# --- geometry -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("order", ["as_acquired", "reversed", "shuffled"])
def test_slices_ordered_base_to_apex_whatever_the_input_order_and_normal_sign(flip: bool, order: str) -> None:
    frames = make_stack(lambda s, p: s + 1.0, slices=10, phases=6, flip=flip)
    if order == "reversed":
        frames = frames[::-1]
    elif order == "shuffled":
        random.Random(3).shuffle(frames)
    out = stack_from_arrays(frames, FULL_RANGE)
    # fractions 0.2/0.5/0.8 of 9 -> slices 2, 5, 7 (values 3, 6, 8), normalised over [3, 8]
    np.testing.assert_allclose(out[:, :, 0, 0].mean(axis=0), [0.0, 0.6, 1.0], atol=1e-6)


def test_stack_orientation_follows_lps_anatomy_not_slice_numbering() -> None:
    # Slices acquired apex first: anatomy, not acquisition order, must decide which end is the base.
    frames = make_stack(lambda s, p: s + 1.0, slices=5, phases=4, gap_mm=-8.0)
    out = stack_from_arrays(frames, FULL_RANGE)
    # Anatomical slice s now lies s*8 mm towards the base; index 0 (base) is slice 4.
    # fractions of 4 -> stack indices 1, 2, 3 -> anatomical 3, 2, 1 -> values 4, 3, 2
    np.testing.assert_allclose(out[:, :, 0, 0].mean(axis=0), [1.0, 0.5, 0.0], atol=1e-6)


@pytest.mark.parametrize("phases", [20, 25, 30])
def test_phase_weights_resample_a_sinusoid(phases: int) -> None:
    rr, t0 = 900.0, 30.0
    times = t0 + np.arange(phases) * rr / phases
    signal = np.sin(2 * np.pi * (times - t0) / rr)
    weights = phase_weights(times, 16)
    assert weights.shape == (16, phases)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights @ signal, np.sin(2 * np.pi * np.arange(16) / 16), atol=0.015)


@pytest.mark.parametrize("phases", [20, 25, 30])
def test_series_phase_resampling_gives_t_frames_following_the_cycle(phases: int) -> None:
    spec = PreprocessSpec(frames=16, size=(16, 16), fov_mm=200.0, percentiles=(0.0, 100.0))
    frames = make_stack(lambda s, p: 2.0 + math.sin(2 * math.pi * p / phases), slices=4, phases=phases)
    random.Random(phases).shuffle(frames)  # trigger order must come from TriggerTime, not file order
    out = stack_from_arrays(frames, spec)
    assert out.shape == (16, 3, 16, 16)
    curve = out[:, 1].mean(axis=(1, 2))
    expected = np.sin(2 * np.pi * np.arange(16) / 16)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(curve, expected, atol=0.03)


@pytest.mark.parametrize("spacing, shape", [((1.25, 1.25), (192, 192)), ((2.0, 1.6), (100, 150))])
def test_fov_resampling_places_a_known_square(spacing: tuple[float, float], shape: tuple[int, int]) -> None:
    """A 60 mm square centred 20 mm up and 30 mm right of the image centre, seen through a 240 mm / 96 px FOV."""
    rows, cols = shape
    y = (np.arange(rows) - (rows - 1) / 2) * spacing[0]
    x = (np.arange(cols) - (cols - 1) / 2) * spacing[1]
    image = np.full(shape, 300.0)
    image[:, :8] = 100.0  # a dark band so the low percentile is not the background
    image[np.ix_(np.abs(y + 20) < 30, np.abs(x - 30) < 30)] = 1000.0
    spec = PreprocessSpec(frames=4, size=(96, 96), fov_mm=240.0)
    out = stack_from_arrays(make_stack(lambda s, p: image, slices=3, phases=4, shape=shape, spacing=spacing), spec)
    img = out[0, 0]
    bright = img > 0.5
    r, c = np.nonzero(bright)
    # 2.5 mm per output pixel: 24 px wide, centred at 47.5 - 8 rows and 47.5 + 12 columns
    assert abs(bright.sum() - 24 * 24) <= 2 * 24 + 1
    assert abs(r.mean() - 39.5) < 0.3 and abs(c.mean() - 59.5) < 0.3
    assert r.max() - r.min() + 1 in (24, 25) and c.max() - c.min() + 1 in (24, 25)
    # Inside the image the background is (300-100)/(1000-100); outside it is exactly zero.
    assert img[80, 10] == pytest.approx(200 / 900, abs=1e-3)
    width_mm = cols * spacing[1]
    if width_mm < 240:
        edge = int(np.floor(48 - width_mm / 2 / 2.5)) - 1
        assert img[50, edge] == 0.0 and img[50, 95 - edge] == 0.0


def test_resampling_is_vectorised_and_cached() -> None:
    from appliance.preprocess.resample import _resample_taps, resample_images

    spec = PreprocessSpec()
    images = np.random.default_rng(0).random((25, 256, 256), dtype=np.float32)
    resample_images(images[:1], (1.37, 1.37), spec)
    before = _resample_taps.cache_info().hits
    start = time.perf_counter()
    for _ in range(4):
        resample_images(images, (1.37, 1.37), spec)
    per_image_ms = (time.perf_counter() - start) * 1000 / 100
    assert _resample_taps.cache_info().hits == before + 4
    assert per_image_ms < 1.0


# --- intensity ----------------------------------------------------------------------------------------------------


def files_series(tmp_path: Path, stored, slope: float = 1.0, intercept: float = 0.0, dtype: str = "<u2") -> list[Frame]:
    """One raw file per frame; `stored(s, p)` gives the stored values."""
    geometry = make_stack(lambda s, p: 0.0, slices=4, phases=10, shape=(48, 40), spacing=(5.0, 6.0))
    frames = []
    for i, g in enumerate(geometry):
        s, p = divmod(i, 10)
        ref = write_raw(tmp_path / f"{s}_{p}.raw", np.asarray(stored(s, p), dtype=dtype)[None])
        ref = replace(ref, rescale_slope=slope, rescale_intercept=intercept)
        frames.append(Frame(g.position, g.orientation, g.pixel_spacing, g.trigger_time, ref))
    return frames


def test_intensity_normalisation_ignores_rescale_and_bit_depth(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    base = {(s, p): rng.integers(0, 4096, size=(48, 40)) for s in range(4) for p in range(10)}
    spec = PreprocessSpec(frames=8, size=(32, 32), fov_mm=300.0)
    a_dir, b_dir, c_dir = (tmp_path / n for n in "abc")
    for d in (a_dir, b_dir, c_dir):
        d.mkdir()
    twelve_bit = series_to_tensor(files_series(a_dir, lambda s, p: base[s, p]), spec)
    sixteen_bit = series_to_tensor(files_series(b_dir, lambda s, p: base[s, p] * 16), spec)
    rescaled = series_to_tensor(files_series(c_dir, lambda s, p: base[s, p], 2.5, -1024.0, "<i2"), spec)
    assert twelve_bit.dtype == np.float32 and twelve_bit.flags.c_contiguous
    assert twelve_bit.min() == 0.0 and twelve_bit.max() == 1.0
    assert (twelve_bit[:, :, 0, :] == 0).all()  # 300 mm FOV is wider than the 240 x 200 mm image
    np.testing.assert_allclose(sixteen_bit, twelve_bit, atol=1e-5)
    np.testing.assert_allclose(rescaled, twelve_bit, atol=1e-5)


# --- bad series ---------------------------------------------------------------------------------------------------


def _with(frame: ArrayFrame, **changes) -> ArrayFrame:
    fields = dict(
        pixels=frame.pixels,
        position=frame.position,
        orientation=frame.orientation,
        pixel_spacing=frame.pixel_spacing,
        trigger_time=frame.trigger_time,
    )
    fields.update(changes)
    return ArrayFrame(**fields)


def test_bad_series_are_refused_with_a_reason() -> None:
    spec = FULL_RANGE
    good = make_stack(lambda s, p: 1.0 + s + p, slices=4, phases=5)
    with pytest.raises(PreprocessError, match="2 slice position"):
        stack_from_arrays(make_stack(lambda s, p: 1.0, slices=2, phases=5), spec)
    with pytest.raises(PreprocessError, match="1 phase"):
        stack_from_arrays(make_stack(lambda s, p: 1.0, slices=4, phases=1), spec)
    with pytest.raises(PreprocessError, match="without a trigger time"):
        stack_from_arrays([_with(good[0], trigger_time=None), *good[1:]], spec)
    with pytest.raises(PreprocessError, match="mixes matrix sizes"):
        stack_from_arrays([_with(good[0], pixels=np.zeros((60, 64))), *good[1:]], spec)
    with pytest.raises(PreprocessError, match="mixes pixel spacings"):
        stack_from_arrays([_with(good[0], pixel_spacing=(3.0, 3.0)), *good[1:]], spec)
    with pytest.raises(PreprocessError, match="not parallel"):
        stack_from_arrays([_with(good[0], orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0)), *good[1:]], spec)
    with pytest.raises(PreprocessError, match="repeat"):
        stack_from_arrays([_with(good[1], trigger_time=good[0].trigger_time), good[0], *good[2:]], spec)
    with pytest.raises(PreprocessError, match="no frames"):
        stack_from_arrays([], spec)


# --- files end to end ---------------------------------------------------------------------------------------------


def test_prepare_reads_files_and_times_a_clinical_sized_series(tmp_path: Path) -> None:
    """12 slices x 25 phases of 256 x 256 u2, one file per frame, in shuffled order."""
    rng = np.random.default_rng(0)
    geometry = make_stack(lambda s, p: 0.0, slices=12, phases=25, shape=(1, 1), spacing=(1.4, 1.4))
    frames = []
    for i, g in enumerate(geometry):
        data = rng.integers(0, 4096, size=(1, 256, 256)).astype("<u2")
        ref = write_raw(tmp_path / f"f{i:03d}.dcm", data, header=1024)
        frames.append(Frame(g.position, g.orientation, g.pixel_spacing, g.trigger_time, ref))
    random.Random(0).shuffle(frames)
    info = SeriesInfo("k", "1.2", "1.2.3", SeriesRole.CINE_SAX, "ACME", "cine sax", 300, 300, "tags", 0.0)
    spec = PreprocessSpec()
    prepare(CompleteSeries(info, tuple(frames), ()), spec)  # warm the OS cache and the resampling cache
    runs = [prepare(CompleteSeries(info, tuple(frames), ()), spec) for _ in range(3)]
    prepared = runs[-1]
    assert isinstance(prepared, PreparedSeries)
    assert prepared.tensor.shape == (16, 3, 96, 96) and prepared.tensor.dtype == np.float32
    assert prepared.tensor.flags.c_contiguous
    best = min(r.timings_ms["preprocess"] for r in runs)
    print(f"series_to_tensor 12x25 256x256 from files: {best:.1f} ms")
    assert best < 250.0

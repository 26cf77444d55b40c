"""Synthetic DICOM export: determinism, vendor variety, valid files, geometry, timing tags and how files appear."""

from __future__ import annotations

import io
import itertools
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest
from image_measure import flood
from pydicom.uid import MRImageStorage

from appliance.dev.synth import VENDORS, SyntheticScanner, demo_cohort, iter_instances, plan_study, write_study
from appliance.dev.synth.conditions import CONDITIONS
from appliance.dev.synth.writer import encode, write_instance

SMALL = {"n_slices": 3, "n_phases": 4, "matrix": (64, 64)}


def readable(path_or_bytes: Path | bytes) -> bool:
    """A file counts as readable only if the header parses and the full pixel data decodes."""
    try:
        src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
        ds = pydicom.dcmread(src)
        return ds.pixel_array.shape == (ds.Rows, ds.Columns)
    except Exception:
        return False


def cine_datasets(plan):
    return [i.dataset for i in iter_instances(plan) if i.series_role == "cine_sax"]


def real_pixels(ds) -> np.ndarray:
    slope, intercept = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    return ds.pixel_array.astype(np.float64) * slope + intercept


def test_same_seed_same_study():
    a, b = plan_study(5, "A", **SMALL), plan_study(5, "A", **SMALL)
    assert a.study_uid == b.study_uid and a.params == b.params and a.stack == b.stack
    assert [s.series_uid for s in a.series] == [s.series_uid for s in b.series]
    ia, ib = list(iter_instances(a))[:6], list(iter_instances(b))[:6]
    assert [i.relpath for i in ia] == [i.relpath for i in ib]
    assert all(encode(x.dataset) == encode(y.dataset) for x, y in zip(ia, ib, strict=True))
    other = plan_study(6, "A", **SMALL)
    assert other.study_uid != a.study_uid
    assert plan_study(5, "A", condition="dcm", **SMALL).study_uid != a.study_uid
    uids = [i.sop_instance_uid for i in iter_instances(a)]
    assert len(set(uids)) == len(uids) == a.n_images


def test_vendor_profiles_differ_and_stay_in_range():
    profiles = list(VENDORS.values())
    assert sorted(VENDORS) == ["A", "B", "C"]
    for field in ("manufacturer", "model_name", "cine_description", "localizer_description", "layout", "n_phases"):
        assert len({getattr(p, field) for p in profiles}) == 3, field
    assert {p.bits_stored for p in profiles} == {12, 16}
    assert {p.write_mode for p in profiles} == {"rename", "inplace"}
    assert {p.normal_sign for p in profiles} == {1, -1}
    assert {p.slice_order for p in profiles} == {"base_to_apex", "apex_to_base"}
    assert [p.writes_images_in_acquisition for p in profiles] == [True, True, False]
    assert [p.rescale_slope for p in profiles] == [None, None, 2.5]
    assert VENDORS["B"].transfer_syntax.is_implicit_VR and not VENDORS["A"].transfer_syntax.is_implicit_VR
    for p in profiles:
        assert 160 <= p.rows <= 256 and 160 <= p.cols <= 256
        assert 20 <= p.n_phases <= 30 and 8 <= p.n_slices <= 14


@pytest.mark.parametrize("vendor", ["A", "B", "C"])
def test_written_files_are_valid_part10_and_vendor_specific(tmp_path, vendor):
    plan = plan_study(21, vendor, condition="normal", **SMALL)
    prof = VENDORS[vendor]
    paths = write_study(plan, tmp_path)
    assert len(paths) == plan.n_images == len(set(paths))
    on_disk = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert on_disk == sorted(paths)  # nothing else left behind (no temporary dot-files)
    cine_numbers = []
    for path in paths:
        raw = path.read_bytes()
        assert raw[128:132] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == prof.transfer_syntax
        assert ds.SOPClassUID == MRImageStorage and ds.Modality == "MR"
        assert ds.Manufacturer == prof.manufacturer
        arr = ds.pixel_array
        assert arr.shape == (ds.Rows, ds.Columns) and arr.dtype == np.uint16
        assert int(arr.max()) <= (1 << prof.bits_stored) - 1 and ds.BitsStored == prof.bits_stored
        assert ("RescaleSlope" in ds) == (prof.rescale_slope is not None)
        if ds.SeriesDescription == prof.cine_description:
            cine_numbers.append(ds.InstanceNumber)
            assert (ds.Rows, ds.Columns) == (64, 64)
            assert ds.ProtocolName == prof.cine_protocol
            if prof.writes_images_in_acquisition:
                assert ds.ImagesInAcquisition == plan.n_slices * plan.n_phases
            else:
                assert "ImagesInAcquisition" not in ds
    assert sorted(cine_numbers) == list(range(1, plan.n_slices * plan.n_phases + 1))
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    if prof.layout == "nested":
        assert all(r.startswith("ST") and "/SE" in r and r.endswith(".dcm") for r in rel)
        assert any(r.endswith("/IM_0001.dcm") for r in rel)
    elif prof.layout == "flat":
        assert all("/" not in r and r.endswith(".dcm") for r in rel)
    else:
        assert all("/DICOM/IMG" in r and "." not in r.rsplit("/", 1)[1] for r in rel)


@pytest.mark.parametrize("vendor", ["A", "B", "C"])
def test_no_patient_identity_in_paths(vendor):
    plan = plan_study(1234, vendor, **SMALL)
    forbidden = [plan.patient_id, plan.patient_name, plan.patient_name.split("^")[1], "SYNTH", plan.accession_number]
    for inst in iter_instances(plan):
        assert not any(f.upper() in inst.relpath.upper() for f in forbidden), inst.relpath
    assert plan.patient_name.startswith("SYNTH^")


def test_series_roles_and_last_flags():
    plan = plan_study(3, "A", **SMALL)
    insts = list(iter_instances(plan))
    kinds = [i.series_kind for i in insts]
    assert kinds == ["localizer"] * 3 + ["cine"] * 12 + ["lge"] * 3
    assert [i.series_role for i in insts].count("cine_sax") == 12
    assert [n for n, i in enumerate(insts) if i.is_last_of_series] == [2, 14, 17]
    assert {i.series_kind for i in iter_instances(plan_study(3, "B", **SMALL))} == {"localizer", "cine"}


@pytest.mark.parametrize("vendor", ["A", "B", "C"])
def test_geometry_follows_the_long_axis(vendor):
    plan = plan_study(8, vendor, n_slices=6, n_phases=2, matrix=(64, 64))
    axis = np.asarray(plan.stack.pose.long_axis)
    nominal = np.array([0.6, -0.5, -0.6]) / np.linalg.norm([0.6, -0.5, -0.6])
    assert axis @ nominal > np.cos(np.radians(25))
    by_position: dict[tuple, pydicom.Dataset] = {}
    for ds in cine_datasets(plan):
        by_position.setdefault(tuple(float(x) for x in ds.ImagePositionPatient), ds)
    assert len(by_position) == plan.n_slices
    normals, centres, locations = [], [], []
    for pos, ds in by_position.items():
        iop = np.asarray([float(x) for x in ds.ImageOrientationPatient])
        row, col = iop[:3], iop[3:]
        assert abs(row @ col) < 1e-5 and np.linalg.norm(row) == pytest.approx(1.0, abs=1e-5)
        normal = np.cross(row, col)
        assert abs(normal @ axis) > 0.9999  # perpendicular to the long axis
        assert np.sign(normal @ axis) == VENDORS[vendor].normal_sign
        normals.append(normal)
        ps_r, ps_c = (float(x) for x in ds.PixelSpacing)
        centre = np.asarray(pos) + (ds.Columns - 1) / 2 * ps_c * row + (ds.Rows - 1) / 2 * ps_r * col
        # image centre is off the heart's centre line by exactly the seeded offset
        rel = centre - np.asarray(plan.stack.pose.origin)
        assert np.linalg.norm(rel - (rel @ axis) * axis) == pytest.approx(np.hypot(*plan.stack.center_offset_mm),
                                                                          abs=0.01)
        centres.append(centre)
        locations.append(float(ds.SliceLocation))
    order = np.argsort([c @ axis for c in centres])
    steps = np.diff(np.asarray(centres)[order], axis=0)
    spacing = float(next(iter(by_position.values())).SpacingBetweenSlices)
    for step in steps:
        assert np.linalg.norm(step) == pytest.approx(spacing, abs=0.01)
        assert abs(step @ axis) == pytest.approx(np.linalg.norm(step), abs=0.01)  # stepping along the axis
    assert len(set(np.round(locations, 2))) == plan.n_slices
    # on disk, the vendor's slice order holds
    first, last = centres[0] @ axis, centres[-1] @ axis
    assert (first < last) == (VENDORS[vendor].slice_order == "base_to_apex")


def test_trigger_times_and_non_cine_series():
    plan = plan_study(4, "A", n_slices=2, n_phases=6, matrix=(64, 64))
    insts = list(iter_instances(plan))
    cine = [i.dataset for i in insts if i.series_kind == "cine"]
    for s in range(plan.n_slices):
        block = cine[s * plan.n_phases:(s + 1) * plan.n_phases]
        times = [float(d.TriggerTime) for d in block]
        assert times[0] == 0.0 and all(b > a for a, b in itertools.pairwise(times))
        assert times[-1] < float(block[0].NominalInterval)
        assert {d.CardiacNumberOfImages for d in block} == {plan.n_phases}
        assert len({tuple(d.ImagePositionPatient) for d in block}) == 1
    rr = 60000.0 / plan.params.heart_rate_bpm
    assert float(cine[1].TriggerTime) == pytest.approx(rr / plan.n_phases, abs=0.01)
    for loc in (i.dataset for i in insts if i.series_kind == "localizer"):
        assert "LOCALIZER" in loc.ImageType
        assert "TriggerTime" not in loc and "CardiacNumberOfImages" not in loc
    lge = [i.dataset for i in insts if i.series_kind == "lge"]
    assert {d.CardiacNumberOfImages for d in lge} == {1}
    assert len({float(d.TriggerTime) for d in lge}) == 1


def _centroid_patient(ds, mask: np.ndarray) -> np.ndarray:
    iop = np.asarray([float(x) for x in ds.ImageOrientationPatient])
    ps_r, ps_c = (float(x) for x in ds.PixelSpacing)
    r, c = np.nonzero(mask)
    return (np.asarray([float(x) for x in ds.ImagePositionPatient]) + c.mean() * ps_c * iop[:3]
            + r.mean() * ps_r * iop[3:])


@pytest.mark.parametrize("vendor", ["A", "B", "C"])
def test_rendered_anatomy_agrees_with_the_geometry(vendor):
    # the pixels must put the LV on the long axis and the RV to the patient's right-anterior side, whatever the
    # vendor's mirroring, rotation, non-square pixels and rescaling
    plan = plan_study(9, vendor, condition="normal", n_slices=5, n_phases=1, matrix=(128, 128))
    axis = np.asarray(plan.stack.pose.long_axis)
    origin = np.asarray(plan.stack.pose.origin)
    mid = cine_datasets(plan)[2]
    img = real_pixels(mid) / (VENDORS[vendor].gain * plan.gain_scale)
    p = plan.params
    bright = img > 0.5 * (p.blood_signal + p.myocardial_signal)  # this patient's blood/myocardium midpoint
    shift = plan.slice_shifts_mm[2]  # breath-hold misregistration of this slice (in-plane, image axes)
    iop = np.asarray([float(x) for x in mid.ImageOrientationPatient])
    ps_r, ps_c = (float(x) for x in mid.PixelSpacing)
    rel = origin - np.asarray([float(x) for x in mid.ImagePositionPatient])
    seed = (int(round(rel @ iop[3:] / ps_r)), int(round(rel @ iop[:3] / ps_c)))  # axis crosses the plane here
    lv = flood(bright, seed)
    assert 200 < lv.sum() * ps_r * ps_c < 3000  # a plausible LV cavity (mm^2), not the background
    lv_centre = _centroid_patient(mid, lv)
    off_axis = (lv_centre - origin) - ((lv_centre - origin) @ axis) * axis
    iop_row, iop_col = iop[:3], iop[3:]
    assert np.linalg.norm(off_axis - (shift[0] * iop_row + shift[1] * iop_col)) < 4.0
    assert img[lv].mean() > 0.6 * p.blood_signal  # blood signal survives gain, bias, noise and rescale
    r, c = np.mgrid[:128, :128]
    near = (r - seed[0]) ** 2 * ps_r**2 + (c - seed[1]) ** 2 * ps_c**2 < 50.0**2
    rv = bright & near & ~lv
    assert rv.sum() * ps_r * ps_c > 150
    to_rv = _centroid_patient(mid, rv) - lv_centre
    assert to_rv[0] < -0.3 * np.linalg.norm(to_rv)  # RV to the patient's right ...
    assert to_rv[1] < -0.1 * np.linalg.norm(to_rv)  # ... and anterior of the LV
    # in the heart's own frame the RV centroid sits septal and slightly anterior (phantom: 200 deg)
    pose = plan.stack.pose
    angle = np.degrees(np.arctan2(to_rv @ np.asarray(pose.inferior), to_rv @ np.asarray(pose.lateral))) % 360
    assert 180.0 < angle < 225.0


def test_rescale_slope_scales_stored_values():
    plan = plan_study(2, "C", condition="normal", n_slices=1, n_phases=1, matrix=(64, 64))
    ds = cine_datasets(plan)[0]
    assert float(ds.RescaleSlope) == 2.5
    assert ds.pixel_array.max() * 2.5 > 0.7 * VENDORS["C"].gain * plan.gain_scale
    assert ds.pixel_array.max() < 0.6 * VENDORS["C"].gain


def test_rename_mode_never_exposes_a_partial_file(tmp_path):
    plan = plan_study(30, "B", **SMALL)
    inst = next(i for i in iter_instances(plan) if i.series_kind == "cine")
    final = tmp_path / inst.relpath
    seen = []

    def check(path: Path, size: int) -> None:
        seen.append(size)
        assert path != final and path.name.startswith(".")
        assert not final.exists()

    assert write_instance(inst, tmp_path, mode="rename", on_chunk=check) == final
    assert len(seen) >= 3 and readable(final)
    # rewriting: the old complete file stays in place until the new one replaces it
    old_still_whole: list[bool] = []
    write_instance(inst, tmp_path, mode="rename", on_chunk=lambda p, n: old_still_whole.append(readable(final)))
    assert len(old_still_whole) >= 3 and all(old_still_whole)
    assert [p.name for p in tmp_path.rglob("*")] == [final.name]


def test_inplace_mode_is_readable_only_at_the_end(tmp_path):
    plan = plan_study(31, "A", **SMALL)
    inst = next(i for i in iter_instances(plan) if i.series_kind == "cine")
    states: list[tuple[int, bool]] = []

    def check(path: Path, size: int) -> None:
        assert path == tmp_path / inst.relpath
        states.append((path.stat().st_size, readable(path)))

    write_instance(inst, tmp_path, mode="inplace", chunk_delay_s=0.01, on_chunk=check)
    sizes = [s for s, _ in states]
    assert len(states) >= 3 and sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert [ok for _, ok in states] == [False] * (len(states) - 1) + [True]


def test_inplace_file_grows_while_a_watcher_looks(tmp_path):
    plan = plan_study(32, "B", **SMALL)
    inst = next(i for i in iter_instances(plan) if i.series_kind == "cine")
    target = tmp_path / inst.relpath
    observed: list[tuple[int, bool]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if target.exists():
                data = target.read_bytes()  # one snapshot, so size and readability describe the same bytes
                observed.append((len(data), readable(data)))
            done.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    write_instance(inst, tmp_path, chunk_delay_s=0.05)  # vendor B default: in place
    done.set()
    watcher.join()
    final_size = target.stat().st_size
    partial = [ok for size, ok in observed if size < final_size]
    assert partial and not any(partial)
    assert readable(target)


def test_scanners_run_concurrently_and_stop(tmp_path):
    plans_a = [plan_study(40, "A", **SMALL)]
    plans_c = [plan_study(41, "C", **SMALL)]
    seen: list[str] = []
    lock = threading.Lock()

    def on_file(path: Path, inst) -> None:
        assert readable(path)
        with lock:
            seen.append(inst.sop_instance_uid)

    a = SyntheticScanner(tmp_path / "a", plans_a, pace_s=0.001, on_file=on_file).start()
    c = SyntheticScanner(tmp_path / "c", plans_c, pace_s=0.001, on_file=on_file).start()
    assert a.join(30) and c.join(30)
    assert a.error is None and c.error is None
    assert len(a.files_written) == plans_a[0].n_images and len(c.files_written) == plans_c[0].n_images
    assert len(set(seen)) == len(seen) == plans_a[0].n_images + plans_c[0].n_images

    slow = SyntheticScanner(tmp_path / "slow", [plan_study(42, "B", **SMALL)], pace_s=0.2).start()
    assert not slow.join(0.3)
    assert slow.stop(5.0)
    assert 0 < len(slow.files_written) < plans_a[0].n_images


def test_demo_cohort_mixes_vendors_and_conditions():
    cohort = demo_cohort(9, seed=1)
    assert len(cohort) == 9
    assert {p.condition for p in cohort} == set(CONDITIONS)
    assert {p.vendor for p in cohort} == {"A", "B", "C"}
    assert len({p.study_uid for p in cohort}) == 9
    again = demo_cohort(9, seed=1)
    assert [p.study_uid for p in again] == [p.study_uid for p in cohort]
    assert [p.study_uid for p in demo_cohort(9, seed=2)] != [p.study_uid for p in cohort]

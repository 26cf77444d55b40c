"""Turning a StudyPlan into DICOM files, in scanner order, the way each vendor lays them on disk.

Pixels are rendered lazily per instance, so a whole study is never held in memory. Files appear either atomically
(written under a dot-name, then renamed) or grow in place in a few chunks, which is what a folder watcher must cope
with.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset

from appliance.dev.synth.dataset import ImageSpec, build_dataset
from appliance.dev.synth.geometry import localizer_planes
from appliance.dev.synth.localizer import render_localizer
from appliance.dev.synth.phantom import render_slice
from appliance.dev.synth.pixels import bias_field, to_stored
from appliance.dev.synth.plan import SeriesPlan, StudyPlan, Truth, plan_study
from appliance.dev.synth.uids import synth_uid

__all__ = [
    "WRITE_MODES",
    "SeriesPlan",
    "StudyPlan",
    "SynthInstance",
    "Truth",
    "encode",
    "iter_instances",
    "plan_study",
    "write_instance",
    "write_study",
]

log = logging.getLogger(__name__)

WRITE_MODES = ("rename", "inplace")
_CHUNKS = 4
_LOCALIZER_MATRIX = 256
_LOCALIZER_FOV_MM = 400.0
_LGE_PHASE = 0.72  # mid-diastole, where LGE is triggered
_LGE_TI_MS = 300.0


@dataclass(frozen=True)
class SynthInstance:
    relpath: str  # relative to the export root; never contains patient identity
    dataset: FileDataset
    series_role: str  # "cine_sax" | "other"
    is_last_of_series: bool
    write_mode: str = "rename"  # the vendor's default way of putting the file on disk
    series_kind: str = ""  # "localizer" | "cine" | "lge"

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)


def _relpath(plan: StudyPlan, series: SeriesPlan, instance_number: int, study_counter: int, sop_uid: str) -> str:
    layout = plan.profile.layout
    if layout == "nested":
        return f"ST{plan.path_key}/SE{series.series_number:04d}/IM_{instance_number:04d}.dcm"
    if layout == "flat":
        return f"{sop_uid}.dcm"
    if layout == "dicom_dir":
        # one export folder per study, so that several studies can share a drop folder
        return f"EX{plan.path_key}/DICOM/IMG{study_counter:05d}"
    raise ValueError(f"unknown layout {layout!r}")


def _slice_order(plan: StudyPlan) -> list[int]:
    order = list(range(plan.n_slices))
    return order[::-1] if plan.profile.slice_order == "apex_to_base" else order


def iter_instances(plan: StudyPlan) -> Iterator[SynthInstance]:
    """All instances of the study in the order the scanner sends them, rendered one at a time."""
    prof = plan.profile
    counter = 0
    for series in plan.series:
        for number, (spec, image) in enumerate(_series_images(plan, series), start=1):
            counter += 1
            ds = build_dataset(plan, series, spec, image)
            yield SynthInstance(
                relpath=_relpath(plan, series, spec.instance_number, counter, spec.sop_instance_uid),
                dataset=ds,
                series_role=series.role,
                is_last_of_series=number == series.n_images,
                write_mode=prof.write_mode,
                series_kind=series.kind,
            )


def _noise_rng(plan: StudyPlan, series: SeriesPlan, instance_number: int) -> np.random.Generator:
    # per instance, so any single image can be regenerated without replaying the ones before it
    return np.random.default_rng([plan.seed, series.series_number, instance_number, 1])


def _acq_time(series: SeriesPlan, seconds: float) -> str:
    h, m, s = int(series.series_time[:2]), int(series.series_time[2:4]), int(series.series_time[4:6])
    total = h * 3600 + m * 60 + s + seconds
    whole = int(total)
    frac = int(round((total - whole) * 1e6)) % 1_000_000
    return f"{(whole // 3600) % 24:02d}{(whole // 60) % 60:02d}{whole % 60:02d}.{frac:06d}"


def _series_images(plan: StudyPlan, series: SeriesPlan) -> Iterator[tuple[ImageSpec, np.ndarray]]:
    prof = plan.profile
    stack = plan.stack
    # coil shading is a property of the series' receive setup, shared by all its images
    shading_rng = np.random.default_rng([plan.seed, series.series_number, 0])
    if series.kind == "localizer":
        spacing = _LOCALIZER_FOV_MM / _LOCALIZER_MATRIX
        loc_bias = bias_field(_LOCALIZER_MATRIX, _LOCALIZER_MATRIX, shading_rng, plan.shading_strength)
        for k, plane in enumerate(localizer_planes(stack.pose, _LOCALIZER_MATRIX, _LOCALIZER_MATRIX,
                                                   (spacing, spacing)), start=1):
            image = render_localizer(plan.params, stack.pose, plane)
            stored = to_stored(image, prof, _noise_rng(plan, series, k), plan.gain_scale, loc_bias, plan.noise_scale)
            spec = ImageSpec(plane=plane, instance_number=k, acquisition_time=_acq_time(series, 2.0 * k),
                             sop_instance_uid=synth_uid(series.series_uid, k),
                             image_type=("ORIGINAL", "PRIMARY", "LOCALIZER", "M"))
            yield spec, stored
        return

    bias = bias_field(plan.rows, plan.cols, shading_rng, plan.shading_strength)
    triggers = plan.trigger_times_ms()
    number = 0
    for position, slice_index in enumerate(_slice_order(plan)):
        plane = stack.planes[slice_index]
        phases = range(plan.n_phases) if series.kind == "cine" else (None,)
        for phase in phases:
            number += 1
            sop_uid = synth_uid(series.series_uid, number)
            if phase is None:
                image = render_slice(plan.params, plane.sax_level, _LGE_PHASE, plan.rows, plan.cols,
                                     plan.pixel_spacing, plan.render_offset(slice_index), stack.rotation_deg,
                                     stack.mirror, contrast="lge", slab_frac=plan.slab_frac)
                spec = ImageSpec(plane=plane, instance_number=number, sop_instance_uid=sop_uid,
                                 acquisition_time=_acq_time(series, 12.0 * position),
                                 trigger_time_ms=round(_LGE_PHASE * plan.params.rr_ms, 2),
                                 cardiac_number_of_images=1,
                                 image_type=("ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"),
                                 inversion_time_ms=_LGE_TI_MS)
            else:
                image = render_slice(plan.params, plane.sax_level, plan.render_phase(slice_index, phase), plan.rows,
                                     plan.cols, plan.pixel_spacing, plan.render_offset(slice_index),
                                     stack.rotation_deg, stack.mirror, slab_frac=plan.slab_frac)
                spec = ImageSpec(plane=plane, instance_number=number, sop_instance_uid=sop_uid,
                                 acquisition_time=_acq_time(series, 10.0 * position + triggers[phase] / 1000.0),
                                 trigger_time_ms=triggers[phase],
                                 cardiac_number_of_images=plan.n_phases,
                                 image_type=prof.cine_image_type)
            yield spec, to_stored(image, prof, _noise_rng(plan, series, number), plan.gain_scale, bias,
                                  plan.noise_scale)


def encode(dataset: FileDataset) -> bytes:
    """Part 10 bytes (preamble, file meta, dataset) in the dataset's transfer syntax."""
    buf = io.BytesIO()
    dataset.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_instance(inst: SynthInstance, root: Path, mode: str | None = None, chunk_delay_s: float = 0.0,
                   on_chunk: Callable[[Path, int], None] | None = None) -> Path:
    """Write one instance under ``root``; returns the final path.

    ``rename``: the bytes go to a hidden ``.name.*.part`` file next to the target, then os.replace makes the file
    appear complete. ``inplace``: the target itself grows chunk by chunk (flushed, ``chunk_delay_s`` apart), as
    with scanners that stream straight into the export folder. ``on_chunk(path, bytes_so_far)`` is called after
    each flushed chunk with the path being written, which lets tests look at the intermediate states.
    """
    mode = inst.write_mode if mode is None else mode
    if mode not in WRITE_MODES:
        raise ValueError(f"unknown write mode {mode!r}")
    final = Path(root) / inst.relpath
    final.parent.mkdir(parents=True, exist_ok=True)
    data = encode(inst.dataset)
    step = max(1, -(-len(data) // _CHUNKS))
    target = final
    if mode == "rename":
        target = final.with_name(f".{final.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        with open(target, "wb") as fh:
            for start in range(0, len(data), step):
                fh.write(data[start:start + step])
                fh.flush()
                if on_chunk is not None:
                    on_chunk(target, start + len(data[start:start + step]))
                if chunk_delay_s > 0.0 and start + step < len(data):
                    time.sleep(chunk_delay_s)
        if mode == "rename":
            os.replace(target, final)
    except BaseException:
        if mode == "rename":
            target.unlink(missing_ok=True)
        raise
    return final


def write_study(plan: StudyPlan, root: Path, pace_s: float = 0.0, mode: str | None = None) -> list[Path]:
    """Write every instance of ``plan`` under ``root`` in scanner order, ``pace_s`` seconds apart."""
    paths: list[Path] = []
    for i, inst in enumerate(iter_instances(plan)):
        if i and pace_s > 0.0:
            time.sleep(pace_s)
        paths.append(write_instance(inst, Path(root), mode))
    log.debug("wrote %d files for study %s (vendor %s)", len(paths), plan.path_key, plan.vendor)
    return paths

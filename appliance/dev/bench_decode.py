"""`scanside bench`, compressed MR: what reading one image costs the appliance per transfer syntax, next to
uncompressed.

The same 256 x 256 cine images are stored in each syntax (dcmtk's dcmcjpeg/dcmcjpls/dcmcrle as a router or PACS
would, pydicom's own encoder for JPEG 2000), then each file goes the appliance's way: the header read
(`read_instance`) and the frame decoded into the float buffer the preprocessing fills (`load_into`, pydicom's pixel
plugins for compressed data, a raw read for uncompressed). Page cache warm, one thread.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom import uid

from appliance.dev.synth import iter_instances, plan_study
from appliance.ingest.reader import read_instance
from appliance.preprocess.pixels import load_into

# How an uncompressed file is stored in each syntax: a dcmtk tool and its options (as a router or PACS would), or
# pydicom's own encoder (pydicom 3.0 has no HTJ2K encoder; dcmtk 3.6.7 none for JPEG 2000). The tests use these too.
DCMTK_ENCODERS: dict[str, tuple[str, ...]] = {
    uid.JPEGLosslessSV1: ("dcmcjpeg", "+e1"),
    uid.JPEGLossless: ("dcmcjpeg", "+el"),
    uid.JPEGExtended12Bit: ("dcmcjpeg", "+ee"),
    uid.JPEGBaseline8Bit: ("dcmcjpeg", "+eb"),
    uid.JPEGLSLossless: ("dcmcjpls", "+el"),
    uid.JPEGLSNearLossless: ("dcmcjpls", "+en"),
    uid.RLELossless: ("dcmcrle",),
}
PYDICOM_ENCODED = (uid.JPEG2000Lossless,)
# What the bench times: one of each codec family, lossless but for the 12-bit extended process MR is sent in.
_BENCHED = (uid.JPEGLosslessSV1, uid.JPEGExtended12Bit, uid.JPEGLSLossless, uid.RLELossless, uid.JPEG2000Lossless)


def encode(plain: Path, syntax: str, out: Path) -> None:
    """Store the uncompressed Part 10 file `plain` at `out` in `syntax` (DCMTK_ENCODERS or PYDICOM_ENCODED);
    CalledProcessError, with dcmtk's message, when the tool refuses."""
    if syntax in DCMTK_ENCODERS:
        subprocess.run([*DCMTK_ENCODERS[syntax], str(plain), str(out)], check=True, capture_output=True, text=True)
    else:
        ds = pydicom.dcmread(plain)
        ds.compress(syntax, encoding_plugin="pylibjpeg")
        ds.save_as(out, enforce_file_format=True)


def _per_image_ms(files: list[Path]) -> float:
    for p in files:
        p.read_bytes()  # warm the page cache
    out = None
    started = time.perf_counter()
    for p in files:
        frame = read_instance(str(p), settled=True).frames[0]
        if out is None:
            out = np.empty((frame.pixels.rows, frame.pixels.columns), dtype=np.float32)
        load_into(frame.pixels, out)
    return 1000 * (time.perf_counter() - started) / len(files)


def bench_decode(work: Path, add: Callable[[str, str, str], None], images: int = 60) -> None:
    plan = plan_study(seed=2100, vendor="A", n_slices=12, n_phases=25, matrix=(256, 256))
    cine = [i.dataset for i in iter_instances(plan) if i.series_role == "cine_sax"][:images]
    plain_dir = work / "decode" / "ExplicitVRLittleEndian"
    plain_dir.mkdir(parents=True)
    plain = []
    for n, ds in enumerate(cine):
        path = plain_dir / f"{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        plain.append(path)
    base_ms, base_bytes = _per_image_ms(plain), sum(p.stat().st_size for p in plain)
    add(f"read + decode one 256x256 image, uncompressed, mean of {len(plain)} (ms)", f"{base_ms:.2f}", "baseline")
    for syntax in _BENCHED:
        name = uid.UID(syntax).name
        tool = DCMTK_ENCODERS.get(syntax, ("",))[0]
        if tool and shutil.which(tool) is None:
            add(f"  {name} (ms)", "n/a", f"{tool} (dcmtk) not installed")
            continue
        folder = work / "decode" / uid.UID(syntax).keyword
        folder.mkdir()
        files = []
        for p in plain:
            encode(p, syntax, folder / p.name)
            files.append(folder / p.name)
        ms, size = _per_image_ms(files), sum(p.stat().st_size for p in files)
        add(f"  {name} (ms)", f"{ms:.2f} ({ms / base_ms:.0f}x; file {size / base_bytes:.2f} of uncompressed)", "-")

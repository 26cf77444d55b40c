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

_DCMTK: dict[str, tuple[str, ...]] = {
    uid.JPEGLosslessSV1: ("dcmcjpeg", "+e1"),
    uid.JPEGExtended12Bit: ("dcmcjpeg", "+ee"),
    uid.JPEGLSLossless: ("dcmcjpls", "+el"),
    uid.RLELossless: ("dcmcrle",),
}
_PYDICOM = (uid.JPEG2000Lossless,)  # pydicom 3.0 has no HTJ2K encoder; dcmtk 3.6.7 none for JPEG 2000


def _encode(plain: Path, syntax: str, out: Path) -> None:
    if syntax in _DCMTK:
        subprocess.run([*_DCMTK[syntax], str(plain), str(out)], check=True, capture_output=True)
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
    for syntax in (*_DCMTK, *_PYDICOM):
        name = uid.UID(syntax).name
        if syntax in _DCMTK and shutil.which(_DCMTK[syntax][0]) is None:
            add(f"  {name} (ms)", "n/a", f"{_DCMTK[syntax][0]} (dcmtk) not installed")
            continue
        folder = work / "decode" / uid.UID(syntax).keyword
        folder.mkdir()
        files = []
        for p in plain:
            _encode(p, syntax, folder / p.name)
            files.append(folder / p.name)
        ms, size = _per_image_ms(files), sum(p.stat().st_size for p in files)
        add(f"  {name} (ms)", f"{ms:.2f} ({ms / base_ms:.0f}x; file {size / base_bytes:.2f} of uncompressed)", "-")

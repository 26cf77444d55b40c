"""The synthetic scanner's MR images pass David Clunie's dciodvfy (dicom3tools) with no error, for every vendor
profile and every series it writes, and stay on the ingest reader's fast path.

dciodvfy prints the IOD it recognised ("MRImage") and then one "Error - ..." or "Warning - ..." line per finding, all
on stderr; it exits 1 when it found an error. The warnings it still gives are the vendor habits the scanner imitates
on purpose (ACCEPTED_WARNINGS says which and why); any other warning fails here, so that a new one is looked at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest

from appliance.dev.synth import VENDORS, plan_study, write_study
from appliance.dev.synth.writer import encode, iter_instances
from appliance.ingest.reader import read_instance
from appliance.preprocess import load_frame

DCIODVFY = shutil.which("dciodvfy") or shutil.which("dciodvfy", path="/usr/bin")
pytestmark = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy is not installed (Debian package 'dicom3tools')")

SMALL = {"n_slices": 2, "n_phases": 3, "matrix": (32, 32)}

# Warnings dciodvfy gives on what we write on purpose, each with the reason it stays.
ACCEPTED_WARNINGS = {
    # Image Type value 3 is a list of Defined Terms, which PS3.3 lets a vendor extend: "M" (vendor A's cine and every
    # LGE, in Siemens' style), "M_FFE" (vendor C's cine, Philips' style) and "LOCALIZER" (every scout, as GE writes
    # it, and what appliance.assembly.classify looks for) are what the scanners imitated here write.
    r"Unrecognized defined term <(M|M_FFE|LOCALIZER)> for value 3 of attribute <Image Type>",
    # Vendor C stores scaled values with Rescale Slope/Intercept (and Rescale Type, which the Modality LUT module
    # requires beside them), as Philips does: not in the MR Image IOD, so a Standard Extended SOP Class. It is
    # there to exercise rescaling in the reader; the pixels the model sees depend on it.
    r"Non-identity Modality LUT Module \(RescaleSlope and RescaleIntercept\) not expected to be present in standard "
    r"MR IOD - may cause windowing problems - attribute <Rescale(Slope|Intercept)> = <[-0-9.]+>",
    r"Attribute is not present in standard DICOM IOD - \(0x0028,0x105[234]\) (DS|LO) Rescale (Intercept|Slope|Type)",
    r"Dicom dataset contains attributes not present in standard DICOM IOD - this is a Standard Extended SOP Class",
}


@dataclass(frozen=True)
class Verdict:
    iod: str  # the IOD dciodvfy recognised, e.g. "MRImage"; "" when it found none
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    returncode: int


def dciodvfy(path: Path) -> Verdict:
    assert DCIODVFY is not None
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = [line.strip() for line in (run.stderr + run.stdout).splitlines() if line.strip()]
    # "Abort - ..." is how it ends when it cannot even read the file
    errors = tuple(line for line in lines if line.startswith(("Error", "Abort")))
    warnings = tuple(line for line in lines if line.startswith("Warning"))
    iod = next((line for line in lines if re.fullmatch(r"[A-Za-z0-9]+", line)), "")
    return Verdict(iod, errors, warnings, run.returncode)


def unaccepted(warnings: tuple[str, ...]) -> list[str]:
    return [w for w in warnings if not any(re.search(p, w) for p in ACCEPTED_WARNINGS)]


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_series_of_every_vendor_passes_dciodvfy(tmp_path, vendor):
    plan = plan_study(11, vendor, **SMALL)
    kinds = {s.kind for s in plan.series}
    assert kinds == ({"localizer", "cine", "lge"} if VENDORS[vendor].lge_description else {"localizer", "cine"})
    files = write_study(plan, tmp_path)
    assert len(files) == plan.n_images
    for path in files:
        verdict = dciodvfy(path)
        where = f"{vendor} {path.relative_to(tmp_path)}"
        assert verdict.iod == "MRImage", f"{where}: {verdict}"
        assert not verdict.errors and verdict.returncode == 0, f"{where}: {verdict.errors}"
        assert not unaccepted(verdict.warnings), f"{where}: new dciodvfy warnings {unaccepted(verdict.warnings)}"


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_the_files_stay_on_the_fast_reader_path(tmp_path, vendor):
    files = write_study(plan_study(11, vendor, **SMALL), tmp_path)
    for path in files:
        (frame,) = read_instance(path).frames
        assert not frame.pixels.decode_with_pydicom and frame.pixels.offset > 0
        ds = pydicom.dcmread(path)
        expected = ds.pixel_array.astype(np.float32) * float(ds.get("RescaleSlope", 1.0)) + float(
            ds.get("RescaleIntercept", 0.0))
        np.testing.assert_array_equal(load_frame(frame.pixels), expected)


def test_the_checker_sees_what_dciodvfy_finds(tmp_path):
    """The checker must be able to fail: a Type 1 attribute deleted, a Type 2 one deleted, a gated attribute on an
    image that says it is not gated, and a file that is not DICOM at all."""
    plan = plan_study(3, "A", **SMALL)
    lge = next(i for i in iter_instances(plan) if i.series_kind == "lge").dataset
    good = tmp_path / "good.dcm"
    good.write_bytes(encode(lge))
    assert not dciodvfy(good).errors

    def broken(name: str, change) -> Verdict:
        ds = pydicom.dcmread(good)
        change(ds)
        path = tmp_path / name
        path.write_bytes(encode(ds))
        return dciodvfy(path)

    type1 = broken("type1.dcm", lambda ds: delattr(ds, "ImagePositionPatient"))
    assert type1.returncode != 0 and any("<ImagePositionPatient>" in e for e in type1.errors), type1
    type2 = broken("type2.dcm", lambda ds: delattr(ds, "EchoTrainLength"))
    assert any("<EchoTrainLength>" in e for e in type2.errors), type2
    ungated = broken("ungated.dcm", lambda ds: setattr(ds, "ScanOptions", ""))
    assert any("<TriggerTime>" in e for e in ungated.errors), ungated
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 64)
    assert dciodvfy(junk).errors and dciodvfy(tmp_path / "absent.dcm").errors
    assert unaccepted(("Warning - Unrecognized defined term <XYZ> for value 3 of attribute <Image Type>",))

"""The README's main job: `scanside demo`, run as a user runs it, here with SRs written to a folder."""

from __future__ import annotations

import subprocess
import sys

import pydicom
import pytest

pytestmark = pytest.mark.slow


def test_the_demo_scores_its_studies_and_writes_an_sr_for_each(tmp_path):
    out = tmp_path / "sr"
    done = subprocess.run([sys.executable, "-m", "appliance", "demo", "--studies", "2", "--sr-out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "summary: 2 studies scored, 0 failed" in done.stdout
    assert f"DICOM SR: 2 of 2 written to {out}" in done.stdout
    srs = [pydicom.dcmread(p) for p in sorted(out.glob("*.dcm"))]
    assert len(srs) == 2 and all(sr.Modality == "SR" and "not for diagnostic use" in sr.SeriesDescription
                                 for sr in srs)
    assert len({sr.StudyInstanceUID for sr in srs}) == 2  # one per synthetic study, filed in its study
    assert all(sr.ContentTemplateSequence[0].TemplateIdentifier == "1500" for sr in srs)  # the default form

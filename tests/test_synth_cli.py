"""`scanside synth` as a site runs it: synthetic studies written into a folder and sent over C-STORE to dcmtk's
storescp (a real DICOM peer), at a scanner's pace; and its errors, one line each with a non-zero exit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pydicom
import pytest
from conftest import wait_for

from appliance.cli import main
from appliance.dev.served import free_port
from appliance.dev.synth import plan_study
from appliance.dev.synth.scanner import demo_cohort

STORESCP = shutil.which("storescp")
pytestmark = pytest.mark.slow


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["synth", *args])
    out, err = capsys.readouterr()
    return code, out, err


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture
def storescp(tmp_path):
    """dcmtk's storescp on a free loopback port, writing what it receives into a folder: (port, folder)."""
    if STORESCP is None:
        pytest.skip("dcmtk (Debian package) is not installed; .ci/run installs it")
    port, folder = free_port(), tmp_path / "received"
    folder.mkdir()
    proc = subprocess.Popen([STORESCP, "-aet", "ROUTER", "-od", str(folder), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=10, what="storescp listening")
    yield port, folder
    proc.terminate()
    proc.wait(10)


def test_a_folder_and_a_dicom_peer_get_the_same_paced_studies(tmp_path, storescp, capsys):
    port, received = storescp
    out = tmp_path / "out"
    began = time.monotonic()
    code, said, err = run(capsys, "--vendor", "B", "--studies", "1", "--seed", "11", "--out", str(out), "--pace",
                          "0.004", "--send", f"127.0.0.1:{port}", "--called-ae", "ROUTER", "--calling-ae", "MRI1")
    took = time.monotonic() - began
    assert code == 0, err
    (plan,) = demo_cohort(1, 11, vendors=["B"])  # the studies the command promises: the demo cohort's
    written = dicom_files(out)
    wait_for(lambda: len(dicom_files(received)) == plan.n_images, timeout=20, what="storescp has every instance")
    assert len(written) == plan.n_images == 203
    assert f"203 instances written to {out} and sent to ROUTER at 127.0.0.1:{port}" in said
    assert "SYNTHETIC DATA" in said
    sent = [pydicom.dcmread(p, stop_before_pixels=True) for p in dicom_files(received)]
    on_disk = [pydicom.dcmread(p, stop_before_pixels=True) for p in written]
    assert {d.SOPInstanceUID for d in sent} == {d.SOPInstanceUID for d in on_disk}
    assert {d.Manufacturer for d in sent} == {"Borealis Healthcare"} and {d.StudyInstanceUID for d in sent} == \
        {plan.study_uid}
    assert took >= 202 * 0.004  # paced: an instance every 4 ms
    arrived = sorted(p.stat().st_mtime for p in dicom_files(received))
    assert arrived[-1] - arrived[0] >= 0.5  # trickled in, not all at once


def test_the_pace_alone_is_a_scanners_rate_and_the_same_seed_the_same_study(tmp_path, capsys):
    from appliance.cli import SCANNER_PACE_S, build_parser

    args = build_parser().parse_args(["synth", "--pace", "--out", str(tmp_path)])
    assert args.pace == SCANNER_PACE_S > 0
    assert build_parser().parse_args(["synth", "--out", str(tmp_path)]).pace == 0.0
    assert demo_cohort(2, 5, vendors=["C"])[1].study_uid == demo_cohort(2, 5, vendors=["C"])[1].study_uid
    assert plan_study(1, vendor="C").profile.manufacturer == "Cobalt Imaging"


def test_errors_are_one_clear_line_and_a_non_zero_exit(tmp_path, capsys, appliance):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    app = appliance(dicom={"enabled": True, "port": 0, "allowed_calling_aets": ["MRI1"]})
    port = free_port()  # after the appliance took its ports: nothing listens here
    cases = [
        (["--out", str(afile / "sub")], f"cannot create the folder {afile / 'sub'}"),
        (["--out", str(afile)], f"{afile} is not a folder"),
        (["--send", f"127.0.0.1:{port}"], f"cannot reach SCANSIDE at 127.0.0.1:{port}"),
        (["--send", f"127.0.0.1:{app.pipeline.receiver.port}", "--calling-ae", "STRANGER"],
         "rejected the association (permanent: calling AE title not recognised; calling AE STRANGER)"),
        (["--send", "no-port-here"], "expected host:port"),
        (["--out", str(tmp_path / "ok"), "--studies", "0"], "--studies must be at least 1"),
        (["--out", str(tmp_path / "ok"), "--pace", "-1"], "--pace must be"),
        ([], "say where the studies go"),
    ]
    for args, message in cases:
        code, _, err = run(capsys, *args)
        assert code != 0 and len(err.strip().splitlines()) == 1, (args, err)
        assert err.startswith("scanside synth: ") and message in err, (args, err)
    assert not dicom_files(Path(app.settings.paths.incoming))  # nothing got in from the stranger

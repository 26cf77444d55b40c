"""Hostile files against the whole appliance (issue 9): decompression bombs on the watch folder and in the spool at
start-up, patient data on disk readable by nobody else, quarantine notes that quote nothing from the file."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from conftest import wait_for
from dicom_factory import cine_series, mr_dataset, write

from appliance.dev.served import ServedAppliance
from appliance.dev.synth.hostile import deflate_bomb
from appliance.serve.client import ApplianceClient

pytestmark = pytest.mark.slow


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024  # MB
    raise KeyError(key)


def _reset_peak(pid: int) -> None:
    with open(f"/proc/{pid}/clear_refs", "w") as fh:  # "5": reset the peak resident set size (Linux >= 4.0)
        fh.write("5")


def _scored(client) -> set[str]:
    return {r.series_instance_uid for r in client.list_all()}


def test_a_deflate_bomb_in_the_watch_folder_is_set_aside_in_bounded_memory(tmp_path, tiny_bundle):
    bomb = deflate_bomb(tmp_path / "bomb.dcm", 1024)  # 1 MB on disk, 1 GiB inflated
    with ServedAppliance(tmp_path / "a", engine={"bundle": str(tiny_bundle)},
                         ingest={"settle_seconds": 0.5, "poll_interval_s": 0.05}) as app:
        pid = app.proc.pid
        idle = _status(pid, "VmRSS")
        _reset_peak(pid)
        shutil.copyfile(bomb, app.incoming / "bomb.dcm")
        folder = app.data / "quarantine" / "too_large"
        wait_for(lambda: list(folder.glob("*.reason.json")), what="the bomb in quarantine/too_large")
        peak = _status(pid, "VmHWM")
        assert peak - idle <= 100, f"{peak - idle} MB above idle while the bomb was handled"
        assert not list((app.data / "spool").iterdir())  # never accepted
        # ...and the appliance goes on scoring.
        paths = cine_series(tmp_path / "series", slices=3, phases=4)
        for p in paths:
            shutil.copyfile(p, app.incoming / p.name)
        wait_for(lambda: len(_scored(app.client)) == 1, what="a series scored after the bomb")


def test_a_bomb_left_in_the_spool_by_a_crash_cannot_blow_up_recovery(tmp_path, tiny_bundle):
    app = ServedAppliance(tmp_path / "a", engine={"bundle": str(tiny_bundle)})
    spool = app.data / "spool"
    spool.mkdir(parents=True)
    deflate_bomb(spool / "0-00000001.dcm", 1024)
    with app:  # entering starts it
        folder = app.data / "quarantine" / "too_large"
        wait_for(lambda: list(folder.glob("*.reason.json")), what="the bomb moved from the spool to quarantine")
        idle = _status(app.proc.pid, "VmRSS")
        peak = _status(app.proc.pid, "VmHWM")  # start-up and recovery included
        assert peak - idle <= 100, f"start-up peaked {peak - idle} MB above idle"
        note = json.loads(next(folder.glob("*.reason.json")).read_text())
        assert "start-up" in note["detail"]


def test_patient_data_on_disk_is_private_whatever_the_umask(appliance, tmp_path):
    old = os.umask(0)  # the widest: what a container or a careless shell may start the service with
    try:
        app = appliance()
        incoming = Path(app.settings.paths.incoming)
        secret = "PATIENTID7781"
        bad = write(mr_dataset(16, 16, Modality="CT", PatientID=secret), tmp_path / "ct.dcm")
        os.chmod(bad, 0o644)  # as a scanner writes it: the move keeps this mode unless the appliance changes it
        shutil.copyfile(bad, incoming / "ct.dcm")
        paths = cine_series(tmp_path / "series", slices=3, phases=4)
        for p in paths:
            shutil.copyfile(p, incoming / p.name)
        with ApplianceClient(app.grpc_address) as client:
            wait_for(lambda: len(_scored(client)) == 1, what="the series scored")
        q = Path(app.settings.paths.quarantine)
        (note,) = wait_for(lambda: list((q / "not_mr").glob("*.reason.json")), what="the CT file set aside")
        (image,) = [p for p in (q / "not_mr").iterdir() if not p.name.endswith(".reason.json")]
    finally:
        os.umask(old)
    data = Path(app.settings.paths.data_dir)
    for folder in (data, data / "spool", q, q / "not_mr"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o750, folder
    for f in (data / "scanside.db", data / "scanside.db-wal", image, note):
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f
    assert secret not in note.read_text()

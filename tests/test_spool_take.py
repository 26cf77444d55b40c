"""Taking a file into the spool as a link and an unlink (ingest/quarantine.take_file), the watch folder's event
filter, and what a crash between the two steps leaves: real files, a real watchdog observer, a real SQLite store."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import time

import pytest
from dicom_factory import cine_series, mr_dataset, write
from prometheus_client import CollectorRegistry

from appliance.assembly import Assembler
from appliance.ingest import Ingestor, IngestThread, Quarantine
from appliance.ingest import quarantine as quarantine_module
from appliance.ingest import watcher as watcher_module
from appliance.ingest.quarantine import take_file
from appliance.metrics import Metrics
from appliance.store import Store


def test_a_taken_file_is_linked_into_the_spool_and_its_name_removed(tmp_path):
    src = write(mr_dataset(), tmp_path / "in" / "a.dcm")
    os.chmod(src, 0o644)
    data = src.read_bytes()
    (tmp_path / "spool").mkdir()
    dest = tmp_path / "spool" / "x.dcm"
    take_file(str(src), str(dest))
    assert not src.exists() and dest.read_bytes() == data
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640 and dest.stat().st_nlink == 1


def test_where_no_link_can_be_made_the_file_is_moved(tmp_path, monkeypatch):
    src = write(mr_dataset(), tmp_path / "in" / "a.dcm")
    (tmp_path / "spool").mkdir()
    dest = tmp_path / "spool" / "x.dcm"

    def no_links(a, b):
        raise OSError(errno.EPERM, "protected_hardlinks")

    monkeypatch.setattr(quarantine_module.os, "link", no_links)
    take_file(str(src), str(dest))
    assert not src.exists() and dest.exists()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o640


def test_a_file_its_writer_replaced_meanwhile_is_not_unlinked(tmp_path, monkeypatch):
    src = write(mr_dataset(), tmp_path / "in" / "a.dcm")
    newer = write(mr_dataset(), tmp_path / "newer.dcm")
    (tmp_path / "spool").mkdir()
    dest = tmp_path / "spool" / "x.dcm"
    real_link = os.link

    def link_then_replaced(a, b):
        real_link(a, b)
        os.replace(newer, src)  # the writer renames a new file over the name right after our link

    monkeypatch.setattr(quarantine_module.os, "link", link_then_replaced)
    with pytest.raises(FileNotFoundError):
        take_file(str(src), str(dest))
    assert src.exists() and not dest.exists()  # the new file stays for its own event; no copy of the old one


def _ingestor(tmp_path, done):
    return Ingestor(tmp_path / "spool", Quarantine(tmp_path / "quarantine"), Store(tmp_path / "db.sqlite"),
                    Assembler(5.0), Metrics(CollectorRegistry()), done.append)


def test_a_crash_between_link_and_unlink_scores_the_series_once(tmp_path):
    paths = cine_series(tmp_path / "in", slices=3, phases=2)
    first = _ingestor(tmp_path, [])
    for p in paths[:3]:
        first.submit(str(p))
    first.run_once()
    (tmp_path / "spool").mkdir(exist_ok=True)
    os.link(paths[3], tmp_path / "spool" / "zz-crashed.dcm")  # linked into the spool, not yet unlinked
    done = []
    again = _ingestor(tmp_path, done)
    assert len(again.recover_spool()) == 1
    again.rescan(tmp_path / "in")
    again.run_once()
    assert len(done) == 1 and done[0].info.received == 6
    assert again.metrics.registry.get_sample_value("scanside_files_ignored_total", {"reason": "duplicate"}) == 1
    assert not any(p.exists() for p in paths)


def test_the_watch_folder_delivers_renames_folders_and_in_place_writes_but_no_deletions(tmp_path, monkeypatch):
    seen: list[str] = []
    lock = threading.Lock()
    handler = watcher_module._Handler.on_any_event

    def recording(self, event):
        with lock:
            seen.append(event.event_type)
        handler(self, event)

    monkeypatch.setattr(watcher_module._Handler, "on_any_event", recording)
    done: list = []
    watch = tmp_path / "in"
    staged = cine_series(tmp_path / "staged", slices=3, phases=2)
    thread = IngestThread(_ingestor(tmp_path, done), watch, poll_interval_s=0.05)
    thread.start()
    try:
        (watch / "scanner1").mkdir(parents=True)
        time.sleep(0.3)  # the new folder's watch is in place
        for p in staged[:3]:
            os.replace(p, watch / "scanner1" / p.name)  # renamed in from outside the folder
        folder = tmp_path / "study-folder"
        folder.mkdir()
        for p in staged[3:5]:
            shutil.move(p, folder / p.name)
        os.replace(folder, watch / "study-folder")  # a whole folder moved in
        with open(watch / "scanner1" / "inplace.dcm", "wb") as fh:  # written where it lies
            fh.write(staged[5].read_bytes())
        deadline = time.monotonic() + 20
        while not done and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        thread.stop()
    assert len(done) == 1 and done[0].info.received == 6
    assert not [p for p in watch.rglob("*.dcm")]  # all taken into the spool
    assert "deleted" not in seen  # the names removed from the folder reach nobody

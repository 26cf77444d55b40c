"""The ingest core on real files, a real SQLite store and a real quarantine folder, driven step by step."""

from __future__ import annotations

import json
import shutil

from dicom_factory import cine_series, mr_dataset, write
from prometheus_client import CollectorRegistry

from appliance.assembly import Assembler
from appliance.handovers import SeriesState
from appliance.ingest import Ingestor, Quarantine
from appliance.metrics import Metrics
from appliance.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path, quiet=5.0, settle=2.0):
    clock = Clock()
    done = []
    metrics = Metrics(CollectorRegistry())
    store = Store(tmp_path / "db.sqlite")
    ing = Ingestor(tmp_path / "spool", Quarantine(tmp_path / "quarantine"), store, Assembler(quiet), metrics,
                   done.append, settle_seconds=settle, clock=clock)
    return ing, done, clock, metrics, store


def count(metrics, name, **labels):
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_series_complete_from_tags_moves_into_spool(tmp_path):
    ing, done, _, metrics, store = make(tmp_path)
    paths = cine_series(tmp_path / "in", slices=3, phases=4)
    for p in paths:
        ing.submit(str(p))
    assert ing.run_once() == 12
    (series,) = done
    assert series.info.received == 12 and series.info.completed_by == "tags"
    assert all(p.startswith(str(tmp_path / "spool")) for p in series.instance_paths)
    assert all(f.pixels.path in series.instance_paths for f in series.frames)
    assert not any(p.exists() for p in paths)  # taken out of the watch folder
    assert count(metrics, "scanside_files_ingested_total") == 12
    assert store.series.get(series.info.series_uid).state is SeriesState.RECEIVING


def test_growing_file_waits_and_truncated_file_is_quarantined_after_settling(tmp_path):
    ing, done, clock, metrics, _ = make(tmp_path, settle=2.0)
    src = write(mr_dataset(64, 64, ImagesInAcquisition=1), tmp_path / "src.dcm")
    data = src.read_bytes()
    growing = tmp_path / "in" / "growing.dcm"
    growing.parent.mkdir()
    growing.write_bytes(data[: len(data) // 2])
    ing.submit(str(growing))
    ing.run_once()
    assert done == [] and growing.exists()
    clock.now += 1.0
    with open(growing, "ab") as fh:  # the writer goes on: the file is taken once whole
        fh.write(data[len(data) // 2 :])
    ing.run_once()
    assert len(done) == 1 and not growing.exists()
    assert count(metrics, "scanside_files_quarantined_total", reason="truncated") == 0

    stuck = tmp_path / "in" / "stuck.dcm"
    stuck.write_bytes(data[:-10])
    ing.submit(str(stuck))
    ing.run_once()
    clock.now += 1.0
    ing.run_once()
    assert stuck.exists()  # not yet settled
    clock.now += 1.5
    ing.run_once()
    assert not stuck.exists()
    assert count(metrics, "scanside_files_quarantined_total", reason="truncated") == 1
    (note,) = (tmp_path / "quarantine" / "truncated").glob("*.reason.json")
    assert json.loads(note.read_text())["reason"] == "truncated"


def test_bad_files_are_set_aside_and_good_ones_still_flow(tmp_path):
    ing, done, _, metrics, _ = make(tmp_path)
    folder = tmp_path / "in"
    good = cine_series(folder / "good", slices=3, phases=2)
    (folder / "notes.txt").write_text("not an image" * 20)
    write(mr_dataset(Modality="CT"), folder / "ct.dcm")
    ds = mr_dataset()
    del ds.ImageOrientationPatient
    write(ds, folder / "nogeo.dcm")
    (folder / ".partial-being-written").write_bytes(b"x")  # a writer's temporary name: not ours to touch
    ing.rescan(folder)
    ing.run_once()
    assert len(done) == 1 and done[0].info.received == len(good)
    for reason in ("not_dicom", "not_mr", "missing_geometry"):
        assert count(metrics, "scanside_files_quarantined_total", reason=reason) == 1
        assert len(list((tmp_path / "quarantine" / reason).glob("*.reason.json"))) == 1
    assert (folder / ".partial-being-written").exists()


def test_duplicates_are_dropped_and_late_images_of_a_finished_series_set_aside(tmp_path):
    ing, done, _, metrics, store = make(tmp_path)
    paths = cine_series(tmp_path / "in", slices=3, phases=2, images_in_acquisition=False)
    copy = tmp_path / "in" / "copy.dcm"
    shutil.copy(paths[0], copy)
    resent = tmp_path / "resent.dcm"
    shutil.copy(paths[1], resent)
    for p in [*paths, copy]:
        ing.submit(str(p))
    ing.run_once()
    assert count(metrics, "scanside_files_ignored_total", reason="duplicate") == 1
    ing.clock.now += 10
    ing.run_once()
    (series,) = done
    store.series.set_state(series.info, SeriesState.SKIPPED)
    # After it closed: one of its own images sent again (dropped), and an image it never had (set aside, not lost).
    late = write(mr_dataset(series_uid=series.info.series_uid, study_uid=series.info.study_uid), tmp_path / "late.dcm")
    for p in (resent, late):
        ing.submit(str(p))
    ing.run_once()
    assert count(metrics, "scanside_files_ignored_total", reason="late_for_finished_series") == 1
    assert count(metrics, "scanside_files_quarantined_total", reason="late") == 1
    (note,) = (tmp_path / "quarantine" / "late").glob("*.reason.json")
    assert "already closed (skipped)" in note.read_text()
    assert not resent.exists() and not late.exists()
    assert len(done) == 1


def test_spool_recovery_reassembles_after_a_restart(tmp_path):
    ing, done, _, _, _ = make(tmp_path)
    paths = cine_series(tmp_path / "in", slices=3, phases=2)
    for p in paths[:4]:
        ing.submit(str(p))
    ing.run_once()
    assert done == []
    again, done2, _, _, _ = make(tmp_path)  # a new process over the same folders
    assert len(again.recover_spool()) == 1  # one series, 4 of its images
    for p in paths[4:]:
        again.submit(str(p))
    again.run_once()
    assert len(done2) == 1 and done2[0].info.received == 6


def test_a_resent_image_of_a_series_waiting_to_be_scored_is_dropped(tmp_path):
    ing, done, _, metrics, store = make(tmp_path)
    paths = cine_series(tmp_path / "in", slices=3, phases=2)
    copy = tmp_path / "resent.dcm"
    shutil.copy(paths[0], copy)
    for p in paths:
        ing.submit(str(p))
    ing.run_once()
    (series,) = done
    store.series.set_state(series.info, SeriesState.COMPLETE)  # closed, queued for scoring, not yet scored
    ing.submit(str(copy))
    ing.run_once()
    ing.clock.now += 60
    ing.run_once()
    assert len(done) == 1  # no second, partial series under the same UID
    assert count(metrics, "scanside_files_ignored_total", reason="late_for_finished_series") == 1
    assert store.series.get(series.info.series_uid).state is SeriesState.COMPLETE


def test_an_unexpected_reader_error_sets_the_file_aside(tmp_path, monkeypatch):
    ing, _done, _, metrics, _ = make(tmp_path)
    path = write(mr_dataset(), tmp_path / "in" / "x.dcm")
    import appliance.ingest.ingestor as mod

    def broken(*args, **kwargs):
        raise KeyError("a bug in the reader")

    monkeypatch.setattr(mod, "read_instance", broken)
    ing.submit(str(path))
    ing.run_once()
    assert count(metrics, "scanside_files_quarantined_total", reason="unreadable") == 1
    assert not path.exists()


def test_files_in_hidden_folders_are_left_to_their_writer(tmp_path):
    ing, _done, _, _, _ = make(tmp_path)
    hidden = write(mr_dataset(), tmp_path / "in" / ".staging" / "x.dcm")
    assert ing.rescan(tmp_path / "in") == 0
    ing.submit(str(hidden), root=str(tmp_path / "in"))
    assert ing.run_once() == 0 and hidden.exists()

"""The spool cleaner: a finished series' images deleted on its own thread after its outcome is stored, and what a
crash leaves of them deleted by the next start's spool recovery. Real files, a real SQLite store."""

from __future__ import annotations

import threading

from dicom_factory import cine_series
from prometheus_client import CollectorRegistry

from appliance import fileio
from appliance.assembly import Assembler
from appliance.handovers import SeriesState
from appliance.ingest import Ingestor, Quarantine
from appliance.metrics import Metrics
from appliance.pipeline import spool_cleaner as cleaner_module
from appliance.pipeline.spool_cleaner import SpoolCleaner
from appliance.store import Store


def remove_in_two_batches(paths: list[str]) -> SpoolCleaner:
    """A started cleaner given the first three images, then the rest, waited for and stopped."""
    cleaner = SpoolCleaner()
    cleaner.start()
    try:
        cleaner.remove(paths[:3])
        cleaner.remove(paths[3:])
        assert cleaner.wait_idle(10)
    finally:
        cleaner.stop()
    return cleaner


def test_queued_images_are_deleted_off_the_caller_thread(tmp_path, monkeypatch):
    paths = [str(p) for p in cine_series(tmp_path / "spool", slices=3, phases=2)]
    threads: list[str] = []
    real = fileio.remove_files

    def recording(batch):
        threads.append(threading.current_thread().name)
        real(batch)

    monkeypatch.setattr(cleaner_module, "remove_files", recording)
    cleaner = remove_in_two_batches(paths)
    assert cleaner.pending == 0 and threads == ["scanside-spool-clean"] * 2
    assert not (tmp_path / "spool").exists() or not any((tmp_path / "spool").iterdir())


def test_stop_deletes_what_is_queued_and_a_stopped_cleaner_deletes_at_once(tmp_path):
    paths = [str(p) for p in cine_series(tmp_path / "spool", slices=3, phases=2)]
    cleaner = SpoolCleaner()
    cleaner.remove(paths[:2])  # not started: deleted here and now
    assert not any((tmp_path / "spool" / p).exists() for p in paths[:2])
    cleaner.start()
    cleaner.remove(paths[2:])
    cleaner.stop(timeout=10)
    assert not any((tmp_path / "spool").iterdir())


def test_a_failing_delete_leaves_the_files_and_the_cleaner_running(tmp_path, monkeypatch):
    paths = [str(p) for p in cine_series(tmp_path / "spool", slices=3, phases=2)]
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise OSError(30, "Read-only file system")
        fileio.remove_files(batch)

    monkeypatch.setattr(cleaner_module, "remove_files", flaky)
    remove_in_two_batches(paths)
    left = sorted(p.name for p in (tmp_path / "spool").iterdir())
    assert left == sorted(p.rsplit("/", 1)[1] for p in paths[:3])  # left for the next start's recovery


def test_images_of_a_scored_series_left_by_a_crash_are_deleted_at_start(tmp_path):
    """What the cleaner had not deleted when the process died: the series is scored (its state final), so the
    spool recovery deletes its images instead of assembling them into a second series."""
    store = Store(tmp_path / "db.sqlite")
    done: list = []
    ing = Ingestor(tmp_path / "spool", Quarantine(tmp_path / "quarantine"), store, Assembler(5.0),
                   Metrics(CollectorRegistry()), done.append)
    for p in cine_series(tmp_path / "in", slices=3, phases=2):
        ing.submit(str(p))
    ing.run_once()
    (series,) = done
    store.series.set_state(series.info, SeriesState.COMPLETE)
    store.series.set_state(series.info, SeriesState.SCORED)
    assert len(list((tmp_path / "spool").iterdir())) == 6  # the cleaner never ran: killed
    again: list = []
    restarted = Ingestor(tmp_path / "spool", Quarantine(tmp_path / "quarantine"), store, Assembler(5.0),
                         Metrics(CollectorRegistry()), again.append)
    assert restarted.recover_spool() == set()
    assert not any((tmp_path / "spool").iterdir()) and again == []

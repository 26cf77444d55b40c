"""At start, finish what a previous run accepted: images in the spool, series complete but not scored."""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.assembly import Assembler
from appliance.handovers import CompleteSeries, SeriesFailure, SeriesInfo, SeriesState, Stage
from appliance.ingest import Ingestor
from appliance.pipeline.failures import FailureHandler
from appliance.store import Store

log = logging.getLogger(__name__)


def recover(store: Store, ingestor: Ingestor, assembler: Assembler, on_complete: Callable[[CompleteSeries], None],
            failures: FailureHandler) -> None:
    unfinished = {row.series_uid: row for row in
                  store.series.in_states((SeriesState.RECEIVING, SeriesState.COMPLETE))}
    found = ingestor.recover_spool()
    if found:
        log.info("recovered %d series from the spool", len(found))
    with ingestor.lock:
        pending = set(assembler.pending_uids())
        closed = [assembler.complete_now(uid, "recovered") for uid in pending
                  if uid in unfinished and unfinished[uid].state is SeriesState.COMPLETE]
    for series in closed:
        if series is not None:
            on_complete(series)
    for uid, row in unfinished.items():
        if uid in found:
            continue  # assembled again (and, if its count was reached, already queued)
        if row.state is SeriesState.RECEIVING:
            # Its first image was recorded but never reached the spool (a crash in between): the image is still in
            # the watch folder, and the rescan brings the series back.
            store.series.forget(uid)
        else:
            info = SeriesInfo(row.key, row.study_uid, row.series_uid, row.role, row.manufacturer, row.description,
                              row.received, row.expected, "recovered", row.last_file_at or 0,
                              accession_number=row.accession_number, station_name=row.station_name,
                              patient_id=row.patient_id, patient_name=row.patient_name)
            failures.fail(info, (), SeriesFailure(Stage.RECOVERY,
                                                  "its images were no longer in the spool after a restart"))

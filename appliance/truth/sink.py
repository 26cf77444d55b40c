"""The MLLP listener's sink: a final report read (labels per finding from its text) and handed to the store.

    sink = ReportSink(store.truth.receive)
    MllpListener(settings.hl7, sink)

The listener sends AA only after the sink returns, and the store commits the report and the truth it sets in one
transaction before `receive` returns: an acknowledged report is on disk. The text is read here, in the listener's
connection thread, and goes no further: only the labels (and which findings the text stated) reach the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from appliance.handovers import ReceivedReport, TruthStatus, TruthUpdate
from appliance.truth.extract import extract
from appliance.truth.oru import FinalReport, ResultStatus

log = logging.getLogger(__name__)

_STATUS = {ResultStatus.FINAL: TruthStatus.FINAL, ResultStatus.CORRECTED: TruthStatus.CORRECTED,
           ResultStatus.CANCELLED: TruthStatus.CANCELLED}


def received(report: FinalReport) -> ReceivedReport:
    """The report as the store takes it: labels read from the text (a cancellation has none)."""
    status = _STATUS[report.status]
    labels: dict[str, bool] = {}
    mentioned: tuple[str, ...] = ()
    if status is not TruthStatus.CANCELLED:
        read = extract(report.text)
        labels, mentioned = read.as_bools(), read.mentioned()
    return ReceivedReport(
        control_id=report.control_id, sending_application=report.sending_application, status=status,
        accession_number=report.accession_number, study_uid=report.study_instance_uid,
        observed_at=report.observed_at.timestamp() if report.observed_at is not None else None,
        labels=labels, mentioned=mentioned)


class ReportSink:
    def __init__(self, save: Callable[[ReceivedReport], TruthUpdate]) -> None:
        self.save = save

    def __call__(self, report: FinalReport) -> None:
        update = self.save(received(report))
        # control ids and counts only: the sender's message number, never an identifier of the patient or study
        log.info("HL7 message %s stored: %s%s, %d finding(s) changed", report.control_id, report.status.name.lower(),
                 " (a resend: stored before)" if update.duplicate else
                 ", matched" if update.matched else ", pending its study", update.changed)

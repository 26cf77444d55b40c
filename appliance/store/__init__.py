"""SQLite persistence, one module per concern: the file and its transactions (database), series states (series),
results (results), the sealed prediction ledger (ledger), the event log (events), the SR queue with its sources
and retention (exports), the ground truth from final reports and assessments (truth), the slices the model saw
for the display (thumbnails), and for storage commitment: the receiver's record of what it was sent (received),
the results it owes its senders (commitment_reports) and the PACS destination's requests awaiting their results
(commitment_requests).

    store = Store(path, export_destinations=("pacs",))
    store.series.seen(info); store.results.save(result); store.events.wait(after_id, 1.0)
    store.exports.due(time.time())

A result, its series' state, its ledger entry, its event and its SR queue items are one transaction (Results.save);
a failure, its state, its ledger entry and its event another (SeriesTable.set_state); a report and the truth it sets
a third (TruthStore.receive), and a result matches the reports that came before it in its own transaction.
"""

from __future__ import annotations

from pathlib import Path

from appliance.handovers import Event, EventKind, ExportItem, SeriesRow, StoredReport
from appliance.store.commitment_reports import CommitmentReports
from appliance.store.commitment_requests import CommitmentRequests
from appliance.store.database import Database, StoreError
from appliance.store.events import EventLog
from appliance.store.exports import ExportQueue
from appliance.store.ledger import Ledger
from appliance.store.received import ReceivedInstances
from appliance.store.results import Results
from appliance.store.schema import SCHEMA_VERSION
from appliance.store.series import SeriesTable
from appliance.store.thumbnails import Thumbnails
from appliance.store.truth import TruthStore

__all__ = ["SCHEMA_VERSION", "Event", "EventKind", "ExportItem", "SeriesRow", "Store", "StoreError", "StoredReport"]


class Store:
    """The appliance's database: one writer connection guarded by a lock, one reader connection per reading
    thread, and a view per concern over them."""

    def __init__(self, path: Path, export_destinations: tuple[str, ...] = (), mode: str = "assist") -> None:
        """`mode`: appliance.mode, sealed into every ledger entry this store writes."""
        self.db = Database(path)
        self.path = self.db.path
        self.mode = mode
        self.events = EventLog(self.db)
        self.series = SeriesTable(self.db, self.events, mode)
        self.results = Results(self.db, self.events, tuple(export_destinations), mode)
        self.exports = ExportQueue(self.db, self.events)
        self.ledger = Ledger(self.db)
        self.truth = TruthStore(self.db)
        self.thumbnails = Thumbnails(self.db)
        self.received = ReceivedInstances(self.db)
        self.commitment_reports = CommitmentReports(self.db)
        self.commitment_requests = CommitmentRequests(self.db)

    def secret(self, name: str, size: int = 32) -> bytes:
        return self.db.secret(name, size)

    def close(self) -> None:
        self.db.close()

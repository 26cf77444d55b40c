"""Ingest: files from the watch folder (or the DICOM receiver's spool writes) become accepted instances."""

from appliance.ingest.ingestor import Ingestor, is_candidate
from appliance.ingest.quarantine import Quarantine
from appliance.ingest.watcher import IngestThread

__all__ = ["IngestThread", "Ingestor", "Quarantine", "is_candidate"]

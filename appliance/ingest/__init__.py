"""Ingest: files from the watch folder (or the DICOM receiver's spool writes) become accepted instances."""

from .ingestor import Ingestor, is_candidate
from .quarantine import Quarantine
from .watcher import IngestThread

__all__ = ["Ingestor", "IngestThread", "Quarantine", "is_candidate"]

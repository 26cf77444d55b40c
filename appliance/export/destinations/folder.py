"""The "folder" destination: each SR written as <SOP Instance UID>.dcm, atomically (a reader sees the whole file or
none), durably (the database forgets a document once it is delivered everywhere) and 0640 (it carries patient
identity)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appliance.config import Settings
from appliance.export.destinations import SendOutcome, register
from appliance.fileio import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE, write_bytes_atomic
from appliance.handovers import StoredReport
from appliance.logsafe import describe


@register("folder", hint="export.folder")
def from_settings(settings: Settings) -> FolderDestination | None:
    folder = settings.export.folder
    return FolderDestination(folder) if folder is not None else None


class FolderDestination:
    """A Destination (appliance.export.destinations)."""

    kind = "folder"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._stopping = False

    def check(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"export.folder {self.folder} exists and is not a folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        except OSError as exc:
            raise ValueError(f"export.folder {self.folder} cannot be created: {exc.strerror}") from None

    def deliver(self, reports: Sequence[StoredReport]) -> list[SendOutcome]:
        return [SendOutcome(False, "appliance stopping", tried=False) if self._stopping else self._write(report)
                for report in reports]

    def abort(self) -> None:
        self._stopping = True

    def _write(self, report: StoredReport) -> SendOutcome:
        try:
            write_bytes_atomic(self.folder / f"{report.sop_instance_uid}.dcm", report.document,
                               mode=PRIVATE_FILE_MODE, durable=True)
        except (OSError, TypeError) as exc:
            return SendOutcome(False, f"could not write the SR file: {describe(exc)}")
        return SendOutcome(True)

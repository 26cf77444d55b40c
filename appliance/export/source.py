"""What an SR needs from its source images, captured while they still exist.

Scored images leave the spool right after scoring, yet the SR is built later (and rebuilt after a restart), and it
must carry the patient and study identity of the source study exactly, never invented. So when a series completes,
one instance's header is kept (without pixels, private elements or per-frame functional groups) together with the
SOP class and instance UID of every image in the series, which the SR lists as its evidence.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

# Bulky and irrelevant to the patient/study modules the SR copies.
_DROP = ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence", "IconImageSequence")


class SourceError(ValueError):
    """The source header cannot be captured or read back."""


@dataclass(frozen=True, slots=True)
class SourceStudy:
    """The header of one source instance (Part 10 bytes) and (SOP class, SOP instance) of every series image."""

    header: bytes
    instances: tuple[tuple[str, str], ...]
    used: tuple[str, ...] = ()  # SOP Instance UIDs of the images the model was given; empty: not known

    @property
    def referenced(self) -> tuple[tuple[str, str], ...]:
        """What the SR references: the images the model was given where known, else every image of the series."""
        if not self.used:
            return self.instances
        used = set(self.used)
        picked = tuple(ref for ref in self.instances if ref[1] in used)
        return picked or self.instances

    def dataset(self) -> Dataset:
        try:
            return pydicom.dcmread(io.BytesIO(self.header))
        except Exception as exc:
            raise SourceError(f"stored source header does not parse: {type(exc).__name__}") from None

    def instances_json(self) -> str:
        return json.dumps([list(ref) for ref in self.instances])

    @classmethod
    def from_row(cls, header: bytes, instances_json: str, used_json: str = "[]") -> SourceStudy:
        return cls(bytes(header), tuple((c, i) for c, i in json.loads(instances_json)),
                   tuple(str(u) for u in json.loads(used_json)))


def capture_source(path: str | Path, instances: tuple[tuple[str, str], ...]) -> SourceStudy:
    """Keep one instance's header for the SR. Raises SourceError if the file cannot be read as DICOM."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        raise SourceError(f"cannot read a source header: {type(exc).__name__}") from None
    ds.remove_private_tags()
    for keyword in _DROP:
        if keyword in ds:
            delattr(ds, keyword)
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if k not in ds]
    if missing:
        raise SourceError(f"source header lacks {', '.join(missing)}")
    # Without pixels the header is plain data whatever the source's transfer syntax was (JPEG, deflate).
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return SourceStudy(buf.getvalue(), tuple(instances))

"""Grouping instances into series, and deciding when a series is complete and what it is.

A series is complete as soon as its own tags say how many images it has (no waiting), otherwise after a quiet
period without a new file. A series whose count is known but not reached waits much longer (`incomplete_timeout_s`)
before it is closed as it is: a sender that stalls for a few seconds (a busy router, a loaded host) must not cut
a study in two, the second part then refused as late for a finished series. The role (cine short axis or not)
comes from geometry and timing tags, not from series descriptions, which every vendor words differently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from appliance.handovers import CompleteSeries, Frame, Instance, SeriesInfo, SeriesRole

ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
LEGACY_CONVERTED_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.4"
MULTI_FRAME_MR = frozenset({ENHANCED_MR, LEGACY_CONVERTED_ENHANCED_MR})


def series_key(series_uid: str) -> str:
    """An opaque, stable key for logs and file names: no UID (let alone patient identity) leaves in clear."""
    return "s" + hashlib.sha256(series_uid.encode()).hexdigest()[:12]


def expected_count(inst: Instance) -> int | None:
    """How many instances the series will have, if the tags say so."""
    if len(inst.frames) > 1 or inst.sop_class_uid in MULTI_FRAME_MR:
        return 1  # an enhanced multi-frame file carries the whole series
    n = inst.images_in_acquisition
    if n and n > 0:
        if inst.cardiac_number_of_images and n <= inst.cardiac_number_of_images:
            # Some vendors count one breath-hold (one slice) per acquisition: then the tag does not give the
            # series' size, and trusting it would close the series after its first slice.
            return None
        return n
    return None


def classify(frames: tuple[Frame, ...] | list[Frame], image_types: set[str] | None = None) -> SeriesRole:
    """Cine when several trigger times repeat at each position; short axis when there is a stack of parallel
    slices (a long-axis cine is one or a few positions in different planes)."""
    if image_types and "LOCALIZER" in image_types:
        return SeriesRole.OTHER
    triggers = {round(f.trigger_time, 1) for f in frames if f.trigger_time is not None}
    if len(triggers) < 2:
        return SeriesRole.OTHER
    normals = _normals(np.array([f.orientation for f in frames], dtype=np.float64).reshape(len(frames), 6))
    parallel = bool(np.all(np.abs(normals @ normals[0]) > 0.99))
    if not parallel:
        return SeriesRole.OTHER
    positions = np.array([f.position for f in frames]) @ normals[0]
    n_positions = len(np.unique(np.round(positions, 0)))
    per_position = len(frames) / max(n_positions, 1)
    if per_position < 2:
        return SeriesRole.OTHER
    return SeriesRole.CINE_SAX if n_positions >= 3 else SeriesRole.CINE_LAX


def _normals(orientations: np.ndarray) -> np.ndarray:
    """Unit slice normals of (n, 6) orientations, all at once (one np.cross per frame cost ~10 us each, ~3 ms a
    300-image series on the ingest thread); a degenerate orientation keeps its zero normal."""
    n = np.cross(orientations[:, :3], orientations[:, 3:])
    norm = np.sqrt(np.einsum("ij,ij->i", n, n))[:, None]
    return np.divide(n, norm, out=n.copy(), where=norm > 0)


@dataclass
class _Pending:
    study_uid: str
    series_uid: str
    key: str
    manufacturer: str
    description: str
    expected: int | None
    first_at: float
    last_at: float
    frames: list[Frame] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    sops: set[str] = field(default_factory=set)
    refs: list[tuple[str, str]] = field(default_factory=list)
    image_types: set[str] = field(default_factory=set)
    accession_number: str = ""
    station_name: str = ""
    patient_id: str = field(default="", repr=False)  # for the display only: never logged
    patient_name: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class AddOutcome:
    new_series: bool
    duplicate: bool
    complete: CompleteSeries | None


class Assembler:
    """In-memory series being received. Not thread-safe: owned by the ingest thread."""

    def __init__(self, quiet_period_s: float, incomplete_timeout_s: float = 300.0) -> None:
        self.quiet_period_s = quiet_period_s
        self.incomplete_timeout_s = max(incomplete_timeout_s, quiet_period_s)
        self._series: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._series)

    def add(self, inst: Instance, path: str, now: float) -> AddOutcome:
        pending = self._series.get(inst.series_uid)
        new = pending is None
        if pending is None:
            pending = _Pending(inst.study_uid, inst.series_uid, series_key(inst.series_uid), inst.manufacturer,
                               inst.series_description or inst.protocol_name, expected_count(inst), now, now,
                               accession_number=inst.accession_number, station_name=inst.station_name,
                               patient_id=inst.patient_id, patient_name=inst.patient_name)
            self._series[inst.series_uid] = pending
        elif inst.sop_instance_uid in pending.sops:
            return AddOutcome(False, True, None)
        pending.sops.add(inst.sop_instance_uid)
        pending.refs.append((inst.sop_class_uid, inst.sop_instance_uid))
        pending.frames.extend(inst.frames)
        pending.paths.append(path)
        pending.image_types.update(inst.image_type)
        pending.last_at = now
        if pending.expected is None:
            pending.expected = expected_count(inst)
        if pending.expected is not None and len(pending.paths) >= pending.expected:
            return AddOutcome(new, False, self._complete(inst.series_uid, "tags"))
        return AddOutcome(new, False, None)

    def due(self, now: float) -> list[CompleteSeries]:
        """Series quiet long enough: the quiet period for those whose tags gave no count ("quiet"), the incomplete
        timeout for those still short of the count they gave ("incomplete")."""
        out = []
        for uid, p in list(self._series.items()):
            if p.expected is None and now - p.last_at >= self.quiet_period_s:
                out.append(self._complete(uid, "quiet"))
            elif p.expected is not None and now - p.last_at >= self.incomplete_timeout_s:
                out.append(self._complete(uid, "incomplete"))
        return out

    def complete_now(self, series_uid: str, reason: str) -> CompleteSeries | None:
        """Close a series without waiting (e.g. one already complete before a restart)."""
        return self._complete(series_uid, reason) if series_uid in self._series else None

    def has_series(self, series_uid: str) -> bool:
        return series_uid in self._series

    def has_instance(self, series_uid: str, sop_instance_uid: str) -> bool:
        p = self._series.get(series_uid)
        return p is not None and sop_instance_uid in p.sops

    def info(self, series_uid: str) -> SeriesInfo | None:
        p = self._series.get(series_uid)
        return None if p is None else self._info(p, SeriesRole.OTHER, "")

    def pending_uids(self) -> list[str]:
        return list(self._series)

    def discard(self, series_uid: str) -> list[str]:
        """Forget a series (e.g. one whose files must be set aside); returns its paths."""
        p = self._series.pop(series_uid, None)
        return [] if p is None else p.paths

    def _info(self, p: _Pending, role: SeriesRole, completed_by: str) -> SeriesInfo:
        return SeriesInfo(key=p.key, study_uid=p.study_uid, series_uid=p.series_uid, role=role,
                          manufacturer=p.manufacturer, description=p.description, received=len(p.paths),
                          expected=p.expected, completed_by=completed_by, last_file_at=p.last_at,
                          accession_number=p.accession_number, station_name=p.station_name,
                          patient_id=p.patient_id, patient_name=p.patient_name)

    def _complete(self, series_uid: str, completed_by: str) -> CompleteSeries:
        p = self._series.pop(series_uid)
        role = classify(p.frames, p.image_types)
        return CompleteSeries(info=self._info(p, role, completed_by), frames=tuple(p.frames),
                              instance_paths=tuple(p.paths), instances=tuple(p.refs))

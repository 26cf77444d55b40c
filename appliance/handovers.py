"""Typed hand-overs between the pipeline stages.

Each arrow of the data flow (ingest -> assembly -> preprocess -> inference -> scoring -> store) passes one of these
small immutable records, so a stage can be read, tested and replaced alone. Nothing here does work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class SeriesState(str, enum.Enum):
    """Where a series is in its life. Stored as the string value in SQLite."""

    RECEIVING = "receiving"
    COMPLETE = "complete"
    SCORED = "scored"
    SKIPPED = "skipped"  # complete, but not a role the bundle scores (e.g. a localizer)
    FAILED = "failed"
    QUARANTINED = "quarantined"

    @property
    def is_final(self) -> bool:
        return self in (SeriesState.SCORED, SeriesState.SKIPPED, SeriesState.FAILED, SeriesState.QUARANTINED)


class ExportState(str, enum.Enum):
    """An SR on its way to one destination (PACS or folder)."""

    PENDING = "pending"  # waiting for its next try
    DELIVERED = "delivered"
    FAILED = "failed"  # the last allowed try failed, or the SR could not be built; `scanside exports retry` re-queues


class SeriesRole(str, enum.Enum):
    CINE_SAX = "cine_sax"
    CINE_LAX = "cine_lax"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PixelRef:
    """How to fetch one frame's pixels later without parsing the file again.

    For uncompressed little-endian data the frame is a plain byte range of the file; anything else (encapsulated or
    big-endian) is decoded by pydicom at preprocessing time, which is rare and allowed to be slower.
    """

    path: str
    offset: int  # byte offset of the first pixel of frame 0 (uncompressed only; -1 otherwise)
    rows: int
    columns: int
    dtype: str  # numpy dtype string of the stored values, e.g. "<u2", "<i2"
    frame_index: int = 0
    number_of_frames: int = 1
    decode_with_pydicom: bool = False
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0

    @property
    def frame_bytes(self) -> int:
        return self.rows * self.columns * np.dtype(self.dtype).itemsize


@dataclass(frozen=True, slots=True)
class Frame:
    """One 2D image of a series with the geometry preprocessing needs (patient coordinates, LPS, millimetres)."""

    position: tuple[float, float, float]  # ImagePositionPatient of the first transmitted pixel
    orientation: tuple[float, float, float, float, float, float]  # ImageOrientationPatient: row dir, column dir
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    trigger_time: float | None  # ms after the R wave; None for non-gated images
    pixels: PixelRef


@dataclass(frozen=True, slots=True)
class Instance:
    """One accepted DICOM file, parsed once on arrival. Carries no patient identity: see StudyContext."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    study_uid: str
    modality: str
    transfer_syntax_uid: str
    frames: tuple[Frame, ...]
    instance_number: int | None = None
    manufacturer: str = ""
    series_description: str = ""
    protocol_name: str = ""
    image_type: tuple[str, ...] = ()
    slice_thickness: float | None = None
    cardiac_number_of_images: int | None = None
    images_in_acquisition: int | None = None
    number_of_temporal_positions: int | None = None
    series_number: int | None = None
    size_bytes: int = 0


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """Identity and provenance of a series, without its frames. Small enough to pass around and log (by key)."""

    key: str  # short opaque key safe for logs: derived from the series UID by a one-way hash
    study_uid: str
    series_uid: str
    role: SeriesRole
    manufacturer: str
    description: str
    received: int
    expected: int | None
    completed_by: str  # "tags" | "quiet" | "recovered"
    last_file_at: float  # time.time() when the last file of the series was seen


@dataclass(frozen=True, slots=True)
class CompleteSeries:
    """Assembly -> preprocess: a series whose instances have all arrived (or gone quiet)."""

    info: SeriesInfo
    frames: tuple[Frame, ...]
    instance_paths: tuple[str, ...]
    instances: tuple[tuple[str, str], ...] = ()  # (SOP class UID, SOP instance UID), in arrival order


@dataclass(frozen=True, slots=True)
class PreparedSeries:
    """Preprocess -> inference: the bundle's input tensor for one series, (T, C, H, W) float32."""

    info: SeriesInfo
    tensor: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FindingScore:
    finding_id: str
    name: str
    score: float  # mean cosine similarity over the finding's prompts
    threshold: float
    probability: float  # calibrated, from the label bank
    positive: bool
    rare: bool
    review_reasons: tuple[str, ...] = ()

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons)


@dataclass(frozen=True, slots=True)
class Scores:
    """Scoring -> store: everything the zero-shot head says about one embedding."""

    findings: tuple[FindingScore, ...]
    ood_distance: float | None
    review_reasons: tuple[str, ...]  # study-level, e.g. "out_of_distribution", plus any finding-level reason

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons)


@dataclass(frozen=True, slots=True)
class StudyResult:
    """What is stored and served for one scored series."""

    info: SeriesInfo
    scores: Scores
    bundle_name: str
    bundle_version: str
    backend: str
    precision: str
    timings_ms: dict[str, float]
    scored_at: float  # time.time()

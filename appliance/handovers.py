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


class EventKind(str, enum.Enum):
    """What an entry of the event log announces; stored as the string value."""

    SCORED = "scored"  # a result was stored
    FAILED = "failed"  # a series failed (the reason is on the series)
    SR = "sr"  # an SR was delivered, or failed for good, at one destination


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
    decoder: str = ""  # the pydicom pixel plugin to decode with (compressed only); "": pydicom's own choice

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
    # Exam identity, to match the final report to this study (appliance/store/truth.py). The accession number is a
    # patient identifier in all but name: kept out of repr(), stored, never logged.
    accession_number: str = field(default="", repr=False)  # (0008,0050)
    station_name: str = ""  # (0008,1010): the site's name for the scanner (a bounded evidence label)
    # For the technologist's display (appliance/display): served only to a named client over TLS, never logged.
    patient_id: str = field(default="", repr=False)  # (0010,0020)
    patient_name: str = field(default="", repr=False)  # (0010,0010), as stored: family^given^middle^prefix^suffix


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
    accession_number: str = field(default="", repr=False)  # (0008,0050), to match reports; never logged
    station_name: str = ""  # (0008,1010), sealed in the ledger for the evidence monitor's station slices
    patient_id: str = field(default="", repr=False)  # (0010,0020), for the display only; never logged or sealed
    patient_name: str = field(default="", repr=False)  # (0010,0010), likewise


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
    instance_paths: tuple[str, ...] = ()  # its images in the spool: removed once scored, set aside if it fails
    quality_reasons: tuple[str, ...] = ()  # the input quality gate's: non-empty means not assessable
    input_sha256: str = ""  # SHA-256 of the tensor's float32 bytes (the preparer's), sealed in the ledger


@dataclass(frozen=True, slots=True)
class Thumbnail:
    """Preparer -> store -> the display: one slice of the model tensor as the model saw it (its first phase), an
    8-bit grayscale PNG. `position` is the tensor's channel: 0 base, 1 mid, 2 apex."""

    position: int
    label: str
    width: int
    height: int
    png: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class EmbeddedSeries:
    """Inference -> scoring: the engine's embedding of one series, (D,) float32, not yet normalised."""

    info: SeriesInfo
    embedding: np.ndarray
    timings_ms: dict[str, float]
    instance_paths: tuple[str, ...] = ()
    quality_reasons: tuple[str, ...] = ()  # from PreparedSeries: non-empty means not assessable
    input_sha256: str = ""  # from PreparedSeries
    # What computed the embedding, where the backend says per batch (appliance.inference.backend.EngineTag: a Triton
    # server's model and version, or local ONNX Runtime standing in for it); "" = the backend the scorer was built with.
    engine: str = ""
    precision: str = ""


class Stage(str, enum.Enum):
    """Where a series failed; the label of scanside_series_failed_total."""

    PREPROCESS = "preprocess"
    INFERENCE = "inference"
    SCORING = "scoring"
    STORE = "store"
    RECOVERY = "recovery"  # its images were gone from the spool after a restart


@dataclass(frozen=True, slots=True)
class SeriesFailure:
    """Any stage -> the failure handler: why one series cannot be scored. `detail` may quote a library's message
    (values, paths), so it goes to the series' reason.txt and the database, never to a log line."""

    stage: Stage
    detail: str

    def __str__(self) -> str:
        return f"{self.stage.value}: {self.detail}"


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
    # False when the series is not a usable cine short-axis stack (the quality gate says why, in quality_reasons):
    # then no finding may be positive for it.
    assessable: bool = True
    quality_reasons: tuple[str, ...] = ()

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
    bank_version: str = ""  # the label-bank version that scored it ("" for results stored before versions existed)
    input_sha256: str = ""  # of the model input tensor ("" for results stored before the ledger existed)


# --- rows read back from the store ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """A series as the store holds it: its state and what was known of it when the state last changed."""

    series_uid: str
    study_uid: str
    key: str
    role: SeriesRole
    state: SeriesState
    received: int
    expected: int | None
    manufacturer: str
    description: str
    completed_by: str | None
    detail: str | None
    first_seen: float
    last_file_at: float | None
    updated_at: float
    accession_number: str = field(default="", repr=False)
    station_name: str = ""
    patient_id: str = field(default="", repr=False)
    patient_name: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the event log; ids only ever increase, so a reader resumes after the last id it saw."""

    id: int
    created_at: float
    kind: EventKind
    series_uid: str
    study_uid: str


@dataclass(frozen=True, slots=True)
class ExportItem:
    """Store -> export: one SR on its way to one destination."""

    id: int
    series_uid: str
    study_uid: str
    key: str  # the series' log-safe key
    destination: str  # a destination kind registered in appliance.export.destinations, e.g. "pacs", "folder"
    state: ExportState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A built SR, kept so that every try and every destination sends the same SOP instance."""

    sop_instance_uid: str
    document: bytes


# --- ground truth (appliance/truth -> appliance/store/truth.py) -----------------------------------------------------


class TruthStatus(str, enum.Enum):
    """What a truth record says: a final report (F), a corrected one (C, replaces the earlier truth), a cancelled
    one (X, withdraws it), or a radiologist's assessment of a result (A, the gRPC AssessResult call)."""

    FINAL = "F"
    CORRECTED = "C"
    CANCELLED = "X"
    ASSESSMENT = "A"


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """The truth room -> the store: one final report, read. Its text stays behind (patient data): only the labels
    read from it travel. Identifiers are out of repr(), so a record that reaches a log line carries none."""

    control_id: str  # MSH-10, with sending_application what makes a resent message recognisable
    sending_application: str
    status: TruthStatus  # F, C or X
    accession_number: str = field(repr=False)  # "" when the report names only the study
    study_uid: str | None = field(repr=False)  # None when the report names only the accession number
    observed_at: float | None  # OBR-7 (Unix seconds), when the sender gave it
    labels: dict[str, bool]  # finding id -> present (silence read as absent); empty for a cancellation
    mentioned: tuple[str, ...] = ()  # the findings the text states either way


@dataclass(frozen=True, slots=True)
class TruthUpdate:
    """What storing a truth record did (the store's answer; counts and states only, no identifier)."""

    record_id: int
    duplicate: bool  # the same control id from the same sender was stored before: nothing changed
    matched: bool  # its study has a scored result now
    changed: int  # findings whose current truth it set, replaced or withdrew


# --- storage commitment (appliance/commitment.py; appliance/store/received.py, commitment_*.py) ---------------------


@dataclass(frozen=True, slots=True)
class SopReference:
    """One instance named in a Storage Commitment request or result. UIDs only (never logged)."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class CommitmentFailure:
    reference: SopReference
    reason: int  # PS3.3 C.14.1.1 Failure Reason, e.g. 0x0112 no such object instance


@dataclass(frozen=True, slots=True)
class CommitmentRequest:
    """An N-ACTION Request Storage Commitment (Action Type 1), read or to be sent."""

    transaction_uid: str
    references: tuple[SopReference, ...]


@dataclass(frozen=True, slots=True)
class CommitmentResult:
    """An N-EVENT-REPORT Storage Commitment Result: every reference of its request, committed or failed."""

    transaction_uid: str
    committed: tuple[SopReference, ...]
    failed: tuple[CommitmentFailure, ...] = ()

    @property
    def event_type(self) -> int:
        """1: storage commitment request successful; 2: complete, failures exist (PS3.4 J.3.3)."""
        return 2 if self.failed else 1


@dataclass(frozen=True, slots=True)
class OwedCommitmentReport:
    """Store -> the receiver's commitment SCP: a Storage Commitment result not yet delivered to its requester."""

    id: int
    calling_ae: str  # the requester's AE title: where the report goes
    result: CommitmentResult
    attempts: int
    created_at: float


@dataclass(frozen=True, slots=True)
class PendingCommitment:
    """Store -> the PACS destination: where its request for one SR's storage commitment stands."""

    transaction_uid: str
    state: str  # waiting | committed | failed
    failure_reason: int | None  # the PACS' Failure Reason when failed; None when it did not name the SR
    deadline: float  # when a report that has not come ends the try as failed
    association: str | None  # same | new: where the report came, once it did

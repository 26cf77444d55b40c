from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FindingResult(_message.Message):
    __slots__ = ("finding_id", "name", "score", "threshold", "probability", "positive", "rare", "review_reasons")
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_FIELD_NUMBER: _ClassVar[int]
    RARE_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REASONS_FIELD_NUMBER: _ClassVar[int]
    finding_id: str
    name: str
    score: float
    threshold: float
    probability: float
    positive: bool
    rare: bool
    review_reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, finding_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., probability: _Optional[float] = ..., positive: _Optional[bool] = ..., rare: _Optional[bool] = ..., review_reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("preprocess_ms", "inference_ms", "scoring_ms", "batch_size", "scan_to_score_ms")
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    SCORING_MS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCAN_TO_SCORE_MS_FIELD_NUMBER: _ClassVar[int]
    preprocess_ms: float
    inference_ms: float
    scoring_ms: float
    batch_size: int
    scan_to_score_ms: float
    def __init__(self, preprocess_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., scoring_ms: _Optional[float] = ..., batch_size: _Optional[int] = ..., scan_to_score_ms: _Optional[float] = ...) -> None: ...

class SeriesResult(_message.Message):
    __slots__ = ("study_instance_uid", "series_instance_uid", "series_key", "series_description", "manufacturer", "findings", "needs_review", "review_reasons", "ood_distance", "bundle_name", "bundle_version", "backend", "precision", "scored_at_unix", "timings", "images", "sr_deliveries", "not_assessable", "quality_reasons", "bank_version")
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_KEY_FIELD_NUMBER: _ClassVar[int]
    SERIES_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MANUFACTURER_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_REVIEW_FIELD_NUMBER: _ClassVar[int]
    REVIEW_REASONS_FIELD_NUMBER: _ClassVar[int]
    OOD_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SCORED_AT_UNIX_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SR_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NOT_ASSESSABLE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_REASONS_FIELD_NUMBER: _ClassVar[int]
    BANK_VERSION_FIELD_NUMBER: _ClassVar[int]
    study_instance_uid: str
    series_instance_uid: str
    series_key: str
    series_description: str
    manufacturer: str
    findings: _containers.RepeatedCompositeFieldContainer[FindingResult]
    needs_review: bool
    review_reasons: _containers.RepeatedScalarFieldContainer[str]
    ood_distance: float
    bundle_name: str
    bundle_version: str
    backend: str
    precision: str
    scored_at_unix: float
    timings: StageTimings
    images: int
    sr_deliveries: _containers.RepeatedCompositeFieldContainer[SrDelivery]
    not_assessable: bool
    quality_reasons: _containers.RepeatedScalarFieldContainer[str]
    bank_version: str
    def __init__(self, study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., series_key: _Optional[str] = ..., series_description: _Optional[str] = ..., manufacturer: _Optional[str] = ..., findings: _Optional[_Iterable[_Union[FindingResult, _Mapping]]] = ..., needs_review: _Optional[bool] = ..., review_reasons: _Optional[_Iterable[str]] = ..., ood_distance: _Optional[float] = ..., bundle_name: _Optional[str] = ..., bundle_version: _Optional[str] = ..., backend: _Optional[str] = ..., precision: _Optional[str] = ..., scored_at_unix: _Optional[float] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., images: _Optional[int] = ..., sr_deliveries: _Optional[_Iterable[_Union[SrDelivery, _Mapping]]] = ..., not_assessable: _Optional[bool] = ..., quality_reasons: _Optional[_Iterable[str]] = ..., bank_version: _Optional[str] = ...) -> None: ...

class SrDelivery(_message.Message):
    __slots__ = ("destination", "state", "tries", "last_error", "sr_instance_uid", "updated_unix")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    SR_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_FIELD_NUMBER: _ClassVar[int]
    destination: str
    state: str
    tries: int
    last_error: str
    sr_instance_uid: str
    updated_unix: float
    def __init__(self, destination: _Optional[str] = ..., state: _Optional[str] = ..., tries: _Optional[int] = ..., last_error: _Optional[str] = ..., sr_instance_uid: _Optional[str] = ..., updated_unix: _Optional[float] = ...) -> None: ...

class GetStudyResultRequest(_message.Message):
    __slots__ = ("study_instance_uid",)
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    study_instance_uid: str
    def __init__(self, study_instance_uid: _Optional[str] = ...) -> None: ...

class GetStudyResultResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SeriesResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SeriesResult, _Mapping]]] = ...) -> None: ...

class ListResultsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "since_unix")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    since_unix: float
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., since_unix: _Optional[float] = ...) -> None: ...

class ListResultsResponse(_message.Message):
    __slots__ = ("results", "next_page_token")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SeriesResult]
    next_page_token: str
    def __init__(self, results: _Optional[_Iterable[_Union[SeriesResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamResultsRequest(_message.Message):
    __slots__ = ("after_event_id", "include_sr_updates")
    AFTER_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SR_UPDATES_FIELD_NUMBER: _ClassVar[int]
    after_event_id: int
    include_sr_updates: bool
    def __init__(self, after_event_id: _Optional[int] = ..., include_sr_updates: _Optional[bool] = ...) -> None: ...

class ResultEvent(_message.Message):
    __slots__ = ("event_id", "kind", "result", "status")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ResultEvent.Kind]
        SCORED: _ClassVar[ResultEvent.Kind]
        FAILED: _ClassVar[ResultEvent.Kind]
        SR_UPDATED: _ClassVar[ResultEvent.Kind]
    KIND_UNSPECIFIED: ResultEvent.Kind
    SCORED: ResultEvent.Kind
    FAILED: ResultEvent.Kind
    SR_UPDATED: ResultEvent.Kind
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    kind: ResultEvent.Kind
    result: SeriesResult
    status: SeriesStatus
    def __init__(self, event_id: _Optional[int] = ..., kind: _Optional[_Union[ResultEvent.Kind, str]] = ..., result: _Optional[_Union[SeriesResult, _Mapping]] = ..., status: _Optional[_Union[SeriesStatus, _Mapping]] = ...) -> None: ...

class GetSeriesStatusRequest(_message.Message):
    __slots__ = ("series_instance_uid",)
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    series_instance_uid: str
    def __init__(self, series_instance_uid: _Optional[str] = ...) -> None: ...

class SeriesStatus(_message.Message):
    __slots__ = ("study_instance_uid", "series_instance_uid", "series_key", "state", "images_received", "images_expected", "role", "detail")
    STUDY_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    SERIES_KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    IMAGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    IMAGES_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    study_instance_uid: str
    series_instance_uid: str
    series_key: str
    state: str
    images_received: int
    images_expected: int
    role: str
    detail: str
    def __init__(self, study_instance_uid: _Optional[str] = ..., series_instance_uid: _Optional[str] = ..., series_key: _Optional[str] = ..., state: _Optional[str] = ..., images_received: _Optional[int] = ..., images_expected: _Optional[int] = ..., role: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Finding(_message.Message):
    __slots__ = ("finding_id", "name", "prompts", "threshold", "rare")
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RARE_FIELD_NUMBER: _ClassVar[int]
    finding_id: str
    name: str
    prompts: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    rare: bool
    def __init__(self, finding_id: _Optional[str] = ..., name: _Optional[str] = ..., prompts: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ..., rare: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("bundle_name", "bundle_version", "description", "backend", "backend_version", "precision", "research_only", "input_shape", "embedding_dim", "findings", "appliance_version", "backend_note", "bank_version", "mode")
    BUNDLE_NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    RESEARCH_ONLY_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    APPLIANCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_NOTE_FIELD_NUMBER: _ClassVar[int]
    BANK_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    bundle_name: str
    bundle_version: str
    description: str
    backend: str
    backend_version: str
    precision: str
    research_only: bool
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    embedding_dim: int
    findings: _containers.RepeatedCompositeFieldContainer[Finding]
    appliance_version: str
    backend_note: str
    bank_version: str
    mode: str
    def __init__(self, bundle_name: _Optional[str] = ..., bundle_version: _Optional[str] = ..., description: _Optional[str] = ..., backend: _Optional[str] = ..., backend_version: _Optional[str] = ..., precision: _Optional[str] = ..., research_only: _Optional[bool] = ..., input_shape: _Optional[_Iterable[int]] = ..., embedding_dim: _Optional[int] = ..., findings: _Optional[_Iterable[_Union[Finding, _Mapping]]] = ..., appliance_version: _Optional[str] = ..., backend_note: _Optional[str] = ..., bank_version: _Optional[str] = ..., mode: _Optional[str] = ...) -> None: ...

class FindingAssessment(_message.Message):
    __slots__ = ("finding_id", "verdict", "corrected_value")
    class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        VERDICT_UNSPECIFIED: _ClassVar[FindingAssessment.Verdict]
        ACCEPT: _ClassVar[FindingAssessment.Verdict]
        REJECT: _ClassVar[FindingAssessment.Verdict]
        CORRECT: _ClassVar[FindingAssessment.Verdict]
    VERDICT_UNSPECIFIED: FindingAssessment.Verdict
    ACCEPT: FindingAssessment.Verdict
    REJECT: FindingAssessment.Verdict
    CORRECT: FindingAssessment.Verdict
    FINDING_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CORRECTED_VALUE_FIELD_NUMBER: _ClassVar[int]
    finding_id: str
    verdict: FindingAssessment.Verdict
    corrected_value: bool
    def __init__(self, finding_id: _Optional[str] = ..., verdict: _Optional[_Union[FindingAssessment.Verdict, str]] = ..., corrected_value: _Optional[bool] = ...) -> None: ...

class AssessResultRequest(_message.Message):
    __slots__ = ("series_instance_uid", "findings", "assessor", "comment")
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_FIELD_NUMBER: _ClassVar[int]
    ASSESSOR_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    series_instance_uid: str
    findings: _containers.RepeatedCompositeFieldContainer[FindingAssessment]
    assessor: str
    comment: str
    def __init__(self, series_instance_uid: _Optional[str] = ..., findings: _Optional[_Iterable[_Union[FindingAssessment, _Mapping]]] = ..., assessor: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class AssessResultResponse(_message.Message):
    __slots__ = ("assessment_id", "findings_changed")
    ASSESSMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FINDINGS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    assessment_id: int
    findings_changed: int
    def __init__(self, assessment_id: _Optional[int] = ..., findings_changed: _Optional[int] = ...) -> None: ...

class GetSeriesPreviewRequest(_message.Message):
    __slots__ = ("series_instance_uid",)
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    series_instance_uid: str
    def __init__(self, series_instance_uid: _Optional[str] = ...) -> None: ...

class Thumbnail(_message.Message):
    __slots__ = ("position", "label", "width", "height", "png")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    position: int
    label: str
    width: int
    height: int
    png: bytes
    def __init__(self, position: _Optional[int] = ..., label: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., png: _Optional[bytes] = ...) -> None: ...

class ExamIdentity(_message.Message):
    __slots__ = ("accession_number", "patient_id", "patient_name")
    ACCESSION_NUMBER_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    accession_number: str
    patient_id: str
    patient_name: str
    def __init__(self, accession_number: _Optional[str] = ..., patient_id: _Optional[str] = ..., patient_name: _Optional[str] = ...) -> None: ...

class SeriesPreview(_message.Message):
    __slots__ = ("series_instance_uid", "thumbnails", "station_name", "identity", "identity_withheld")
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    THUMBNAILS_FIELD_NUMBER: _ClassVar[int]
    STATION_NAME_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    series_instance_uid: str
    thumbnails: _containers.RepeatedCompositeFieldContainer[Thumbnail]
    station_name: str
    identity: ExamIdentity
    identity_withheld: str
    def __init__(self, series_instance_uid: _Optional[str] = ..., thumbnails: _Optional[_Iterable[_Union[Thumbnail, _Mapping]]] = ..., station_name: _Optional[str] = ..., identity: _Optional[_Union[ExamIdentity, _Mapping]] = ..., identity_withheld: _Optional[str] = ...) -> None: ...

"""The settings object: one frozen dataclass per section, every default documented beside its field."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = PROJECT_ROOT / "engines" / "reference-v1"
ENV_PREFIX = "SCANSIDE_"


class ConfigError(ValueError):
    """Settings are missing, mistyped or out of range. The message names each of them; `problems` lists them one
    by one (one entry when the error was raised with a single message)."""

    def __init__(self, message: str = "", problems: Sequence[str] = ()) -> None:
        self.problems = tuple(problems) or (message,)
        if not message:
            message = (self.problems[0] if len(self.problems) == 1 else
                       f"{len(self.problems)} settings to fix:\n" + "\n".join(f"  - {p}" for p in self.problems))
        super().__init__(message)


@dataclass(frozen=True)
class PathsConfig:
    data_dir: Path = Path("scanside-data")  # holds scanside.db, spool/ (accepted files) and quarantine/
    watch_dir: Path | None = None  # folder the scanner writes into; default <data_dir>/incoming

    @property
    def incoming(self) -> Path:
        return self.watch_dir if self.watch_dir is not None else self.data_dir / "incoming"

    @property
    def spool(self) -> Path:
        return self.data_dir / "spool"

    @property
    def quarantine(self) -> Path:
        return self.data_dir / "quarantine"

    @property
    def database(self) -> Path:
        return self.data_dir / "scanside.db"


@dataclass(frozen=True)
class IngestConfig:
    settle_seconds: float = 2.0  # a file that still parses short after this long unchanged is quarantined
    poll_interval_s: float = 0.2  # how often growing files and quiet series are re-checked
    rescan_on_start: bool = True  # take files already in the watch folder at start-up
    # The largest instance taken, in MiB, as stored, inflated (deflated transfer syntax) or decoded (compressed
    # pixels); bigger ones are quarantined as too_large, on the watch folder and over C-STORE alike. A classic MR
    # image is under 1 MiB; an enhanced MR cine of 300 frames of 256 x 256 about 40 MiB.
    max_instance_mb: float = 128.0

    @property
    def max_instance_bytes(self) -> int:
        return int(self.max_instance_mb * (1 << 20))


@dataclass(frozen=True)
class AssemblyConfig:
    quiet_period_s: float = 5.0  # a series whose tags give no count is complete after this long without a file
    incomplete_timeout_s: float = 300.0  # a series short of the count its tags gave is closed after this long


@dataclass(frozen=True)
class EngineConfig:
    bundle: Path = DEFAULT_BUNDLE
    backend: str = "auto"  # auto | onnxruntime | tensorrt | triton (the kinds appliance/inference registers)
    max_batch: int = 4  # series per inference call
    batch_wait_ms: float = 10.0  # how long the worker waits for more ready series to fill a batch
    queue_size: int = 16  # prepared series waiting for the engine; producers block when full
    intra_op_threads: int = 0  # ONNX Runtime threads; 0 = its default (all cores)
    plan_dir: Path | None = None  # TensorRT plans, besides the bundle folder (which is always searched)
    trt_max_batch: int = 0  # refuse plans whose profile takes fewer series than this; 0 = max_batch
    # backend "tensorrt" without a usable plan, or "triton" without a usable server at start, runs ONNX Runtime and
    # says so; for "triton" also a batch the server fails after its retries (each result records which ran it)
    fallback_to_onnxruntime: bool = True


@dataclass(frozen=True)
class TritonConfig:
    """The encoder on a Triton Inference Server (engine.backend = "triton", appliance/inference/triton_backend.py,
    docs/triton.md): KServe v2 over gRPC. The server's model name and the version that answered are recorded in
    every result ("triton:<model>/<version>")."""

    url: str = ""  # host:port of Triton's gRPC endpoint (8001 by default), e.g. "triton.local:8001"
    model_name: str = "scanside_encoder"  # as `scanside triton-repo` names it
    model_version: str = ""  # a version number to pin; "": the server's version policy picks (latest)
    timeout_s: float = 10.0  # one inference request, queueing in the server included
    health_timeout_s: float = 5.0  # each start-up check: server live, ready, model ready, metadata
    retries: int = 2  # further tries of a request that failed in the server or on the way (not a refusal)
    retry_backoff_s: float = 0.5  # wait before the first retry; doubles for each further one
    recheck_s: float = 30.0  # after a batch fell back to local ONNX Runtime, how long before Triton is tried again
    verify_min_cosine: float = 0.999  # start-up: a probe batch through Triton against local ONNX Runtime
    tls_ca: Path | None = None  # TLS: the server's certificate must chain to this CA (setting it turns TLS on)
    tls_cert: Path | None = None  # a client certificate and key, for a server that requires them (mutual TLS)
    tls_key: Path | None = None
    allow_plaintext: bool = False  # a url whose host is not loopback without TLS (the images in the clear)


@dataclass(frozen=True)
class ScoringConfig:
    review_low: float = 0.35  # calibrated probabilities inside [review_low, review_high] need review
    review_high: float = 0.65
    flag_rare_positive: bool = True
    ood_check: bool = True


@dataclass(frozen=True)
class QualityConfig:
    """The input quality gate (appliance/quality, docs/quality-gate.md): a series that is not a usable cine
    short-axis stack is stored as not assessable, with its reasons, and no finding is called positive."""

    enabled: bool = True
    min_phase_ratio: float = 0.5  # fewer acquired phases than this share of the model's frames: too_few_phases
    min_slices: int = 5  # fewer slice positions: too_few_slices (base, mid and apex would lie next to each other)
    min_neighbour_correlation: float = 0.35  # mean correlation of adjacent pixels below this: noise
    min_motion: float = 0.06  # 99th percentile of the per-pixel temporal s.d. (tensor units) below this: no motion
    min_motion_ratio: float = 3.0  # ...or that percentile below this many times the median s.d. (the noise floor)
    min_motion_compactness: float = 0.45  # share of the motion within heart_radius_mm of its centre: not_cardiac
    heart_radius_mm: float = 50.0
    max_heart_offset_mm: float = 55.0  # centre of the motion farther than this from the image centre: outside FOV
    min_atlas_similarity: float = 0.25  # correlation with the short-axis atlas, best orientation: not_cardiac
    min_orientation_margin: float = 0.02  # as labelled must match the atlas better than any flip or rotation, by this


@dataclass(frozen=True)
class GrpcConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0 picks a free port (tests)
    tls_cert: Path | None = None  # TLS: the server's certificate chain and key (PEM), loaded and checked at start
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mutual TLS: every client must present a certificate signed by this CA
    clients_file: Path | None = None  # who may call what (appliance/serve/access.py; `scanside clients` edits it)
    # Roles of a caller on this host (loopback) that presents neither a known token nor a listed certificate.
    # A caller from another host always needs one or the other.
    anonymous_roles: tuple[str, ...] = ("display", "ops")
    allow_plaintext_remote: bool = False  # plaintext (no TLS) on a non-loopback address only when set
    max_streams: int = 8  # result streams open at once, in all...
    max_streams_per_client: int = 4  # ...and per client (or anonymous caller's address)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108  # 0 picks a free port (tests)
    gpu_stats: str = "auto"  # auto | nvml | tegrastats | jtop | off: where GPU memory/utilisation/temperature come from


@dataclass(frozen=True)
class DicomConfig:
    enabled: bool = False  # the C-STORE receiver; the watch folder works without it
    ae_title: str = "SCANSIDE"
    host: str = "127.0.0.1"  # loopback unless configured: scanners and routers are named explicitly
    port: int = 11112
    allowed_calling_aets: tuple[str, ...] = ()  # empty: any calling AE title is accepted
    tls_cert: Path | None = None  # DICOM TLS (secure transport profile): certificate chain and key
    tls_key: Path | None = None
    tls_ca: Path | None = None  # when set, callers must present a certificate signed by this CA
    # Admission and bounds (appliance/ingest/dicom_guard.py): a sender has this long from connecting (TLS
    # handshake included) to a complete association request; until then it holds no thread, and at most
    # max_pending_connections such connections are held (a new one evicts the oldest of the busiest peer).
    negotiation_timeout_s: float = 5.0
    idle_timeout_s: float = 60.0  # an association with no traffic this long is aborted
    max_pending_connections: int = 64
    max_associations: int = 16  # associations at once, in all...
    max_associations_per_peer: int = 4  # ...and from one IP address
    max_pdu_bytes: int = 65536  # the Maximum Length announced; larger PDUs abort the association
    max_inflight_mb: float = 512.0  # datasets held in memory by all associations together; beyond: aborted
    # Storage Commitment Push Model SCP (appliance/ingest/commitment_scp.py): a sender asking which instances the
    # appliance holds gets a report naming each one it was answered Success for, from a record kept this long.
    commitment: bool = True
    # Where each sender takes its report on a new association, as "AE=host:port" (e.g. "MRI1=10.1.2.3:104"); a
    # sender still associated commitment_report_delay_s after the N-ACTION response gets it on that association.
    commitment_peers: tuple[str, ...] = ()
    commitment_report_delay_s: float = 0.5
    commitment_timeout_s: float = 30.0  # connect, association and response of one report on a new association
    commitment_attempts: int = 5  # tries of a report before it is given up (logged and counted)
    commitment_retry_s: float = 30.0  # wait after a failed try, doubling, at most 15 minutes
    commitment_keep_days: float = 7.0  # the record of what was received (and of reports sent) is kept this long

    @property
    def commitment_peer_addresses(self) -> dict[str, tuple[str, int]]:
        """commitment_peers as {AE title: (host, port)} (checked by the rules)."""
        out = {}
        for entry in self.commitment_peers:
            ae, _, address = entry.partition("=")
            host, _, port = address.strip().rpartition(":")
            out[ae.strip()] = (host.strip("[]"), int(port))
        return out


@dataclass(frozen=True)
class ExportConfig:
    """Results back to PACS: one DICOM SR per scored series (a TID 1500 Measurement Report by default), sent over
    C-STORE or DICOMweb STOW-RS and/or written to a folder. Off unless a destination is named. When on, the database
    keeps each scored series' patient and study attributes (copied into its SR), so protect it like the PACS itself."""

    pacs_ae_title: str = ""  # the PACS' AE title (called AE); empty: nothing is sent
    pacs_host: str = "127.0.0.1"
    pacs_port: int = 104
    folder: Path | None = None  # also (or only) write each SR here as <SOP Instance UID>.dcm
    max_attempts: int = 8  # tries per destination before the item is marked failed (shown by `scanside exports`)
    retry_initial_s: float = 30.0  # wait after the first failed try; doubles after each further one
    retry_max_s: float = 900.0  # the wait never grows beyond this
    timeout_s: float = 30.0  # association, DIMSE and network timeouts of one try
    series_number: int = 9901  # Series Number of the SR series; high, so PACS lists it after the images
    institution_name: str = ""  # written into the SR when set
    sr_template: str = "tid1500"  # the SR's content: "tid1500" (TID 1500 Measurement Report) or "comprehensive"
    keep_failed_days: float = 30.0  # a failed SR (patient data) is kept this long for `exports retry`; 0: forever
    tls_ca: Path | None = None  # DICOM TLS to the PACS: its certificate must chain to this CA (setting it turns TLS on)
    tls_cert: Path | None = None  # this appliance's certificate and key, for a PACS that requires client certificates
    tls_key: Path | None = None
    # DICOMweb STOW-RS (appliance/export/destinations/stowrs.py): SRs POSTed to <dicomweb_url>/studies. The URL is
    # the service's base (e.g. https://pacs.example.org/dicom-web); empty: not sent. https:// needs dicomweb_ca;
    # http:// only to a loopback address unless dicomweb_allow_plaintext.
    dicomweb_url: str = ""
    dicomweb_ca: Path | None = None  # PEM CA(s) the server's certificate must chain to (never unverified)
    dicomweb_token_file: Path | None = None  # a bearer token, read at every try (a rotated token needs no restart)
    dicomweb_username: str = ""  # HTTP basic authentication, with the password in dicomweb_password_file
    dicomweb_password_file: Path | None = None
    dicomweb_connect_timeout_s: float = 10.0  # to connect (TLS handshake included)
    dicomweb_read_timeout_s: float = 60.0  # between bytes of the answer, once the request is sent
    dicomweb_allow_plaintext: bool = False  # http:// to a host that is not loopback (patient data in the clear)
    # Storage commitment (appliance/export/commitment.py): after storing its SRs the PACS destination asks the PACS
    # to commit them (N-ACTION on the same association); an SR is delivered only once committed. The report may
    # come on that association or on one the PACS opens to the receiver ([dicom] enabled, the PACS' AE title
    # allowed there). Not committed, or no report within pacs_commitment_wait_s: a failed try, retried as above.
    pacs_commitment: bool = False
    pacs_commitment_wait_s: float = 300.0

    @property
    def enabled(self) -> bool:
        return bool(self.destinations)

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(name for name, on in (("pacs", bool(self.pacs_ae_title)), ("folder", self.folder is not None),
                                           ("dicomweb", bool(self.dicomweb_url))) if on)


@dataclass(frozen=True)
class Hl7Config:
    """Final reports in: HL7 v2 ORU^R01 over MLLP (appliance/truth/mllp.py, docs/ground-truth.md), matched to the
    studies scored here as ground truth. Off unless a RIS, reporting system or interface engine sends them."""

    enabled: bool = False
    host: str = "127.0.0.1"  # loopback unless configured: the senders are named explicitly
    port: int = 2575  # IANA's port for HL7 over MLLP; 0 picks a free port (tests)
    allowed_peers: tuple[str, ...] = ()  # sender IP addresses or CIDR networks; empty: any peer that can connect
    allowed_applications: tuple[str, ...] = ()  # MSH-3 sending applications taken; empty: any (a routing check)
    tls_cert: Path | None = None  # TLS: the listener's certificate chain and key (PEM)
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # mutual TLS: senders must present a certificate signed by this CA
    max_message_bytes: int = 1 << 20  # one framed message; a report is a few kB; larger: AR, connection closed
    idle_timeout_s: float = 60.0  # a connection silent this long is closed (TLS handshake included)
    max_connections: int = 8  # connections at once; a sender holds one or two
    receiving_application: str = "SCANSIDE"  # MSH-3 of the ACKs this appliance sends
    receiving_facility: str = ""  # MSH-4 of the ACKs
    # While a series is between its last image and its stored result, a report waits up to this long before it is
    # read (its ACK with it): the score the scanner waits for goes first (pipeline/priority.py). 0: never waits.
    yield_to_scoring_s: float = 0.5


MODES = ("assist", "shadow")
SR_TEMPLATES = ("tid1500", "comprehensive")  # export.sr_template (appliance/export/sr.py)


@dataclass(frozen=True)
class ApplianceConfig:
    """How results are used (docs/ledger.md). assist: results are shown on displays and sent to PACS. shadow: every
    series is scored, stored, sealed in the ledger and measured, but no SR is queued or sent and only admin
    callers receive results (ListResults, GetStudyResult, StreamResults): the way to validate before go-live."""

    mode: str = "assist"  # assist | shadow; sealed into every ledger entry and shown by GetModelInfo

    @property
    def shadow(self) -> bool:
        return self.mode == "shadow"


@dataclass(frozen=True)
class EvidenceConfig:
    """Live performance and drift (appliance/evidence, docs/evidence.md). Manufacturers and stations are closed
    label sets: a value not configured is counted as "other", so no metric label ever carries free text."""

    # Manufacturer labels; each matches a DICOM Manufacturer equal to it or beginning with it (whole words, case and
    # punctuation ignored): "siemens" takes "SIEMENS" and "Siemens Healthineers"
    manufacturers: tuple[str, ...] = ("siemens", "ge", "philips", "canon", "united_imaging")
    # More spellings, as "label=Manufacturer as written", matched the same way
    manufacturer_aliases: tuple[str, ...] = ("ge=General Electric", "canon=TOSHIBA", "united_imaging=UIH")
    stations: tuple[str, ...] = ()  # station labels (the site's own StationName values); others: "other"
    window_studies: int = 200  # the drift signals cover the last N studies, pooled and per manufacturer
    baseline_studies: int = 200  # a group's first N studies: the OOD distance and positive rates compare with them
    min_window_studies: int = 30  # studies after the baseline before those are tested
    ood_expected_rate: float = 0.02  # share of in-distribution studies beyond the bundle's OOD threshold
    drift_alpha: float = 0.001  # significance of each drift test (positive rates: divided by the findings)
    min_auroc_cases: int = 20  # AUROC is reported once a slice has this many positives and as many negatives
    calibration_bins: int = 10  # equal-width probability bins of the expected calibration error
    refresh_interval_s: float = 300.0  # how often the evidence monitor recomputes


@dataclass(frozen=True)
class ClientConfig:
    """The [client] table: how this host's gRPC commands (`scanside results`, `status`, `assess`) reach the
    appliance when given `--config`: by default the [grpc] address (a wildcard host read as loopback), over TLS when
    [grpc] has a certificate. Command-line options override each of these. Not part of Settings (it describes the
    caller, not the appliance): `load_client` reads it, `load_settings` checks it with everything else."""

    address: str = ""  # host:port; empty: grpc.host and grpc.port
    tls_ca: Path | None = None  # verifies the appliance's certificate; empty with [grpc] TLS: grpc.tls_cert itself
    tls_cert: Path | None = None  # a client certificate and key, for an appliance with grpc.tls_client_ca
    tls_key: Path | None = None
    server_name: str = ""  # the name to check the certificate for, when the address is not one it names
    token_file: Path | None = None  # a client token from `scanside clients add` (or the SCANSIDE_TOKEN variable)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Settings:
    appliance: ApplianceConfig = field(default_factory=ApplianceConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    assembly: AssemblyConfig = field(default_factory=AssemblyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    triton: TritonConfig = field(default_factory=TritonConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    hl7: Hl7Config = field(default_factory=Hl7Config)
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @property
    def client(self) -> ClientConfig:
        """The [client] table read together with these settings (load_settings); not an appliance setting, so not
        a field: an empty one for settings built otherwise."""
        return getattr(self, "_client", None) or ClientConfig()

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some fields of some sections changed, validated: `s.replace(grpc={"port": 0})`."""
        from appliance.config.loading import build  # loading builds Settings: imported when first used

        merged = {name: dict(values) for name, values in sections.items()}
        return build(merged, base=self)

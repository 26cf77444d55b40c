"""One validated settings object, from a TOML file plus environment overrides.

Every default lives here, documented beside its field. Environment variables override the file as
`SCANSIDE_<SECTION>_<KEY>` (for example `SCANSIDE_GRPC_PORT=50052`, `SCANSIDE_ENGINE_BACKEND=onnxruntime`).
Validation happens once, at start, and names the setting that is wrong; nothing falls back silently.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = PROJECT_ROOT / "engines" / "reference-v1"
ENV_PREFIX = "SCANSIDE_"


class ConfigError(ValueError):
    """A setting is missing, mistyped or out of range. The message names it."""


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


@dataclass(frozen=True)
class EngineConfig:
    bundle: Path = DEFAULT_BUNDLE
    backend: str = "auto"  # auto | onnxruntime | tensorrt
    max_batch: int = 4  # series per inference call
    batch_wait_ms: float = 10.0  # how long the worker waits for more ready series to fill a batch
    queue_size: int = 16  # prepared series waiting for the engine; producers block when full
    intra_op_threads: int = 0  # ONNX Runtime threads; 0 = its default (all cores)
    plan_dir: Path | None = None  # TensorRT plans, besides the bundle folder (which is always searched)
    trt_max_batch: int = 0  # refuse plans whose profile takes fewer series than this; 0 = max_batch
    fallback_to_onnxruntime: bool = True  # backend "tensorrt" without a usable plan runs ONNX Runtime, and says so


@dataclass(frozen=True)
class ScoringConfig:
    review_low: float = 0.35  # calibrated probabilities inside [review_low, review_high] need review
    review_high: float = 0.65
    flag_rare_positive: bool = True
    ood_check: bool = True


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


@dataclass(frozen=True)
class ExportConfig:
    """Results back to PACS: one DICOM Comprehensive SR per scored series, sent over C-STORE and/or written to a
    folder. Off unless a destination is named. When on, the database keeps each scored series' patient and study
    attributes (copied into its SR), so protect it like the PACS itself."""

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
    keep_failed_days: float = 30.0  # a failed SR (patient data) is kept this long for `exports retry`; 0: forever
    tls_ca: Path | None = None  # DICOM TLS to the PACS: its certificate must chain to this CA (setting it turns TLS on)
    tls_cert: Path | None = None  # this appliance's certificate and key, for a PACS that requires client certificates
    tls_key: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.pacs_ae_title) or self.folder is not None

    @property
    def destinations(self) -> tuple[str, ...]:
        return tuple(name for name, on in (("pacs", bool(self.pacs_ae_title)), ("folder", self.folder is not None))
                     if on)


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class Settings:
    paths: PathsConfig = field(default_factory=PathsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    assembly: AssemblyConfig = field(default_factory=AssemblyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    dicom: DicomConfig = field(default_factory=DicomConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some fields of some sections changed, validated: `s.replace(grpc={"port": 0})`."""
        merged = {name: dict(values) for name, values in sections.items()}
        return _build(merged, base=self)


def load_settings(path: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the TOML file (optional) and the environment, validated."""
    raw: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    for section, values in _env_overrides(os.environ if env is None else env).items():
        raw.setdefault(section, {}).update(values)
    settings = _build(raw, base=Settings(), validate=path is None)
    if path is not None:
        settings = _resolve_relative(settings, Path(path).resolve().parent)
        _validate(settings)  # after resolving: the folder checks compare the real paths
    return settings


def _sections() -> dict[str, type]:
    return typing.get_type_hints(Settings)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    sections = _sections()
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX):].lower()
        section, _, name = rest.partition("_")
        if section not in sections or not name:
            continue  # other SCANSIDE_* variables (e.g. for tools) are not settings
        out.setdefault(section, {})[name] = value
    return out


def _build(raw: Mapping[str, Any], base: Settings, validate: bool = True) -> Settings:
    sections = _sections()
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ConfigError(f"unknown configuration section(s): {', '.join(unknown)}; known: {', '.join(sections)}")
    built = {}
    for name, cls in sections.items():
        current = getattr(base, name)
        values = raw.get(name, {})
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{name}] must be a table")
        hints = typing.get_type_hints(cls)
        unknown_keys = sorted(set(values) - set(hints))
        if unknown_keys:
            raise ConfigError(f"unknown setting(s) in [{name}]: {', '.join(unknown_keys)}; "
                              f"known: {', '.join(hints)}")
        changes = {key: _coerce(f"{name}.{key}", hints[key], value) for key, value in values.items()}
        built[name] = dataclasses.replace(current, **changes)
    settings = Settings(**built)
    if validate:
        _validate(settings)
    return settings


def _coerce(where: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            return None
        return _coerce(where, options[0], value)
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"{value!r} is not an integer")
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError(f"{value!r} is not a number")
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"{value!r} is not a finite number")
            return number
        if hint is Path:
            return Path(os.path.expanduser(str(value)))
        if typing.get_origin(hint) is tuple:  # a TOML array, or a comma-separated environment value
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
                raise ValueError(f"{value!r} is not a list of strings")
            return tuple(i.strip() for i in items if i.strip())
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(f"{value!r} is not a string")
            return value
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    raise ConfigError(f"{where}: unsupported setting type {hint}")


def _validate(s: Settings) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(0 < s.ingest.settle_seconds <= 3600, "ingest.settle_seconds must be in (0, 3600]")
    need(0 < s.ingest.poll_interval_s <= 5, "ingest.poll_interval_s must be in (0, 5]")
    need(0.01 <= s.ingest.max_instance_mb <= 4096, "ingest.max_instance_mb must be in [0.01, 4096]")
    need(0 < s.assembly.quiet_period_s <= 3600, "assembly.quiet_period_s must be in (0, 3600]")
    need(str(s.paths.data_dir) not in ("", "."), "paths.data_dir must name a folder")
    need(s.engine.backend in ("auto", "onnxruntime", "tensorrt"),
         f"engine.backend must be auto, onnxruntime or tensorrt, not {s.engine.backend!r}")
    need(1 <= s.engine.max_batch <= 256, "engine.max_batch must be in [1, 256]")
    need(0 <= s.engine.batch_wait_ms <= 10_000, "engine.batch_wait_ms must be in [0, 10000]")
    need(s.engine.queue_size >= 1, "engine.queue_size must be >= 1")
    need(s.engine.intra_op_threads >= 0, "engine.intra_op_threads must be >= 0")
    need(0 <= s.engine.trt_max_batch <= 256, "engine.trt_max_batch must be in [0, 256]")
    need(s.metrics.gpu_stats in ("auto", "nvml", "tegrastats", "jtop", "off"),
         "metrics.gpu_stats must be auto, nvml, tegrastats, jtop or off")
    need(0 <= s.scoring.review_low <= s.scoring.review_high <= 1,
         "scoring.review_low and review_high must satisfy 0 <= low <= high <= 1")
    g = s.grpc
    need((g.tls_cert is None) == (g.tls_key is None), "grpc.tls_cert and grpc.tls_key go together")
    need(g.tls_client_ca is None or g.tls_cert is not None,
         "grpc.tls_client_ca needs grpc.tls_cert and tls_key: client certificates are checked only over TLS")
    need(g.tls_cert is not None or g.allow_plaintext_remote or is_loopback(g.host),
         f"grpc.host {g.host} is not a loopback address: set grpc.tls_cert and tls_key (the API carries patient "
         "data), or grpc.allow_plaintext_remote = true on a network where that is acceptable")
    need(all(r in API_ROLES for r in g.anonymous_roles),
         f"grpc.anonymous_roles: each role must be one of {', '.join(API_ROLES)}")
    need(1 <= g.max_streams <= 64, "grpc.max_streams must be in [1, 64]")
    need(1 <= g.max_streams_per_client <= g.max_streams, "grpc.max_streams_per_client must be in [1, max_streams]")
    for name, port in (("grpc.port", s.grpc.port), ("metrics.port", s.metrics.port)):
        need(0 <= port <= 65535, f"{name} must be in [0, 65535]")
    need(not (s.metrics.enabled and s.grpc.port and s.grpc.port == s.metrics.port),
         "grpc.port and metrics.port must differ")
    need(0 <= s.dicom.port <= 65535, "dicom.port must be in [0, 65535]")
    need(_ae_title_ok(s.dicom.ae_title),
         f"dicom.ae_title {_AE_RULE}")
    need(all(_ae_title_ok(a) for a in s.dicom.allowed_calling_aets),
         f"dicom.allowed_calling_aets: each AE title {_AE_RULE}")
    need((s.dicom.tls_cert is None) == (s.dicom.tls_key is None), "dicom.tls_cert and dicom.tls_key go together")
    need(s.dicom.tls_ca is None or s.dicom.tls_cert is not None,
         "dicom.tls_ca needs dicom.tls_cert and tls_key: client certificates are checked only over TLS")
    d = s.dicom
    need(0.1 <= d.negotiation_timeout_s <= 120, "dicom.negotiation_timeout_s must be in [0.1, 120]")
    need(1 <= d.idle_timeout_s <= 3600, "dicom.idle_timeout_s must be in [1, 3600]")
    need(1 <= d.max_pending_connections <= 4096, "dicom.max_pending_connections must be in [1, 4096]")
    need(1 <= d.max_associations <= 256, "dicom.max_associations must be in [1, 256]")
    need(1 <= d.max_associations_per_peer <= d.max_associations,
         "dicom.max_associations_per_peer must be in [1, dicom.max_associations]")
    need(4096 <= d.max_pdu_bytes <= 16 << 20, "dicom.max_pdu_bytes must be in [4096, 16777216]")
    need(s.ingest.max_instance_mb <= d.max_inflight_mb <= 65536,
         "dicom.max_inflight_mb must be at least ingest.max_instance_mb (one instance must fit) and at most 65536")
    e = s.export
    need(e.pacs_ae_title == "" or _ae_title_ok(e.pacs_ae_title), f"export.pacs_ae_title {_AE_RULE} (or empty: off)")
    need(1 <= e.pacs_port <= 65535, "export.pacs_port must be in [1, 65535]")
    need(1 <= e.max_attempts <= 1000, "export.max_attempts must be in [1, 1000]")
    need(0 < e.retry_initial_s <= e.retry_max_s <= 86_400,
         "export.retry_initial_s and retry_max_s must satisfy 0 < initial <= max <= 86400")
    need(0 < e.timeout_s <= 600, "export.timeout_s must be in (0, 600]")
    need(1 <= e.series_number <= 2**31 - 1, "export.series_number must be a positive integer")
    need(len(e.institution_name) <= 64, "export.institution_name must be at most 64 characters")
    need(0 <= e.keep_failed_days <= 36_500, "export.keep_failed_days must be in [0, 36500] (0: keep forever)")
    need((e.tls_cert is None) == (e.tls_key is None), "export.tls_cert and export.tls_key go together")
    need(e.tls_cert is None or e.tls_ca is not None,
         "export.tls_cert needs export.tls_ca: TLS to the PACS always verifies the PACS' certificate")
    spool, quarantine, watch = (p.resolve() for p in (s.paths.spool, s.paths.quarantine, s.paths.incoming))
    for inner in (spool, quarantine):
        need(not inner.is_relative_to(watch),
             f"paths.watch_dir ({watch}) must not contain the data folder's {inner.name}/: the watcher would see "
             "its own files")
        need(not watch.is_relative_to(inner), f"paths.watch_dir ({watch}) must not be inside {inner}")
    if s.export.folder is not None:
        need(not s.export.folder.resolve().is_relative_to(watch),
             f"export.folder must not be inside the watch folder ({watch}): the appliance would ingest its own SRs")
    need(s.logging.level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
         "logging.level must be DEBUG, INFO, WARNING or ERROR")


# The gRPC API's roles (what each may call: appliance/serve/access.py).
API_ROLES = ("display", "ops", "admin")


def is_loopback(host: str) -> bool:
    """A host name or address that only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_AE_RULE = "must be 1-16 printable ASCII characters, no backslash, no leading or trailing spaces"


def _ae_title_ok(title: str) -> bool:
    """DICOM AE titles (PS3.5 AE): default repertoire without control characters or backslash."""
    return (1 <= len(title) <= 16 and title.strip() == title
            and all(32 <= ord(c) < 127 and c != "\\" for c in title))


def _resolve_relative(s: Settings, base: Path) -> Settings:
    """Relative paths in a configuration file are relative to that file, not to the current directory."""
    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    paths = dataclasses.replace(s.paths, data_dir=fix(s.paths.data_dir), watch_dir=fix(s.paths.watch_dir))
    engine = dataclasses.replace(s.engine, plan_dir=fix(s.engine.plan_dir),
                                 bundle=s.engine.bundle if s.engine.bundle == DEFAULT_BUNDLE else fix(s.engine.bundle))
    dicom = dataclasses.replace(s.dicom, tls_cert=fix(s.dicom.tls_cert), tls_key=fix(s.dicom.tls_key),
                                tls_ca=fix(s.dicom.tls_ca))
    grpc = dataclasses.replace(s.grpc, tls_cert=fix(s.grpc.tls_cert), tls_key=fix(s.grpc.tls_key),
                               tls_client_ca=fix(s.grpc.tls_client_ca), clients_file=fix(s.grpc.clients_file))
    export = dataclasses.replace(s.export, folder=fix(s.export.folder), tls_ca=fix(s.export.tls_ca),
                                 tls_cert=fix(s.export.tls_cert), tls_key=fix(s.export.tls_key))
    return dataclasses.replace(s, paths=paths, engine=engine, dicom=dicom, export=export, grpc=grpc)

"""One validated settings object, from a TOML file plus environment overrides.

Every default lives here, documented beside its field. Environment variables override the file as
`SCANSIDE_<SECTION>_<KEY>` (for example `SCANSIDE_GRPC_PORT=50052`, `SCANSIDE_ENGINE_BACKEND=onnxruntime`).
Validation happens once, at start, and names the setting that is wrong; nothing falls back silently.
"""

from appliance.config.loading import load_client, load_config, load_settings
from appliance.config.rules import API_ROLES, is_loopback
from appliance.config.sections import (
    DEFAULT_BUNDLE,
    ENV_PREFIX,
    MODES,
    PROJECT_ROOT,
    ApplianceConfig,
    AssemblyConfig,
    ClientConfig,
    ConfigError,
    DicomConfig,
    EngineConfig,
    EvidenceConfig,
    ExportConfig,
    GrpcConfig,
    Hl7Config,
    IngestConfig,
    LoggingConfig,
    MetricsConfig,
    PathsConfig,
    ScoringConfig,
    Settings,
)

__all__ = ["API_ROLES", "DEFAULT_BUNDLE", "ENV_PREFIX", "MODES", "PROJECT_ROOT", "ApplianceConfig", "AssemblyConfig",
           "ClientConfig", "ConfigError", "DicomConfig", "EngineConfig", "EvidenceConfig", "ExportConfig",
           "GrpcConfig", "Hl7Config", "IngestConfig", "LoggingConfig", "MetricsConfig", "PathsConfig", "ScoringConfig",
           "Settings", "is_loopback", "load_client", "load_config", "load_settings"]

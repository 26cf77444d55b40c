"""What makes settings valid, checked once at start; each message names the setting to fix, and every broken rule
is reported at once."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable

from appliance.config.sections import MODES, SR_TEMPLATES, ClientConfig, ConfigError, Settings


def check_settings(s: Settings) -> None:
    """Raise one ConfigError listing every broken rule."""
    problems = setting_problems(s)
    if problems:
        raise ConfigError(problems=problems)


def setting_problems(s: Settings) -> list[str]:
    """Every rule `s` breaks, in the order of the sections; empty when it is valid."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(s.appliance.mode in MODES, f"appliance.mode must be {' or '.join(MODES)}, not {s.appliance.mode!r}")
    need(0 < s.ingest.settle_seconds <= 3600, "ingest.settle_seconds must be in (0, 3600]")
    need(0 < s.ingest.poll_interval_s <= 5, "ingest.poll_interval_s must be in (0, 5]")
    need(0.01 <= s.ingest.max_instance_mb <= 4096, "ingest.max_instance_mb must be in [0.01, 4096]")
    need(0 < s.assembly.quiet_period_s <= 3600, "assembly.quiet_period_s must be in (0, 3600]")
    need(s.assembly.quiet_period_s <= s.assembly.incomplete_timeout_s <= 86400,
         "assembly.incomplete_timeout_s must be at least assembly.quiet_period_s and at most 86400")
    need(str(s.paths.data_dir) not in ("", "."), "paths.data_dir must name a folder")
    # engine.backend is checked against the backends appliance/inference registers, when the engine is built.
    need(1 <= s.engine.max_batch <= 256, "engine.max_batch must be in [1, 256]")
    need(0 <= s.engine.batch_wait_ms <= 10_000, "engine.batch_wait_ms must be in [0, 10000]")
    need(s.engine.queue_size >= 1, "engine.queue_size must be >= 1")
    need(s.engine.intra_op_threads >= 0, "engine.intra_op_threads must be >= 0")
    need(0 <= s.engine.trt_max_batch <= 256, "engine.trt_max_batch must be in [0, 256]")
    _check_triton(s, need)
    need(s.metrics.gpu_stats in ("auto", "nvml", "tegrastats", "jtop", "off"),
         "metrics.gpu_stats must be auto, nvml, tegrastats, jtop or off")
    need(0 <= s.scoring.review_low <= s.scoring.review_high <= 1,
         "scoring.review_low and review_high must satisfy 0 <= low <= high <= 1")
    q = s.quality
    need(0 < q.min_phase_ratio <= 1, "quality.min_phase_ratio must be in (0, 1]")
    need(3 <= q.min_slices <= 64, "quality.min_slices must be in [3, 64]")
    need(-1 <= q.min_neighbour_correlation <= 1, "quality.min_neighbour_correlation must be in [-1, 1]")
    need(0 <= q.min_motion <= 1, "quality.min_motion must be in [0, 1]")
    need(q.min_motion_ratio >= 1, "quality.min_motion_ratio must be >= 1")
    need(0 <= q.min_motion_compactness <= 1, "quality.min_motion_compactness must be in [0, 1]")
    need(10 <= q.heart_radius_mm <= 150, "quality.heart_radius_mm must be in [10, 150]")
    need(0 < q.max_heart_offset_mm <= 500, "quality.max_heart_offset_mm must be in (0, 500]")
    need(-1 <= q.min_atlas_similarity <= 1, "quality.min_atlas_similarity must be in [-1, 1]")
    need(-2 <= q.min_orientation_margin <= 2, "quality.min_orientation_margin must be in [-2, 2]")
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
    _check_commitment_scp(s, need)
    e = s.export
    need(e.pacs_ae_title == "" or _ae_title_ok(e.pacs_ae_title), f"export.pacs_ae_title {_AE_RULE} (or empty: off)")
    need(1 <= e.pacs_port <= 65535, "export.pacs_port must be in [1, 65535]")
    need(1 <= e.max_attempts <= 1000, "export.max_attempts must be in [1, 1000]")
    need(0 < e.retry_initial_s <= e.retry_max_s <= 86_400,
         "export.retry_initial_s and retry_max_s must satisfy 0 < initial <= max <= 86400")
    need(0 < e.timeout_s <= 600, "export.timeout_s must be in (0, 600]")
    need(1 <= e.series_number <= 2**31 - 1, "export.series_number must be a positive integer")
    need(len(e.institution_name) <= 64, "export.institution_name must be at most 64 characters")
    need(e.sr_template in SR_TEMPLATES,
         f"export.sr_template must be {' or '.join(SR_TEMPLATES)}, not {e.sr_template!r}")
    need(0 <= e.keep_failed_days <= 36_500, "export.keep_failed_days must be in [0, 36500] (0: keep forever)")
    need((e.tls_cert is None) == (e.tls_key is None), "export.tls_cert and export.tls_key go together")
    need(e.tls_cert is None or e.tls_ca is not None,
         "export.tls_cert needs export.tls_ca: TLS to the PACS always verifies the PACS' certificate")
    _check_dicomweb(s, need)
    need(1 <= e.pacs_commitment_wait_s <= 86_400, "export.pacs_commitment_wait_s must be in [1, 86400]")
    need(not e.pacs_commitment or bool(e.pacs_ae_title), "export.pacs_commitment needs export.pacs_ae_title")
    need(not (e.pacs_commitment and e.pacs_ae_title and s.dicom.enabled and s.dicom.allowed_calling_aets)
         or e.pacs_ae_title in s.dicom.allowed_calling_aets,
         f"export.pacs_commitment: the PACS reports on an association it opens to the receiver, so "
         f"dicom.allowed_calling_aets must list export.pacs_ae_title ({e.pacs_ae_title!r})")
    spool, quarantine, watch = (p.resolve() for p in (s.paths.spool, s.paths.quarantine, s.paths.incoming))
    for inner in (spool, quarantine):
        need(not inner.is_relative_to(watch),
             f"paths.watch_dir ({watch}) must not contain the data folder's {inner.name}/: the watcher would see "
             "its own files")
        need(not watch.is_relative_to(inner), f"paths.watch_dir ({watch}) must not be inside {inner}")
    if s.export.folder is not None:
        need(not s.export.folder.resolve().is_relative_to(watch),
             f"export.folder must not be inside the watch folder ({watch}): the appliance would ingest its own SRs")
    _check_hl7(s, need)
    _check_evidence(s, need)
    need(s.logging.level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"),
         "logging.level must be DEBUG, INFO, WARNING or ERROR")
    return problems


def client_problems(c: ClientConfig) -> list[str]:
    """What is wrong with a [client] table; empty when nothing is."""
    problems = []
    if (c.tls_cert is None) != (c.tls_key is None):
        problems.append("client.tls_cert and client.tls_key go together")
    if c.address and not _host_port_ok(c.address):
        problems.append(f"client.address {c.address!r} must be host:port")
    return problems


def _host_port_ok(text: str) -> bool:
    host, sep, port = text.rpartition(":")
    return bool(sep and host) and port.isdigit() and 1 <= int(port) <= 65535


_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def _check_triton(s: Settings, need: Callable[[bool, str], None]) -> None:
    t = s.triton
    need(0 < t.timeout_s <= 600, "triton.timeout_s must be in (0, 600]")
    need(0 < t.health_timeout_s <= 120, "triton.health_timeout_s must be in (0, 120]")
    need(0 <= t.retries <= 10, "triton.retries must be in [0, 10]")
    need(0 <= t.retry_backoff_s <= 60, "triton.retry_backoff_s must be in [0, 60]")
    need(0 <= t.recheck_s <= 3600, "triton.recheck_s must be in [0, 3600]")
    need(0 < t.verify_min_cosine <= 1, "triton.verify_min_cosine must be in (0, 1]")
    need(bool(_MODEL_NAME.fullmatch(t.model_name)) and not t.model_name.startswith("."),
         f"triton.model_name {t.model_name!r} must be 1-128 letters, digits, '_', '.' or '-' (a folder of the "
         "model repository)")
    need(t.model_version == "" or (t.model_version.isdigit() and int(t.model_version) >= 1),
         f"triton.model_version must be empty (the server's policy) or a version number >= 1, not {t.model_version!r}")
    need((t.tls_cert is None) == (t.tls_key is None), "triton.tls_cert and triton.tls_key go together")
    need(t.tls_cert is None or t.tls_ca is not None,
         "triton.tls_cert needs triton.tls_ca: TLS to Triton always verifies the server's certificate")
    if s.engine.backend.strip().lower() != "triton" and not t.url:
        return
    need(bool(t.url), 'engine.backend = "triton" needs triton.url (host:port of the server\'s gRPC endpoint)')
    if not t.url:
        return
    need("://" not in t.url and _host_port_ok(t.url),
         f"triton.url {t.url!r} must be host:port (gRPC; TLS is turned on by triton.tls_ca, not by a scheme)")
    host = t.url.rpartition(":")[0]
    need(t.tls_ca is not None or t.allow_plaintext or is_loopback(host),
         f"triton.url {t.url} is not a loopback address: set triton.tls_ca (the series' images travel to it), or "
         "triton.allow_plaintext = true on a network where that is acceptable")


def _check_dicomweb(s: Settings, need: Callable[[bool, str], None]) -> None:
    e = s.export
    need(0 < e.dicomweb_connect_timeout_s <= 600, "export.dicomweb_connect_timeout_s must be in (0, 600]")
    need(0 < e.dicomweb_read_timeout_s <= 3600, "export.dicomweb_read_timeout_s must be in (0, 3600]")
    need(not (e.dicomweb_token_file and (e.dicomweb_username or e.dicomweb_password_file)),
         "export.dicomweb_token_file and dicomweb_username / dicomweb_password_file exclude each other: one "
         "Authorization header is sent")
    need(bool(e.dicomweb_username) == (e.dicomweb_password_file is not None),
         "export.dicomweb_username and export.dicomweb_password_file go together (HTTP basic authentication)")
    need(":" not in e.dicomweb_username, "export.dicomweb_username must not contain ':' (HTTP basic authentication)")
    if not e.dicomweb_url:
        return
    url = urllib.parse.urlsplit(e.dicomweb_url)
    try:
        url.port  # noqa: B018 (raises on a port that is not a number or out of range)
        port_ok = True
    except ValueError:
        port_ok = False
    if url.scheme not in ("http", "https") or not url.hostname or not port_ok or url.query or url.fragment:
        need(False, f"export.dicomweb_url {e.dicomweb_url!r} must be an http:// or https:// URL of the DICOMweb "
             "service's base, without query or fragment (SRs are POSTed to <it>/studies)")
        return
    need(url.username is None and url.password is None,
         "export.dicomweb_url must not carry credentials: use dicomweb_token_file or dicomweb_username and "
         "dicomweb_password_file")
    if url.scheme == "https":
        need(e.dicomweb_ca is not None,
             "export.dicomweb_ca must name the CA file the DICOMweb server's certificate chains to (for a public "
             "CA the system bundle, e.g. /etc/ssl/certs/ca-certificates.crt): HTTPS is always verified")
    else:
        need(e.dicomweb_ca is None, "export.dicomweb_ca is set but export.dicomweb_url is http://: use https://")
        need(e.dicomweb_allow_plaintext or is_loopback(url.hostname),
             f"export.dicomweb_url {e.dicomweb_url!r} sends SRs (patient data) and credentials in the clear to a "
             "host that is not loopback: use https:// with dicomweb_ca, or set export.dicomweb_allow_plaintext = "
             "true on a network where that is acceptable")


def _check_commitment_scp(s: Settings, need: Callable[[bool, str], None]) -> None:
    d = s.dicom
    peers = [entry.partition("=") for entry in d.commitment_peers]
    need(all(eq and _ae_title_ok(ae.strip()) and _host_port_ok(address.strip()) for ae, eq, address in peers),
         "dicom.commitment_peers: each must be 'AE=host:port' (e.g. 'MRI1=10.1.2.3:104'), the AE title "
         + _AE_RULE.removeprefix("must be "))
    titles = [ae.strip() for ae, _, _ in peers]
    need(len(set(titles)) == len(titles), "dicom.commitment_peers names an AE title twice")
    need(0.1 <= d.commitment_report_delay_s <= 60, "dicom.commitment_report_delay_s must be in [0.1, 60]")
    need(1 <= d.commitment_timeout_s <= 600, "dicom.commitment_timeout_s must be in [1, 600]")
    need(1 <= d.commitment_attempts <= 100, "dicom.commitment_attempts must be in [1, 100]")
    need(0.1 <= d.commitment_retry_s <= 3600, "dicom.commitment_retry_s must be in [0.1, 3600]")
    need(0.01 <= d.commitment_keep_days <= 3650, "dicom.commitment_keep_days must be in [0.01, 3650]")


_HL7_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # an HD namespace id: no HL7 separators


def _network_ok(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


def _check_hl7(s: Settings, need: Callable[[bool, str], None]) -> None:
    h = s.hl7
    need(0 <= h.port <= 65535, "hl7.port must be in [0, 65535]")
    if h.enabled and h.port:
        taken = {"grpc.port": s.grpc.port, "metrics.port": s.metrics.port if s.metrics.enabled else 0,
                 "dicom.port": s.dicom.port if s.dicom.enabled else 0}
        for name, port in taken.items():
            need(port != h.port, f"hl7.port and {name} must differ")
    need(all(_network_ok(p) for p in h.allowed_peers),
         "hl7.allowed_peers: each must be an IP address or a network in CIDR form (10.1.2.0/24)")
    need(all(_HL7_NAME.fullmatch(a) for a in h.allowed_applications),
         "hl7.allowed_applications: each must be 1-64 letters, digits, '_', '.', '-' (MSH-3, first component)")
    need(bool(_HL7_NAME.fullmatch(h.receiving_application)),
         "hl7.receiving_application must be 1-64 letters, digits, '_', '.', '-'")
    need(h.receiving_facility == "" or bool(_HL7_NAME.fullmatch(h.receiving_facility)),
         "hl7.receiving_facility must be empty or 1-64 letters, digits, '_', '.', '-'")
    need((h.tls_cert is None) == (h.tls_key is None), "hl7.tls_cert and hl7.tls_key go together")
    need(h.tls_client_ca is None or h.tls_cert is not None,
         "hl7.tls_client_ca needs hl7.tls_cert and tls_key: client certificates are checked only over TLS")
    need(1024 <= h.max_message_bytes <= 64 << 20, "hl7.max_message_bytes must be in [1024, 67108864]")
    need(1 <= h.idle_timeout_s <= 86_400, "hl7.idle_timeout_s must be in [1, 86400]")
    need(1 <= h.max_connections <= 256, "hl7.max_connections must be in [1, 256]")
    need(0 <= h.yield_to_scoring_s <= 10, "hl7.yield_to_scoring_s must be in [0, 10]")


_LABEL = re.compile(r"[a-z][a-z0-9_]{0,31}")
_STATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_RESERVED_LABELS = ("other", "unknown", "all")  # appliance.evidence.cases.RESERVED


def _check_evidence(s: Settings, need: Callable[[bool, str], None]) -> None:
    v = s.evidence
    need(all(_LABEL.fullmatch(m) and m not in _RESERVED_LABELS for m in v.manufacturers)
         and len(set(v.manufacturers)) == len(v.manufacturers) and len(v.manufacturers) <= 32,
         "evidence.manufacturers: at most 32 distinct labels of 1-32 lowercase letters, digits and '_', starting "
         "with a letter, none of other, unknown, all")
    for alias in v.manufacturer_aliases:
        label, eq, written = alias.partition("=")
        need(bool(eq) and label.strip() in v.manufacturers and any(c.isalnum() for c in written),
             f"evidence.manufacturer_aliases: {alias!r} must be 'label=Manufacturer as written' with a label from "
             "evidence.manufacturers")
    need(all(_STATION.fullmatch(st) and st.lower() not in _RESERVED_LABELS for st in v.stations)
         and len({st.lower() for st in v.stations}) == len(v.stations) and len(v.stations) <= 64,
         "evidence.stations: at most 64 distinct names of 1-32 letters, digits, '_', '.', '-' (a site's StationName "
         "values, never a patient identifier), none of other, unknown, all")
    need(10 <= v.window_studies <= 100_000, "evidence.window_studies must be in [10, 100000]")
    need(10 <= v.baseline_studies <= 100_000, "evidence.baseline_studies must be in [10, 100000]")
    need(2 <= v.min_window_studies <= v.window_studies, "evidence.min_window_studies must be in [2, window_studies]")
    need(0 < v.ood_expected_rate < 1, "evidence.ood_expected_rate must be in (0, 1)")
    need(0 < v.drift_alpha <= 0.1, "evidence.drift_alpha must be in (0, 0.1]")
    need(2 <= v.min_auroc_cases <= 100_000, "evidence.min_auroc_cases must be in [2, 100000]")
    need(2 <= v.calibration_bins <= 100, "evidence.calibration_bins must be in [2, 100]")
    need(1 <= v.refresh_interval_s <= 86_400, "evidence.refresh_interval_s must be in [1, 86400]")


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

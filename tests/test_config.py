from pathlib import Path

import pytest

from appliance.config import DEFAULT_BUNDLE, ConfigError, Settings, load_settings


def test_defaults_are_the_embedded_ones():
    s = load_settings(env={})
    assert s == Settings()
    assert s.engine.backend == "auto" and s.engine.bundle == DEFAULT_BUNDLE
    assert s.grpc.host == "127.0.0.1" and s.metrics.host == "127.0.0.1"
    assert s.paths.database == Path("scanside-data") / "scanside.db"


def test_file_then_environment(tmp_path):
    cfg = tmp_path / "scanside.toml"
    cfg.write_text('[paths]\ndata_dir = "data"\n[grpc]\nport = 6000\n[engine]\nmax_batch = 2\n')
    s = load_settings(cfg, env={"SCANSIDE_GRPC_PORT": "6001", "SCANSIDE_SCORING_OOD_CHECK": "false",
                                "SCANSIDE_UNRELATED": "x"})
    assert s.grpc.port == 6001  # the environment wins over the file
    assert s.engine.max_batch == 2
    assert s.scoring.ood_check is False
    assert s.paths.data_dir == tmp_path / "data"  # relative to the file, not to the working directory


@pytest.mark.parametrize("text, message", [
    ("[grpc]\nport = 70000\n", "grpc.port"),
    ("[engine]\nmax_batch = 'four'\n", "engine.max_batch"),
    ("[engine]\nmax_bacth = 4\n", "unknown setting(s) in [engine]: max_bacth"),
    ("[enigne]\nmax_batch = 4\n", "unknown configuration section"),
    ("[scoring]\nreview_low = 0.8\nreview_high = 0.2\n", "review_low"),
    ("[paths]\ndata_dir = 'd'\nwatch_dir = 'd'\n", "must not contain"),
    ("[grpc\nport=1", "not valid TOML"),
    ("[assembly]\nquiet_period_s = inf\n", "finite"),
    ("[metrics]\nport = 7000\n[grpc]\nport = 7000\n", "must differ"),
    ("[paths]\ndata_dir = 'd'\nwatch_dir = 'd/spool/in'\n", "must not be inside"),
    ("[paths]\ndata_dir = 'data'\nwatch_dir = '.'\n", "must not contain"),  # relative to the file, not cwd
    ("[dicom]\nae_title = 'A_TITLE_LONGER_THAN_16'\n", "dicom.ae_title"),
    ("[dicom]\nallowed_calling_aets = 'MRI1'\ntls_cert = 'c.pem'\n", "go together"),
    ("[export]\nfolder = 'data/incoming/sr'\n[paths]\ndata_dir = 'data'\n", "export.folder must not be inside"),
    ("[export]\nretry_initial_s = 60\nretry_max_s = 10\n", "retry_initial_s"),
    ("[export]\nmax_attempts = 0\n", "export.max_attempts"),
    ("[export]\npacs_ae_title = 'A_PACS_TITLE_TOO_LONG'\n", "export.pacs_ae_title"),
    ("[export]\npacs_ae_title = 'PACS\\\\1'\n", "no backslash"),
    ("[dicom]\nae_title = 'SCANSÏDE'\n", "printable ASCII"),
    ("[export]\ntls_cert = 'c.pem'\ntls_key = 'k.pem'\n", "export.tls_cert needs export.tls_ca"),
    ("[export]\nkeep_failed_days = -1\n", "export.keep_failed_days"),
    ("[hl7]\nallowed_peers = ['10.1.2.0/33']\n", "hl7.allowed_peers"),
    ("[hl7]\nallowed_applications = ['RIS^X']\n", "hl7.allowed_applications"),
    ("[hl7]\ntls_client_ca = 'ca.pem'\n", "hl7.tls_client_ca needs"),
    ("[hl7]\ntls_cert = 'c.pem'\n", "hl7.tls_cert and hl7.tls_key go together"),
    ("[hl7]\nenabled = true\nport = 50051\n", "hl7.port and grpc.port must differ"),
    ("[hl7]\nmax_message_bytes = 10\n", "hl7.max_message_bytes"),
])
def test_bad_settings_name_what_is_wrong(tmp_path, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    assert message in str(info.value)


def test_lists_from_toml_arrays_and_comma_separated_environment(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dicom]\nallowed_calling_aets = ["MRI1", "ROUTER"]\n')
    assert load_settings(cfg, env={}).dicom.allowed_calling_aets == ("MRI1", "ROUTER")
    assert load_settings(env={"SCANSIDE_DICOM_ALLOWED_CALLING_AETS": "A, B"}).dicom.allowed_calling_aets == ("A", "B")


def test_missing_file_and_bad_env():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/scanside.toml", env={})
    with pytest.raises(ConfigError, match=r"ingest\.rescan_on_start"):
        load_settings(env={"SCANSIDE_INGEST_RESCAN_ON_START": "maybe"})

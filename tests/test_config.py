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
    ("[assembly]\nquiet_period_s = 10\nincomplete_timeout_s = 5\n", "assembly.incomplete_timeout_s"),
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
    ("[export]\ndicomweb_url = 'https://pacs.example.org/dicom-web'\n", "export.dicomweb_ca must name the CA"),
    ("[export]\ndicomweb_url = 'http://10.1.2.3/dicom-web'\n", "in the clear to a host that is not loopback"),
    ("[export]\ndicomweb_url = 'http://127.0.0.1/dicom-web'\ndicomweb_ca = 'ca.pem'\n", "use https://"),
    ("[export]\ndicomweb_url = 'ftp://pacs/dicom-web'\n", "must be an http:// or https:// URL"),
    ("[export]\ndicomweb_url = 'https://pacs:99999/x'\ndicomweb_ca = 'ca.pem'\n", "must be an http:// or https://"),
    ("[export]\ndicomweb_url = 'https://u:p@pacs/x'\ndicomweb_ca = 'ca.pem'\n", "must not carry credentials"),
    ("[export]\ndicomweb_token_file = 't'\ndicomweb_username = 'u'\ndicomweb_password_file = 'p'\n",
     "exclude each other"),
    ("[export]\ndicomweb_username = 'u'\n", "export.dicomweb_username and export.dicomweb_password_file go"),
    ("[export]\ndicomweb_read_timeout_s = 0\n", "export.dicomweb_read_timeout_s"),
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


def test_every_bad_setting_is_named_at_once(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[grpc]\nport = 70000\nmax_streams = 'x'\n[engine]\nmax_bacth = 4\n[scoring]\nreview_low = 0.9\n"
                   "review_high = 0.1\n[nope]\na = 1\n[client]\ntls_cert = 'c.pem'\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={"SCANSIDE_DICOM_PORT": "many"})
    problems = info.value.problems
    expected = ["unknown configuration section(s): nope", "unknown setting(s) in [engine]: max_bacth",
                "grpc.max_streams", "dicom.port", "scoring.review_low", "grpc.port must be in",
                "client.tls_cert and client.tls_key go together"]
    assert len(problems) == len(expected)
    for part in expected:
        assert sum(part in p for p in problems) == 1, part
    assert str(info.value).startswith(f"{len(expected)} settings to fix:\n  - ")


def test_one_bad_setting_reads_as_before():
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SCANSIDE_GRPC_PORT": "70000"})
    assert str(info.value) == "grpc.port must be in [0, 65535]" and info.value.problems == (str(info.value),)


def test_the_command_line_prints_every_problem_and_exits_2(tmp_path, capsys):
    from appliance.cli import main

    cfg = tmp_path / "bad.toml"
    cfg.write_text("[grpc]\nport = -1\n[metrics]\ngpu_stats = 'maybe'\n[logging]\nlevel = 'LOUD'\n")
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scanside: configuration error: 3 settings to fix:")
    assert all(name in err for name in ("grpc.port", "metrics.gpu_stats", "logging.level"))


def test_the_client_target_comes_from_client_else_from_grpc(tmp_path):
    from appliance.config import load_config
    from appliance.config.client import grpc_target, metrics_url

    cfg = tmp_path / "c.toml"
    cfg.write_text("[grpc]\nhost = '0.0.0.0'\nport = 6000\ntls_cert = 'tls/server.crt'\ntls_key = 'tls/server.key'\n"
                   "[metrics]\nhost = '::'\nport = 9200\n")
    s = load_settings(cfg, env={})
    t = grpc_target(*load_config(cfg, env={}))
    assert t.address == "127.0.0.1:6000"  # a wildcard listener is reached on loopback
    assert t.tls_ca == tmp_path / "tls" / "server.crt" and t.token_file is None and t.tls_cert is None
    assert metrics_url(s) == "http://[::1]:9200/metrics"
    cfg.write_text("[client]\naddress = 'mr-appliance:50051'\ntls_ca = 'ca.pem'\ntoken_file = 'console.token'\n"
                   "server_name = 'mr-appliance.hospital'\n[metrics]\nenabled = false\n")
    env = {"SCANSIDE_CLIENT_TLS_CERT": "/etc/c.pem", "SCANSIDE_CLIENT_TLS_KEY": "/etc/c.key"}
    s, client = load_config(cfg, env=env)
    t = grpc_target(s, client)
    assert s.client == client and grpc_target(s) == t  # the table also rides the settings it was read with
    assert (t.address, t.tls_ca, t.token_file, t.server_name) == \
        ("mr-appliance:50051", tmp_path / "ca.pem", tmp_path / "console.token", "mr-appliance.hospital")
    assert (t.tls_cert, t.tls_key) == (Path("/etc/c.pem"), Path("/etc/c.key")) and metrics_url(s) is None
    with pytest.raises(ConfigError, match=r"client\.address"):
        load_settings(env={"SCANSIDE_CLIENT_ADDRESS": "no-port"})


@pytest.mark.parametrize("export", [
    {"dicomweb_url": "https://pacs.example.org/dicom-web", "dicomweb_ca": "/etc/ssl/certs/ca-certificates.crt"},
    {"dicomweb_url": "http://127.0.0.1:8042/dicom-web", "dicomweb_token_file": "token"},
    {"dicomweb_url": "http://pacs.local/dicom-web", "dicomweb_allow_plaintext": True, "dicomweb_username": "u",
     "dicomweb_password_file": "pw"},
])
def test_dicomweb_destinations_that_are_taken(export):
    settings = Settings().replace(export=export)
    assert settings.export.destinations == ("dicomweb",) and settings.export.enabled

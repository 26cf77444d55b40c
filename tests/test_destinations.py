"""Export destinations behind one protocol: a kind registered in a test is worked by the real Exporter over a real
SQLite queue, exactly as the built-in PACS and folder kinds are, and a misbehaving destination costs tries, not the
exporter."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pydicom
import pytest
from prometheus_client import CollectorRegistry

from appliance.config import ConfigError, Settings
from appliance.dev.synth import plan_study, write_study
from appliance.export import build_exporter
from appliance.export import destinations as registry
from appliance.export.destinations import SendOutcome, build_destinations, register
from appliance.export.outbox import Exporter, RetryPolicy
from appliance.export.source import capture_source
from appliance.export.sr import SrSettings
from appliance.handovers import (
    ExportState,
    FindingScore,
    Scores,
    SeriesInfo,
    SeriesRole,
    SeriesState,
    StoredReport,
    StudyResult,
)
from appliance.metrics import Metrics
from appliance.store import Store


class Inbox:
    """A destination that keeps what it is given; `mode` makes it misbehave."""

    kind = "inbox"

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.batches: list[list[str]] = []
        self.aborted = False

    def check(self) -> None:
        if self.mode == "bad-config":
            raise ValueError("export.inbox_url is not a URL")

    def deliver(self, reports: Sequence[StoredReport]) -> list[SendOutcome]:
        self.batches.append([r.sop_instance_uid for r in reports])
        if self.mode == "raises":
            raise ConnectionResetError("peer went away")
        if self.mode == "miscounts":
            return [SendOutcome(True)]
        if self.mode == "refuses":
            return [SendOutcome(False, "refused for good", final=True) for _ in reports]
        return [SendOutcome(True) for _ in reports]

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
def inbox_kind():
    """Registers "inbox" the way a destination module does, and takes it away again."""
    made: list[Inbox] = []

    @register("inbox", hint="export.inbox_url")
    def from_settings(settings: Settings) -> Inbox | None:
        made.append(Inbox(settings.export.institution_name or "ok"))  # a test's stand-in for its own setting
        return made[-1]

    yield made
    del registry.FACTORIES["inbox"], registry.HINTS["inbox"]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """Three scored cine series of one synthetic study each, with their source headers."""
    out = []
    for seed in range(3):
        plan = plan_study(seed=40 + seed, vendor="A", n_slices=2, n_phases=4, matrix=(32, 32))
        files = write_study(plan, tmp_path_factory.mktemp(f"study{seed}"))
        (cine,) = [s for s in plan.series if s.role == "cine_sax"]
        mine = [(f, pydicom.dcmread(f, stop_before_pixels=True)) for f in files]
        mine = [(f, h) for f, h in mine if h.SeriesInstanceUID == cine.series_uid]
        refs = tuple((str(h.SOPClassUID), str(h.SOPInstanceUID)) for _, h in mine)
        out.append((plan, cine, capture_source(mine[0][0], refs)))
    return out


def queue_all(store: Store, series) -> None:
    for n, (plan, cine, source) in enumerate(series):
        info = SeriesInfo(f"s{n:012d}", plan.study_uid, cine.series_uid, SeriesRole.CINE_SAX, "A", "cine", 8, 8,
                          "tags", time.time())
        finding = FindingScore("lv_dilation", "LV dilation", 0.31, 0.25, 0.8, True, False, ())
        store.series.set_state(info, SeriesState.COMPLETE)
        store.exports.save_source(cine.series_uid, source.header, source.instances_json())
        store.results.save(StudyResult(info, Scores((finding,), 1.0, ()), "reference", "1", "onnxruntime", "fp32",
                                       {}, time.time()))


def exporter(store: Store, destinations: dict) -> tuple[Exporter, CollectorRegistry]:
    metrics_registry = CollectorRegistry()
    return Exporter(store, Metrics(metrics_registry), RetryPolicy(2, 10.0, 10.0), SrSettings(), destinations), \
        metrics_registry


def test_a_registered_kind_gets_its_srs_as_one_batch_and_is_counted_under_its_kind(inbox_kind, series, tmp_path):
    (inbox,) = build_destinations(Settings(), kinds=["inbox"]).values()
    store = Store(tmp_path / "db.sqlite", export_destinations=("inbox",))
    queue_all(store, series)
    exp, metrics = exporter(store, {"inbox": inbox})
    assert exp.run_once() is True
    assert len(inbox.batches) == 1 and len(inbox.batches[0]) == 3
    assert sorted(inbox.batches[0]) == sorted(store.exports.sr_uid(c.series_uid) for _, c, _ in series)
    assert all(i.state is ExportState.DELIVERED for i in store.exports.items())
    assert metrics.get_sample_value("scanside_sr_export_tries_total",
                                    {"destination": "inbox", "outcome": "delivered"}) == 3
    exp.stop()
    assert inbox.aborted
    store.close()


@pytest.mark.parametrize("mode", ["raises", "miscounts"])
def test_a_destination_that_raises_or_miscounts_costs_a_try_not_the_exporter(mode, series, tmp_path):
    store = Store(tmp_path / "db.sqlite", export_destinations=("inbox",))
    queue_all(store, series)
    exp, _ = exporter(store, {"inbox": Inbox(mode)})
    assert exp.run_once() is True
    items = store.exports.items()
    assert len(items) == 3
    assert all(i.state is ExportState.PENDING and i.attempts == 1 for i in items)
    assert all(i.last_error for i in items)
    store.close()


def test_a_final_refusal_fails_the_item_at_once_whatever_tries_are_left(series, tmp_path):
    store = Store(tmp_path / "db.sqlite", export_destinations=("inbox",))
    queue_all(store, series[:1])
    exp, metrics = exporter(store, {"inbox": Inbox("refuses")})  # two tries allowed
    assert exp.run_once() is True
    (item,) = store.exports.items()
    assert (item.state, item.attempts, item.last_error) == (ExportState.FAILED, 1, "refused for good")
    assert metrics.get_sample_value("scanside_sr_export_tries_total",
                                    {"destination": "inbox", "outcome": "failed"}) == 1
    assert exp.run_once(now=time.time() + 60) is False  # nothing due any more
    store.close()


def test_queued_items_of_a_kind_not_built_now_wait_and_of_a_kind_no_module_knows_fail(inbox_kind, series, tmp_path):
    store = Store(tmp_path / "db.sqlite", export_destinations=("inbox",))
    queue_all(store, series[:1])
    exp, _ = exporter(store, {})  # "inbox" is known but not configured any more: retried, with the setting named
    exp.run_once()
    (item,) = store.exports.items()
    assert item.state is ExportState.PENDING and "export.inbox_url" in item.last_error
    del registry.FACTORIES["inbox"]  # now no module registers it: nothing will ever send it
    assert exp.run_once(now=time.time() + 60) is True  # past its backoff
    (item,) = store.exports.items()
    assert item.state is ExportState.FAILED and "no destination 'inbox' is known" in item.last_error
    registry.FACTORIES["inbox"] = lambda s: None  # for the fixture's clean-up
    store.close()


def test_a_kind_twice_or_unknown_is_refused(inbox_kind):
    with pytest.raises(ValueError, match="registered twice"):
        register("inbox")(lambda s: None)
    with pytest.raises(ValueError, match="'stow' is not known"):
        build_destinations(Settings(), kinds=["stow"])


def test_build_exporter_checks_each_destination_and_names_the_setting(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    settings = Settings().replace(paths={"data_dir": str(tmp_path)}, export={"folder": str(not_a_folder)})
    store = Store(tmp_path / "db.sqlite")
    with pytest.raises(ConfigError, match=r"export\.folder .* exists and is not a folder"):
        build_exporter(settings, store, Metrics(CollectorRegistry()))
    settings = Settings().replace(paths={"data_dir": str(tmp_path)},
                                  export={"pacs_ae_title": "PACS", "tls_ca": str(tmp_path / "missing.pem")})
    with pytest.raises(ConfigError, match=r"export\.tls_ca / tls_cert / tls_key cannot be loaded"):
        build_exporter(settings, store, Metrics(CollectorRegistry()))
    assert build_exporter(Settings().replace(paths={"data_dir": str(tmp_path)}), store,
                          Metrics(CollectorRegistry())) is None  # nothing named: export off
    store.close()


def test_build_exporter_checks_the_dicomweb_files_without_calling_the_server(tmp_path):
    store = Store(tmp_path / "db.sqlite")

    def build(**export):
        settings = Settings().replace(paths={"data_dir": str(tmp_path)}, export=export)
        return build_exporter(settings, store, Metrics(CollectorRegistry()))

    nothing_listens = "http://127.0.0.1:1/dicom-web"
    with pytest.raises(ConfigError, match=r"export\.dicomweb_token_file .*missing-token cannot be read"):
        build(dicomweb_url=nothing_listens, dicomweb_token_file=str(tmp_path / "missing-token"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"export\.dicomweb_password_file .*empty is empty"):
        build(dicomweb_url=nothing_listens, dicomweb_username="u", dicomweb_password_file=str(tmp_path / "empty"))
    (tmp_path / "not-a-ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"export\.dicomweb_ca .*not-a-ca\.pem cannot be loaded"):
        build(dicomweb_url="https://127.0.0.1:1/dicom-web", dicomweb_ca=str(tmp_path / "not-a-ca.pem"))
    with pytest.raises(ConfigError, match=r"export\.dicomweb_url .*IPv6 address literals are not supported"):
        build(dicomweb_url="http://[::1]:8042/dicom-web")
    (tmp_path / "token").write_text("t0ken\n")
    exporter_ = build(dicomweb_url=nothing_listens + "/", dicomweb_token_file=str(tmp_path / "token"))
    assert exporter_ is not None and list(exporter_.destinations) == ["dicomweb"]
    assert exporter_.destinations["dicomweb"].peer.store_url == nothing_listens + "/studies"
    store.close()


def test_importing_the_export_package_loads_neither_highdicom_nor_pynetdicom():
    import subprocess
    import sys

    code = ("import sys, appliance.export; "
            "print(sorted(m for m in ('highdicom', 'pynetdicom', 'dicomweb_client', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
    # The destinations themselves load with the exporter; DICOMweb's client (numpy, Pillow) only where it is used.
    code = "import sys, appliance.export.destinations; print('dicomweb_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"

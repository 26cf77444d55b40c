"""Shared fixtures: a tiny test-only engine bundle and a whole appliance on a temporary folder.

The bundle is a placeholder encoder built with the `onnx` package from a fixed seed: test-only, its scores mean
nothing. Everything else is real: watchdog on a real folder, gRPC on a free loopback port, SQLite, ONNX Runtime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bundle_factory import make_tiny_bundle
from prometheus_client import CollectorRegistry

from appliance.config import Settings


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def e2e_settings(data_dir: Path, bundle: Path, **sections) -> Settings:
    base = {
        "paths": {"data_dir": str(data_dir), "watch_dir": str(data_dir / "incoming")},
        "engine": {"bundle": str(bundle), "batch_wait_ms": 5, "intra_op_threads": 1},
        "assembly": {"quiet_period_s": 1.0},
        "ingest": {"settle_seconds": 0.5, "poll_interval_s": 0.05},
        "grpc": {"port": 0},
        "metrics": {"port": 0},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return Settings().replace(**base)


@pytest.fixture
def appliance(tmp_path, tiny_bundle):
    from appliance.service import Appliance

    started = []

    def start(**sections) -> Appliance:
        app = Appliance(e2e_settings(tmp_path / "data", tiny_bundle, **sections), registry=CollectorRegistry())
        app.start()
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> object:
    """Poll instead of sleeping a fixed time: returns the first truthy value, fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)


def send_study(app, seed: int, matrix: tuple[int, int] = (128, 128)):
    """One synthetic vendor-A study written into the appliance's watch folder by a scanner thread: (plan, cine)."""
    from appliance.dev.synth import SyntheticScanner, plan_study

    plan = plan_study(seed=seed, vendor="A", n_slices=8, n_phases=20, matrix=matrix)
    SyntheticScanner(Path(app.settings.paths.incoming) / f"scan{seed}", [plan], pace_s=0).start()
    (cine,) = [s for s in plan.series if s.role == "cine_sax"]
    return plan, cine


def exports_of(app, series_uid: str):
    return app.store.exports.items(series_uid=series_uid)


def sr_content_items(sequence, deep: bool = True) -> list[tuple[str, str]]:
    """(concept name meaning, value as text) for each content item: TEXT, CODE (meaning), NUM, UIDREF."""
    out = []
    for item in sequence:
        name = item.ConceptNameCodeSequence[0].CodeMeaning
        if item.ValueType == "TEXT":
            out.append((name, item.TextValue))
        elif item.ValueType == "CODE":
            out.append((name, item.ConceptCodeSequence[0].CodeMeaning))
        elif item.ValueType == "NUM":
            out.append((name, str(item.MeasuredValueSequence[0].NumericValue)))
        elif item.ValueType == "UIDREF":
            out.append((name, item.UID))
        if deep and "ContentSequence" in item and item.ValueType == "CONTAINER":
            out.extend(sr_content_items(item.ContentSequence))
    return out

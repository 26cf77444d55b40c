"""The Triton backend against a real tritonserver: nvidia-pytriton's binary (Triton 2.51) on loopback, its Python
backend serving the bundle's encoder from the model.py that `scanside triton-repo --backend python` writes (ONNX
Runtime inside Triton's stub, on this virtual environment: appliance/dev/tritonserver.py says how). Nothing is
mocked: a hung server is a SIGSTOPped process, a dead one a stopped process, a wrong model a real other encoder.

Skipped, with the reason, where tritonserver or tritonclient is not installed (.ci/run installs both).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import e2e_settings, wait_for
from prometheus_client import CollectorRegistry

from appliance.bundle import load_bundle
from appliance.config import DEFAULT_BUNDLE
from appliance.dev.tritonserver import LocalTriton, find_tritonserver, python_backend_problem
from appliance.inference import BackendError, create_backend
from appliance.inference.backend import EngineTag

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (the [triton] extra)")

from appliance.inference.triton_backend import (
    SHA256_PARAMETER,
    TritonBackend,
    TritonModelMismatch,
    TritonRequestFailed,
    TritonUnavailable,
)
from appliance.inference.triton_options import TritonTarget
from appliance.inference.triton_repo import RepoSpec, write_repository

_DIST, _WHY = find_tritonserver()
_WHY = _WHY or (python_backend_problem(_DIST) if _DIST is not None else "")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(_WHY), reason=f"tritonserver cannot run here: {_WHY}")]
TOL = 1e-5  # the same ONNX on the same ONNX Runtime build: in practice bit for bit, allowed float noise


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT_BUNDLE)


@pytest.fixture(scope="module")
def local(bundle):
    return create_backend("onnxruntime", bundle, max_batch=8, intra_op_threads=1)


def _repository(root: Path, bundle, **spec) -> Path:
    write_repository(bundle, root, RepoSpec(kind="python", intra_op_threads=1, **spec))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, bundle):
    """One server for the tests that leave it as they found it."""
    work = tmp_path_factory.mktemp("triton")
    repo = _repository(work / "repo", bundle, max_batch=8, preferred_batch_sizes=(4, 8))
    # A second model serving another encoder of the same signature (the bundle's teacher), without the hash
    # parameter: only the numbers can tell it apart.
    other = write_repository(bundle, repo, RepoSpec(kind="python", model_name="impostor", intra_op_threads=1))
    shutil.copyfile(bundle.root / "teacher.onnx", other / "1" / "model.onnx")
    text = (other / "config.pbtxt").read_text()
    (other / "config.pbtxt").write_text(text.replace(f'key: "{SHA256_PARAMETER}"', 'key: "unused"'))
    # A third that claims another encoder by its hash.
    claimed = write_repository(bundle, repo, RepoSpec(kind="python", model_name="claims_other", intra_op_threads=1))
    text = (claimed / "config.pbtxt").read_text()
    (claimed / "config.pbtxt").write_text(text.replace(bundle.files["encoder.onnx"], "0" * 64))
    with LocalTriton(repo, work, dist=_DIST) as srv:
        yield srv


def _target(url: str, **kw) -> TritonTarget:
    return TritonTarget(url=url, **{"health_timeout_s": 5.0, "timeout_s": 10.0, **kw})


def test_scores_through_triton_equal_local_onnxruntime_for_every_batch_size(server, bundle, local):
    backend = TritonBackend(bundle, _target(server.url), max_batch=4)
    try:
        assert backend.name == "triton" and backend.max_batch == 4 and backend.precision == "fp32"
        assert backend.version == "2.51.0 (scanside_encoder/1)"
        assert backend.engine_info["triton_platform"] == "python"
        backend.warm_up()
        rng = np.random.default_rng(7)
        for n in (1, 3, 4, 9):  # 9: three requests of 4, 4 and 1
            x = rng.random((n, *bundle.sample_shape), dtype=np.float32)
            out, tags = backend.infer_tagged(x)
            assert out.shape == (n, 384) and out.dtype == np.float32
            assert np.max(np.abs(out - local.infer(x))) <= TOL
            assert tags == (EngineTag("triton:scanside_encoder/1", "fp32"),) * n
        stats = backend.stats()
        assert stats.up and stats.requests["failed"] == 0 and stats.requests["ok"] >= 7
        assert backend.fallback_reason is None
    finally:
        backend.close()


def test_requests_the_dynamic_batcher_groups_each_get_their_own_rows_back(server, bundle, local):
    """Eight appliances' worth of single-study requests at once: Triton groups them into one execution of the
    Python model, which must split the batch back to the right requests."""
    import threading

    import tritonclient.grpc as grpcclient

    backend = TritonBackend(bundle, _target(server.url), max_batch=1)
    inputs = [np.random.default_rng(100 + i).random((1, *bundle.sample_shape), dtype=np.float32) for i in range(8)]
    outputs: dict[int, np.ndarray] = {}
    start = threading.Barrier(len(inputs))

    def one(i: int) -> None:
        start.wait()
        outputs[i] = backend.infer(inputs[i])

    with grpcclient.InferenceServerClient(server.url) as client:
        before = {b.batch_size: b.compute_infer.count for b in
                  client.get_inference_statistics("scanside_encoder").model_stats[0].batch_stats}
        for _ in range(3):  # a few rounds: the grouping depends on timing, the answer must not
            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            for i, x in enumerate(inputs):
                assert np.max(np.abs(outputs[i] - local.infer(x))) <= TOL, f"request {i} got another's rows"
        after = {b.batch_size: b.compute_infer.count for b in
                 client.get_inference_statistics("scanside_encoder").model_stats[0].batch_stats}
    backend.close()
    grouped = {size: n - before.get(size, 0) for size, n in after.items() if size > 1 and n > before.get(size, 0)}
    assert grouped, f"Triton never grouped requests: executions by batch size {after}"


def test_health_refusals_name_what_is_not_there(server, bundle):
    with pytest.raises(TritonUnavailable, match=r"model 'nothing' is not ready: the server has no such model "
                                                r"\(it has: claims_other, impostor, scanside_encoder\)"):
        TritonBackend(bundle, _target(server.url, model_name="nothing"))
    with pytest.raises(TritonUnavailable, match=r"model 'scanside_encoder' version 2 is not ready: version 1 READY"):
        TritonBackend(bundle, _target(server.url, model_version="2"))
    pinned = TritonBackend(bundle, _target(server.url, model_version="1"))
    pinned.close()


def test_a_model_that_is_not_the_bundles_encoder_is_refused(server, bundle):
    with pytest.raises(TritonModelMismatch, match=r"does not compute bundle reference 1's encoder: min cosine"):
        TritonBackend(bundle, _target(server.url, model_name="impostor"))
    with pytest.raises(TritonModelMismatch, match=r"serves encoder sha256 0000000000000000"):
        TritonBackend(bundle, _target(server.url, model_name="claims_other"))
    fallback = create_backend("triton", bundle, triton=_target(server.url, model_name="impostor"),
                              fallback_to_onnxruntime=True)
    assert fallback.name == "onnxruntime" and "does not compute" in (fallback.fallback_reason or "")


def test_another_bundle_is_refused_on_its_signature(server, tiny_bundle):
    with pytest.raises(TritonModelMismatch, match=r"input shape \[-1, 16, 3, 64, 64\], the bundle needs"):
        TritonBackend(load_bundle(tiny_bundle), _target(server.url))


def test_a_hung_server_is_retried_then_the_batch_runs_locally_and_triton_is_tried_again(tmp_path, bundle, local):
    """SIGSTOP: the connection stays open and nothing answers, so each try ends on its deadline."""
    with LocalTriton(_repository(tmp_path / "repo", bundle), tmp_path, dist=_DIST) as srv:
        backend = TritonBackend(bundle, _target(srv.url, timeout_s=1.0, retries=1, retry_backoff_s=0.1,
                                                recheck_s=1.0), max_batch=4)
        x = np.random.default_rng(3).random((2, *bundle.sample_shape), dtype=np.float32)
        try:
            srv.pause()
            started = time.monotonic()
            out, tags = backend.infer_tagged(x)
            spent = time.monotonic() - started
            assert 2.0 <= spent < 6.0  # two tries of 1 s and the pause between them, then the local run
            assert tags == (EngineTag("onnxruntime", "fp32"),) * 2
            assert np.max(np.abs(out - local.infer(x))) <= TOL
            stats = backend.stats()
            assert not stats.up and stats.requests["retried"] == 1 and stats.requests["failed"] == 1
            assert stats.local_batches == 1
            note = backend.fallback_reason or ""
            assert "batches on local ONNX Runtime" in note and "DEADLINE_EXCEEDED" in note
            started = time.monotonic()
            _, tags = backend.infer_tagged(x)  # inside recheck_s: straight to ONNX Runtime, no wait
            assert time.monotonic() - started < 0.5 and tags[0].backend == "onnxruntime"
            srv.resume()
            time.sleep(1.1)
            out, tags = backend.infer_tagged(x)
            assert tags == (EngineTag("triton:scanside_encoder/1", "fp32"),) * 2
            assert backend.fallback_reason is None and backend.stats().up
            assert np.max(np.abs(out - local.infer(x))) <= TOL
        finally:
            srv.resume()
            backend.close()


def test_without_the_fallback_a_dead_server_fails_the_batch_after_its_tries(tmp_path, bundle):
    with LocalTriton(_repository(tmp_path / "repo", bundle), tmp_path, dist=_DIST) as srv:
        backend = TritonBackend(bundle, _target(srv.url, retries=2, retry_backoff_s=0.05,
                                                fallback_to_onnxruntime=False))
        srv.stop()
        x = np.zeros((1, *bundle.sample_shape), dtype=np.float32)
        with pytest.raises(TritonRequestFailed, match=r"failed a batch of 1 after 3 tries: \[UNAVAILABLE\]"):
            backend.infer(x)
        assert backend.stats().requests == {"ok": 1, "retried": 2, "failed": 1}  # ok: the start-up probe
        assert isinstance(TritonRequestFailed("x"), BackendError)
        backend.close()


def test_tls_the_server_certificate_is_checked(tmp_path, bundle):
    from tls_factory import OPENSSL, TestCA

    if OPENSSL is None:
        pytest.skip("openssl is needed to make test certificates")
    ca = TestCA(tmp_path / "ca")
    key, cert = ca.issue("triton-server")
    with LocalTriton(_repository(tmp_path / "repo", bundle), tmp_path, dist=_DIST, tls=(cert, key, None)) as srv:
        backend = TritonBackend(bundle, _target(srv.url, tls_ca=ca.cert))
        assert backend.engine_info["tls"] == "on"
        backend.close()
        with pytest.raises(TritonUnavailable, match="is not reachable"):  # plaintext to a TLS port
            TritonBackend(bundle, _target(srv.url, health_timeout_s=2.0))
        other = TestCA(tmp_path / "other", name="another-ca")
        with pytest.raises(TritonUnavailable, match="is not reachable"):  # a certificate from another CA
            TritonBackend(bundle, _target(srv.url, tls_ca=other.cert, health_timeout_s=2.0))


# --- the whole appliance --------------------------------------------------------------------------------------------


def _small_plans():
    from appliance.dev.synth import plan_study

    return [plan_study(seed=seed, vendor=vendor, n_slices=8, n_phases=20, matrix=(128, 128))
            for seed, vendor in ((11, "A"), (12, "B"))]


def _score(app, plans) -> dict[str, object]:
    from appliance.dev.synth import SyntheticScanner
    from appliance.serve.client import ApplianceClient

    scanner = SyntheticScanner(Path(app.settings.paths.incoming) / "magnet", plans, pace_s=0.0)
    cine = {s.series_uid for p in plans for s in p.series if s.role == "cine_sax"}
    with ApplianceClient(app.grpc_address) as client:
        client.wait_until_serving()
        scanner.start()
        assert scanner.join(60) and scanner.error is None
        wait_for(lambda: cine <= {r.series_instance_uid for r in client.list_all()}, timeout=90, what="results")
        return {r.series_instance_uid: r for r in client.list_all() if r.series_instance_uid in cine}


def test_the_appliance_on_triton_scores_like_the_appliance_on_onnxruntime(server, tmp_path):
    from appliance.serve.client import ApplianceClient
    from appliance.service import Appliance

    plans = _small_plans()
    engine = {"bundle": str(DEFAULT_BUNDLE), "intra_op_threads": 1}
    apps = {}
    results = {}
    try:
        for kind in ("triton", "onnxruntime"):
            settings = e2e_settings(tmp_path / kind, DEFAULT_BUNDLE, engine={**engine, "backend": kind},
                                    triton={"url": server.url})
            apps[kind] = Appliance(settings, registry=CollectorRegistry())
            apps[kind].start()
            results[kind] = _score(apps[kind], plans)
        with ApplianceClient(apps["triton"].grpc_address) as client:
            info = client.model_info()
        assert info.backend == "triton" and info.backend_version == "2.51.0 (scanside_encoder/1)"
        assert info.backend_note == ""
        reg = apps["triton"].registry
        assert reg.get_sample_value("scanside_triton_up") == 1
        assert reg.get_sample_value("scanside_triton_requests_total", {"outcome": "ok"}) >= 2
        assert reg.get_sample_value("scanside_triton_local_batches_total") == 0
        assert set(results["triton"]) == set(results["onnxruntime"]) and len(results["triton"]) == 2
        for uid, remote in results["triton"].items():
            mine = results["onnxruntime"][uid]
            assert remote.backend == "triton:scanside_encoder/1" and mine.backend == "onnxruntime"
            assert [f.finding_id for f in remote.findings] == [f.finding_id for f in mine.findings]
            for a, b in zip(remote.findings, mine.findings, strict=True):
                assert abs(a.score - b.score) <= TOL and abs(a.probability - b.probability) <= 1e-4
                assert a.positive == b.positive
        # the ledger seals what ran it, entry by entry
        entries = [e for e in apps["triton"].store.ledger.entries() if e["kind"] == "scored"]
        assert len(entries) == 2 and {e["payload"]["backend"] for e in entries} == {"triton:scanside_encoder/1"}
    finally:
        for app in apps.values():
            app.stop()


def test_the_appliance_fails_the_series_visibly_when_triton_dies_and_fallback_is_off(tmp_path, bundle):
    from appliance.handovers import SeriesState
    from appliance.serve.client import ApplianceClient
    from appliance.service import Appliance

    (plan,) = _small_plans()[:1]
    cine = next(s.series_uid for s in plan.series if s.role == "cine_sax")
    with LocalTriton(_repository(tmp_path / "repo", bundle), tmp_path / "srv", dist=_DIST) as srv:
        settings = e2e_settings(tmp_path / "data", DEFAULT_BUNDLE,
                                engine={"bundle": str(DEFAULT_BUNDLE), "backend": "triton",
                                        "fallback_to_onnxruntime": False},
                                triton={"url": srv.url, "retries": 1, "retry_backoff_s": 0.05})
        app = Appliance(settings, registry=CollectorRegistry())
        app.start()
        try:
            srv.stop()
            from appliance.dev.synth import SyntheticScanner

            scanner = SyntheticScanner(Path(settings.paths.incoming) / "magnet", [plan], pace_s=0.0)
            scanner.start()
            assert scanner.join(60) and scanner.error is None
            with ApplianceClient(app.grpc_address) as client:
                wait_for(lambda: client.series_status(cine).state == SeriesState.FAILED.value, timeout=60,
                         what="the series failed")
                status = client.series_status(cine)
                assert not list(client.list_all())
            assert "inference" in status.detail and "TritonRequestFailed" in status.detail
            reg = app.registry
            # counted once its images are set aside, a moment after the state is stored: waited for, not raced
            wait_for(lambda: reg.get_sample_value("scanside_series_failed_total", {"stage": "inference"}) == 1,
                     timeout=30, what="the failure counted")
            assert reg.get_sample_value("scanside_triton_up") == 0
            assert reg.get_sample_value("scanside_triton_requests_total", {"outcome": "failed"}) == 1
            kept = list((Path(settings.paths.quarantine) / "failed_series").rglob("*.dcm"))
            assert len(kept) == plan.n_slices * plan.n_phases  # set aside, not lost
        finally:
            app.stop()

"""`scanside triton-repo` and the parts of the Triton backend that need no server: the generated config.pbtxt parsed
back with protobuf's text format into Triton's own ModelConfig and checked against the ONNX graph's signature, the
refusals of a tampered configuration, the [triton] rules, the metrics, and the per-row engine tags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from conftest import e2e_settings
from prometheus_client import CollectorRegistry

from appliance.bundle import load_bundle
from appliance.cli import main
from appliance.config import DEFAULT_BUNDLE, ConfigError, Settings
from appliance.inference import create_backend
from appliance.inference.backend import EngineTag, infer_tagged

pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (the [triton] extra)")

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from appliance.inference.triton_backend import SHA256_PARAMETER, TritonBackend, TritonStats, TritonUnavailable
from appliance.inference.triton_options import TritonTarget
from appliance.inference.triton_repo import (
    RepoError,
    RepoSpec,
    check_repository,
    model_config,
    read_config,
    write_repository,
)
from appliance.metrics import TritonMetrics


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(DEFAULT_BUNDLE)


def _parse(model_dir: Path) -> mc.ModelConfig:
    # Parsed here directly, not through read_config: the test must not trust the code it checks.
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


@pytest.mark.parametrize("kind", ["onnxruntime", "tensorrt", "python"])
def test_each_kind_writes_a_config_triton_parses_that_matches_the_onnx_signature(tmp_path, bundle, kind):
    model_dir = write_repository(bundle, tmp_path, RepoSpec(kind=kind, max_batch=8, preferred_batch_sizes=(4, 8),
                                                            max_queue_delay_us=1500))
    config = _parse(model_dir)
    session = ort.InferenceSession(str(bundle.encoder_path), providers=["CPUExecutionProvider"])
    (g_in,), (g_out,) = session.get_inputs(), session.get_outputs()
    assert config.name == "scanside_encoder" and config.backend == kind
    assert config.platform == ("tensorrt_plan" if kind == "tensorrt" else "")
    assert config.max_batch_size == 8
    (inp,), (out,) = config.input, config.output
    assert (inp.name, out.name) == (g_in.name, g_out.name) == ("study", "embedding")
    assert inp.data_type == out.data_type == mc.TYPE_FP32 and g_in.type == g_out.type == "tensor(float)"
    # Triton's dims leave the batch out when it batches; the graph has it as its first, symbolic dimension.
    assert list(inp.dims) == list(g_in.shape[1:]) == [16, 3, 64, 64]
    assert list(out.dims) == list(g_out.shape[1:]) == [384]
    assert not isinstance(g_in.shape[0], int)
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    (group,) = config.instance_group
    assert group.count == 1
    assert group.kind == {"tensorrt": mc.ModelInstanceGroup.KIND_GPU, "python": mc.ModelInstanceGroup.KIND_CPU,
                          "onnxruntime": mc.ModelInstanceGroup.KIND_AUTO}[kind]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params[SHA256_PARAMETER] == bundle.files["encoder.onnx"]
    assert params["scanside_precision"] == ("fp16" if kind == "tensorrt" else "fp32")
    files = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file())
    assert files == {"onnxruntime": ["1/model.onnx", "config.pbtxt"], "tensorrt": ["config.pbtxt"],
                     "python": ["1/model.onnx", "1/model.py", "config.pbtxt"]}[kind]
    if kind != "tensorrt":
        assert (model_dir / "1" / "model.onnx").read_bytes() == bundle.encoder_path.read_bytes()


def test_a_fixed_batch_encoder_gets_no_triton_batching(tmp_path, bundle):
    fixed = dataclasses.replace(bundle, input_shape=(2, *bundle.sample_shape))
    config = model_config(fixed, RepoSpec())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [2, 16, 3, 64, 64] and list(config.output[0].dims) == [2, 384]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.replace('name: "study"', 'name: "images"'), "input name 'images', the ONNX graph's is 'study'"),
    (lambda t: t.replace("dims: 384", "dims: 512"), "output dims [512]"),
    (lambda t: t.replace("dims: 64\n}", "dims: 32\n}", 1), "'study' dim 4: 32 in the config, 64 in the graph"),
    (lambda t: t.replace("data_type: TYPE_FP32", "data_type: TYPE_FP16", 1), "both must be float32"),
    (lambda t: t.replace("preferred_batch_size: 8", "preferred_batch_size: 16"), "preferred_batch_size [4, 16]"),
    (lambda t: t.replace("f6f01fb335f2", "000000000000"), "is not the bundle's encoder"),
])
def test_a_tampered_config_is_refused_naming_the_field(tmp_path, bundle, edit, message):
    model_dir = write_repository(bundle, tmp_path, RepoSpec())
    path = model_dir / "config.pbtxt"
    path.write_text(edit(path.read_text()))
    with pytest.raises(RepoError) as caught:
        check_repository(model_dir, bundle)
    assert message in str(caught.value)


def test_a_config_that_is_not_text_format_is_refused_with_its_line(tmp_path, bundle):
    model_dir = write_repository(bundle, tmp_path, RepoSpec())
    (model_dir / "config.pbtxt").write_text('name: "x"\nmax_batch_size: eight\n')
    with pytest.raises(RepoError, match=r"config.pbtxt: 2:"):
        read_config(model_dir)


def test_bad_specs_are_refused_before_anything_is_written(tmp_path, bundle):
    with pytest.raises(RepoError, match="backend 'openvino' is not one of"):
        write_repository(bundle, tmp_path, RepoSpec(kind="openvino"))
    with pytest.raises(RepoError, match=r"model name '\.\./x'"):
        write_repository(bundle, tmp_path, RepoSpec(model_name="../x"))
    assert not list(tmp_path.iterdir())


def test_the_command_writes_checks_and_will_not_overwrite(tmp_path, capsys):
    out = tmp_path / "repo"
    assert main(["triton-repo", "--out", str(out), "--backend", "tensorrt", "--max-batch", "4",
                 "--preferred", "2,4", "--model-name", "enc"]) == 0
    printed = capsys.readouterr().out
    assert "input study FP32 [-1, 16, 3, 64, 64]" in printed and "preferred [2, 4]" in printed
    assert "model.plan is not written" in printed
    assert _parse(out / "enc").max_batch_size == 4
    assert main(["triton-repo", "--out", str(out), "--model-name", "enc"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["triton-repo", "--out", str(out), "--model-name", "enc", "--force"]) == 0
    assert _parse(out / "enc").backend == "onnxruntime"


def test_triton_settings_are_checked():
    s = Settings()
    with pytest.raises(ConfigError, match=r'engine.backend = "triton" needs triton.url'):
        s.replace(engine={"backend": "triton"})
    with pytest.raises(ConfigError) as caught:
        s.replace(triton={"url": "http://10.1.2.3:8001", "model_version": "latest", "retries": 11,
                          "tls_cert": "c.pem", "tls_key": "k.pem"})
    problems = caught.value.problems
    assert any("triton.url 'http://10.1.2.3:8001' must be host:port" in p for p in problems)
    assert any("triton.model_version must be empty" in p for p in problems)
    assert any("triton.retries must be in [0, 10]" in p for p in problems)
    assert any("triton.tls_cert needs triton.tls_ca" in p for p in problems)
    with pytest.raises(ConfigError, match=r"not a loopback address: set triton\.tls_ca"):
        s.replace(triton={"url": "triton.example.org:8001"})
    ok = s.replace(engine={"backend": "triton"}, triton={"url": "triton.example.org:8001", "allow_plaintext": True})
    assert ok.triton.url == "triton.example.org:8001"
    assert s.replace(triton={"url": "127.0.0.1:8001", "model_version": "3"}).triton.model_version == "3"


def test_an_unreachable_server_is_refused_at_start_or_replaced_by_onnxruntime_visibly(bundle):
    """A real client against a loopback port nobody listens on: the refusal is gRPC's own."""
    from appliance.dev.served import free_port

    target = TritonTarget(url=f"127.0.0.1:{free_port()}", health_timeout_s=2.0)
    with pytest.raises(TritonUnavailable, match=r"is not reachable \(server live\): \[UNAVAILABLE\]"):
        TritonBackend(bundle, target)
    backend = create_backend("triton", bundle, triton=target, fallback_to_onnxruntime=True)
    assert backend.name == "onnxruntime"
    assert backend.fallback_reason is not None and "is not reachable" in backend.fallback_reason
    with pytest.raises(TritonUnavailable):
        create_backend("triton", bundle, triton=target, fallback_to_onnxruntime=False)


def test_the_metrics_read_the_backend_stats_at_scrape_time():
    registry = CollectorRegistry()
    stats = TritonStats(up=True, requests={"ok": 5, "retried": 2, "failed": 1}, local_batches=1,
                        model="scanside_encoder", model_version="3", server_version="2.51.0")
    TritonMetrics(registry).watch(lambda: stats)
    get = registry.get_sample_value
    assert get("scanside_triton_up") == 1
    assert get("scanside_triton_requests_total", {"outcome": "retried"}) == 2
    assert get("scanside_triton_local_batches_total") == 1
    assert get("scanside_triton_model_info", {"model": "scanside_encoder", "version": "3",
                                              "server_version": "2.51.0"}) == 1
    stats.up = False
    assert get("scanside_triton_up") == 0


def test_a_backend_without_its_own_tags_tags_every_row_with_its_name(bundle):
    backend = create_backend("onnxruntime", bundle, max_batch=2, intra_op_threads=1)
    x = np.random.default_rng(0).random((3, *bundle.sample_shape), dtype=np.float32)
    out, tags = infer_tagged(backend, x)
    assert out.shape == (3, 384) and tags == (EngineTag("onnxruntime", "fp32"),) * 3


@pytest.mark.slow
def test_the_appliance_starts_on_onnxruntime_when_triton_is_unreachable(tmp_path):
    from appliance.dev.served import free_port
    from appliance.serve.client import ApplianceClient
    from appliance.service import Appliance

    # No server at that port: the real client's refusal, at start; GetModelInfo and the metrics say so.

    settings = e2e_settings(tmp_path / "data", DEFAULT_BUNDLE,
                            engine={"bundle": str(DEFAULT_BUNDLE), "backend": "triton"},
                            triton={"url": f"127.0.0.1:{free_port()}", "health_timeout_s": 1.0})
    app = Appliance(settings, registry=CollectorRegistry())
    app.start()
    try:
        with ApplianceClient(app.grpc_address) as client:
            info = client.model_info()
        assert info.backend == "onnxruntime" and "Triton at 127.0.0.1" in info.backend_note
        assert "not reachable" in info.backend_note
        assert app.registry.get_sample_value("scanside_triton_up") == 0
    finally:
        app.stop()
    with pytest.raises(TritonUnavailable):
        Appliance(settings.replace(engine={"fallback_to_onnxruntime": False}), registry=CollectorRegistry())

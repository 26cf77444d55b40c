"""`scanside triton-repo`: a Triton model repository that serves a bundle's encoder.

    <out>/<model>/config.pbtxt          ModelConfig in protobuf text format (Triton's model_config.proto)
    <out>/<model>/<version>/model.onnx  onnxruntime and python kinds: the bundle's encoder, byte for byte
    <out>/<model>/<version>/model.py    python kind: appliance/inference/triton_python_model.py
    <out>/<model>/<version>/model.plan  tensorrt kind: NOT written; built elsewhere, on the serving GPU

The configuration is built as tritonclient's own `model_config_pb2.ModelConfig` message and written with
protobuf's text format, so every field name and enum is one Triton's schema has. Input and output names, shapes
and the data type come from the bundle's manifest, checked against the ONNX graph's signature; the batch
dimension is Triton's (max_batch_size) and, for a dynamic-batch encoder, the dynamic batcher groups requests up to
it (preferred batch sizes, max queue delay). Parameters record which encoder the model serves
(`scanside_onnx_sha256`, which the Triton backend checks at start) and its precision.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from appliance.bundle import Bundle
from appliance.inference.backend import BackendError
from appliance.inference.triton_backend import PRECISION_PARAMETER, SHA256_PARAMETER

KINDS = ("onnxruntime", "tensorrt", "python")
CONFIG = "config.pbtxt"
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}


class RepoError(BackendError):
    """The repository cannot be written or does not match the bundle; the message says which field and why."""


@dataclass(frozen=True)
class RepoSpec:
    kind: str = "onnxruntime"  # Triton backend: onnxruntime | tensorrt (plan built elsewhere) | python (ORT, model.py)
    model_name: str = "scanside_encoder"
    version: int = 1
    max_batch: int = 8  # Triton's max_batch_size: the largest batch one execution takes
    preferred_batch_sizes: tuple[int, ...] = (4, 8)  # the dynamic batcher forms these where it can
    max_queue_delay_us: int = 2000  # how long a request may wait for others to fill a preferred batch
    instances: int = 1  # model instances (each runs one batch at a time)
    instance_kind: str = ""  # KIND_CPU | KIND_GPU; "": tensorrt GPU, python CPU, onnxruntime Triton's choice
    intra_op_threads: int = 0  # python kind: ONNX Runtime threads per instance (0: its default)
    extra_parameters: dict[str, str] = field(default_factory=dict)


def model_config(bundle: Bundle, spec: RepoSpec) -> Any:
    """The ModelConfig message for `bundle` (tritonclient.grpc.model_config_pb2)."""
    mc = _pb()
    _check_spec(spec, bundle)
    config = mc.ModelConfig(name=spec.model_name, backend=spec.kind)
    if spec.kind == "tensorrt":
        config.platform = "tensorrt_plan"
    fixed = bundle.batch_size
    sample = list(bundle.sample_shape)
    if fixed is None:
        config.max_batch_size = spec.max_batch
        dims, out_dims = sample, [bundle.embedding_dim]
        preferred = sorted({b for b in spec.preferred_batch_sizes if 1 <= b <= spec.max_batch})
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    else:  # a fixed-batch graph: Triton must not batch; the batch dimension is part of the shape
        config.max_batch_size = 0
        dims, out_dims = [fixed, *sample], [fixed, bundle.embedding_dim]
    config.input.add(name=bundle.input_name, data_type=mc.TYPE_FP32, dims=dims)
    config.output.add(name=bundle.output_name, data_type=mc.TYPE_FP32, dims=out_dims)
    kind = spec.instance_kind or {"tensorrt": "KIND_GPU", "python": "KIND_CPU"}.get(spec.kind, "")
    group = config.instance_group.add(count=spec.instances)
    if kind:
        group.kind = mc.ModelInstanceGroup.Kind.Value(kind)
    params = {SHA256_PARAMETER: _encoder_sha256(bundle),
              PRECISION_PARAMETER: "fp16" if spec.kind == "tensorrt" else "fp32",
              "scanside_bundle": f"{bundle.name} {bundle.version}"}
    if spec.kind == "python":
        params["intra_op_threads"] = str(spec.intra_op_threads)
    params.update(spec.extra_parameters)
    for key, value in params.items():
        config.parameters[key].string_value = value
    return config


def write_repository(bundle: Bundle, out: Path, spec: RepoSpec, force: bool = False) -> Path:
    """Write the model folder under `out` and return it. An existing model folder is replaced only with `force`."""
    from google.protobuf import text_format

    config = model_config(bundle, spec)
    model_dir = Path(out) / spec.model_name
    if model_dir.exists():
        if not force:
            raise RepoError(f"{model_dir} exists; pass --force to replace it")
        shutil.rmtree(model_dir)
    version_dir = model_dir / str(spec.version)
    version_dir.mkdir(parents=True)
    header = (f"# Written by `scanside triton-repo` for bundle {bundle.name} {bundle.version} ({spec.kind} backend).\n"
              + ("# model.plan is built on the serving GPU from this bundle's encoder.onnx (FP16, batch profile up to "
                 f"{config.max_batch_size}); see docs/triton.md.\n" if spec.kind == "tensorrt" else ""))
    (model_dir / CONFIG).write_text(header + text_format.MessageToString(config), encoding="utf-8")
    if spec.kind in ("onnxruntime", "python"):
        shutil.copyfile(bundle.encoder_path, version_dir / "model.onnx")
    if spec.kind == "python":
        shutil.copyfile(PYTHON_MODEL, version_dir / "model.py")
    check_repository(model_dir, bundle)
    return model_dir


def read_config(model_dir: Path) -> Any:
    """Parse `<model_dir>/config.pbtxt` into a ModelConfig; RepoError with protobuf's line and column if it does
    not parse."""
    from google.protobuf import text_format

    path = Path(model_dir) / CONFIG
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), _pb().ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise RepoError(f"{path}: {exc}") from exc


def check_repository(model_dir: Path, bundle: Bundle) -> list[str]:
    """Check a written model folder against the bundle and the ONNX graph's own signature; RepoError listing every
    mismatch, else the list of what was checked (for the command's summary)."""
    config = read_config(model_dir)
    problems: list[str] = []
    onnx_path = _onnx_in(model_dir, config) or bundle.encoder_path
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (g_in,), g_outs = session.get_inputs(), {o.name: o for o in session.get_outputs()}
    mc = _pb()
    batch = [config.max_batch_size] if config.max_batch_size > 0 else []
    if len(config.input) != 1 or len(config.output) != 1:
        problems.append(f"{len(config.input)} inputs and {len(config.output)} outputs, the encoder has 1 and 1")
    else:
        inp, out = config.input[0], config.output[0]
        if inp.name != g_in.name:
            problems.append(f"input name {inp.name!r}, the ONNX graph's is {g_in.name!r}")
        if out.name not in g_outs:
            problems.append(f"output name {out.name!r}, the ONNX graph has {sorted(g_outs)}")
        for tensor, graph in ((inp, g_in), (out, g_outs.get(out.name))):
            if tensor.data_type != mc.TYPE_FP32 or (graph is not None and graph.type != "tensor(float)"):
                problems.append(f"{tensor.name!r}: {mc.DataType.Name(tensor.data_type)} in the config, "
                                f"{None if graph is None else graph.type} in the graph; both must be float32")
            if graph is not None:
                problems += _shape_problems(tensor.name, [*(batch and [-1]), *tensor.dims], graph.shape)
        lead = [] if bundle.batch_size is None else [bundle.batch_size]
        if bundle.batch_size is None and not batch:
            problems.append("max_batch_size 0 for an encoder with a dynamic batch dimension")
        if list(inp.dims) != [*lead, *bundle.sample_shape]:
            problems.append(f"input dims {list(inp.dims)}, the bundle's manifest says {list(bundle.input_shape)}")
        if list(out.dims) != [*lead, bundle.embedding_dim]:
            problems.append(f"output dims {list(out.dims)}, the bundle's embedding has {bundle.embedding_dim}")
    if config.HasField("dynamic_batching"):
        pref = list(config.dynamic_batching.preferred_batch_size)
        if config.max_batch_size < 1:
            problems.append("dynamic_batching needs max_batch_size >= 1")
        if any(not 1 <= b <= config.max_batch_size for b in pref):
            problems.append(f"preferred_batch_size {pref} outside [1, max_batch_size {config.max_batch_size}]")
    claimed = config.parameters[SHA256_PARAMETER].string_value if SHA256_PARAMETER in config.parameters else ""
    if claimed != _encoder_sha256(bundle):
        problems.append(f"parameter {SHA256_PARAMETER} {claimed[:16] or '(missing)'} is not the bundle's encoder")
    if problems:
        raise RepoError(f"{model_dir / CONFIG} does not fit bundle {bundle.name} {bundle.version}: "
                        + "; ".join(problems))
    return [f"input {g_in.name} FP32 {[*(batch and [-1]), *config.input[0].dims]}",
            f"output {config.output[0].name} FP32 {[*(batch and [-1]), *config.output[0].dims]}",
            f"max_batch_size {config.max_batch_size}"
            + (f", preferred {list(config.dynamic_batching.preferred_batch_size)}, max queue delay "
               f"{config.dynamic_batching.max_queue_delay_microseconds} us" if config.HasField("dynamic_batching")
               else "")]


def _shape_problems(name: str, want: list[int], graph_shape: list[Any]) -> list[str]:
    """The config's full shape (batch -1 first where Triton batches) against the graph's (symbolic dims: any)."""
    if len(want) != len(graph_shape):
        return [f"{name!r}: rank {len(want)} in the config, {len(graph_shape)} in the graph ({graph_shape})"]
    return [f"{name!r} dim {axis}: {w} in the config, {g} in the graph"
            for axis, (w, g) in enumerate(zip(want, graph_shape, strict=True))
            if isinstance(g, int) and g > 0 and w != g]


def _onnx_in(model_dir: Path, config: Any) -> Path | None:
    found = sorted(Path(model_dir).glob("*/model.onnx"))
    return found[-1] if found and (config.backend in ("onnxruntime", "python")) else None


def _encoder_sha256(bundle: Bundle) -> str:
    return bundle.files[str(bundle.manifest["encoder"])]


def _check_spec(spec: RepoSpec, bundle: Bundle) -> None:
    problems = []
    if spec.kind not in KINDS:
        problems.append(f"backend {spec.kind!r} is not one of {', '.join(KINDS)}")
    if not spec.model_name or not all(c.isalnum() or c in "_.-" for c in spec.model_name) or \
            spec.model_name.startswith("."):
        problems.append(f"model name {spec.model_name!r}: letters, digits, '_', '.', '-'")
    if spec.version < 1:
        problems.append(f"version {spec.version} must be >= 1")
    if bundle.batch_size is None and not 1 <= spec.max_batch <= 1024:
        problems.append(f"max batch {spec.max_batch} must be in [1, 1024]")
    if spec.max_queue_delay_us < 0:
        problems.append("max queue delay must be >= 0")
    if spec.instances < 1:
        problems.append("instances must be >= 1")
    if spec.instance_kind not in ("", "KIND_CPU", "KIND_GPU"):
        problems.append(f"instance kind {spec.instance_kind!r} is not KIND_CPU or KIND_GPU")
    if problems:
        raise RepoError("; ".join(problems))


def _pb() -> Any:
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:
        raise RepoError(f"tritonclient is not installed ({exc}): pip install 'scanside[triton]'") from exc
    return model_config_pb2


def file_for(kind: str) -> str:
    return _FILES[kind]

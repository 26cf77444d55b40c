"""`scanside bench --only triton`: the encoder on a Triton Inference Server against local ONNX Runtime, in the same
run, at batch 1 and 4: per-study latency (one call's time divided by its studies, median and 95th percentile of
the calls) and throughput (studies per second over all calls), through the appliance's own backends
(TritonBackend, OnnxRuntimeBackend) as the inference worker calls them.

The server is `--triton-url` (serving the bundle as `--triton-model`), or else the local tritonserver that
nvidia-pytriton ships, started on loopback with the Python-backend model `scanside triton-repo --backend python`
writes (ONNX Runtime inside Triton's stub, on the same CPU cores). The inputs are model-shaped tensors of fixed
random values: the encoder's cost does not depend on what the pixels show.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.bundle import load_bundle
from appliance.config import DEFAULT_BUNDLE
from appliance.inference.backend import InferenceBackend
from appliance.inference.onnxruntime_backend import OnnxRuntimeBackend

BATCHES = (1, 4)


def _measure(backend: InferenceBackend, x: np.ndarray, calls: int) -> tuple[float, float, float]:
    """(median ms per study, p95 ms per study, studies per second) over `calls` calls on `x`."""
    backend.infer(x)  # one more warm call at this batch size
    times = []
    started = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        backend.infer(x)
        times.append((time.perf_counter() - t) * 1000 / len(x))
    total = time.perf_counter() - started
    return float(np.median(times)), float(np.percentile(times, 95)), calls * len(x) / total


def bench_triton(work: Path, add: Callable[[str, str, str], None], url: str | None = None,
                 model: str = "scanside_encoder", calls: int = 40) -> None:
    from appliance.inference.triton_backend import TritonBackend
    from appliance.inference.triton_options import TritonTarget

    bundle = load_bundle(DEFAULT_BUNDLE)
    server = None
    if url is None:
        from appliance.dev.tritonserver import LocalTriton, find_tritonserver, python_backend_problem
        from appliance.inference.triton_repo import RepoSpec, write_repository

        dist, why = find_tritonserver()
        why = why or (python_backend_problem(dist) if dist is not None else "")
        if dist is None or why:
            add("Triton against ONNX Runtime", "n/a", why)
            return
        write_repository(bundle, work / "triton-repo", RepoSpec(kind="python", model_name=model, max_batch=8))
        server = LocalTriton(work / "triton-repo", work / "triton", dist=dist).start()
        url, where = server.url, "local tritonserver, Python backend running ONNX Runtime"
    else:
        where = f"Triton at {url}"
    local = OnnxRuntimeBackend(bundle, max_batch=max(BATCHES))
    triton = TritonBackend(bundle, TritonTarget(url=url, model_name=model), max_batch=max(BATCHES), local=local)
    try:
        triton.warm_up()
        add(f"encoder on {where}", triton.version, "-")
        rng = np.random.default_rng(20261204)
        for batch in BATCHES:
            x = rng.random((batch, *bundle.sample_shape), dtype=np.float32)
            base = _measure(local, x, calls)
            remote = _measure(triton, x, calls)
            if not triton.stats().up or triton.stats().local_batches:
                add(f"batch {batch}: Triton", "failed", "Triton fell back to local ONNX Runtime during the run")
                continue
            add(f"batch {batch}: per study, ONNX Runtime (ms)", f"{base[0]:.2f} (p95 {base[1]:.2f})", "baseline")
            add(f"batch {batch}: per study, Triton (ms)", f"{remote[0]:.2f} (p95 {remote[1]:.2f})",
                f"{remote[0] - base[0]:+.2f} ms against ONNX Runtime")
            add(f"batch {batch}: throughput, ONNX Runtime (studies/s)", f"{base[2]:.1f}", "baseline")
            add(f"batch {batch}: throughput, Triton (studies/s)", f"{remote[2]:.1f}",
                f"{remote[2] / base[2]:.2f}x ONNX Runtime")
        y = rng.random((4, *bundle.sample_shape), dtype=np.float32)
        add("max |Triton - ONNX Runtime| on a batch of 4", f"{np.max(np.abs(triton.infer(y) - local.infer(y))):.1e}",
            "<= 1e-5")
    finally:
        triton.close()
        if server is not None:
            server.stop()

"""TensorRT backend: runs a plan that build_engine.py made on this very GPU, FP16, behind the same protocol as ONNX
Runtime.

How it runs (TensorRT's name-based I/O API, the only one since 10.0):

- The plan is chosen by `plans.select_plan` from the sidecars in the plan folder(s): same GPU model and compute
  capability, same TensorRT build, same encoder (sha256 of the bundle's ONNX), batch profile large enough, verified
  against ONNX Runtime, and the plan's bytes match the sidecar. Anything else is refused with the reasons.
- The device's primary context is retained once and pushed/popped around every CUDA call by whichever thread makes
  it (`PrimaryContext.active`); nothing binds a context to the importing thread.
- One execution context per thread that calls `infer`, each with its own CUDA stream, device buffers sized for
  the largest batch and page-locked host buffers, all made once on that thread's first call. Tensor addresses are
  bound once; each call sets the input shape, copies in, enqueues, copies out, and waits on that stream only.

TensorRT names used, checked against the 10.x Python API (10.0-10.16; JetPack 6 ships 10.3) and the 11.x one
(11.0-11.4 migration guides: none of these were removed):
`tensorrt.__version__`, `ILogger` (subclassed; `ILogger.Severity`), `Runtime(logger)`,
`Runtime.deserialize_cuda_engine(bytes)` (returns None on failure), `ICudaEngine.num_io_tensors` /
`get_tensor_name(i)` / `get_tensor_mode(name)` / `get_tensor_dtype(name)` / `get_tensor_shape(name)` /
`get_tensor_profile_shape(name, profile)` / `create_execution_context()`, `TensorIOMode.INPUT`,
`DataType.FLOAT`, `IExecutionContext.set_input_shape(name, shape)` / `set_tensor_address(name, ptr)` /
`get_tensor_shape(name)` / `execute_async_v3(stream_handle)`. All of these are the name-based API that TensorRT 8.5
introduced and 10.0 made the only one (the binding-index API was removed in 10.0). Not used because 11.x removed
them: `ICudaEngine.device_memory_size` (11.x replacement: `device_memory_size_v2`), `Builder.platform_has_fast_fp16`,
`BuilderFlag.FP16` (only build_engine.py touches it, and only where `hasattr` finds it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.bundle import Bundle
from appliance.inference.backend import BackendError, as_batch
from appliance.inference.cuda_memory import (
    CudaApi,
    CudaError,
    CudaOutOfMemory,
    DeviceBuffer,
    HostBuffer,
    PrimaryContext,
    Stream,
    open_cuda,
)
from appliance.inference.plans import GpuTarget, NoMatchingPlan, PlanChoice, Requirements, select_plan

if TYPE_CHECKING:
    from appliance.inference import BackendOptions

log = logging.getLogger(__name__)


class TensorRTUnavailable(BackendError):
    """TensorRT, a CUDA binding, the driver or a GPU is missing: the TensorRT backend cannot exist here."""


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt() -> Any:
    if not tensorrt_installed():
        raise TensorRTUnavailable(
            "TensorRT is not installed (no 'tensorrt' Python module). Use the Jetson or T4 container in deploy/, "
            "or install TensorRT's Python wheel for this CUDA version")
    try:
        import tensorrt as trt
    except Exception as exc:  # e.g. libnvinfer.so missing or built for another CUDA
        raise TensorRTUnavailable(f"TensorRT is installed but cannot be imported: {exc}") from exc
    return trt


@dataclass(frozen=True)
class TensorRTCapabilities:
    """What the installed TensorRT offers, found by looking at the API rather than parsing its version."""

    version: str
    has_fp16_flag: bool  # BuilderFlag.FP16: present in 10.x (deprecated from 10.12), removed in 11.0
    has_strongly_typed_flag: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED: added in 9.x/10.0; in 11.x
    #                               strong typing is always on and the flag is accepted but ignored
    has_optimization_level: bool  # IBuilderConfig.builder_optimization_level: added in 8.6

    @property
    def default_typing(self) -> str:
        """'weak' (FP32 ONNX + FP16 flag) where the flag exists, else 'strong' (FP16 ONNX, strongly typed)."""
        return "weak" if self.has_fp16_flag else "strong"

    @classmethod
    def of(cls, trt: Any) -> TensorRTCapabilities:
        return cls(
            version=str(trt.__version__),
            has_fp16_flag=hasattr(trt.BuilderFlag, "FP16"),
            has_strongly_typed_flag=hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
            has_optimization_level=hasattr(trt.IBuilderConfig, "builder_optimization_level"),
        )


def make_logger(trt: Any, verbose: bool = False) -> Any:
    """A TensorRT logger that forwards to Python logging and keeps the last warnings/errors for error messages."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # pybind11 base class: must be initialised explicitly
            self.messages: deque[tuple[int, str]] = deque(maxlen=200)
            self.verbose = verbose

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4
            if level <= 2:
                self.messages.append((level, msg))
            if level <= 1:
                log.error("TensorRT: %s", msg)
            elif level == 2:
                log.warning("TensorRT: %s", msg)
            elif level == 3 and self.verbose:
                log.info("TensorRT: %s", msg)
            elif self.verbose:
                log.debug("TensorRT: %s", msg)

        def errors(self) -> list[str]:
            return [m for level, m in self.messages if level <= 1]

        def last(self, n: int = 5) -> str:
            picked = [m for _, m in list(self.messages)[-n:]]
            return " | ".join(picked) if picked else "(TensorRT logged nothing)"

    return _Logger()


def current_target(cuda: CudaApi, trt: Any, device: int = 0) -> GpuTarget:
    info = cuda.device_info(device)
    return GpuTarget(info.name, info.compute_capability, str(trt.__version__))


def find_plan(bundle: Bundle, plan_dirs: Sequence[Path] | None = None, min_max_batch: int = 1,
              device: int = 0) -> tuple[PlanChoice, GpuTarget]:
    """The plan this machine would load for `bundle`; TensorRTUnavailable or NoMatchingPlan (a BackendError) if
    none. Imports TensorRT and touches the driver, but allocates nothing on the GPU."""
    trt = import_tensorrt()
    try:
        cuda = open_cuda()
        target = current_target(cuda, trt, device)
    except CudaError as exc:
        raise TensorRTUnavailable(f"no usable GPU for TensorRT: {exc}") from exc
    dirs = list(plan_dirs) if plan_dirs else [bundle.root]
    try:
        choice = select_plan(dirs, target, Requirements.for_bundle(bundle, min_max_batch), bundle.encoder_path.stem)
    except NoMatchingPlan as exc:
        raise PlanNotFound(str(exc)) from exc
    return choice, target


class PlanNotFound(BackendError):
    """No plan fits (see the message for every rejected file and why); build one with build_engine.py."""


@dataclass
class _ThreadState:
    context: Any
    stream: Stream
    d_in: DeviceBuffer
    d_out: DeviceBuffer
    h_in: HostBuffer
    h_out: HostBuffer
    last_batch: int = 0


class TensorRTBackend:
    name = "tensorrt"
    fallback_reason: str | None = None

    def __init__(self, bundle: Bundle, plan_dirs: Sequence[Path] | None = None, max_batch: int | None = None,
                 min_max_batch: int = 1, device: int = 0, plan: PlanChoice | None = None,
                 logger: Any | None = None) -> None:
        """Load the plan that fits this GPU (or `plan`, already chosen, e.g. by build_engine.py's verification).

        max_batch: largest batch one call runs (buffers are sized for it); default and ceiling: the plan's profile.
        min_max_batch: refuse plans whose profile accepts fewer (engine.trt_max_batch).
        logger: a TensorRT logger already in use in this process (build_engine.py's builder): TensorRT keeps one
        logger per process and warns when a second one arrives.
        """
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise BackendError(f"max_batch must be a positive integer, got {max_batch!r}")
        trt = import_tensorrt()
        self._trt = trt
        self.version = str(trt.__version__)
        try:
            self._cuda = open_cuda()
            self.target = current_target(self._cuda, trt, device)
        except CudaError as exc:
            raise TensorRTUnavailable(f"no usable GPU for TensorRT: {exc}") from exc
        if plan is None:
            dirs = list(plan_dirs) if plan_dirs else [bundle.root]
            try:
                plan = select_plan(dirs, self.target, Requirements.for_bundle(bundle, min_max_batch),
                                   bundle.encoder_path.stem)
            except NoMatchingPlan as exc:
                raise PlanNotFound(str(exc)) from exc
        self.plan = plan
        info = plan.info
        self.precision = info.precision
        self._bundle = bundle
        self._input = bundle.input_name
        self._output = bundle.output_name
        self._sample_shape = tuple(bundle.sample_shape)
        self._dim = bundle.embedding_dim
        self._logger = logger if logger is not None else make_logger(trt)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._states: list[_ThreadState] = []
        self._closed = False

        try:
            self._ctx: PrimaryContext | None = self._cuda.retain_primary_context(device)
        except CudaError as exc:
            raise TensorRTUnavailable(f"cannot use GPU {device}: {exc}") from exc
        try:
            plan_bytes = plan.plan_path.read_bytes()
            if hashlib.sha256(plan_bytes).hexdigest() != info.plan_sha256:  # changed since it was selected
                raise PlanNotFound(f"{plan.plan_path.name} does not match its sidecar's sha256: corrupted or replaced")
            with self._ctx.active():
                self._runtime = trt.Runtime(self._logger)
                engine = self._runtime.deserialize_cuda_engine(plan_bytes)
                if engine is None:
                    raise BackendError(
                        f"TensorRT {self.version} could not deserialize {plan.plan_path.name} (built with TensorRT "
                        f"{info.tensorrt_version} on {info.gpu_name}; this is {self.target.describe()}): "
                        f"{self._logger.last()}. Rebuild it with build_engine.py on this machine")
                self._engine = engine
                profile_max = self._check_engine(engine)
        except BaseException:
            self._release_context()
            raise
        self.max_batch = min(profile_max, max_batch) if max_batch else profile_max
        self.engine_info = {
            "plan": plan.plan_path.name,
            "tensorrt_version": self.version,
            "gpu": self.target.gpu_name,
            "compute_capability": self.target.cc_text,
            "precision": info.precision,
            "typing": info.typing,
            "profile_max_batch": str(profile_max),
            "built_at": info.built_at,
            "onnx_sha256": info.onnx_sha256[:16],
            "cuda_binding": self._cuda.binding,
        }
        log.info("TensorRT %s: loaded %s (%s, %s typing, batch <= %d) on %s", self.version, plan.plan_path.name,
                 info.precision, info.typing, self.max_batch, self.target.describe())

    # --- checks -------------------------------------------------------------------------------------------------

    def _check_engine(self, engine: Any) -> int:
        trt = self._trt
        where = f"plan {self.plan.plan_path.name}"
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [self._input] or outputs != [self._output]:
            raise BackendError(f"{where}: engine I/O is {inputs} -> {outputs}, the bundle says "
                               f"[{self._input!r}] -> [{self._output!r}]")
        for n in names:
            if engine.get_tensor_dtype(n) != trt.DataType.FLOAT:
                raise BackendError(f"{where}: tensor {n!r} is {engine.get_tensor_dtype(n)}, expected FLOAT (the plan's "
                                   "I/O must stay float32 whatever precision it computes in)")
        shape = tuple(engine.get_tensor_shape(self._input))
        if len(shape) != 1 + len(self._sample_shape) or shape[1:] != self._sample_shape:
            raise BackendError(f"{where}: input shape {list(shape)}, the bundle needs [N, "
                               f"{', '.join(map(str, self._sample_shape))}]")
        _, _, max_shape = engine.get_tensor_profile_shape(self._input, 0)
        profile_max = int(next(iter(max_shape)))
        if profile_max < 1:
            raise BackendError(f"{where}: profile max batch is {profile_max}")
        return profile_max

    # --- per-thread state ---------------------------------------------------------------------------------------

    def _state(self) -> _ThreadState:
        st = getattr(self._local, "state", None)
        if st is not None:
            return st
        b = self.max_batch
        parts: list[Any] = []
        try:
            context = self._engine.create_execution_context()
            if context is None:
                raise BackendError(f"TensorRT could not create an execution context: {self._logger.last()}")
            stream = self._cuda.create_stream()
            parts.append(stream)
            h_in = self._cuda.alloc_host((b, *self._sample_shape), np.float32)
            parts.append(h_in)
            h_out = self._cuda.alloc_host((b, self._dim), np.float32)
            parts.append(h_out)
            d_in = self._cuda.alloc_device(h_in.array.nbytes)
            parts.append(d_in)
            d_out = self._cuda.alloc_device(h_out.array.nbytes)
            parts.append(d_out)
        except CudaOutOfMemory as exc:
            self._free(parts)
            raise BackendError(f"out of memory allocating buffers for batch {b} "
                               f"({self._mib((b, *self._sample_shape))} MiB in, page-locked and on the GPU): {exc}; "
                               "lower engine.max_batch") from exc
        except CudaError as exc:
            self._free(parts)
            raise BackendError(f"CUDA failed while preparing inference: {exc}") from exc
        if not (context.set_tensor_address(self._input, d_in.ptr) and
                context.set_tensor_address(self._output, d_out.ptr)):
            self._free(parts)
            raise BackendError(f"TensorRT refused the tensor addresses: {self._logger.last()}")
        st = _ThreadState(context, stream, d_in, d_out, h_in, h_out)
        with self._lock:
            self._states.append(st)
        self._local.state = st
        return st

    @staticmethod
    def _mib(shape: tuple[int, ...]) -> int:
        return int(np.prod(shape)) * 4 // (1 << 20)

    @staticmethod
    def _free(parts: list[Any]) -> None:
        for p in reversed(parts):
            try:
                p.destroy() if isinstance(p, Stream) else p.free()
            except CudaError as exc:
                log.warning("freeing a CUDA resource failed: %s", exc)

    # --- the protocol -------------------------------------------------------------------------------------------

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise BackendError("backend is closed")
        x = as_batch(batch, self._sample_shape)
        n = x.shape[0]
        if n == 0:
            return np.empty((0, self._dim), dtype=np.float32)
        assert self._ctx is not None
        with self._ctx.active():
            st = self._state()
            parts = [self._run(st, x[i: i + self.max_batch]) for i in range(0, n, self.max_batch)]
        out = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _run(self, st: _ThreadState, chunk: np.ndarray) -> np.ndarray:
        m = chunk.shape[0]
        try:
            host_in = st.h_in.array[:m]
            np.copyto(host_in, chunk)
            self._cuda.copy_to_device_async(st.d_in, host_in, st.stream)
            if m != st.last_batch:
                if not st.context.set_input_shape(self._input, (m, *self._sample_shape)):
                    raise BackendError(f"TensorRT refused input shape ({m}, ...): {self._logger.last()}")
                got = tuple(st.context.get_tensor_shape(self._output))
                if got != (m, self._dim):
                    raise BackendError(f"engine output shape is {list(got)}, expected [{m}, {self._dim}]")
                st.last_batch = m
            if not st.context.execute_async_v3(st.stream.handle):
                st.last_batch = 0
                raise BackendError(f"TensorRT failed on a batch of {m}: {self._logger.last()}")
            host_out = st.h_out.array[:m]
            self._cuda.copy_to_host_async(host_out, st.d_out, st.stream)
            st.stream.synchronize()
            return host_out.copy()
        except CudaError as exc:
            raise BackendError(f"CUDA failed on a batch of {m}: {exc}") from exc

    def warm_up(self) -> None:
        """Batch 1 and the largest batch, so the first study pays for neither the context nor the kernels' setup."""
        for n in sorted({1, self.max_batch}):
            self.infer(np.zeros((n, *self._sample_shape), dtype=np.float32))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ctx is None:
            return
        with self._ctx.active():
            with self._lock:
                states, self._states = self._states, []
            for st in states:
                try:
                    st.stream.synchronize()
                except CudaError as exc:
                    log.warning("waiting for the CUDA stream at close failed: %s", exc)
                st.context = None
                self._free([st.stream, st.h_in, st.h_out, st.d_in, st.d_out])
            self._engine = None
            self._runtime = None
        self._release_context()

    def _release_context(self) -> None:
        if self._ctx is not None:
            try:
                self._ctx.release()
            except CudaError as exc:
                log.warning("releasing the CUDA primary context failed: %s", exc)
            self._ctx = None

    def __repr__(self) -> str:
        return (f"TensorRTBackend(bundle={self._bundle.name!r}, plan={self.plan.plan_path.name!r}, "
                f"max_batch={self.max_batch})")


__all__ = [
    "PlanNotFound",
    "TensorRTBackend",
    "TensorRTCapabilities",
    "TensorRTUnavailable",
    "current_target",
    "find_plan",
    "import_tensorrt",
    "make_logger",
    "tensorrt_installed",
]


def available() -> bool:
    return tensorrt_installed()


def create(bundle: Bundle, options: BackendOptions) -> TensorRTBackend:
    return TensorRTBackend(bundle, plan_dirs=options.plan_dirs, max_batch=options.max_batch,
                           min_max_batch=options.min_max_batch, device=options.device)

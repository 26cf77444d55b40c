"""The few CUDA things the TensorRT backend needs, behind one small interface, from pycuda or from cuda-python.

Needed: the device's name and compute capability, its *primary* context (retained, then pushed and popped by
whichever thread runs inference; never `pycuda.autoinit`, which creates a private context bound to the importing
thread), device buffers, page-locked host buffers, one stream, and asynchronous copies on it.

Two implementations, chosen by `open_cuda()`:

- pycuda (`pycuda.driver`), when installed. Names used and where they come from: `init`, `Device(i)`,
  `Device.count`, `Device.name`, `Device.compute_capability`, `Device.total_memory`,
  `Device.retain_primary_context` (pycuda 2017.1+; returns a `Context`), `Context.push`, `Context.pop` (static),
  `Context.detach` (releases the retained primary context), `mem_alloc` (-> `DeviceAllocation`, `int()` is the
  pointer, `.free()`), `pagelocked_empty` (numpy array whose `.base` is the `HostAllocation`, `.base.free()`),
  `Stream` (`.handle`, `.synchronize()`), `memcpy_htod_async`, `memcpy_dtoh_async`, `mem_get_info`,
  exceptions `pycuda.driver.Error` / `pycuda.driver.MemoryError`.
- NVIDIA's cuda-python, driver API (`from cuda.bindings import driver`, the module path since cuda-python 12.6;
  before that `from cuda import cuda`). Every call returns a tuple whose first item is a `CUresult`: `cuInit`,
  `cuDeviceGetCount`, `cuDeviceGet`, `cuDeviceGetName(len, dev)`, `cuDeviceGetAttribute(
  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR/MINOR, dev)`, `cuDeviceTotalMem`, `cuDevicePrimaryCtxRetain`,
  `cuDevicePrimaryCtxRelease`, `cuCtxPushCurrent`, `cuCtxPopCurrent`, `cuMemAlloc`, `cuMemFree`,
  `cuMemHostAlloc(bytes, flags)`, `cuMemFreeHost`, `cuStreamCreate`, `cuStreamSynchronize`, `cuStreamDestroy`,
  `cuMemcpyHtoDAsync`, `cuMemcpyDtoHAsync`, `cuMemGetInfo`, `cuGetErrorName`.

The driver API is used on both sides on purpose: TensorRT itself runs on the CUDA runtime, which uses the device's
primary context, so retaining and pushing the primary context keeps everyone on the same context.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call."""


class CudaUnavailable(CudaError):
    """No CUDA binding is installed, the driver is missing, or there is no GPU."""


class CudaOutOfMemory(CudaError):
    """A device or page-locked host allocation failed for lack of memory."""


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int  # bytes


class DeviceBuffer:
    """Device memory: `ptr` is the address TensorRT gets through set_tensor_address."""

    def __init__(self, ptr: int, nbytes: int, free: Callable[[], None]) -> None:
        self.ptr = int(ptr)
        self.nbytes = int(nbytes)
        self._free: Callable[[], None] | None = free

    def free(self) -> None:
        if self._free is not None:
            free, self._free = self._free, None
            free()


class HostBuffer:
    """Page-locked host memory viewed as a numpy array (`array`); async copies need page-locked memory."""

    def __init__(self, array: np.ndarray, free: Callable[[], None]) -> None:
        self.array = array
        self._free: Callable[[], None] | None = free

    @property
    def ptr(self) -> int:
        return int(self.array.ctypes.data)

    def free(self) -> None:
        if self._free is not None:
            free, self._free = self._free, None
            self.array = np.empty(0, dtype=self.array.dtype)  # drop the view before the memory goes
            free()


class Stream:
    def __init__(self, handle: int, synchronize: Callable[[], None], destroy: Callable[[], None],
                 native: Any = None) -> None:
        self.handle = int(handle)  # what execute_async_v3(stream_handle) takes
        self.native = native  # the binding's own stream object (the copies take it)
        self._synchronize = synchronize
        self._destroy: Callable[[], None] | None = destroy

    def synchronize(self) -> None:
        self._synchronize()

    def destroy(self) -> None:
        if self._destroy is not None:
            destroy, self._destroy = self._destroy, None
            destroy()


class CudaApi:
    """What the backend calls. One instance per process is enough; every method is safe from any thread once the
    primary context is pushed in that thread (see `PrimaryContext.active`)."""

    binding = "?"

    def device_count(self) -> int:
        raise NotImplementedError

    def device_info(self, index: int = 0) -> DeviceInfo:
        raise NotImplementedError

    def retain_primary_context(self, index: int = 0) -> PrimaryContext:
        raise NotImplementedError

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        raise NotImplementedError

    def alloc_host(self, shape: tuple[int, ...], dtype: Any) -> HostBuffer:
        raise NotImplementedError

    def create_stream(self) -> Stream:
        raise NotImplementedError

    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        raise NotImplementedError

    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        raise NotImplementedError

    def mem_get_info(self) -> tuple[int, int]:
        """(free, total) bytes on the device of the current context."""
        raise NotImplementedError


class PrimaryContext:
    """A retained primary context. `with ctx.active():` pushes it on the calling thread and pops it after."""

    def __init__(self, push: Callable[[], None], pop: Callable[[], None], release: Callable[[], None]) -> None:
        self._push, self._pop = push, pop
        self._release: Callable[[], None] | None = release
        self._depth = threading.local()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        if self._release is None:
            raise CudaError("the CUDA context was already released")
        depth = getattr(self._depth, "n", 0)
        if depth == 0:  # nested use on one thread pushes once
            self._push()
        self._depth.n = depth + 1
        try:
            yield
        finally:
            self._depth.n -= 1
            if self._depth.n == 0:
                self._pop()

    def release(self) -> None:
        if self._release is not None:
            release, self._release = self._release, None
            release()


def _check_nbytes(nbytes: int) -> int:
    n = int(nbytes)
    if n <= 0:
        raise CudaError(f"allocation size must be positive, got {nbytes}")
    return n


# --- pycuda ---------------------------------------------------------------------------------------------------------


class _PyCuda(CudaApi):
    binding = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda  # never pycuda.autoinit: it makes its own context on the importing thread

        self._cuda = cuda
        try:
            cuda.init()
        except cuda.Error as exc:
            raise CudaUnavailable(f"CUDA driver could not be initialised (pycuda): {exc}") from exc

    def _wrap(self, what: str, exc: Exception) -> CudaError:
        if isinstance(exc, self._cuda.MemoryError) or "out of memory" in str(exc).lower():
            return CudaOutOfMemory(f"{what}: {exc}")
        return CudaError(f"{what}: {exc}")

    def device_count(self) -> int:
        return int(self._cuda.Device.count())

    def device_info(self, index: int = 0) -> DeviceInfo:
        try:
            dev = self._cuda.Device(index)
            major, minor = dev.compute_capability()
            return DeviceInfo(index, str(dev.name()), (int(major), int(minor)), int(dev.total_memory()))
        except self._cuda.Error as exc:
            raise self._wrap(f"querying CUDA device {index}", exc) from exc

    def retain_primary_context(self, index: int = 0) -> PrimaryContext:
        cuda = self._cuda
        try:
            ctx = cuda.Device(index).retain_primary_context()
        except cuda.Error as exc:
            raise self._wrap(f"retaining the primary context of device {index}", exc) from exc
        return PrimaryContext(push=ctx.push, pop=cuda.Context.pop, release=ctx.detach)

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        n = _check_nbytes(nbytes)
        try:
            alloc = self._cuda.mem_alloc(n)
        except self._cuda.Error as exc:
            raise self._wrap(f"allocating {n} bytes of GPU memory", exc) from exc
        return DeviceBuffer(int(alloc), n, alloc.free)

    def alloc_host(self, shape: tuple[int, ...], dtype: Any) -> HostBuffer:
        try:
            array = self._cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))
        except self._cuda.Error as exc:
            raise self._wrap(f"allocating page-locked host memory {shape}", exc) from exc
        return HostBuffer(array, array.base.free)

    def create_stream(self) -> Stream:
        s = self._cuda.Stream()
        return Stream(s.handle, s.synchronize, lambda: None, native=s)  # pycuda frees the stream with the object

    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        if src.nbytes > dst.nbytes:
            raise CudaError(f"copy of {src.nbytes} bytes into a {dst.nbytes}-byte device buffer")
        self._cuda.memcpy_htod_async(dst.ptr, src, stream.native)

    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        if dst.nbytes > src.nbytes:
            raise CudaError(f"copy of {dst.nbytes} bytes out of a {src.nbytes}-byte device buffer")
        self._cuda.memcpy_dtoh_async(dst, src.ptr, stream.native)

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._cuda.mem_get_info()
        return int(free), int(total)


# --- cuda-python (cuda.bindings.driver) -----------------------------------------------------------------------------


class _CudaPython(CudaApi):
    binding = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import driver  # cuda-python >= 12.6
        except ImportError:
            from cuda import cuda as driver  # older cuda-python; this path is gone in cuda-python 13

        self._drv = driver
        try:
            self._call("cuInit", driver.cuInit(0))
        except CudaError as exc:
            raise CudaUnavailable(f"CUDA driver could not be initialised (cuda-python): {exc}") from exc

    def _name(self, err: Any) -> str:
        res = self._drv.cuGetErrorName(err)
        if res[0] == self._drv.CUresult.CUDA_SUCCESS and res[1]:
            return res[1].decode() if isinstance(res[1], bytes) else str(res[1])
        return str(err)

    def _call(self, what: str, result: Any) -> Any:
        # cuda-python returns (CUresult, *outputs) from every driver call, also when there are no outputs
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._drv.CUresult.CUDA_SUCCESS:
            name = self._name(err)
            cls = CudaOutOfMemory if "OUT_OF_MEMORY" in name else CudaError
            raise cls(f"{what}: {name}")
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

    def device_count(self) -> int:
        return int(self._call("cuDeviceGetCount", self._drv.cuDeviceGetCount()))

    def device_info(self, index: int = 0) -> DeviceInfo:
        drv = self._drv
        dev = self._call(f"cuDeviceGet({index})", drv.cuDeviceGet(index))
        raw = self._call("cuDeviceGetName", drv.cuDeviceGetName(256, dev))
        name = raw.split(b"\0", 1)[0].decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        attr = drv.CUdevice_attribute
        major = self._call("cuDeviceGetAttribute", drv.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev))
        minor = self._call("cuDeviceGetAttribute", drv.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev))
        total = self._call("cuDeviceTotalMem", drv.cuDeviceTotalMem(dev))
        return DeviceInfo(index, name, (int(major), int(minor)), int(total))

    def retain_primary_context(self, index: int = 0) -> PrimaryContext:
        drv = self._drv
        dev = self._call(f"cuDeviceGet({index})", drv.cuDeviceGet(index))
        ctx = self._call("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain(dev))
        return PrimaryContext(
            push=lambda: self._call("cuCtxPushCurrent", drv.cuCtxPushCurrent(ctx)),
            pop=lambda: self._call("cuCtxPopCurrent", drv.cuCtxPopCurrent()),
            release=lambda: self._call("cuDevicePrimaryCtxRelease", drv.cuDevicePrimaryCtxRelease(dev)),
        )

    def alloc_device(self, nbytes: int) -> DeviceBuffer:
        n = _check_nbytes(nbytes)
        ptr = self._call(f"cuMemAlloc({n} bytes)", self._drv.cuMemAlloc(n))
        return DeviceBuffer(int(ptr), n, lambda: self._call("cuMemFree", self._drv.cuMemFree(ptr)))

    def alloc_host(self, shape: tuple[int, ...], dtype: Any) -> HostBuffer:
        dt = np.dtype(dtype)
        n = _check_nbytes(int(np.prod(shape)) * dt.itemsize)
        ptr = int(self._call(f"cuMemHostAlloc({n} bytes)", self._drv.cuMemHostAlloc(n, 0)))
        raw = (ctypes.c_byte * n).from_address(ptr)
        array = np.frombuffer(memoryview(raw), dtype=dt).reshape(shape)
        return HostBuffer(array, lambda: self._call("cuMemFreeHost", self._drv.cuMemFreeHost(ptr)))

    def create_stream(self) -> Stream:
        drv = self._drv
        stream = self._call("cuStreamCreate", drv.cuStreamCreate(0))
        return Stream(int(stream), lambda: self._call("cuStreamSynchronize", drv.cuStreamSynchronize(stream)),
                      lambda: self._call("cuStreamDestroy", drv.cuStreamDestroy(stream)), native=stream)

    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        if src.nbytes > dst.nbytes:
            raise CudaError(f"copy of {src.nbytes} bytes into a {dst.nbytes}-byte device buffer")
        self._call("cuMemcpyHtoDAsync", self._drv.cuMemcpyHtoDAsync(dst.ptr, int(src.ctypes.data), src.nbytes,
                                                                     stream.native))

    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        if dst.nbytes > src.nbytes:
            raise CudaError(f"copy of {dst.nbytes} bytes out of a {src.nbytes}-byte device buffer")
        self._call("cuMemcpyDtoHAsync", self._drv.cuMemcpyDtoHAsync(int(dst.ctypes.data), src.ptr, dst.nbytes,
                                                                     stream.native))

    def mem_get_info(self) -> tuple[int, int]:
        free, total = self._call("cuMemGetInfo", self._drv.cuMemGetInfo())
        return int(free), int(total)


# --- choosing -------------------------------------------------------------------------------------------------------

BINDINGS = ("auto", "pycuda", "cuda-python")
_lock = threading.Lock()
_opened: dict[str, CudaApi] = {}


def installed_bindings() -> list[str]:
    """Which CUDA bindings are importable here, without importing them (no driver needed)."""
    found = []
    if importlib.util.find_spec("pycuda") is not None:
        found.append("pycuda")
    try:
        if importlib.util.find_spec("cuda.bindings") is not None or importlib.util.find_spec("cuda.cuda") is not None:
            found.append("cuda-python")
    except (ImportError, ValueError):  # 'cuda' is not a package here
        pass
    return found


def open_cuda(prefer: str = "auto") -> CudaApi:
    """The CUDA interface (pycuda if installed, else cuda-python); CudaUnavailable says what is missing."""
    if prefer not in BINDINGS:
        raise CudaError(f"unknown CUDA binding {prefer!r}; choose one of {', '.join(BINDINGS)}")
    found = installed_bindings()
    order = [b for b in ("pycuda", "cuda-python") if prefer in ("auto", b)]
    candidates = [b for b in order if b in found]
    if not candidates:
        wanted = "pycuda or cuda-python" if prefer == "auto" else prefer
        raise CudaUnavailable(f"no CUDA Python binding: install {wanted} (pip install pycuda, or "
                              "pip install 'cuda-python>=12.6'); neither is importable here")
    errors = []
    with _lock:
        for name in candidates:
            if name in _opened:
                return _opened[name]
            try:
                api: CudaApi = _PyCuda() if name == "pycuda" else _CudaPython()
            except CudaError as exc:
                errors.append(str(exc))
                continue
            except (ImportError, OSError) as exc:  # e.g. libcuda.so missing: binding installed, driver not
                errors.append(f"{name}: {exc}")
                continue
            if api.device_count() < 1:
                errors.append(f"{name}: the CUDA driver reports no GPU")
                continue
            _opened[name] = api
            return api
    raise CudaUnavailable("CUDA is not usable here: " + "; ".join(errors))


__all__ = [
    "BINDINGS",
    "CudaApi",
    "CudaError",
    "CudaOutOfMemory",
    "CudaUnavailable",
    "DeviceBuffer",
    "DeviceInfo",
    "HostBuffer",
    "PrimaryContext",
    "Stream",
    "installed_bindings",
    "open_cuda",
]

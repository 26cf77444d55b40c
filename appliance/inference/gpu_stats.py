"""GPU memory, utilisation and temperature for the metrics endpoint: NVML on T4-class GPUs, tegrastats or
jetson-stats on a Jetson, where NVML is not available.

    sampler = open_sampler()            # None (with the reason logged) where none of the three works
    sample = sampler.sample()           # GpuSample or None if nothing recent
    sampler.close()

NVML (the `pynvml` module of the nvidia-ml-py package): `nvmlInit`, `nvmlDeviceGetHandleByIndex`,
`nvmlDeviceGetName`, `nvmlDeviceGetMemoryInfo` (.used/.total bytes), `nvmlDeviceGetUtilizationRates` (.gpu %),
`nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU)`, `nvmlShutdown`, `NVMLError`.

tegrastats (L4T's own tool, /usr/bin/tegrastats) prints one line per interval, e.g. on an Orin with JetPack 6:

    RAM 3120/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [12%@1510,8%@1510,...] GR3D_FREQ 37%
    cpu@49.25C soc2@47.8C soc0@48.1C gpu@50.312C tj@51C soc1@47.9C VDD_IN 7211mW/6890mW ...

`GR3D_FREQ` is the GPU's load in percent (older releases append `@<MHz>` or `@[<MHz>,...]`), `gpu@` its
temperature (boards without a gpu sensor report `tj@`, the junction maximum, which is used instead), and on a
Jetson the GPU has no memory of its own: it shares `RAM`, so memory is reported as shared RAM (`memory_shared`).

jetson-stats (`from jtop import jtop`) is the fallback where tegrastats is not in the container but the host's
jtop service socket is mounted; its `stats` keys differ between releases, so they are looked up loosely.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    source: str  # "nvml" | "tegrastats" | "jtop"
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    utilization: float | None = None  # 0..1
    temperature_c: float | None = None
    memory_shared: bool = False  # True on a Jetson: the figures are the RAM that CPU and GPU share
    at: float = 0.0  # time.monotonic() when taken


class GpuSampler:
    source = "?"
    memory_shared = False

    def sample(self) -> GpuSample | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


# --- tegrastats ---------------------------------------------------------------------------------------------------

_RAM = re.compile(r"\bRAM (\d+)/(\d+)([KMG])B\b")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+(?:\.\d+)?)%")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_UNIT = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_tegrastats_line(line: str, at: float = 0.0) -> GpuSample | None:
    """One tegrastats line -> GpuSample; None if the line carries none of RAM, GR3D_FREQ or a temperature."""
    used = total = util = temp = None
    m = _RAM.search(line)
    if m:
        unit = _UNIT[m.group(3)]
        used, total = float(m.group(1)) * unit, float(m.group(2)) * unit
    m = _GR3D.search(line)
    if m:
        util = float(m.group(1)) / 100.0
    temps = {name.lower(): float(value) for name, value in _TEMP.findall(line)}
    # Temperatures of -256C (or below) are how tegrastats marks an absent/disabled sensor.
    temps = {k: v for k, v in temps.items() if v > -200.0}
    temp = temps.get("gpu", temps.get("tj"))
    if used is None and util is None and temp is None:
        return None
    return GpuSample("tegrastats", used, total, util, temp, memory_shared=True, at=at)


class TegrastatsSampler(GpuSampler):
    """Runs `tegrastats --interval <ms>` and keeps the latest parsed line; stops the process on close()."""

    source = "tegrastats"
    memory_shared = True

    def __init__(self, command: str = "tegrastats", interval_ms: int = 1000) -> None:
        path = shutil.which(command)
        if path is None:
            raise FileNotFoundError(f"{command} is not on PATH (on a Jetson it is /usr/bin/tegrastats; in a container "
                                    "mount it from the host)")
        self.interval_s = max(interval_ms, 100) / 1000.0
        self._latest: GpuSample | None = None
        self._lock = threading.Lock()
        self._proc = subprocess.Popen([path, "--interval", str(int(interval_ms))], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, name="scanside-tegrastats", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_tegrastats_line(line, at=time.monotonic())
            if sample is not None:
                with self._lock:
                    self._latest = sample

    def sample(self) -> GpuSample | None:
        with self._lock:
            s = self._latest
        if s is None or time.monotonic() - s.at > 5 * self.interval_s + 2.0:
            return None  # stale: tegrastats stopped or hangs; better no value than an old one
        return s

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=2.0)


# --- NVML ---------------------------------------------------------------------------------------------------------


class NvmlSampler(GpuSampler):
    source = "nvml"

    def __init__(self, index: int = 0) -> None:
        import pynvml  # nvidia-ml-py

        self._nvml = pynvml
        pynvml.nvmlInit()  # raises NVMLError (e.g. NVMLError_LibraryNotFound on a Jetson or a CPU host)
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        except pynvml.NVMLError:
            pynvml.nvmlShutdown()
            raise
        self._open = True
        if self.sample() is None:
            # NVML can start on a Jetson and then answer nothing; fail here so the next source is tried.
            self.close()
            raise RuntimeError("NVML started but reports no memory or utilisation for this GPU")

    def sample(self) -> GpuSample | None:
        if not self._open:
            return None
        nv = self._nvml
        used = total = util = temp = None
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(self._handle)
            used, total = float(mem.used), float(mem.total)
        except nv.NVMLError as exc:
            log.debug("NVML memory: %s", exc)
        try:
            util = float(nv.nvmlDeviceGetUtilizationRates(self._handle).gpu) / 100.0
        except nv.NVMLError as exc:
            log.debug("NVML utilisation: %s", exc)
        try:
            temp = float(nv.nvmlDeviceGetTemperature(self._handle, nv.NVML_TEMPERATURE_GPU))
        except nv.NVMLError as exc:
            log.debug("NVML temperature: %s", exc)
        if used is None and util is None and temp is None:
            return None
        return GpuSample("nvml", used, total, util, temp, memory_shared=False, at=time.monotonic())

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass


# --- jetson-stats -------------------------------------------------------------------------------------------------


def _loose(stats: dict, *patterns: str) -> float | None:
    for key, value in stats.items():
        k = str(key).lower()
        if any(re.fullmatch(p, k) for p in patterns):
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
    return None


class JtopSampler(GpuSampler):
    """jetson-stats' client; needs the host's jtop service (socket /run/jtop.sock mounted into the container)."""

    source = "jtop"
    memory_shared = True

    def __init__(self) -> None:
        from jtop import jtop  # jetson-stats

        self._jetson: Any = jtop()
        self._jetson.start()

    def sample(self) -> GpuSample | None:
        j = self._jetson
        if not j.ok():
            return None
        stats = dict(j.stats)
        util = _loose(stats, r"gpu")
        temp = _loose(stats, r"temp gpu", r"gpu temp", r"temp tj")
        used = total = None
        try:  # jetson-stats 4.x: memory['RAM'] = {'used': kB, 'tot': kB, ...}
            ram = j.memory["RAM"]
            used, total = float(ram["used"]) * 1024, float(ram["tot"]) * 1024
        except (AttributeError, KeyError, TypeError, ValueError):
            pass
        if util is None and temp is None and used is None:
            return None
        return GpuSample("jtop", used, total, util / 100.0 if util is not None else None, temp, memory_shared=True,
                         at=time.monotonic())

    def close(self) -> None:
        try:
            self._jetson.close()
        except Exception as exc:  # jtop raises its own exception types
            log.debug("closing jtop: %s", exc)


# --- choosing -----------------------------------------------------------------------------------------------------

SOURCES = ("auto", "nvml", "tegrastats", "jtop", "off")


def open_sampler(prefer: str = "auto", device: int = 0, interval_ms: int = 1000) -> GpuSampler | None:
    """NVML, else tegrastats, else jetson-stats (or just `prefer`); None, with the reasons logged, if none works."""
    if prefer not in SOURCES:
        raise ValueError(f"unknown GPU stats source {prefer!r}; choose one of {', '.join(SOURCES)}")
    if prefer == "off":
        return None
    order = ("nvml", "tegrastats", "jtop") if prefer == "auto" else (prefer,)
    reasons = []
    for source in order:
        try:
            if source == "nvml":
                return NvmlSampler(device)
            if source == "tegrastats":
                return TegrastatsSampler(interval_ms=interval_ms)
            return JtopSampler()
        except Exception as exc:  # ImportError, NVMLError, FileNotFoundError, jtop's errors: all mean "not here"
            reasons.append(f"{source}: {type(exc).__name__}: {exc}")
    log.info("no GPU statistics: %s", "; ".join(reasons))
    return None


__all__ = [
    "SOURCES",
    "GpuSample",
    "GpuSampler",
    "JtopSampler",
    "NvmlSampler",
    "TegrastatsSampler",
    "open_sampler",
    "parse_tegrastats_line",
]

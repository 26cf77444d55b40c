"""A real `tritonserver` on loopback, for the tests and `scanside bench --only triton`.

Where the binary comes from, in order: SCANSIDE_TRITONSERVER (a tritonserver binary; its backends in
<its folder>/../backends, as in NVIDIA's container under /opt/tritonserver), else the one nvidia-pytriton's wheel
ships (pytriton/tritonserver/bin, with the Python backend and its stubs, and its libraries in nvidia_pytriton.libs).
Only the binary and the Python backend are used: PyTriton's own Python code is never imported (it wants NumPy < 2).

The Python backend runs each model in a stub process with its own embedded Python. The wheel's stub for this
Python's minor version is copied into a private backends folder, and the stub is made to run *this* interpreter
with *this* virtual environment: its libpython first on LD_LIBRARY_PATH (otherwise the system's libpython of the
same minor version loads, here Debian's 3.11.2, and reads this Python's 3.11.7 standard library: threading.py then
asks `_thread.RLock` for `_recursion_count`, which 3.11.2's C code lacks, PyTriton's RLock error) and this
environment's bin first on PATH (the stub takes `python3` from PATH as its executable, so Python finds the venv's
pyvenv.cfg and its site-packages: numpy, onnxruntime). The stub ignores PYTHONPATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.dev.served import free_port

ENV_BINARY = "SCANSIDE_TRITONSERVER"


@dataclass(frozen=True)
class TritonDist:
    binary: Path
    backends: Path  # holds python/libtriton_python.so and triton_python_backend_utils.py
    libs: Path | None  # shared libraries the binary needs (the wheel's nvidia_pytriton.libs)
    stubs: Path | None  # python_backend_stubs/<major.minor>/triton_python_backend_stub (the wheel's)

    def stub(self) -> Path | None:
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        if self.stubs is not None and (self.stubs / version / "triton_python_backend_stub").is_file():
            return self.stubs / version / "triton_python_backend_stub"
        own = self.backends / "python" / "triton_python_backend_stub"
        return own if own.is_file() else None


def find_tritonserver() -> tuple[TritonDist | None, str]:
    """(the distribution, "") or (None, why there is none here)."""
    configured = os.environ.get(ENV_BINARY)
    if configured:
        binary = Path(configured)
        if not binary.is_file():
            return None, f"{ENV_BINARY}={configured} is not a file"
        return TritonDist(binary, binary.parent.parent / "backends", None, None), ""
    spec = importlib.util.find_spec("pytriton")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None, (f"no tritonserver: install nvidia-pytriton's wheel without its dependencies (pip install "
                      f"--no-deps nvidia-pytriton==0.7.0), or set {ENV_BINARY} to a tritonserver binary")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        return None, f"pytriton at {root.parent} has no tritonserver binary ({binary})"
    return TritonDist(binary, root / "backends", root.parent.parent / "nvidia_pytriton.libs",
                      root / "python_backend_stubs"), ""


def python_backend_problem(dist: TritonDist) -> str:
    """Why this interpreter cannot host Python-backend models, or ""."""
    if not (dist.backends / "python" / "libtriton_python.so").is_file():
        return f"no Python backend in {dist.backends}"
    if dist.stub() is None:
        return f"no Python backend stub for Python {sys.version_info.major}.{sys.version_info.minor}"
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return ("this Python is not built with a shared libpython, so the stub would run another Python's "
                "library against this one's standard library")
    return ""


class LocalTriton:
    """tritonserver on 127.0.0.1 with gRPC only (no HTTP, no metrics port), serving `repository`."""

    def __init__(self, repository: Path, work: Path, dist: TritonDist | None = None, grpc_port: int = 0,
                 tls: tuple[Path, Path, Path | None] | None = None, extra_args: tuple[str, ...] = ()) -> None:
        """tls: (server certificate, key, client CA or None); with a client CA, clients must present one."""
        found, why = (dist, "") if dist is not None else find_tritonserver()
        if found is None:
            raise RuntimeError(why)
        self.dist = found
        self.repository = Path(repository)
        self.work = Path(work)
        self.port = grpc_port or free_port()
        self.tls = tls
        self.extra_args = extra_args
        self.log_path = self.work / "tritonserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _backends(self) -> Path:
        """A private backends folder: the wheel's Python backend with this Python's stub beside it."""
        folder = self.work / "backends" / "python"
        if folder.is_dir():
            return folder.parent
        folder.mkdir(parents=True)
        for item in (self.dist.backends / "python").iterdir():
            if item.is_file() and item.name != "triton_python_backend_stub":
                shutil.copy2(item, folder / item.name)
        stub = self.dist.stub()
        if stub is not None:
            shutil.copy2(stub, folder / "triton_python_backend_stub")
        return folder.parent

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        libs = [str(sysconfig.get_config_var("LIBDIR") or "")] if sysconfig.get_config_var("Py_ENABLE_SHARED") else []
        if self.dist.libs is not None:
            libs.append(str(self.dist.libs))
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.pop("PYTHONHOME", None)
        return env

    def command(self) -> list[str]:
        cmd = [str(self.dist.binary), f"--model-repository={self.repository}",
               f"--backend-directory={self._backends()}", "--allow-http=false", "--allow-metrics=false",
               "--allow-grpc=true", "--grpc-address=127.0.0.1", f"--grpc-port={self.port}",
               # a prefix of its own, so two servers (or a leftover one) never share a shared-memory region
               f"--backend-config=python,shm-region-prefix-name=scanside{os.getpid()}p{self.port}",
               "--backend-config=python,shm-default-byte-size=16777216", "--exit-timeout-secs=5", "--log-verbose=0"]
        if self.tls is not None:
            cert, key, client_ca = self.tls
            cmd += ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}"]
            if client_ca is not None:
                cmd += [f"--grpc-root-cert={client_ca}", "--grpc-use-ssl-mutual=true"]
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 120.0) -> LocalTriton:
        """Start it and wait until its gRPC endpoint says ready; RuntimeError with the log's tail if it exits."""
        self.work.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self._env(),
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}")
            if "Started GRPCInferenceService" in self.log_path.read_text(errors="replace"):
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"tritonserver did not start in {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers, as a hung host."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalTriton:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

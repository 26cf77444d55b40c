"""`scanside serve` as a child process on its own data folder: for benchmarks and crash tests, which must measure
or kill the appliance the way an operator's host would, not a thread inside the caller."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from appliance.serve.client import ApplianceClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class ServedAppliance:
    def __init__(self, root: Path, **sections: dict[str, Any]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.incoming = self.root / "incoming"
        self.data = self.root / "data"
        config: dict[str, dict[str, Any]] = {
            "paths": {"data_dir": self.data, "watch_dir": self.incoming},
            "grpc": {"port": self.port},
            "metrics": {"enabled": False},
            "logging": {"level": "WARNING"},
        }
        for name, values in sections.items():
            config.setdefault(name, {}).update(values)
        self.config = self.root / "scanside.toml"
        self.config.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
                                       for name, values in config.items()))
        self._proc: subprocess.Popen | None = None
        self._client: ApplianceClient | None = None

    @property
    def proc(self) -> subprocess.Popen:
        if self._proc is None:
            raise RuntimeError("not started")
        return self._proc

    @property
    def client(self) -> ApplianceClient:
        if self._client is None:
            raise RuntimeError("not started")
        return self._client

    def start(self, timeout_s: float = 120.0) -> ServedAppliance:
        self.log = open(self.root / "serve.log", "ab")  # noqa: SIM115 - held by the child process until stop()
        self._proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--config", str(self.config)],
                                      stdout=self.log, stderr=subprocess.STDOUT)
        self._client = ApplianceClient(f"127.0.0.1:{self.port}")
        try:
            self.client.wait_until_serving(timeout_s=timeout_s)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"scanside serve did not become ready; see {self.root / 'serve.log'}") from None
        return self

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown code runs, as with a power-cycled host or the OOM killer."""
        self.client.close()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmHWM in /proc status")

    def stop(self) -> int:
        if self._client is not None:
            self._client.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(30)
        self.log.close()
        return self.proc.returncode

    def __enter__(self) -> ServedAppliance:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

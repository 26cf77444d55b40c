"""A real Orthanc server on loopback ports for tests: the PACS that the appliance sends its results to.

Runs the Debian `orthanc` binary (/usr/sbin/Orthanc) on a configuration written into a temporary folder, so nothing
on the machine (/etc/orthanc, a running service, its storage) is read or touched. Talks to it over its REST API with
urllib only.

Refusing unknown calling AE titles (`accept_unknown_aets=False`), as observed with Orthanc 1.10.1, pynetdicom 3.0
and dcmtk 3.6:

* Config: "DicomAlwaysAllowEcho": false and "DicomAlwaysAllowStore": false (the other DicomAlwaysAllow* keys are
  false by default), "DicomCheckCalledAet": true, "DicomCheckModalityHost": false, and the known AEs listed in
  "DicomModalities".
* An unknown calling AE is REJECTED AT ASSOCIATION time; no C-STORE is ever sent, so there is no failure status to
  read. Orthanc logs `Rejected association for remote AET X`. pynetdicom sees `assoc.is_established == False`,
  `assoc.is_rejected == True`, and the A-ASSOCIATE-RJ (`assoc.acceptor.primitive`) has result 0x01
  (rejected-permanent), result_source 0x01 (DICOM UL service-user), diagnostic 0x03 (calling-AE-title-not-
  recognised). echoscu/storescu exit 1 with "Association Rejected: Result: Rejected Permanent, Source: Service User,
  Reason: Calling AE Title Not Recognized". This holds only because EVERY DicomAlwaysAllow* key is false: Orthanc
  admits the association if any of them lets an unknown AE in.
* A called AE title other than `aet` is rejected the same way (DicomCheckCalledAet) but with diagnostic 0x07
  (called-AE-title-not-recognised).
* A known AE ("DicomModalities", matched by AE title only and case-insensitively) associates, echoes and stores as
  usual from any host: the host and port in `known_aets` are only where Orthanc itself would call that AE.
* Not used here, but worth knowing: with "DicomAlwaysAllowEcho": true and "DicomAlwaysAllowStore": false, an unknown
  AE's association IS accepted (the storage contexts too) and its C-STORE request is answered with an A-ABORT
  (source DUL service-user, no reason), not with a status: pynetdicom's `send_c_store` returns an empty Dataset.

With `accept_unknown_aets=True` (the default) any calling AE may C-ECHO and C-STORE, whatever called AE it asks for.

Orthanc 1.10 has no option to bind the DICOM or HTTP port to one address: both listen on every interface. With
"RemoteAccessAllowed": false the REST API refuses any client that is not on loopback; the DICOM port cannot be
limited this way, which is harmless on a test machine because the ports are random.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

LOOPBACK = "127.0.0.1"


def orthanc_binary() -> str | None:
    """The Orthanc executable, or None. Debian installs it in /usr/sbin, which is not on a normal user's PATH."""
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    """A free loopback TCP port, as the kernel hands one out for port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class OrthancError(RuntimeError):
    pass


class OrthancPeer:
    """One Orthanc process with its storage and index under `workdir`; `start()` again after `stop()` keeps both."""

    def __init__(self, workdir: Path, aet: str = "ORTHANC", dicom_port: int | None = None,
                 http_port: int | None = None, known_aets: dict[str, tuple[str, int]] | None = None,
                 accept_unknown_aets: bool = True, extra_config: dict[str, Any] | None = None,
                 binary: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.aet = aet
        # Picked once, here, so that a restart comes back on the same ports: the sender under test keeps its address.
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        while self.http_port == self.dicom_port:  # two free-port picks can coincide; Orthanc would fail to bind
            self.http_port = free_port()
        self.known_aets = dict(known_aets or {})
        self.accept_unknown_aets = accept_unknown_aets
        self.extra_config = dict(extra_config or {})
        self.binary = binary or orthanc_binary() or "/usr/sbin/Orthanc"
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config(self) -> dict[str, Any]:
        refuse = not self.accept_unknown_aets
        return {
            "Name": f"test-{self.aet}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "TemporaryDirectory": str(self.workdir / "tmp"),
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "RegisteredUsers": {},
            "SslEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomTlsEnabled": False,
            "DicomCheckCalledAet": refuse,
            "DicomAlwaysAllowEcho": not refuse,
            "DicomAlwaysAllowStore": not refuse,
            "DicomCheckModalityHost": False,
            "DicomModalitiesInDatabase": False,
            "DicomModalities": {aet: [aet, host, port] for aet, (host, port) in self.known_aets.items()},
            "OrthancPeers": {},
            "DicomThreadsCount": 2,
            "HttpThreadsCount": 4,
            # Tests ask for "stable" series; the default of 60 s would make them wait.
            "StableAge": 1,
            # A restarted peer must not replay jobs of the previous run, and fsync only slows tests down.
            "SaveJobs": False,
            "SyncStorageArea": False,
            "StorageCompression": False,
            "OverwriteInstances": False,
            "MetricsEnabled": False,
            "ExecuteLuaEnabled": False,
        } | self.extra_config

    def start(self, timeout: float = 30.0) -> OrthancPeer:
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("storage", "index", "tmp"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        # Append: the log of a run before a restart stays readable when a test fails after it.
        with open(self.log_path, "ab") as log:
            # DCMTK (Orthanc's DICOM layer) turns Nagle's algorithm off when TCP_NODELAY is set; with it on, each
            # small PDU waits for a delayed ACK and a C-STORE costs tens of milliseconds on loopback.
            self._process = subprocess.Popen([self.binary, str(self.config_path)], stdout=log,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.workdir,
                                             env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.monotonic() + timeout
        while not (self._rest_answers() and self._dicom_accepts()):
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise OrthancError(f"Orthanc exited with {code} while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise OrthancError(f"Orthanc not ready after {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # SIGTERM: Orthanc closes its SQLite index cleanly, so a restart finds it intact
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crashed PACS does. Committed instances survive: SQLite's journal and the
        page cache keep them, so `start()` finds them again; a clean `stop()` takes about 3 s because Orthanc's HTTP
        and DICOM servers poll for their stop flag once a second."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> OrthancPeer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _rest_answers(self) -> bool:
        try:
            self.get_json("/system", timeout=1.0)
            return True
        except (OSError, OrthancError):  # URLError is an OSError: refused while Orthanc is still starting
            return False

    def _dicom_accepts(self) -> bool:
        try:
            with socket.create_connection((LOOPBACK, self.dicom_port), timeout=1.0):
                return True
        except OSError:
            return False

    # REST API

    def request(self, path: str, method: str = "GET", data: bytes | None = None, timeout: float = 10.0) -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            raise OrthancError(f"{method} {path}: HTTP {error.code} {error.read()[:500]!r}") from error

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        return json.loads(self.request(path, timeout=timeout))

    def system(self) -> dict[str, Any]:
        return self.get_json("/system")

    def instances(self) -> list[str]:
        return self.get_json("/instances")

    def series(self) -> list[str]:
        return self.get_json("/series")

    def studies(self) -> list[str]:
        return self.get_json("/studies")

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        return self.get_json(f"/instances/{instance_id}/simplified-tags")

    def instance_file(self, instance_id: str) -> bytes:
        return self.request(f"/instances/{instance_id}/file")

    def sop_instance_uids(self) -> set[str]:
        return {self.instance_tags(i)["SOPInstanceUID"] for i in self.instances()}

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

DICOMweb (`dicomweb=True`): the Debian plugin orthanc-dicomweb (1.7 beside Orthanc 1.10.1) serves QIDO-RS, WADO-RS
and STOW-RS under `dicomweb_url` (/dicom-web). Its STOW-RS, as read in its source and seen here: one FailedSOPSequence
item per refused instance (Failure Reason 0xC000 for a part that lacks a mandatory UID, 0x0110 otherwise) beside a
ReferencedSOPSequence of those it stored, in the same answer; HTTP 400 when any part could not be parsed or lacked a
UID, 409 when a /studies/{uid} request carried another study, else 200 even when some instances failed (the 202 of
PS3.18 came in plugin 1.10); the instances it could store are stored whatever the status.

Access to the HTTP side, for DICOMweb as for the REST API this class itself uses:
* `http_users={"user": "password"}`: Orthanc's HTTP basic authentication ("AuthenticationEnabled"); a wrong or
  missing password is answered 401 with a WWW-Authenticate challenge.
* `http_bearer_token="..."`: a Lua IncomingHttpRequestFilter admits only requests whose Authorization header is
  `Bearer <token>` (Orthanc 1.10 itself knows no bearer tokens); any other is answered 403.
* `https=(key, cert)`: DICOMweb over HTTPS with that key and certificate, served by a TLS terminator in front of
  Orthanc (tests/tls_front.py: Orthanc's own HTTPS dies on Debian 12, see there); `dicomweb_url` is then its
  https:// address, and this class's own REST calls still go straight to Orthanc's loopback HTTP port.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from tls_front import TlsFront

LOOPBACK = "127.0.0.1"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian package orthanc-dicomweb


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
                 binary: str | None = None, dicomweb: bool = False, http_users: dict[str, str] | None = None,
                 http_bearer_token: str | None = None, https: tuple[Path, Path] | None = None) -> None:
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
        if http_users and http_bearer_token:
            raise ValueError("http_users and http_bearer_token exclude each other (one Authorization header)")
        self.dicomweb = dicomweb
        self.http_users = dict(http_users or {})
        self.http_bearer_token = http_bearer_token
        self.https = https
        self.https_port = free_port() if https else 0  # the TLS front's, kept across restarts like the others
        self._front: TlsFront | None = None
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb service's base URL (the plugin's "Root"), over HTTPS where asked: STOW-RS posts to
        {this}/studies."""
        if self.https:
            return f"https://{LOOPBACK}:{self.https_port}/dicom-web"
        return f"{self.url}/dicom-web"

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
        } | self._http_access_config() | self.extra_config

    def _http_access_config(self) -> dict[str, Any]:
        """The optional parts: the DICOMweb plugin, HTTP authentication, HTTPS (nothing when none is asked for)."""
        out: dict[str, Any] = {}
        if self.dicomweb:
            out["Plugins"] = [str(DICOMWEB_PLUGIN)]
            out["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": bool(self.https)}
        if self.http_users:
            out["AuthenticationEnabled"] = True
            out["RegisteredUsers"] = dict(self.http_users)
        if self.http_bearer_token:
            out["LuaScripts"] = [str(self.workdir / "bearer.lua")]
        return out

    def _write_http_access_files(self) -> None:
        if self.http_bearer_token:
            # Orthanc hands the filter the request's headers with lower-case names.
            (self.workdir / "bearer.lua").write_text(
                "function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)\n"
                f"  return httpHeaders['authorization'] == {json.dumps('Bearer ' + self.http_bearer_token)}\n"
                "end\n")

    def start(self, timeout: float = 30.0) -> OrthancPeer:
        if self.running:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("storage", "index", "tmp"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self._write_http_access_files()
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
        if self.https and self._front is None:
            key, cert = self.https
            self._front = TlsFront(key, cert, target_port=self.http_port, port=self.https_port).start()
        return self

    def _stop_front(self) -> None:
        front, self._front = self._front, None
        if front is not None:
            front.stop()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_front()
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
        self._stop_front()
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are still accepted by the kernel, nothing is answered, as
        with a hung server. `resume()` lets it go on with what it was sent meanwhile."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

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

    def http_headers(self) -> dict[str, str]:
        """The Authorization header this peer admits (for its own calls and a test's), if it asks for one."""
        if self.http_bearer_token:
            return {"Authorization": f"Bearer {self.http_bearer_token}"}
        if self.http_users:
            user, password = next(iter(self.http_users.items()))
            return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
        return {}

    def request(self, path: str, method: str = "GET", data: bytes | None = None, timeout: float = 10.0) -> bytes:
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self.http_headers())
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

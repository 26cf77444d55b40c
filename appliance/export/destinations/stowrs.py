"""The "dicomweb" destination: SR documents over DICOMweb STOW-RS (PS3.18 10.5), the whole batch in one POST of
`multipart/related; type="application/dicom"` to <export.dicomweb_url>/studies, through dicomweb-client (the
DICOMweb client maintained beside highdicom) on a requests session that this module sets up:

* HTTPS is always verified against export.dicomweb_ca (certificate chain and host name), never against whatever the
  environment names: the session ignores REQUESTS_CA_BUNDLE, proxies and ~/.netrc, and follows no redirect.
* Credentials: a bearer token (export.dicomweb_token_file) or HTTP basic (dicomweb_username, dicomweb_password_file),
  read from their files at every try, so a rotated token or password needs no restart.
* Connect and read timeouts; the client's own retries are off: the outbox retries, with its back-off and bounds.

The answer is read per instance (appliance.export.stow_response): stored, stored with a warning, refused for now or
refused for good. A connection that fails, times out or is refused at the TLS handshake fails the batch for this
try. A read timeout may come after the server stored the SRs; the next try sends the same SOP instances, which a
server stores once. `abort()` (shutdown) refuses further sends; a POST in flight runs to its read timeout and, if cut
short by the exit, is simply made again at the next start.
"""

from __future__ import annotations

import io
import logging
import ssl
import threading
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
import requests
from requests.auth import AuthBase, HTTPBasicAuth

from appliance.config import Settings
from appliance.export import stow_response
from appliance.export.destinations import SendOutcome, register
from appliance.handovers import StoredReport
from appliance.logsafe import describe

if TYPE_CHECKING:
    from dicomweb_client import DICOMwebClient

log = logging.getLogger(__name__)

MEDIA_TYPE = 'multipart/related; type="application/dicom"'  # what dicomweb-client sends (with its boundary)
ACCEPT = "application/dicom+json"  # the answer asked for; an XML one is read by dicomweb-client when it is a 2xx


@dataclass(frozen=True, slots=True)
class StowPeer:
    url: str  # the service's base URL, without a trailing slash
    ca: Path | None = None
    token_file: Path | None = None
    username: str = ""
    password_file: Path | None = None
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0

    @property
    def store_url(self) -> str:
        return f"{self.url}/studies"


@register("dicomweb", hint="export.dicomweb_url")
def from_settings(settings: Settings) -> StowSender | None:
    e = settings.export
    if not e.dicomweb_url:
        return None
    return StowSender(StowPeer(e.dicomweb_url.rstrip("/"), ca=e.dicomweb_ca, token_file=e.dicomweb_token_file,
                               username=e.dicomweb_username, password_file=e.dicomweb_password_file,
                               connect_timeout_s=e.dicomweb_connect_timeout_s,
                               read_timeout_s=e.dicomweb_read_timeout_s))


class CredentialError(OSError):
    """A credentials file that cannot be read or is empty; the message names the setting."""


class FileCredentials(AuthBase):
    """The Authorization header of each request, from the configured file as it is now."""

    def __init__(self, peer: StowPeer) -> None:
        self.peer = peer

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        peer = self.peer
        if peer.token_file is not None:
            request.headers["Authorization"] = f"Bearer {_secret(peer.token_file, 'export.dicomweb_token_file')}"
        elif peer.username:
            assert peer.password_file is not None  # config rule: they go together
            password = _secret(peer.password_file, "export.dicomweb_password_file")
            return HTTPBasicAuth(peer.username, password)(request)
        return request


def _secret(path: Path, setting: str) -> str:
    """The file's first line, stripped: a token or password file often ends with a newline."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CredentialError(f"{setting} {path} cannot be read ({why})") from None
    lines = text.strip().splitlines()
    if not lines or not lines[0].strip():
        raise CredentialError(f"{setting} {path} is empty")
    return lines[0].strip()


class StowSender:
    """A Destination (appliance.export.destinations)."""

    kind = "dicomweb"

    def __init__(self, peer: StowPeer) -> None:
        self.peer = peer
        self._lock = threading.Lock()
        self._stopping = False
        self._client: DICOMwebClient | None = None
        self._status: int | None = None  # of the last answer (dicomweb-client returns a 2xx answer's body only)

    def check(self) -> None:
        """Start-up: the CA loads, the credential files can be read and the client takes the URL. The server is
        not called: one that is down at start is a matter for the queue, not a reason not to start."""
        peer = self.peer
        if peer.ca is not None:
            try:
                ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(peer.ca))
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise ValueError(f"export.dicomweb_ca {peer.ca} cannot be loaded as PEM CA certificates "
                                 f"({type(exc).__name__})") from None
        if peer.token_file is not None:
            _secret(peer.token_file, "export.dicomweb_token_file")
        if peer.password_file is not None:
            _secret(peer.password_file, "export.dicomweb_password_file")
        if urllib.parse.urlsplit(peer.url).netloc.startswith("["):
            # dicomweb-client's URL pattern misreads a bracketed address (and would send it as a broken Host header)
            raise ValueError(f"export.dicomweb_url {peer.url!r}: IPv6 address literals are not supported by the "
                             "DICOMweb client; use a host name")
        try:
            self._web()
        except ValueError as exc:
            raise ValueError(f"export.dicomweb_url {peer.url!r} is not taken by the DICOMweb client: {exc}") from None

    def deliver(self, reports: Sequence[StoredReport]) -> list[SendOutcome]:
        if not reports:
            return []
        with self._lock:
            if self._stopping:
                return [SendOutcome(False, "appliance stopping", tried=False)] * len(reports)
        try:
            return stow_response.outcomes([r.sop_instance_uid for r in reports], self._post(reports))
        except CredentialError as exc:
            return [SendOutcome(False, f"not sent: {exc}")] * len(reports)
        except requests.RequestException as exc:
            return [SendOutcome(False, self._transport_failure(exc))] * len(reports)
        except Exception as exc:  # a library's surprise is a failed try, not a dead exporter; type only
            return [SendOutcome(False, f"not sent: {describe(exc)}")] * len(reports)

    def abort(self) -> None:
        with self._lock:
            self._stopping = True

    def _web(self) -> DICOMwebClient:
        if self._client is None:
            from dicomweb_client import DICOMwebClient  # numpy, Pillow: loaded only where DICOMweb is configured

            # dicomweb-client logs each request's URL and headers at DEBUG; ours carry no UID (POST to /studies),
            # but what a later version logs is not ours to vouch for.
            net = logging.getLogger("dicomweb_client")
            net.setLevel(max(net.getEffectiveLevel(), logging.INFO))
            session = requests.Session()
            session.trust_env = False  # the configured CA, no proxy, no ~/.netrc: the configuration says it all
            session.verify = str(self.peer.ca) if self.peer.ca is not None else True
            session.max_redirects = 0  # a redirect is an answer to read, not to follow with credentials
            session.auth = FileCredentials(self.peer)
            session.headers["Accept"] = ACCEPT
            session.hooks["response"].append(self._remember_status)
            client = DICOMwebClient(self.peer.url, session=session,
                                    timeout=(self.peer.connect_timeout_s, self.peer.read_timeout_s))
            client.set_http_retry_params(retry=False)  # the outbox retries, with its back-off and bounds
            self._client = client
        return self._client

    def _remember_status(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._status = response.status_code

    def _post(self, reports: Sequence[StoredReport]) -> stow_response.StowAnswer:
        client = self._web()
        datasets = [pydicom.dcmread(io.BytesIO(report.document)) for report in reports]
        self._status = None
        try:
            body = client.store_instances(datasets)  # no study UID: POST to /studies, any study per part
        except requests.HTTPError as exc:
            response: Any = exc.response
            if response is None:
                raise
            return stow_response.StowAnswer(response.status_code, stow_response.read_body(
                response.content or b"", response.headers.get("Content-Type", "")))
        # dicomweb-client has read a 2xx answer but does not say which: 202 (some refused) is told by the hook.
        return stow_response.StowAnswer(self._status or 200, body if len(body) else None)

    def _transport_failure(self, exc: requests.RequestException) -> str:
        peer = self.peer
        if isinstance(exc, requests.exceptions.SSLError):
            reason = _tls_reason(exc)
            if "mismatch" in reason:  # OpenSSL: "Hostname mismatch, certificate is not valid for ..."
                return f"TLS refused: the server's certificate does not name the host in export.dicomweb_url ({reason})"
            if reason.startswith("certificate verify failed"):
                return f"TLS refused: the server's certificate is not trusted by export.dicomweb_ca ({reason})"
            return ("TLS handshake failed" + (f" ({reason})" if reason else "") + ": is export.dicomweb_url an "
                    "HTTPS service, and is its certificate signed by export.dicomweb_ca?")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return f"no connection within export.dicomweb_connect_timeout_s ({peer.connect_timeout_s:g} s)"
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return (f"no answer within export.dicomweb_read_timeout_s ({peer.read_timeout_s:g} s); the server may "
                    "have stored them, and stores the same instances once when they are sent again")
        if isinstance(exc, requests.exceptions.TooManyRedirects):
            return "the server redirects; set export.dicomweb_url to the address it names"
        if isinstance(exc, requests.exceptions.ConnectionError):
            return "no connection: the DICOMweb server did not answer (connection refused, reset or unreachable)"
        return f"not sent: {describe(exc)}"


def _tls_reason(exc: BaseException) -> str:
    """OpenSSL's reason (e.g. 'certificate verify failed: unable to get local issuer certificate'): about the
    certificate, never about the data."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {current.verify_message}"
        if isinstance(current, ssl.SSLError) and current.reason:
            return str(current.reason).lower().replace("_", " ")
        if isinstance(current, BaseException):
            todo.extend([current.__cause__, current.__context__,
                         *(a for a in current.args if isinstance(a, BaseException))])
            reason = getattr(current, "reason", None)  # urllib3's MaxRetryError keeps the cause here
            if isinstance(reason, BaseException):
                todo.append(reason)
    return ""

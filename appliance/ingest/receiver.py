"""The DICOM receiver: a C-STORE SCP (pynetdicom) in front of the watch folder.

Each received instance is written as its encoded Part 10 file under a temporary name in a hidden folder of the
watch folder, then renamed into place, so it enters the appliance exactly as a file from a scanner's export does:
one pipeline, not two. C-ECHO is answered. Statuses mean something: out of resources (0xA700) when the file cannot
be written, refused (0x0122) for an SOP class the appliance does not take; associations from calling AE titles that
are not allowed are rejected during negotiation.
"""

from __future__ import annotations

import logging
import os
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from ..logsafe import describe
from ..metrics import Metrics

log = logging.getLogger(__name__)

# Images the pipeline can use (MR and Enhanced MR); anything else is refused at the DIMSE level with 0x0122.
TAKEN_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"})
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_SOP_CLASS_REFUSED = 0x0122
RECEIVED_DIR = "received"
TEMP_DIR = ".receiver-tmp"  # a hidden folder: the watcher leaves files there to their writer


@dataclass(frozen=True)
class ReceiverSettings:
    ae_title: str
    host: str
    port: int
    allowed_calling_aets: tuple[str, ...] = ()  # empty: any calling AE
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # when set, callers must present a certificate signed by it


class DicomReceiver:
    def __init__(self, settings: ReceiverSettings, watch_dir: Path, metrics: Metrics) -> None:
        self.settings = settings
        self.target = Path(watch_dir) / RECEIVED_DIR
        self.tmp = Path(watch_dir) / TEMP_DIR
        self.metrics = metrics
        self._server = None

    def start(self) -> None:
        self.target.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.settings.ae_title)
        # Every storage SOP class may be proposed, so that one the appliance does not take gets a clear DIMSE
        # refusal rather than an opaque "no presentation context" on the sender's side.
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        if self.settings.allowed_calling_aets:
            ae.require_calling_aet = list(self.settings.allowed_calling_aets)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted),
                    (evt.EVT_REJECTED, self._on_rejected)]
        self._server = ae.start_server((self.settings.host, self.settings.port), block=False,
                                       evt_handlers=handlers, ssl_context=self._ssl_context())
        log.info("DICOM receiver %s listening on %s:%d%s", self.settings.ae_title, self.settings.host, self.port,
                 " (TLS)" if self.settings.tls_cert else "")

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self.settings.port

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if s.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certfile=str(s.tls_cert), keyfile=str(s.tls_key) if s.tls_key else None)
        if s.tls_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(s.tls_ca))
        return ctx

    def _on_accepted(self, event: evt.Event) -> None:
        self.metrics.dicom_associations.inc()

    def _on_rejected(self, event: evt.Event) -> None:
        self.metrics.dicom_rejections.labels(reason="association").inc()

    def _on_store(self, event: evt.Event) -> int:
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class not in TAKEN_SOP_CLASSES:
            self.metrics.dicom_rejections.labels(reason="sop_class").inc()
            return STATUS_SOP_CLASS_REFUSED
        try:
            data = event.encoded_dataset(include_meta=True)  # the bytes as sent, no decode/re-encode
            name = f"{uuid.uuid4().hex}.dcm"
            tmp = self.tmp / name
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, self.target / name)
        except OSError as exc:
            log.error("could not spool a received instance: %s", describe(exc))
            self.metrics.dicom_rejections.labels(reason="out_of_resources").inc()
            return STATUS_OUT_OF_RESOURCES
        self.metrics.dicom_instances.inc()
        self.metrics.dicom_bytes.inc(len(data))
        return STATUS_SUCCESS

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

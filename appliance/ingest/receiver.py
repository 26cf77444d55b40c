"""The DICOM receiver: a C-STORE SCP (pynetdicom) in front of the watch folder.

Each received instance is written as its encoded Part 10 file under a temporary name in a hidden folder of the
watch folder, synced, checked with the same reader (and the same size bound) the watch folder uses, then renamed
into place and the folder synced, so it enters the appliance exactly as a file from a scanner's export does: one
pipeline, not two. Only then is it answered Success: whatever the sender was told is stored survives a crash.

Statuses mean something (PS3.4 B.2.3): out of resources (0xA700) when the file cannot be written; 0xA900 when the
dataset does not match its SOP class (not MR, or another SOP class than the request's); 0xC000 ("cannot
understand") when it cannot be parsed or is larger than allowed, with the reason in the Error Comment; 0x0122
for an SOP class the appliance does not take. A refused instance is kept in quarantine/<reason>/ like a bad file
from the watch folder. Admission and network bounds are in `dicom_guard`.

With storage commitment on (`ReceiverSettings.commitment`), each instance answered Success is first put on record
in the store, synced, and each refused one with the reason; the receiver's Storage Commitment SCP
(`commitment_scp`) answers senders' requests from that record. With `accept_reports` it also takes the results a
PACS sends, on an association it opens, for the SRs this appliance asked it to commit.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.sop_class import Verification

from appliance import identify
from appliance.commitment import (
    CLASS_INSTANCE_CONFLICT,
    PROCESSING_FAILURE,
    RESOURCE_LIMITATION,
    SOP_CLASS_NOT_SUPPORTED,
    SOP_CLASS_UID,
    answer_report,
)
from appliance.fileio import PRIVATE_FILE_MODE, private_folder, sync_folder
from appliance.ingest.commitment_scp import CommitmentScp, CommitmentScpSettings
from appliance.ingest.dicom_guard import GuardedServer, GuardLimits
from appliance.ingest.quarantine import Quarantine
from appliance.ingest.reader import DEFAULT_MAX_INSTANCE_BYTES, IncompleteFile, RejectedFile, read_instance
from appliance.ingest.transfer_syntaxes import LOSSY, accepted, keyword, names
from appliance.logsafe import describe
from appliance.metrics import Metrics
from appliance.store import Store

log = logging.getLogger(__name__)

# Images the pipeline can use (MR, Enhanced MR, Legacy Converted Enhanced MR); anything else is refused at the
# DIMSE level with 0x0122.
TAKEN_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1",
                               "1.2.840.10008.5.1.4.1.1.4.4"})
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
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
    limits: GuardLimits = field(default_factory=GuardLimits)
    max_instance_bytes: int = DEFAULT_MAX_INSTANCE_BYTES
    commitment: CommitmentScpSettings | None = None  # Storage Commitment SCP for senders; None: not offered
    # Take PACS' storage commitment results for this appliance's SRs on associations PACS opens (export
    # pacs_commitment): matched to the waiting request by Transaction UID in the store.
    accept_reports: bool = False


class DicomReceiver:
    def __init__(self, settings: ReceiverSettings, watch_dir: Path, metrics: Metrics,
                 quarantine: Quarantine | None = None, store: Store | None = None) -> None:
        """`store`: where what was received is recorded for storage commitment (needed with
        `settings.commitment`)."""
        self.settings = settings
        self.target = Path(watch_dir) / RECEIVED_DIR
        self.tmp = Path(watch_dir) / TEMP_DIR
        self.metrics = metrics
        self.quarantine = quarantine
        self._received = store.received if store is not None and settings.commitment is not None else None
        self.commitment = (CommitmentScp(settings.commitment, store.received, store.commitment_reports, metrics)
                           if store is not None and settings.commitment is not None else None)
        self._requests = store.commitment_requests if store is not None and settings.accept_reports else None
        self._server: GuardedServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        private_folder(self.target)
        private_folder(self.tmp)
        for left in self.tmp.iterdir():  # never answered Success (a crash mid-write): the sender sends it again
            left.unlink(missing_ok=True)
        s = self.settings
        ae = identify(AE(ae_title=s.ae_title))
        # Every storage SOP class may be proposed, so that one the appliance does not take gets a clear DIMSE
        # refusal rather than an opaque "no presentation context" on the sender's side.
        # Each with every transfer syntax this host decodes, in the order of preference (transfer_syntaxes).
        syntaxes = accepted()
        ae.supported_contexts = [build_context(cx.abstract_syntax, list(syntaxes))
                                 for cx in AllStoragePresentationContexts]
        ae.add_supported_context(Verification)
        if s.allowed_calling_aets:
            ae.require_calling_aet = list(s.allowed_calling_aets)  # checked again by pynetdicom (the TLS path)
        ae.acse_timeout = s.limits.negotiation_timeout_s
        ae.network_timeout = s.limits.idle_timeout_s
        ae.maximum_pdu_size = s.limits.max_pdu_bytes
        ae.maximum_associations = 2 * s.limits.max_associations  # the guard's limits bind first
        limits = GuardLimits(**{**s.limits.__dict__, "allowed_calling_aets": tuple(s.allowed_calling_aets),
                                "max_message_bytes": s.max_instance_bytes})
        handlers: list[tuple[Any, Any]] = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_ACCEPTED, self._on_accepted),
                                           (evt.EVT_REJECTED, self._on_rejected)]
        if self.commitment is not None or self._requests is not None:
            # Both roles: a sender asks as SCU; a PACS reporting on an association it opens proposes the SCP role.
            ae.add_supported_context(SOP_CLASS_UID, scu_role=True, scp_role=True)
        if self._requests is not None:
            handlers.append((evt.EVT_N_EVENT_REPORT, self._on_report))
        if self.commitment is not None:
            handlers += self.commitment.handlers
            self.commitment.start()
        self._server = ae.make_server((s.host, s.port), evt_handlers=handlers, server_class=GuardedServer,
                                      limits=limits, tls_context=self._ssl_context(), on_refused=self._on_refused,
                                      on_counts=self._on_counts)
        ae._servers.append(self._server)
        self._thread = threading.Thread(target=self._server.serve_forever, name="scanside-dicom-accept",
                                        daemon=True)
        self._thread.start()
        log.info("DICOM receiver %s listening on %s:%d%s", s.ae_title, s.host, self.port,
                 " (TLS)" if s.tls_cert else "")
        log.info("DICOM receiver transfer syntaxes, preferred first: %s (lossy: %s)", ", ".join(names(syntaxes)),
                 ", ".join(names(tuple(x for x in syntaxes if x in LOSSY))) or "none")

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
        # pynetdicom's own checks: the calling AE title over TLS, where the guard cannot read the request, or its
        # association count (set above the guard's, so only reached when association threads linger).
        allowed = self.settings.allowed_calling_aets
        calling = str(event.assoc.requestor.ae_title).strip()
        reason = "calling_ae" if allowed and calling not in allowed else "association_limit"
        self.metrics.dicom_rejections.labels(reason=reason).inc()

    def _on_refused(self, reason: str) -> None:
        self.metrics.dicom_rejections.labels(reason=reason).inc()

    def _on_counts(self, negotiating: int, associated: int) -> None:
        self.metrics.dicom_connections.labels(state="negotiating").set(negotiating)
        self.metrics.dicom_connections.labels(state="associated").set(associated)

    def _on_store(self, event: evt.Event) -> int | Dataset:
        sop_class = str(event.request.AffectedSOPClassUID)
        sop_instance = str(event.request.AffectedSOPInstanceUID or "")
        if sop_class not in TAKEN_SOP_CLASSES:
            self.metrics.dicom_rejections.labels(reason="sop_class").inc()
            self._record_refusal(sop_class, sop_instance, SOP_CLASS_NOT_SUPPORTED)
            return STATUS_SOP_CLASS_REFUSED
        name = f"{uuid.uuid4().hex}.dcm"
        tmp = self.tmp / name
        try:
            size = _write_synced(tmp, event)
            refusal = self._check(tmp, sop_class)
            if refusal is not None:
                self._record_refusal(sop_class, sop_instance, CLASS_INSTANCE_CONFLICT
                                     if refusal.Status == STATUS_DOES_NOT_MATCH_SOP_CLASS else PROCESSING_FAILURE)
                return refusal
            os.replace(tmp, self.target / name)
            sync_folder(self.target)
            if self._received is not None:
                # On record, synced, before Success: a commitment request for it can then never be answered failed.
                self._received.stored(sop_class, sop_instance)
        except Exception as exc:  # OSError spooling; a database error recording (the file is in place: a resend
            # of it is a duplicate, dropped by the ingest)
            log.error("could not spool or record a received instance: %s", describe(exc))
            self.metrics.dicom_rejections.labels(reason="out_of_resources").inc()
            self._record_refusal(sop_class, sop_instance, RESOURCE_LIMITATION)
            return STATUS_OUT_OF_RESOURCES
        finally:
            tmp.unlink(missing_ok=True)  # gone already when it was renamed or set aside
            handled = getattr(getattr(event.assoc, "dul", None), "message_handled", None)
            if handled is not None:
                handled()  # the dataset leaves the receiver's in-flight memory budget
        self.metrics.dicom_instances.inc()
        self.metrics.dicom_instances_by_syntax.labels(transfer_syntax=keyword(event.file_meta.TransferSyntaxUID)).inc()
        self.metrics.dicom_bytes.inc(size)
        return STATUS_SUCCESS

    def _on_report(self, event: evt.Event) -> tuple[int, None]:
        """A PACS' storage commitment result for SRs this appliance sent it, on an association the PACS opened."""
        requests = self._requests
        assert requests is not None  # bound only with it
        return answer_report(event, lambda result: requests.report(result, "new"),
                             lambda outcome: self.metrics.commitment_reports.labels(
                                 side="scu", association="new", outcome=outcome).inc())

    def _record_refusal(self, sop_class: str, sop_instance: str, reason: int) -> None:
        """Keep why an instance was refused, for a commitment request naming it; never fails the C-STORE's answer."""
        if self._received is None or not sop_instance:
            return
        try:
            self._received.refused(sop_class, sop_instance, reason)
        except Exception as exc:
            log.warning("could not record a refused instance: %s", describe(exc))

    def _check(self, path: Path, sop_class: str) -> Dataset | None:
        """Parse the instance as the ingest will; a failure status (and the file set aside) if it cannot be
        used, None if it can. The sender is never told Success for what the appliance would then throw away."""
        try:
            inst = read_instance(path, settled=True, max_bytes=self.settings.max_instance_bytes)
            reason = None
            if inst.sop_class_uid and inst.sop_class_uid != sop_class:
                reason, detail = "sop_class_mismatch", "the dataset's SOP Class UID is not the request's"
        except IncompleteFile:
            reason, detail = "truncated", "the dataset ends early"
        except RejectedFile as exc:
            reason, detail = exc.reason, exc.detail
        except Exception as exc:
            reason, detail = "unreadable", f"unexpected {type(exc).__name__} in the reader"
        if reason is None:
            return None
        if reason in ("not_mr", "sop_class_mismatch"):
            status, label = STATUS_DOES_NOT_MATCH_SOP_CLASS, "sop_mismatch"
        else:
            status, label = STATUS_CANNOT_UNDERSTAND, "cannot_understand"
        self.metrics.dicom_rejections.labels(reason=label).inc()
        if self.quarantine is not None and self.quarantine.put(path, reason,
                                                               f"received over C-STORE: {detail}") is not None:
            self.metrics.files_quarantined.labels(reason=reason).inc()
        else:
            path.unlink(missing_ok=True)
        answer = Dataset()
        answer.Status = status
        answer.ErrorComment = reason[:64]  # the reason code only: never a value from the dataset
        return answer

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self.commitment is not None:
            self.commitment.stop()  # reports not yet delivered stay owed in the database
        server.shutdown()
        for assoc in server.active_associations:
            # What they had not been answered they send again; what was, is spooled. The socket is shut down as
            # well: a DUL waiting in a read would not see the abort until the peer sent something.
            assoc.abort(block=False)
            sock = getattr(assoc.dul.socket, "socket", None)
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(5)


def _write_synced(path: Path, event: evt.Event) -> int:
    """Write the instance as received, as a Part 10 file: preamble, file meta, then the dataset's bytes straight
    from pynetdicom's buffer (not copied, as `encoded_dataset()` would twice), and sync it. Returns its size."""
    head = b"\x00" * 128 + b"DICM" + encode_file_meta(event.file_meta)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        with event.request.DataSet.getbuffer() as body:
            for part in (memoryview(head), body):
                while part:
                    part = part[os.write(fd, part):]
            size = len(head) + len(body)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size

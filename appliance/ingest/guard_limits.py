"""Bounds of the DICOM receiver's guard (appliance/ingest/dicom_guard.py), the reasons it refuses by, and the
errors its readers raise."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from appliance.ingest.reader import DEFAULT_MAX_INSTANCE_BYTES

# An A-ASSOCIATE-RQ proposing the 128 presentation contexts pynetdicom allows, each with a few transfer syntaxes,
# is ~15 KiB; 64 KiB leaves room for many more syntaxes and extended negotiation while bounding what a stranger
# can make the receiver hold. The listening socket's receive buffer is sized so that a whole one can be peeked.
MAX_ASSOCIATE_RQ_BYTES = 64 << 10
# PS3.8 9.3.1: a P-DATA-TF PDU's variable field is at most the Maximum Length the receiver announced. Some older
# senders count only the PDV values against it, so their PDUs run a few 6-byte PDV headers over; 1 KiB tolerates
# that without letting a peer make the receiver buffer more than one PDU's worth.
PDU_MARGIN = 1024
MAX_CONTROL_PDU = 64 << 10  # release, abort, and anything else that is not P-DATA
MAX_COMMAND_BYTES = 64 << 10  # a DIMSE command set is a few hundred bytes

# The reasons a connection or association is refused here: closed sets for the metric label.
REASONS = ("calling_ae", "association_limit", "evicted", "negotiation_timeout", "invalid_pdu", "pdu_too_large",
           "message_too_large", "inflight_budget", "stalled", "tls_handshake")


@dataclass(frozen=True)
class GuardLimits:
    negotiation_timeout_s: float = 5.0  # connect (and TLS handshake) to a complete A-ASSOCIATE-RQ
    idle_timeout_s: float = 60.0  # an association silent this long is aborted; no read blocks longer
    max_pending: int = 64  # connections not yet associated, held without a thread
    max_associations: int = 16
    max_associations_per_peer: int = 4
    max_pdu_bytes: int = 65536  # the Maximum Length this receiver announces
    max_message_bytes: int = DEFAULT_MAX_INSTANCE_BYTES  # the dataset of one C-STORE as received
    # Datasets held in memory by all associations together (pynetdicom buffers each one whole until it is
    # answered); an association whose next fragment would pass it is aborted, and its sender retries.
    max_inflight_bytes: int = 4 * DEFAULT_MAX_INSTANCE_BYTES
    allowed_calling_aets: tuple[str, ...] = ()  # empty: any


ABORT_NOT_SPECIFIED, ABORT_UNRECOGNIZED_PDU, ABORT_INVALID_PARAMETER = 0x00, 0x01, 0x06  # PS3.8 9.3.8


class Violation(Exception):
    def __init__(self, reason: str, detail: str, diagnostic: int = ABORT_NOT_SPECIFIED) -> None:
        super().__init__(detail)
        self.reason = reason
        self.diagnostic = diagnostic


class PeerClosed(Exception):
    pass


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass

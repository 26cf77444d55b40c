"""Synthetic final reports as HL7 v2 ORU^R01, and a small MLLP client: the RIS side of a simulated site.

`oru_message(plan)` writes the ORU^R01 a reporting system would send for a synthetic study: the plan's accession
number in OBR-3 (filler order number), its Study Instance UID in a ZDS segment (IHE) or in an OBX coded DCM 110180,
the synthetic patient in PID (SYNTH^..., never a real person), the impression from the report generator (the
training cohort's call: `impression(plan.params, default_rng(seed + 7))`) as TX lines, status F or C.
`MllpClient` sends framed messages over one connection (TLS optional) and returns each ACK's code.
SYNTHETIC DATA, NOT FOR CLINICAL USE.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl

import numpy as np

from appliance.dev.synth.plan import StudyPlan
from appliance.dev.synth.reports import impression
from appliance.truth.mllp import END_BLOCK, FRAME_END, START_BLOCK
from appliance.truth.oru import ack_code


def _escape(text: str) -> str:
    """HL7 v2 escapes for the default encoding characters (escape character first)."""
    for raw, esc in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("~", "\\R\\"), ("&", "\\T\\")):
        text = text.replace(raw, esc)
    return text


def report_text(plan: StudyPlan, variant: int = 0) -> str:
    """The generator's impression for this study; `variant` > 0 gives another reader's wording of the same truth."""
    return impression(plan.params, np.random.default_rng(plan.seed + 7 + 1000 * variant))


def oru_message(plan: StudyPlan, control_id: str, status: str = "F", text: str | None = None,
                study_uid_in: str = "zds", reported_at: dt.datetime | None = None,
                sending_application: str = "SYNTH_RIS", sending_facility: str = "SYNTH_HOSP") -> str:
    """One ORU^R01 for `plan` (segments separated by CR). `study_uid_in`: "zds", "obx" or "none"."""
    text = report_text(plan) if text is None else text
    study_time = f"{plan.study_date}{plan.study_time[:6]}"
    scanned = dt.datetime.strptime(study_time, "%Y%m%d%H%M%S")
    when = (reported_at or scanned + dt.timedelta(days=1)).strftime("%Y%m%d%H%M%S")
    segments = [
        f"MSH|^~\\&|{sending_application}|{sending_facility}|SCANSIDE||{when}||ORU^R01^ORU_R01|{control_id}|P|2.5.1"
        "|||AL|NE",
        f"PID|1||{plan.patient_id}^^^SYNTH^MR||{plan.patient_name}||{plan.patient_birth_date}|{plan.patient_sex}",
        f"ORC|RE|{plan.accession_number}P|{plan.accession_number}^SYNTH_RIS||CM",
        f"OBR|1|{plan.accession_number}P|{plan.accession_number}^SYNTH_RIS|CMR^Cardiac MRI^L|||{study_time}"
        f"|||||||||||{plan.accession_number}||||{when}||MR|{status}",
    ]
    if study_uid_in == "zds":
        segments.append(f"ZDS|{plan.study_uid}^SYNTH_PACS^Application^DICOM")
    k = 1
    if study_uid_in == "obx":
        segments.append(f"OBX|{k}|ST|110180^Study Instance UID^DCM||{plan.study_uid}||||||{status}")
        k += 1
    for line in text.splitlines() or [""]:
        segments.append(f"OBX|{k}|TX|18782-3^Radiology Study observation^LN||{_escape(line)}||||||{status}")
        k += 1
    return "\r".join(segments) + "\r"


class MllpClient:
    """One MLLP connection: `send(message)` returns (MSA-1, MSA-2) of the ACK."""

    def __init__(self, host: str, port: int, timeout_s: float = 10.0, tls: ssl.SSLContext | None = None) -> None:
        raw = socket.create_connection((host, port), timeout=timeout_s)
        self.sock: socket.socket = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        self._buf = bytearray()

    def send_raw(self, payload: bytes) -> str:
        """Send bytes as they are (framing included) and read one framed answer."""
        self.sock.sendall(payload)
        return self.read_ack()

    def read_ack(self) -> str:
        while FRAME_END not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the listener closed the connection without an answer")
            self._buf += chunk
        end = self._buf.index(FRAME_END)
        body = bytes(self._buf[:end]).lstrip(START_BLOCK)
        del self._buf[:end + len(FRAME_END)]
        return body.decode("utf-8")

    def send(self, message: str) -> tuple[str, str]:
        return ack_code(self.send_raw(START_BLOCK + message.encode("utf-8") + END_BLOCK + b"\r"))

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

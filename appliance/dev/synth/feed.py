"""`scanside synth`: synthetic studies of one vendor written into a folder, or sent over DICOM C-STORE, optionally
at a scanner's pace. SYNTHETIC DATA, NOT FOR CLINICAL USE.

The studies are demo_cohort's (the first ones cover every condition once), rendered and laid out exactly as the
synthetic scanner writes them; sending opens one association per study, as a scanner does, and proposes MR Image
Storage in the vendor's transfer syntax. Problems are raised as FeedError with a one-line message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from appliance.dev.synth.plan import StudyPlan
from appliance.dev.synth.scanner import demo_cohort
from appliance.dev.synth.vendors import VENDORS
from appliance.dev.synth.writer import SynthInstance, iter_instances, write_instance
from appliance.export.destinations.pacs import _REJECT_REASONS as REJECT_REASONS


class FeedError(Exception):
    """Why the studies could not be written or sent, in one line."""


@dataclass
class Fed:
    """What happened to the instances of one study."""

    study: StudyPlan
    instances: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # C-STORE status -> instances refused with it


def plans(vendor: str, studies: int, seed: int) -> list[StudyPlan]:
    if vendor not in VENDORS:
        raise FeedError(f"unknown vendor {vendor!r}; the synthetic vendors are {', '.join(sorted(VENDORS))}")
    if studies < 1:
        raise FeedError("--studies must be at least 1")
    if seed < 0:
        raise FeedError("--seed must be non-negative")
    return demo_cohort(studies, seed, vendors=[vendor])


def _paced(plan: StudyPlan, pace_s: float, first: bool) -> Iterator[SynthInstance]:
    for k, inst in enumerate(iter_instances(plan)):
        if pace_s > 0 and not (first and k == 0):
            time.sleep(pace_s)
        yield inst


def check_folder(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise FeedError(f"{root} is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeedError(f"cannot create the folder {root}: {exc.strerror or exc}") from None
    if not root.is_dir():
        raise FeedError(f"{root} is not a folder")
    if not os.access(root, os.W_OK | os.X_OK):
        raise FeedError(f"cannot write into the folder {root}: permission denied")


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    called_ae: str = "SCANSIDE"
    calling_ae: str = "SYNTHMR"
    timeout_s: float = 10.0

    @property
    def where(self) -> str:
        return f"{self.called_ae} at {self.host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise FeedError(f"--send {text!r}: expected host:port, e.g. 127.0.0.1:11112")
    return host.strip("[]"), int(port)


def _associate(peer: Peer) -> Association:
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = peer.timeout_s
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.called_ae)
    if assoc.is_established:
        if not assoc.accepted_contexts:
            assoc.release()
            raise FeedError(f"{peer.where} does not accept MR Image Storage")
        return assoc
    if assoc.is_rejected:
        answer = assoc.acceptor.primitive
        result, source, reason = (getattr(answer, name, None) for name in ("result", "result_source", "diagnostic"))
        why = REJECT_REASONS.get((source, reason), f"source {source}, reason {reason}")
        raise FeedError(f"{peer.where} rejected the association ({'permanent' if result == 1 else 'transient'}: "
                        f"{why}; calling AE {peer.calling_ae})")
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        raise FeedError(f"{peer.where} does not accept MR Image Storage")
    raise FeedError(f"cannot reach {peer.where}: no DICOM association (connection refused, unreachable, timed "
                    "out, or aborted by the peer)")


def feed(studies: list[StudyPlan], root: Path | None = None, peer: Peer | None = None, pace_s: float = 0.0,
         on_study: Callable[[Fed], None] = lambda fed: None) -> list[Fed]:
    """Every instance, in scanner order, written under `root` (as each vendor lays them out) and/or sent to `peer`
    with C-STORE (one association per study, refused instances counted by status)."""
    if root is not None:
        check_folder(root)
    done = []
    for n, plan in enumerate(studies):
        fed = Fed(plan)
        assoc = _associate(peer) if peer is not None else None
        try:
            for inst in _paced(plan, pace_s, first=n == 0):
                if root is not None:
                    _write(inst, root)
                if peer is not None and assoc is not None:
                    _send(inst, assoc, peer, fed)
                fed.instances += 1
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()
        on_study(fed)
        done.append(fed)
    return done


def _write(inst: SynthInstance, root: Path) -> None:
    try:
        write_instance(inst, root)
    except OSError as exc:
        raise FeedError(f"cannot write into {root}: {exc.strerror or exc}") from None


def _send(inst: SynthInstance, assoc: Association, peer: Peer, fed: Fed) -> None:
    if not assoc.is_established:
        raise FeedError(f"{peer.where} ended the association after {fed.instances} instances")
    status = assoc.send_c_store(inst.dataset)
    if "Status" not in status:
        raise FeedError(f"no C-STORE answer from {peer.where} (timeout or abort)")
    code = int(status.Status)
    if code_to_category(code) not in ("Success", "Warning"):
        fed.refused[code] = fed.refused.get(code, 0) + 1

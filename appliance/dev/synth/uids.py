"""Deterministic DICOM UIDs: the same plan always gets the same UIDs, different plans practically never collide.

pydicom's generate_uid ignores entropy_srcs when prefix=None (it falls back to a random uuid4) and joins the
entropy strings without a separator, so UIDs here are name-based UUIDs (uuid5) under the 2.25 root instead, which
is the UUID-derived form DICOM PS3.5 B.2 allows without a registered root.
"""

from __future__ import annotations

import hashlib
import uuid

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:scanside:synthetic-dicom")


def synth_uid(*parts: object) -> str:
    """2.25.<uuid5 integer> from ``parts`` (joined unambiguously)."""
    name = "\x1f".join(repr(p) for p in parts)
    return f"2.25.{uuid.uuid5(_NAMESPACE, name).int}"


def short_key(uid: str, n: int = 10) -> str:
    """Opaque folder-safe key derived from a UID, so that file paths never carry patient identity."""
    return hashlib.sha256(uid.encode("ascii")).hexdigest()[:n]

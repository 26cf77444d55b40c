"""GetModelInfo's answer: the bundle and the backend that runs it, as a display or an auditor needs to see them."""

from __future__ import annotations

from appliance import __version__
from appliance.api import pb
from appliance.bundle import Bundle, LabelBank
from appliance.inference.backend import InferenceBackend


def model_info(bundle: Bundle, backend: InferenceBackend, bank: LabelBank | None = None,
               bank_version: str | None = None, mode: str = "assist") -> pb.ModelInfo:
    """`bank` and `bank_version`: the label bank now scoring, where site edits replaced the bundle's own; `mode`:
    appliance.mode in force."""
    bank = bank if bank is not None else bundle.label_bank
    return pb.ModelInfo(
        bundle_name=bundle.name, bundle_version=bundle.version, description=bundle.description,
        backend=backend.name, backend_version=str(backend.version), precision=backend.precision,
        research_only=bundle.research_only, input_shape=[-1, *bundle.input_shape[1:]],
        embedding_dim=bundle.embedding_dim, appliance_version=__version__,
        backend_note=getattr(backend, "fallback_reason", None) or "",
        findings=[pb.Finding(finding_id=f.id, name=f.name, prompts=list(f.prompts), threshold=f.threshold,
                             rare=f.rare) for f in bank.findings],
        bank_version=bank_version if bank_version is not None else bank.content_hash, mode=mode)

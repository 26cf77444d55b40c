"""One series as the page shows it: a plain dict (sent to the browser as JSON) built from the appliance's result and
preview messages. Codes become words here (appliance/display/words.py); nothing is computed the appliance did not
say."""

from __future__ import annotations

from typing import Any

from appliance.api import pb
from appliance.display import words


def thumb_url(series_key: str, position: int) -> str:
    return f"/thumb/{series_key}/{position}.png"


def series_view(r: pb.SeriesResult, preview: pb.SeriesPreview | None) -> dict[str, Any]:
    sr_state, sr_text = words.sr_state(r)
    identity = None
    withheld = "the appliance gave no preview for this series"
    thumbs: list[dict[str, Any]] = []
    station = ""
    if preview is not None:
        withheld, station = preview.identity_withheld, preview.station_name
        if preview.HasField("identity") and not withheld:
            identity = {"accession_number": preview.identity.accession_number,
                        "patient_id": preview.identity.patient_id,
                        "patient_name": words.person_name(preview.identity.patient_name)}
        thumbs = [{"label": t.label, "url": thumb_url(r.series_key, t.position), "width": t.width,
                   "height": t.height} for t in preview.thumbnails]
    return {
        "key": r.series_key,
        "kind": "scored",
        "description": r.series_description,
        "manufacturer": r.manufacturer,
        "station": station,
        "identity": identity,
        "identity_withheld": withheld,
        "needs_review": r.needs_review,
        "review": words.review_reasons(r) if r.needs_review else [],
        "not_assessable": words.not_assessable(r),
        "findings": [{"id": f.finding_id, "name": f.name, "probability": round(f.probability, 3),
                      "positive": f.positive, "rare": f.rare, "flagged": bool(f.review_reasons)}
                     for f in r.findings],
        "scan_to_score_s": round(r.timings.scan_to_score_ms / 1000.0, 2),
        "scored_at": r.scored_at_unix,
        "images": r.images,
        "sr": {"state": sr_state, "text": sr_text},
        "thumbs": thumbs,
        "bundle": f"{r.bundle_name} {r.bundle_version}",
    }


def failed_view(s: pb.SeriesStatus, at: float) -> dict[str, Any]:
    """A series the appliance could not score: the stage only (its detail may quote a library's message)."""
    stage = s.detail.partition(":")[0].strip() or "an unknown stage"
    return {"key": s.series_key, "kind": "failed", "description": "", "station": "", "identity": None,
            "identity_withheld": "", "needs_review": True,
            "review": [f"The appliance could not score this series (failed at {stage}); the images are set aside."],
            "not_assessable": "", "findings": [], "scan_to_score_s": None, "scored_at": at, "images":
            s.images_received, "sr": {"state": "none", "text": "no SR (not scored)"}, "thumbs": [], "bundle": ""}

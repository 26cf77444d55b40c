"""The appliance's codes in the words a technologist reads: review reasons, quality reasons, SR delivery states,
and DICOM person names."""

from __future__ import annotations

from appliance.api import pb

QUALITY = {
    "too_few_phases": "too few cardiac phases in the series",
    "too_few_slices": "too few short-axis slices",
    "noise": "the images are too noisy",
    "no_cardiac_motion": "no cardiac motion is seen",
    "heart_outside_fov": "the heart is outside the field of view",
    "not_cardiac": "the images do not look like a cardiac short-axis stack",
    "wrong_orientation": "the image orientation in the header looks wrong",
}


def review_reasons(r: pb.SeriesResult) -> list[str]:
    """Why a human must look, one sentence each (study reasons first, then per finding)."""
    names = {f.finding_id: f.name for f in r.findings}
    out: list[str] = []
    for reason in r.review_reasons:
        finding_id, _, code = reason.rpartition(":")
        if r.not_assessable and finding_id:
            continue  # no finding is reported for such a series: what one finding's score did is beside the point
        name = names.get(finding_id, finding_id)
        if code == "not_assessable":
            continue  # said by not_assessable(), with the gate's reasons
        if code == "out_of_distribution":
            out.append("These images are unlike the ones the model was built on: its scores may not apply.")
        elif code == "near_threshold":
            out.append(f"{name}: too close to its threshold to call.")
        elif code == "rare_finding":
            out.append(f"{name}: a rare finding, called positive; it needs a human look.")
        else:
            out.append(f"{name + ': ' if finding_id else ''}{code.replace('_', ' ')}.")
    return out


def not_assessable(r: pb.SeriesResult) -> str:
    """"" for an assessable series; else why not, in words."""
    if not r.not_assessable:
        return ""
    reasons = [QUALITY.get(q, q.replace("_", " ")) for q in r.quality_reasons] or ["no reason given"]
    return "Not assessable: " + "; ".join(reasons) + ". Repeat or check the acquisition."


def sr_state(r: pb.SeriesResult) -> tuple[str, str]:
    """(state, words) of the result's SR: state is "none", "pending", "delivered" or "failed" (the worst one)."""
    if not r.sr_deliveries:
        return "none", "SR not sent (results are not sent back to PACS here)"
    parts, states = [], set()
    for d in r.sr_deliveries:
        where = "PACS" if d.destination == "pacs" else f"the {d.destination}"
        states.add(d.state)
        if d.state == "delivered":
            parts.append(f"SR in {where}" if d.destination == "pacs" else f"SR written to {where}")
        elif d.state == "failed":
            parts.append(f"SR to {where} FAILED after {d.tries} tries ({d.last_error or 'no reason given'})")
        else:
            parts.append(f"SR to {where} pending" + (f" (try {d.tries})" if d.tries else ""))
    state = next((s for s in ("failed", "pending", "delivered") if s in states), "pending")
    return state, "; ".join(parts)


def person_name(pn: str) -> str:
    """A DICOM PN (family^given^middle^prefix^suffix, alphabetic group only) as 'FAMILY, Given Middle'."""
    alphabetic = pn.split("=", 1)[0]
    family, given, middle, prefix, suffix = ([*alphabetic.split("^"), "", "", "", ""])[:5]
    rest = " ".join(p for p in (prefix, given, middle, suffix) if p.strip())
    return f"{family.strip()}, {rest}" if family.strip() and rest else (family.strip() or rest)

"""Study-level labels, measurements and free-text impressions for synthetic studies (text side of CLIP training).

The labels are what a zero-shot scorer is evaluated against, and the impression is what the text encoder learns
from, so the two must never disagree. Both are read from the HeartParams alone: the params are the single record
of a synthetic case, and the finding cut-offs live in `conditions.findings`; this module only combines them.

Label cut-offs (all via `findings`, except amyloidosis):

    lv_systolic_dysfunction   LVEF < 50 %
    lv_dilation               LV end-diastolic cavity diameter >= 55 mm (radius >= 27.5 mm)
    lv_hypertrophy            concentric wall >= 12 mm, or asymmetric septal thickening >= 4 mm and >= 30 % of wall
    rv_dilation               RV size >= 1.15 x normal
    rv_dysfunction            RVEF < 40 %
    pericardial_effusion      >= 3 mm
    ischaemic_cm              a regional akinetic (infarct) territory
    hcm                       asymmetric septal hypertrophy
    amyloidosis               diffuse late-enhancement pattern (the phantom's amyloid signature)
    nonischaemic_cm           LV systolic dysfunction with none of the three above

The impression is written like a reader would: several phrasings per finding, severity words graded from the
continuous values, measurements now and then, explicit negatives for some normal findings, and sentences in
random order so that no position or template slot gives a label away. Every sentence is either purely positive
(abnormal findings, diagnoses) or purely negative (normal findings); none mixes the two, which is what lets a
simple checker (see tests) verify that the text never contradicts the labels.

Quoted numbers are truncated to whole units rather than rounded: every cut-off above is a whole number on the
quoted scale, so a truncated number always falls on the same side of the cut-off as the label (an LVEF of 49.7 %
is quoted as 49 %, never as a "reduced" 50 %).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.dev.synth.conditions import findings
from appliance.dev.synth.phantom import HeartParams

__all__ = ["LABELS", "impression", "study_labels", "study_measurements"]

LABELS = (
    "lv_systolic_dysfunction",
    "lv_dilation",
    "lv_hypertrophy",
    "rv_dilation",
    "rv_dysfunction",
    "pericardial_effusion",
    "nonischaemic_cm",
    "ischaemic_cm",
    "hcm",
    "amyloidosis",
)


def study_labels(params: HeartParams) -> dict[str, bool]:
    """The ten study-level labels (see the module docstring for the cut-offs)."""
    f = set(findings(params))
    ischaemic = "regional_wall_motion_abnormality" in f
    hcm = "asymmetric_septal_hypertrophy" in f
    # only amyloid cases are sampled with diffuse enhancement; the cine shows its thick walls, the LGE clinches it
    amyloid = params.lge_pattern == "diffuse"
    lvsd = "lv_systolic_dysfunction" in f
    return {
        "lv_systolic_dysfunction": lvsd,
        "lv_dilation": "lv_dilated" in f,
        "lv_hypertrophy": hcm or "concentric_lv_thickening" in f,
        "rv_dilation": "rv_dilated" in f,
        "rv_dysfunction": "rv_systolic_dysfunction" in f,
        "pericardial_effusion": "pericardial_effusion" in f,
        "nonischaemic_cm": lvsd and not (ischaemic or hcm or amyloid),
        "ischaemic_cm": ischaemic,
        "hcm": hcm,
        "amyloidosis": amyloid,
    }


def study_measurements(params: HeartParams) -> dict[str, float]:
    """What a reader would measure, computed from the params (unrounded).

    lvedd_mm is the basal-mid cavity diameter the phantom is built from. lvedv_ml integrates the phantom's cavity
    profile (radius * sqrt(1 - (z/0.92)^3) along the long axis), ignoring septal bulge and trabeculation, so it is
    a size index for comparing studies rather than a clinical volume. max_wall_mm is the basal septum, where
    asymmetric thickening peaks.
    """
    p = params
    r = p.lv_edd_radius_mm
    # integral of pi r^2 (1 - (z/a)^3) dz over [0, a] is pi r^2 * 3a/4, with a = 0.92 of the long axis
    lvedv_ml = math.pi * r * r * 0.75 * 0.92 * p.long_axis_mm / 1000.0
    return {
        "lvef_pct": 100.0 * p.lv_ef,
        "lvedd_mm": 2.0 * r,
        "lvedv_ml": lvedv_ml,
        "max_wall_mm": p.lv_wall_mm + p.septal_extra_mm,
        "rvef_pct": 100.0 * p.rv_ef,
        "rv_size_ratio": p.rv_scale,
        "effusion_mm": p.effusion_mm,
    }


# --- grading ------------------------------------------------------------------------------------------------------

_ADJ = ("mild", "moderate", "severe")
_ADV = ("mildly", "moderately", "severely")
_EFFUSION_SIZE = ("small", "moderate", "large")
_TERRITORY_NAMES = {
    "LAD": ("LAD", "left anterior descending", "anterior (LAD)"),
    "LCX": ("circumflex", "LCx", "left circumflex"),
    "RCA": ("RCA", "right coronary", "inferior (RCA)"),
}
_TERRITORY_WALLS = {
    "LAD": ("anterior wall, anteroseptum and apex", "anterior and anteroseptal walls and the apex",
            "mid to apical anterior wall and apex"),
    "LCX": ("lateral wall", "inferolateral and anterolateral walls", "basal to mid lateral wall"),
    "RCA": ("inferior wall", "inferior and inferoseptal walls", "basal to mid inferior wall"),
}


def _grade(value: float, cuts: Sequence[float], higher_is_worse: bool) -> int:
    """0 mild, 1 moderate, 2 severe; ``cuts`` are the mild/moderate and moderate/severe boundaries."""
    if higher_is_worse:
        return int(value >= cuts[0]) + int(value >= cuts[1])
    return int(value < cuts[0]) + int(value < cuts[1])


def _shown(value: float) -> int:
    # truncation keeps the quoted number on the label's side of a whole-number cut-off (module docstring)
    return int(math.floor(round(value, 6)))


# --- style --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Style:
    abbreviate: bool  # LV/RV/LVEF rather than the words
    terse: bool  # fragments, fewer articles and verbs
    british: bool  # ischaemic/dilatation/aetiology vs ischemic/dilation/etiology
    numbers: float  # probability of quoting a measurement when there is one
    negatives: float  # probability of stating a given normal finding
    severity: float  # probability of grading an abnormal finding
    pct_space: bool  # "28 %" vs "28%"
    layout: str  # "prose" | "numbered" | "semicolons"


def _draw_style(rng: np.random.Generator) -> _Style:
    terse = bool(rng.random() < 0.4)
    return _Style(
        abbreviate=bool(rng.random() < (0.8 if terse else 0.45)),
        terse=terse,
        british=bool(rng.random() < 0.6),
        numbers=float(rng.uniform(0.1, 0.9)),
        negatives=float(rng.uniform(0.15, 0.85)),
        severity=float(rng.uniform(0.6, 1.0)),
        pct_space=bool(rng.random() < 0.3),
        layout=str(rng.choice(["prose", "prose", "prose", "numbered", "semicolons"])),
    )


class _Writer:
    """Phrase builders for one report; every random choice goes through ``rng`` so the text is reproducible."""

    def __init__(self, rng: np.random.Generator, style: _Style) -> None:
        self.rng = rng
        self.s = style

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    # vocabulary -----------------------------------------------------------------------------------------------
    def ventricle(self, side: str, noun: bool) -> str:
        if self.s.abbreviate:
            return side
        word = "left" if side == "LV" else "right"
        return f"{word} ventricle" if noun else f"{word} ventricular"

    def the(self, text: str) -> str:
        return text if self.s.terse else f"the {text}"

    def isch(self) -> str:
        return "ischaemic" if self.s.british else "ischemic"

    def dilatation(self) -> str:
        return "dilatation" if self.s.british else "dilation"

    def pct(self, value: int) -> str:
        return f"{value} %" if self.s.pct_space else f"{value}%"

    def graded(self, words: Sequence[str], grade: int) -> str:
        """Severity word plus a space, or nothing when this reader does not grade."""
        return f"{words[grade]} " if self.chance(self.s.severity) else ""

    def quote(self) -> bool:
        return self.chance(self.s.numbers)

    def ef_clause(self, prefix: str, value: int) -> str:
        v = self.pct(value)
        if self.s.terse:
            return self.pick([f" ({prefix} {v})", f", {prefix} {v}"])
        return self.pick([f" ({prefix} {v})", f", {prefix} {v}", f" with an {prefix} of {v}",
                          f" ({prefix} estimated at {v})"])


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _decap(text: str) -> str:
    first = text.split(" ", 1)[0]
    # keep LV, RVEF, HCM... as written
    if sum(c.isupper() for c in first) >= 2:
        return text
    return text[:1].lower() + text[1:]


# --- sentences ----------------------------------------------------------------------------------------------------


def _lv_sentences(w: _Writer, lab: dict[str, bool], m: dict[str, float], p: HeartParams) -> list[str]:
    out: list[str] = []
    lvn, lva = w.ventricle("LV", True), w.ventricle("LV", False)
    dil, lvsd = lab["lv_dilation"], lab["lv_systolic_dysfunction"]
    edd, ef = _shown(m["lvedd_mm"]), _shown(m["lvef_pct"])
    g_dil = _grade(m["lvedd_mm"], (60.0, 66.0), True)
    g_ef = _grade(m["lvef_pct"], (40.0, 30.0), False)
    regional = lab["ischaemic_cm"]

    def edd_clause() -> str:
        if not w.quote():
            return ""
        if w.s.terse:
            return w.pick([f" (LVEDD {edd} mm)", f", LVEDD {edd} mm"])
        return w.pick([f" (LVEDD {edd} mm)", f" with an end-diastolic diameter of {edd} mm",
                       f", end-diastolic diameter {edd} mm"])

    def ef_clause() -> str:
        if not w.quote():
            return ""
        prefix = "LVEF" if (w.s.abbreviate or w.chance(0.5)) else "ejection fraction"
        return w.ef_clause(prefix, ef)

    def dilated() -> str:
        adv, adj = w.graded(_ADV, g_dil), w.graded(_ADJ, g_dil)
        return w.pick([
            f"{adv}dilated {lvn}",
            f"{w.the(lvn)} is {adv}dilated",
            f"{adj}{lva} {w.dilatation()}",
            f"{w.the(lvn)} is {adv}enlarged",
            f"{adj}{lva} enlargement",
        ]) + edd_clause()

    def impaired() -> str:
        adv, adj = w.graded(_ADV, g_ef), w.graded(_ADJ, g_ef)
        options = [
            f"{adv}impaired {lva} systolic function",
            f"{adj}{lva} systolic dysfunction",
            f"{lva} systolic function is {adv}impaired",
            f"{adv}reduced {lva} ejection fraction",
        ]
        if not regional:
            options.append(f"{adj}global {lva} hypokinesis")
        return w.pick(options) + ef_clause()

    if dil and lvsd and not regional and w.chance(0.45):
        adv_d, adv_f = w.graded(_ADV, g_dil), w.graded(_ADV, g_ef)
        out.append(w.pick([
            f"{adv_d}dilated {lvn} with {adv_f}impaired systolic function",
            f"{adv_d}dilated, {adv_f}impaired {lvn}",
            f"dilated {lvn} with global hypokinesis",
        ]) + ef_clause())
    else:
        if dil:
            out.append(dilated())
        if lvsd:
            out.append(impaired())

    out += _lv_normals(w, lab, m, p, ef_clause)
    return out


def _lv_normals(w: _Writer, lab: dict[str, bool], m: dict[str, float], p: HeartParams,
                ef_clause: Callable[[], str]) -> list[str]:
    """What is normal about the LV (said or not, by the report's style), and the hyperdynamic or small cavity."""
    out: list[str] = []
    lvn, lva = w.ventricle("LV", True), w.ventricle("LV", False)
    dil, lvsd = lab["lv_dilation"], lab["lv_systolic_dysfunction"]
    if not dil and not lvsd:
        if w.chance(w.s.negatives):
            quoted = ef_clause()
            out.append(w.pick([f"normal {lvn} size and systolic function", f"normal {lva} size and function",
                               f"{w.the(lvn)} is normal in size and systolic function"]) + quoted)
    else:
        if not dil and w.chance(w.s.negatives):
            out.append(w.pick([f"{w.the(lvn)} is not dilated", f"normal {lva} size", f"no {lva} {w.dilatation()}"]))
        if not lvsd and w.chance(w.s.negatives):
            out.append(w.pick([f"preserved {lva} systolic function", f"normal {lva} systolic function"])
                       + ef_clause())
    if not lvsd and m["lvef_pct"] >= 72.0 and w.chance(0.3):
        out.append(f"hyperdynamic {lva} systolic function" + ef_clause())
    if (lab["hcm"] or lab["amyloidosis"]) and p.lv_edd_radius_mm < 20.5 and w.chance(0.3):
        out.append(w.pick([f"small {lva} cavity", f"small {lvn} cavity size"]))
    return out


def _wall_sentences(w: _Writer, lab: dict[str, bool], m: dict[str, float], p: HeartParams) -> list[str]:
    out: list[str] = []
    lva = w.ventricle("LV", False)
    wall = _shown(m["max_wall_mm"])
    g = _grade(m["max_wall_mm"], (16.0, 20.0), True)
    if lab["hcm"]:
        adj = w.graded(_ADJ, g)
        text = w.pick([
            f"{adj}asymmetric septal hypertrophy",
            f"{adj}asymmetric hypertrophy of the basal to mid septum",
            f"{adj}asymmetric {lva} hypertrophy, predominantly septal",
        ])
        if w.quote():
            text += w.pick([f" (maximal septal thickness {wall} mm)", f", septum measuring {wall} mm",
                            f" measuring up to {wall} mm at the basal septum", f" ({wall} mm)"])
        out.append(text)
    elif lab["lv_hypertrophy"]:
        adj = w.graded(_ADJ, g)
        text = w.pick([
            f"{adj}concentric {lva} hypertrophy",
            f"{adj}concentric {lva} wall thickening",
            f"{adj}concentric thickening of the {lva} myocardium",
            f"increased {lva} wall thickness",
        ])
        if w.quote():
            text += w.pick([f" (maximal wall thickness {wall} mm)", f", maximum {wall} mm", f" up to {wall} mm"])
        out.append(text)
    elif w.chance(w.s.negatives):
        out.append(w.pick([f"no {lva} hypertrophy", f"normal {lva} wall thickness", "normal myocardial thickness",
                           "no LVH" if w.s.abbreviate else "no left ventricular hypertrophy"]))
    return out


def _rv_sentences(w: _Writer, lab: dict[str, bool], m: dict[str, float], p: HeartParams) -> list[str]:
    out: list[str] = []
    rvn, rva = w.ventricle("RV", True), w.ventricle("RV", False)
    dil, dys = lab["rv_dilation"], lab["rv_dysfunction"]
    g_dil = _grade(m["rv_size_ratio"], (1.35, 1.6), True)
    g_ef = _grade(m["rvef_pct"], (30.0, 20.0), False)
    rvef = _shown(m["rvef_pct"])

    def ef_clause() -> str:
        return w.ef_clause("RVEF", rvef) if w.quote() else ""

    def flattening() -> str:
        if p.septal_flattening >= 0.3 and w.chance(0.6):
            return w.pick([" with flattening of the interventricular septum", ", with septal flattening",
                           " with diastolic septal flattening"])
        return ""

    positives: list[str] = []
    if dil and dys and w.chance(0.4):
        adv_d, adv_f = w.graded(_ADV, g_dil), w.graded(_ADV, g_ef)
        positives.append(w.pick([f"{adv_d}dilated and {adv_f}impaired {rvn}",
                                 f"{adv_d}dilated {rvn} with {adv_f}impaired systolic function"]) + ef_clause())
    else:
        if dil:
            adv, adj = w.graded(_ADV, g_dil), w.graded(_ADJ, g_dil)
            positives.append(w.pick([f"{adv}dilated {rvn}", f"{w.the(rvn)} is {adv}dilated",
                                     f"{adj}{rva} {w.dilatation()}", f"{adj}{rva} enlargement"]))
        if dys:
            adv, adj = w.graded(_ADV, g_ef), w.graded(_ADJ, g_ef)
            positives.append(w.pick([f"{adv}impaired {rva} systolic function", f"{adj}{rva} systolic dysfunction",
                                     f"{rva} systolic function is {adv}impaired"]) + ef_clause())
    if positives:
        positives[0] += flattening()
    out += positives

    if not dil and not dys:
        if w.chance(w.s.negatives):
            out.append(w.pick([f"normal {rva} size and function", f"{rva} size and function are normal",
                               f"{w.the(rvn)} is normal in size and function"])
                       + (ef_clause() if w.chance(0.5) else ""))
    else:
        if not dil and w.chance(w.s.negatives):
            out.append(w.pick([f"{w.the(rvn)} is not dilated", f"normal {rva} size"]))
        if not dys and w.chance(w.s.negatives):
            out.append(w.pick([f"preserved {rva} systolic function", f"normal {rva} systolic function"])
                       + ef_clause())
    return out


def _biventricular(w: _Writer, lab: dict[str, bool], m: dict[str, float]) -> list[str] | None:
    """A single sentence covering both ventricles where the reader would write one, else None."""
    both_dil = lab["lv_dilation"] and lab["rv_dilation"]
    both_dys = lab["lv_systolic_dysfunction"] and lab["rv_dysfunction"]
    all_normal = not any(lab[k] for k in ("lv_dilation", "lv_systolic_dysfunction", "rv_dilation", "rv_dysfunction"))
    if all_normal and w.chance(0.5 * (1.0 + w.s.negatives)):
        text = w.pick(["normal biventricular size and function", "normal biventricular volumes and systolic function",
                       "both ventricles are normal in size and function",
                       "normal biventricular size and systolic function"])
        if w.quote():
            text += f" (LVEF {w.pct(_shown(m['lvef_pct']))}, RVEF {w.pct(_shown(m['rvef_pct']))})"
        return [text]
    if both_dil and both_dys and not lab["ischaemic_cm"] and w.chance(0.35):
        text = w.pick(["biventricular dilatation and systolic dysfunction" if w.s.british
                       else "biventricular dilation and systolic dysfunction",
                       "dilated, impaired left and right ventricles"])
        if w.quote():
            text += f" (LVEF {w.pct(_shown(m['lvef_pct']))}, RVEF {w.pct(_shown(m['rvef_pct']))})"
        return [text]
    return None


def _effusion_sentences(w: _Writer, lab: dict[str, bool], m: dict[str, float]) -> list[str]:
    mm = m["effusion_mm"]
    if lab["pericardial_effusion"]:
        size = _EFFUSION_SIZE[_grade(mm, (10.0, 20.0), True)]
        text = w.pick([f"{size} pericardial effusion", f"pericardial effusion, {size}",
                       f"{size} circumferential pericardial effusion",
                       f"{size} pericardial effusion, predominantly inferior"])
        if w.quote():
            text += w.pick([f" ({_shown(mm)} mm)", f" measuring up to {_shown(mm)} mm",
                            f", maximal depth {_shown(mm)} mm"])
        return [text]
    if w.chance(w.s.negatives):
        if mm > 0.0:
            return ["no significant pericardial effusion"]
        return [w.pick(["no pericardial effusion", "no pericardial effusion is seen"])]
    return []


def _diagnosis_sentences(w: _Writer, lab: dict[str, bool], p: HeartParams) -> list[str]:
    out: list[str] = []
    isch = w.isch()
    if lab["ischaemic_cm"] and p.akinetic_territory is not None:
        terr = w.pick(_TERRITORY_NAMES[p.akinetic_territory])
        walls = w.pick(_TERRITORY_WALLS[p.akinetic_territory])
        if lab["lv_systolic_dysfunction"]:
            out.append(w.pick([
                f"appearances are consistent with {isch} cardiomyopathy",
                f"{isch} cardiomyopathy with {terr} territory infarction",
                f"findings in keeping with {isch} cardiomyopathy following {terr} territory infarction",
                f"{isch} cardiomyopathy",
            ]))
        else:
            out.append(w.pick([
                f"prior {terr} territory myocardial infarction",
                f"{isch} heart disease with an established {terr} territory infarct",
                f"appearances are consistent with previous {terr} territory infarction",
                f"{isch} scar in the {terr} territory",
            ]))
        if w.chance(0.7):
            thin = w.pick([" with wall thinning", " with myocardial thinning", ", thinned"]) \
                if p.akinetic_thinning >= 0.35 else ""
            out.append(w.pick([f"akinesia of the {walls}{thin}", f"akinetic {walls}{thin}",
                               f"regional wall motion abnormality: akinesia of the {walls}{thin}"]))
        if p.lge_pattern == "ischemic" and w.chance(0.6):
            t = p.scar_transmurality
            depth = "transmural" if t >= 0.75 else ("subendocardial" if t < 0.5 else "near-transmural")
            lge = "LGE" if w.s.abbreviate else "late gadolinium enhancement"
            text = w.pick([f"{depth} {lge} in the {terr} territory",
                           f"{depth} infarct scar in the {terr} territory"])
            if w.chance(0.5):
                text += ", viable" if t < 0.5 else ", non-viable"
            out.append(text)
    if lab["hcm"]:
        text = w.pick([
            "appearances are consistent with hypertrophic cardiomyopathy",
            "findings in keeping with hypertrophic cardiomyopathy",
            "hypertrophic cardiomyopathy, asymmetric septal phenotype",
            "HCM phenotype" if w.s.abbreviate else "hypertrophic cardiomyopathy phenotype",
            "pattern typical of hypertrophic cardiomyopathy",
        ])
        if p.lge_pattern == "insertion" and w.chance(0.6):
            text += w.pick([", with patchy enhancement at the RV insertion points",
                            " with patchy insertion-point LGE",
                            " with patchy mid-wall fibrosis in the hypertrophied segments"])
        out.append(text)
    if lab["amyloidosis"]:
        text = w.pick([
            "pattern suggestive of cardiac amyloidosis",
            "appearances raise the possibility of cardiac amyloid",
            "findings are typical of cardiac amyloidosis",
            "infiltrative cardiomyopathy, likely amyloid",
            "features suspicious for cardiac amyloidosis",
        ])
        if w.chance(0.5):
            text += w.pick([" with diffuse subendocardial late enhancement",
                            ", with global enhancement and abnormal myocardial nulling",
                            " (diffuse LGE, difficult nulling)"])
        out.append(text)
    if lab["nonischaemic_cm"]:
        non = "non-" + isch
        if lab["lv_dilation"]:
            options = [
                "appearances are consistent with dilated cardiomyopathy",
                "in keeping with a dilated cardiomyopathy",
                f"{non} dilated cardiomyopathy",
                "DCM phenotype" if w.s.abbreviate else "dilated cardiomyopathy phenotype",
                f"findings suggest a {non} cardiomyopathy",
            ]
        else:
            options = [
                f"findings consistent with a {non} cardiomyopathy",
                f"{non} cardiomyopathy",
                f"likely {non} cardiomyopathy",
            ]
        text = w.pick(options)
        if p.lge_pattern == "midwall" and w.chance(0.6):
            text += w.pick([" with mid-wall septal fibrosis", ", with linear mid-wall septal LGE"])
        out.append(text)
    return out


def _normal_extras(w: _Writer, lab: dict[str, bool], p: HeartParams) -> list[str]:
    """Negative statements about the diagnoses, only where the labels make them true."""
    out: list[str] = []
    n = w.s.negatives
    # an isolated RV problem may itself be a cardiomyopathy (ARVC), so only an effusion is allowed here
    no_cm = not any(v for k, v in lab.items() if k != "pericardial_effusion")
    if no_cm and w.chance(0.3 * n):
        out.append(w.pick(["no evidence of cardiomyopathy", "no features of cardiomyopathy"]))
    if not lab["ischaemic_cm"] and w.chance(0.5 * n):
        out.append(w.pick(["no regional wall motion abnormality", "no regional wall motion abnormalities",
                           "no evidence of myocardial infarction"]))
    if p.lge_pattern == "none" and not lab["ischaemic_cm"] and not lab["amyloidosis"] and w.chance(0.5 * n):
        out.append(w.pick(["no late gadolinium enhancement", "no LGE", "no myocardial scar or fibrosis"]))
    if not lab["amyloidosis"] and p.lge_pattern != "diffuse" and w.chance(0.1 * n):
        out.append("no features to suggest an infiltrative process")
    if not any(lab.values()) and w.chance(0.5):
        out.append(w.pick(["normal study", "normal cardiac MRI", "structurally normal heart",
                           "normal CMR examination"]))
    return out


_OPENINGS = ("", "", "", "Cardiac MRI.", "CMR:", "Impression:", "Cine and LGE CMR.", "Summary:")


def impression(params: HeartParams, rng: np.random.Generator) -> str:
    """The impression section a reader would write for this heart; reproducible for a given ``rng`` state."""
    lab = study_labels(params)
    m = study_measurements(params)
    w = _Writer(rng, _draw_style(rng))

    ventricles = _biventricular(w, lab, m)
    if ventricles is None:
        ventricles = _lv_sentences(w, lab, m, params) + _rv_sentences(w, lab, m, params)
    core = ventricles + _wall_sentences(w, lab, m, params) + _effusion_sentences(w, lab, m)
    summary = _diagnosis_sentences(w, lab, params) + _normal_extras(w, lab, params)
    sentences = core + summary
    if not sentences:
        sentences = [w.pick(["normal biventricular size and function", "normal study"])]

    order = [sentences[i] for i in rng.permutation(len(sentences))]
    # some readers end on their conclusion; doing it for normal and abnormal studies alike keeps position neutral
    if summary and w.chance(0.35):
        last = summary[int(rng.integers(len(summary)))]
        order.remove(last)
        order.append(last)

    opening = w.pick(_OPENINGS)
    if w.s.layout == "numbered" and len(order) > 1:
        body = "\n".join(f"{k}. {_cap(s)}." for k, s in enumerate(order, start=1))
        return f"{opening}\n{body}" if opening else body
    if w.s.layout == "semicolons":
        body = _cap("; ".join(_decap(s) for s in order)) + "."
    else:
        body = " ".join(f"{_cap(s)}." for s in order)
    return f"{opening} {body}" if opening else body

"""Cardiology abbreviations spelled out before a prompt reaches the text encoder.

The bundle's sentence encoder (all-MiniLM-L6-v2) was pretrained on general web text: it reads "left ventricular
hypertrophy" well and "LVH" hardly at all (cosine 0.21 between the two). Clinicians write prompts the way they
write reports, so the bundle may carry a lexicon (`text_encoder.abbreviations` in its manifest) and the appliance
expands whole-word, case-sensitive abbreviations with it: "LVH" -> "left ventricular hypertrophy", while "lv" in a
word or a lower-case word is left alone. The lexicon is a list of standard CMR reporting abbreviations, written
from clinical usage; the evaluation reports the held-out paraphrases with and without it (docs/reference-model.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "scanside-abbreviations/1"

# Standard abbreviations of cardiac MR reports (SCMR reporting vocabulary and common usage), longest first where one
# contains another so that "LVEF" is not read as "LV" + "EF".
CMR_ABBREVIATIONS: Mapping[str, str] = {
    "LVEDV": "left ventricular end-diastolic volume",
    "LVESV": "left ventricular end-systolic volume",
    "RVEDV": "right ventricular end-diastolic volume",
    "RVESV": "right ventricular end-systolic volume",
    "LVEF": "left ventricular ejection fraction",
    "RVEF": "right ventricular ejection fraction",
    "HFrEF": "heart failure with reduced ejection fraction",
    "HFpEF": "heart failure with preserved ejection fraction",
    "HOCM": "hypertrophic obstructive cardiomyopathy",
    "ARVC": "arrhythmogenic right ventricular cardiomyopathy",
    "ATTR": "transthyretin amyloid",
    "LVOT": "left ventricular outflow tract",
    "RVOT": "right ventricular outflow tract",
    "LVH": "left ventricular hypertrophy",
    "RVH": "right ventricular hypertrophy",
    "LVSD": "left ventricular systolic dysfunction",
    "RWMA": "regional wall motion abnormality",
    "SAM": "systolic anterior motion of the mitral valve",
    "DCM": "dilated cardiomyopathy",
    "HCM": "hypertrophic cardiomyopathy",
    "ICM": "ischaemic cardiomyopathy",
    "NICM": "non-ischaemic cardiomyopathy",
    "CAD": "coronary artery disease",
    "LAD": "left anterior descending artery",
    "LCX": "left circumflex artery",
    "RCA": "right coronary artery",
    "LGE": "late gadolinium enhancement",
    "CMR": "cardiac magnetic resonance",
    "MI": "myocardial infarction",
    "EF": "ejection fraction",
    "LA": "left atrium",
    "RA": "right atrium",
    "LV": "left ventricular",
    "RV": "right ventricular",
}


class LexiconError(ValueError):
    pass


@dataclass(frozen=True)
class Abbreviations:
    expansions: Mapping[str, str]
    _pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for short, long in self.expansions.items():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", short) or not long.strip():
                raise LexiconError(f"abbreviation {short!r} -> {long!r}: expected a word and a non-empty expansion")
        keys = sorted(self.expansions, key=len, reverse=True)
        pattern = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(map(re.escape, keys)) + r")(?![A-Za-z0-9])") \
            if keys else None
        object.__setattr__(self, "_pattern", pattern)

    def expand(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self.expansions[m.group(1)], text)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "expansions": dict(self.expansions)}, indent=1, sort_keys=True)

    @classmethod
    def load(cls, path: Path) -> Abbreviations:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise LexiconError(f"abbreviation lexicon {Path(path).name}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("expansions"), dict):
            raise LexiconError(f"abbreviation lexicon {Path(path).name} is not {FORMAT}")
        return cls({str(k): str(v) for k, v in data["expansions"].items()})


CMR = Abbreviations(CMR_ABBREVIATIONS)

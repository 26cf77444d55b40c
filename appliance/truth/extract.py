"""Labels per finding from the text of a final CMR report, with negation handled. Rule-based, no model.

How it reads a report
---------------------
1. **Normalise.** Lower case; spelling variants folded (ischemic → ischaemic, dilation → dilatation, hypokinesia
   → hypokinesis, non-ischaemic / non ischaemic → nonischaemic); the standard CMR abbreviations spelled into one
   token each (LV / left ventricle / left ventricular → `lv`, RV → `rv`, biventricular / both ventricles / left and
   right ventricles → `biv`, LVEF / RVEF / EF, LVH, RVH, LVSD, HCM / HOCM, DCM, NICM, ICM, IHD, CAD, MI, RWMA, LGE,
   ASH; left / right atrium → `la` / `ra`). Phrases that look negative but are not (NegEx's pseudo-triggers:
   "no change in", "no interval increase", "cannot be excluded", "not ruled out", "not only") are rewritten first, so
   "amyloid cannot be excluded" stays a (hedged) positive.
2. **Sentences and clauses.** Sentences end at `.` (not a decimal point), `;`, `:`, new lines; a sentence splits
   into clauses at conjunctions that end a negation's scope (but, however, although, though, whereas, while, yet,
   except, apart from, aside from, other than, otherwise). A negation never reaches past its clause.
3. **Structural findings** (size, systolic function, wall thickness of a ventricle; effusion) are read as a
   subject and an attribute. Subjects: `lv`, `rv`, `biv` (both); `septum`/`septal`/`wall`/`myocardial` count as the
   LV for wall thickness only; other structures (`la`, `ra`, aorta, pericardium, valves, pulmonary artery) are
   subjects too, so "dilated left atrium" or "pericardial thickening" is never read as a ventricle's finding.
   Attributes are either abnormal in themselves (dilated, dilatation, enlarged, enlargement; impaired, dysfunction,
   hypokinesis; hypertrophy, hypertrophied, thickened, thickening) or a neutral noun (size, volumes, dimensions,
   cavity; function, ejection fraction, contractility; wall thickness, mass) given a direction by the nearest
   qualifier within six words: normal / preserved / unremarkable / normalised (absent), hyperdynamic (function
   absent), small or reduced (size absent), increased / large (size or thickness present), reduced / impaired /
   depressed / poor / low (function present). "The LV is normal" with no noun: LV size and function absent.
   An adjective's subject is the next subject within five words ("dilated, impaired RV", "impaired systolic
   function of the RV"), else the nearest earlier one in its clause; a noun's subject is the nearest earlier one
   ("RV size and function are normal"), else a following one ("dilatation of the RV"). An attribute with no subject
   at all is the LV's (a CMR report's unqualified "systolic dysfunction" or "global hypokinesis" means the LV).
   Diastolic dysfunction, impaired relaxation, regional or segmental hypokinesis (an ischaemic sign, not reduced EF)
   and systolic wall thickening (a motion word) are not read as these findings.
   A quoted ejection fraction ("LVEF 38 %", "RVEF of 41%") decides systolic function only when no words do:
   LVEF < 50 %, RVEF < 45 % (the usual CMR lower limits) read as present.
4. **Diagnoses** are phrase patterns: HCM (hypertrophic cardiomyopathy, asymmetric septal hypertrophy or
   thickening, apical hypertrophy, SAM), amyloidosis (amyloid, infiltrative cardiomyopathy / process / disease),
   ischaemic cardiomyopathy (ischaemic cardiomyopathy / heart disease / scar / pattern, infarct(ion), a coronary
   territory, regional wall motion abnormality, akinesis, dyskinesis, subendocardial or transmural enhancement
   unless diffuse or circumferential, which is amyloid's pattern, coronary artery disease), non-ischaemic
   cardiomyopathy (nonischaemic ... cardiomyopathy, dilated cardiomyopathy not called ischaemic, idiopathic
   cardiomyopathy). A negated bare "cardiomyopathy" ("no evidence of cardiomyopathy") is absent for all four.
5. **Negation** (NegEx-style): a trigger (no, not, without, nor, neither, negative for, absence of, free of, no
   longer, rather than) negates a mention up to six words after it in the same clause; a comma ends the scope when
   what follows starts a new statement (a severity or normal word, an abnormal adjective, "the", "there", or a verb
   within three words), but not inside a list ("no LV dilatation, hypertrophy or effusion"): a list's commas and
   "or" / "nor" restart the count, so a negation reaches every item of "no A, B or C". Post-triggers within
   four words after a mention: resolved, regressed, excluded, ruled out, absent, unlikely, not seen / present /
   identified / demonstrated / evident / detected, no longer seen / present ("LV dilatation has resolved",
   "effusion is not seen"). A negated normal word reads as abnormal ("LV function is not preserved").
   Trace, trivial, tiny or physiological pericardial fluid is read as no effusion.
6. **Implications**, used only for a finding the text does not state itself: HCM → LV hypertrophy (HCM is defined
   by it); dilated cardiomyopathy → LV dilatation and LV systolic dysfunction.
7. **Per finding**: present if any statement says so, else absent if any says it is not, else not mentioned.
   Contradictory statements (both) read as present and are listed in `ReportLabels.conflicts`.

"Not mentioned" means absent for these ten findings when the report is a complete CMR report: a reader who
reports the ventricles, the pericardium and a conclusion and says nothing of an effusion or of amyloid means there
is none (the report's silence is the normal). `ReportLabels.as_bools()` reads it so; `labels` keeps the difference
for a caller that wants to treat silence as unknown (an addendum, a partial report).

Known limits: one clause stating a negative and a positive joined without a conjunction or comma ("no effusion and
dilated LV") reads both as negated; negation scope is by word count, not by parse; hedges (possible, suggestive of,
cannot be excluded) count as present, since the labels are binary; comparisons with earlier studies ("LV now
dilated compared with 2019") are read as the current statement; numbers other than ejection fractions (LVEDV,
wall thickness in mm) are not compared with cut-offs; a report in another language, or one that uses an
abbreviation not listed above, reads as not mentioned. Evidence carries report text: never log it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

FINDINGS: tuple[str, ...] = (
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
)  # the label bank's finding ids (training/prompts.py FINDING_IDS; tests check they agree)

LVEF_LOWER_LIMIT = 50.0  # % : below reads as LV systolic dysfunction when no words say otherwise
RVEF_LOWER_LIMIT = 45.0  # %
NEGATION_WINDOW = 6  # words a pre-negation reaches
POST_WINDOW = 4  # words after a mention a post-negation may sit
QUALIFIER_WINDOW = 6  # words between a neutral noun and its qualifier


class Label(str, Enum):
    PRESENT = "present"
    ABSENT = "absent"
    NOT_MENTIONED = "not_mentioned"


@dataclass(frozen=True)
class Evidence:
    finding: str
    present: bool
    clause: str  # the normalised clause it was read from (report text: never log it)
    rule: str  # "stated", "negated", "normal", "ejection fraction", "implied by hcm", ...


@dataclass(frozen=True)
class ReportLabels:
    labels: Mapping[str, Label]  # every finding in FINDINGS
    evidence: tuple[Evidence, ...] = ()
    conflicts: tuple[str, ...] = ()  # findings stated both present and absent (read as present)

    def as_bools(self) -> dict[str, bool]:
        """Present or not, reading silence as absent (a complete CMR report: see the module docstring)."""
        return {f: self.labels[f] is Label.PRESENT for f in FINDINGS}

    def mentioned(self) -> tuple[str, ...]:
        return tuple(f for f in FINDINGS if self.labels[f] is not Label.NOT_MENTIONED)


# --- normalisation ------------------------------------------------------------------------------------------------

_PSEUDO = [  # applied first: phrases with a negation word that negate nothing
    (r"\b(?:can ?not|could not|can't|not) (?:be |been |yet be )?(?:excluded|ruled out)\b", " possible "),
    (r"\bno (?:significant |interval |further |definite )?(?:change|increase|progression|worsening)"
     r"(?: in| of)?\b", " unchanged "),
    (r"\bnot only\b", " "),
]
_REWRITES = [
    (r"[\u2010-\u2015]", "-"),
    (r"ischemi", "ischaemi"),
    (r"\bnon[- ]?ischaemi", "nonischaemi"),
    (r"\bdilation\b", "dilatation"),
    (r"\bhypokinesia\b", "hypokinesis"),
    (r"\bnormali[sz]ed\b", "normalised"),
    (r"\bwithin normal limits\b", "normal"),
    (r"\bnormal-sized\b|\bnormally sized\b", "normal size"),
    (r"\b(?:negative for|absence of|free of|rather than)\b", "no"),
    # compound abbreviations before the ventricles
    (r"\blvef\b", "lv ejection fraction"),
    (r"\brvef\b", "rv ejection fraction"),
    (r"\blvh\b", "lv hypertrophy"),
    (r"\brvh\b", "rv hypertrophy"),
    (r"\blvsd\b", "lv systolic dysfunction"),
    (r"\brvsd\b", "rv systolic dysfunction"),
    (r"\blved[dv]i?\b|\blves[dv]i?\b", "lv size"),
    (r"\brved[v]i?\b|\brves[v]i?\b", "rv size"),
    (r"\bef\b", "ejection fraction"),
    (r"\bh(?:o)?cm\b|\bhypertrophic obstructive cardiomyopathy\b", "hypertrophic cardiomyopathy"),
    (r"\bdcm\b", "dilated cardiomyopathy"),
    (r"\bnicm\b", "nonischaemic cardiomyopathy"),
    (r"\bicm\b", "ischaemic cardiomyopathy"),
    (r"\bihd\b", "ischaemic heart disease"),
    (r"\bcad\b", "coronary artery disease"),
    (r"\b(?:n?stemi|mi)\b", "myocardial infarction"),
    (r"\brwmas?\b", "regional wall motion abnormality"),
    (r"\blge\b", "late gadolinium enhancement"),
    (r"\bash\b", "asymmetric septal hypertrophy"),
    (r"\bsam\b", "systolic anterior motion"),
    # the ventricles and their neighbours
    (r"\b(?:bi-?ventricular|both ventricles|(?:left|lv) and (?:right|rv) ventricles?|(?:right|rv) and (?:left|lv) "
     r"ventricles?|lv and rv|rv and lv)\b", " biv "),
    (r"\bleft ventric(?:le|ular)\b", "lv"),
    (r"\bright ventric(?:le|ular)\b", "rv"),
    (r"\bleft atri(?:um|al)\b", "la"),
    (r"\bright atri(?:um|al)\b", "ra"),
]
_PSEUDO_RE = [(re.compile(p), r) for p, r in _PSEUDO]
_REWRITES_RE = [(re.compile(p), r) for p, r in _REWRITES]
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[;:\n!?]")
_CLAUSE_END = re.compile(r"\b(?:but|however|although|though|whereas|while|yet|except|apart from|aside from|"
                         r"other than|otherwise)\b")
_TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*|[%,()]")


def normalise(text: str) -> str:
    out = f" {text.lower()} "
    for pattern, repl in _PSEUDO_RE + _REWRITES_RE:
        out = pattern.sub(repl, out)
    return out


def clauses(text: str) -> list[list[str]]:
    """The normalised report as clauses of tokens."""
    out = []
    for sentence in _SENTENCE_END.split(normalise(text)):
        for clause in _CLAUSE_END.split(sentence):
            tokens = _TOKEN.findall(clause)
            if tokens:
                out.append(tokens)
    return out


# --- vocabulary ---------------------------------------------------------------------------------------------------

_SUBJECTS = {"lv": ("lv",), "rv": ("rv",), "biv": ("lv", "rv")}
_WALL_SUBJECTS = {"septum", "septal", "wall", "walls", "myocardial", "myocardium", "interventricular"}  # LV, walls
_OTHER_SUBJECTS = {"la", "ra", "atrium", "atria", "atrial", "aorta", "aortic", "root", "pulmonary", "pericardial",
                   "pericardium", "valve", "valvular", "ivc", "vena", "sinus", "sinuses", "coronary", "arteries"}
_ADJECTIVES = {"dilated": "dil", "enlarged": "dil", "impaired": "dys", "hypokinetic": "dys",
               "hypertrophied": "hyp", "thickened": "hyp"}
_NOUNS_ABNORMAL = {"dilatation": "dil", "enlargement": "dil", "dysfunction": "dys", "impairment": "dys",
                   "hypokinesis": "dys", "hypertrophy": "hyp", "thickening": "hyp"}
_NEUTRAL = {"size": "dil", "sized": "dil", "volume": "dil", "volumes": "dil", "dimension": "dil",
            "dimensions": "dil", "diameter": "dil", "diameters": "dil", "cavity": "dil",
            "function": "dys", "ejection": "dys", "contractility": "dys", "contraction": "dys", "performance": "dys",
            "thickness": "hyp", "mass": "hyp"}
# qualifier -> {class: present?}
_QUALIFIERS: dict[str, dict[str, bool]] = {
    **{w: {"dil": False, "dys": False, "hyp": False} for w in
       ("normal", "preserved", "unremarkable", "normalised", "maintained")},
    "hyperdynamic": {"dys": False}, "good": {"dys": False},
    "small": {"dil": False},
    "increased": {"dil": True, "hyp": True}, "large": {"dil": True}, "enlarged": {"dil": True},
    "reduced": {"dys": True, "dil": False}, "decreased": {"dys": True, "dil": False},
    "depressed": {"dys": True}, "poor": {"dys": True}, "low": {"dys": True}, "impaired": {"dys": True},
    "abnormal": {"dys": True},
}
_NORMAL_WORDS = {"normal", "preserved", "unremarkable", "normalised", "maintained"}
_FINDING_OF = {("lv", "dil"): "lv_dilation", ("lv", "dys"): "lv_systolic_dysfunction",
               ("lv", "hyp"): "lv_hypertrophy", ("rv", "dil"): "rv_dilation", ("rv", "dys"): "rv_dysfunction"}
_PRE_NEGATIONS = {"no", "not", "without", "nor", "neither"}
_POST_NEGATIONS = {"resolved", "regressed", "excluded", "absent", "unlikely"}
_POST_AFTER_NOT = {"seen", "present", "identified", "demonstrated", "evident", "detected", "visualised",
                   "visualized", "apparent"}
_NEW_STATEMENT = {"mild", "mildly", "moderate", "moderately", "severe", "severely", "normal", "preserved", "small",
                  "large", "the", "there", "impaired", "dilated", "enlarged", "thickened", "hypertrophied",
                  "reduced", "increased"}
_VERBS = {"is", "are", "was", "were", "appears", "appear", "measures", "measuring", "remains", "shows", "has"}
_TRIVIAL_FLUID = {"trace", "trivial", "tiny", "physiological", "physiologic", "minimal"}

_DIAGNOSES: dict[str, tuple[re.Pattern[str], ...]] = {
    "hcm": tuple(re.compile(p) for p in (
        r"\bhypertrophic cardiomyopathy\b", r"\basymmetric (?:[a-z-]+ ){0,3}?(?:hypertrophy|thickening)\b",
        r"\bapical hypertrophy\b", r"\bsystolic anterior motion\b")),
    "amyloidosis": tuple(re.compile(p) for p in (
        r"\bamyloid\w*", r"\binfiltrative (?:[a-z-]+ )?(?:cardiomyopathy|process|disease|pattern|aetiology)\b")),
    "ischaemic_cm": tuple(re.compile(p) for p in (
        r"\bischaemic (?:[a-z-]+ ){0,2}?(?:cardiomyopathy|heart disease|scar|aetiology|pattern|injury|damage|"
        r"late gadolinium enhancement|enhancement)\b",
        r"\binfarct(?:ion|s|ed)?\b", r"\b(?:lad|lcx|rca|circumflex|coronary|descending) territory\b",
        r"\bregional wall motion abnormalit(?:y|ies)\b", r"\b(?:akinesis|akinesia|akinetic|dyskinesis|dyskinesia|"
        r"dyskinetic)\b", r"(?<!diffuse )(?<!global )(?<!circumferential )\b(?:subendocardial|transmural|"
        r"near-transmural) (?:late gadolinium enhancement|late enhancement|enhancement|scar)\b",
        r"\bcoronary artery disease\b")),
    "nonischaemic_cm": tuple(re.compile(p) for p in (
        r"\bnonischaemic (?:[a-z-]+ ){0,2}?cardiomyopathy\b", r"(?<!ischaemic )\bdilated cardiomyopathy\b",
        r"\bidiopathic (?:[a-z-]+ )?cardiomyopathy\b")),
}
_ANY_CM = re.compile(r"\bcardiomyopathy\b")
_EF = re.compile(r"\b(?:(lv|rv) )?ejection fraction (?:[a-z]+ ){0,3}?(?:\( )?(\d{1,2})(?: (\d))? %")
CM_FINDINGS = ("nonischaemic_cm", "ischaemic_cm", "hcm", "amyloidosis")


# --- one clause ---------------------------------------------------------------------------------------------------

@dataclass
class _Clause:
    tokens: list[str]
    text: str = field(init=False)

    def __post_init__(self) -> None:
        self.text = " ".join(self.tokens)

    def token_at(self, char: int) -> int:
        return self.text.count(" ", 0, char)

    def subject(self, i: int, cls: str, adjective: bool) -> tuple[str, ...] | None:
        """The ventricles the attribute at i is about; None when it is another structure's."""
        def kind(tok: str) -> tuple[str, ...] | bool | None:
            if tok in _SUBJECTS:
                return _SUBJECTS[tok]
            if cls == "hyp" and tok in _WALL_SUBJECTS:
                return ("lv",)
            if tok in _OTHER_SUBJECTS:
                return None
            return False

        def forward(limit: int) -> tuple[str, ...] | bool | None:
            passed_other = False  # "dilated, impaired RV" reads on past its comma; "impaired function, LV" not
            for tok in self.tokens[i + 1:i + 1 + limit]:
                if tok == "with" or (tok == "," and passed_other):
                    break
                passed_other = passed_other or (tok not in _ADJECTIVES and tok != ",")
                found = kind(tok)
                if found is not False:
                    return found
            return False

        def backward() -> tuple[str, ...] | bool | None:
            for tok in reversed(self.tokens[:i]):
                found = kind(tok)
                if found is not False:
                    return found
            return False

        order = (lambda: forward(5), backward) if adjective else (backward, lambda: forward(3))
        for look in order:
            found = look()
            if found is not False:
                return found if isinstance(found, tuple) else None
        return ("lv",)

    def scope_ends_at_comma(self, j: int) -> bool:
        after = self.tokens[j + 1:j + 4]
        return bool(after) and (after[0] in _NEW_STATEMENT or any(t in _VERBS for t in after))

    def negated(self, i: int) -> bool:
        """A pre-negation within reach in this clause, or a post-negation just after."""
        words = 0
        for j in range(i - 1, -1, -1):
            tok = self.tokens[j]
            if tok == ",":
                if self.scope_ends_at_comma(j):
                    break
                words = 0  # a list goes on: "no LV dilatation, hypertrophy or effusion"
                continue
            if tok in ("or", "nor"):
                words = 0
                continue
            words += 1
            if words > NEGATION_WINDOW:
                break
            if tok in _PRE_NEGATIONS:
                return True
        after = [t for t in self.tokens[i + 1:i + 1 + POST_WINDOW + 1] if t not in (",", "(", ")")]
        for k, tok in enumerate(after[:POST_WINDOW]):
            nxt = after[k + 1] if k + 1 < len(after) else ""
            if tok in _POST_NEGATIONS or (tok == "ruled" and nxt == "out"):
                return True
            if tok == "not" and nxt in _POST_AFTER_NOT:
                return True
            if tok == "no" and nxt == "longer":
                return True
        return False

    def qualifier(self, i: int, cls: str) -> tuple[int, str] | None:
        best: tuple[int, int, str] | None = None
        lo, hi = max(0, i - QUALIFIER_WINDOW), min(len(self.tokens), i + QUALIFIER_WINDOW + 1)
        for j in range(lo, hi):
            word = self.tokens[j]
            if j != i and cls in _QUALIFIERS.get(word, {}):
                rank = (abs(j - i), 0 if j < i else 1)
                if best is None or rank < best[:2]:
                    best = (*rank, word)
                    pos = j
        return (pos, best[2]) if best is not None else None

    def excluded(self, i: int, cls: str) -> bool:
        tok = self.tokens[i]
        prev = self.tokens[max(0, i - 2):i]
        nxt = self.tokens[i + 1:i + 3]
        if cls == "dys" and ("diastolic" in prev or {"relaxation", "filling", "diastolic"} & set(nxt)
                             or any(p in ("regional", "segmental", "focal") for p in prev)):
            return True
        if cls == "hyp" and tok == "thickening" and any(p in ("systolic", "reduced", "impaired") for p in prev):
            return True
        return cls == "dil" and bool(nxt) and nxt[0] in ("cardiomyopathy", "cardiomyopathies")


def _structural(c: _Clause) -> list[Evidence]:
    out: list[Evidence] = []

    def add(i: int, cls: str, present: bool, rule: str, adjective: bool) -> None:
        subject = c.subject(i, cls, adjective)
        for side in subject or ():
            finding = _FINDING_OF.get((side, cls))
            if finding is not None:
                out.append(Evidence(finding, present, c.text, rule))

    for i, tok in enumerate(c.tokens):
        if tok in _ADJECTIVES or tok in _NOUNS_ABNORMAL:
            cls = _ADJECTIVES.get(tok) or _NOUNS_ABNORMAL[tok]
            if c.excluded(i, cls):
                continue
            neg = c.negated(i)
            add(i, cls, not neg, "negated" if neg else "stated", tok in _ADJECTIVES)
        elif tok in _NEUTRAL:
            cls = _NEUTRAL[tok]
            if cls == "dys" and c.excluded(i, cls):
                continue
            q = c.qualifier(i, cls)
            if q is None:
                continue
            pos, word = q
            present = _QUALIFIERS[word][cls]
            if c.negated(pos):
                if word not in _NORMAL_WORDS:
                    continue  # "not small" is not "dilated"
                present = True
            add(i, cls, present, f"{word} {tok}", False)
        elif tok in _NORMAL_WORDS and tok != "maintained":
            out += _bare_normal(c, i)
    return out + _effusion(c)


def _bare_normal(c: _Clause, i: int) -> list[Evidence]:
    """"The LV is normal", "normal RV": its size and function, when no noun of either sits near ("not normal":
    present)."""
    near = c.tokens[max(0, i - QUALIFIER_WINDOW):i + QUALIFIER_WINDOW + 1]
    if any(t in _NEUTRAL for t in near):
        return []
    return [Evidence(_FINDING_OF[(side, cls)], c.negated(i), c.text, f"{c.tokens[i]} ventricle")
            for cls in ("dil", "dys") for side in _neighbour_subject(c, i)]


def _neighbour_subject(c: _Clause, i: int) -> tuple[str, ...]:
    """A ventricle right next to a bare normal word ("normal RV", "the LV is normal"), else none."""
    for j in (i + 1, i - 1, i - 2, i - 3):
        if 0 <= j < len(c.tokens) and c.tokens[j] in _SUBJECTS:
            return _SUBJECTS[c.tokens[j]]
    return ()


def _effusion(c: _Clause) -> list[Evidence]:
    out = []
    for i, tok in enumerate(c.tokens):
        nxt = c.tokens[i + 1] if i + 1 < len(c.tokens) else ""
        prev = c.tokens[max(0, i - 3):i]
        effusion = tok == "effusion" and (not prev or prev[-1] != "pleural")
        if not (effusion or (tok == "pericardial" and nxt in ("fluid", "collection"))):
            continue
        if any(p in _TRIVIAL_FLUID for p in prev):
            out.append(Evidence("pericardial_effusion", False, c.text, "trivial fluid"))
            continue
        neg = c.negated(i)
        out.append(Evidence("pericardial_effusion", not neg, c.text, "negated" if neg else "stated"))
    return out


def _diagnoses(c: _Clause) -> list[Evidence]:
    out = []
    for finding, patterns in _DIAGNOSES.items():
        for pattern in patterns:
            for m in pattern.finditer(c.text):
                neg = c.negated(c.token_at(m.start()))
                out.append(Evidence(finding, not neg, c.text, "negated" if neg else "stated"))
    for m in _ANY_CM.finditer(c.text):
        if c.negated(c.token_at(m.start())):
            out += [Evidence(f, False, c.text, "negated cardiomyopathy") for f in CM_FINDINGS]
    return out


def _ejection_fractions(c: _Clause) -> list[Evidence]:
    out = []
    for m in _EF.finditer(c.text):
        side = m.group(1) or "lv"
        value = float(m.group(2) + (f".{m.group(3)}" if m.group(3) else ""))
        limit = LVEF_LOWER_LIMIT if side == "lv" else RVEF_LOWER_LIMIT
        out.append(Evidence(_FINDING_OF[(side, "dys")], value < limit, c.text, "ejection fraction"))
    return out


# --- a report -----------------------------------------------------------------------------------------------------

_IMPLIED = {"hcm": ("lv_hypertrophy",)}
_DCM = re.compile(r"\b(?:nonischaemic |idiopathic )?dilated cardiomyopathy\b")


def extract(text: str) -> ReportLabels:
    """Labels per finding read from one report's text (the whole report, or its impression)."""
    words: list[Evidence] = []
    numbers: list[Evidence] = []
    dcm = False
    for tokens in clauses(text):
        c = _Clause(tokens)
        words += _structural(c) + _diagnoses(c)
        numbers += _ejection_fractions(c)
        dcm = dcm or any(not c.negated(c.token_at(m.start())) for m in _DCM.finditer(c.text))
    said = {e.finding for e in words}
    words += [e for e in numbers if e.finding not in said]
    said = {e.finding for e in words}
    implied: list[Evidence] = []
    for source, targets in _IMPLIED.items():
        if any(e.finding == source and e.present for e in words):
            implied += [Evidence(t, True, "", f"implied by {source}") for t in targets if t not in said]
    if dcm:
        implied += [Evidence(t, True, "", "implied by dilated cardiomyopathy")
                    for t in ("lv_dilation", "lv_systolic_dysfunction") if t not in said]
    return _decide(words + implied)


def _decide(evidence: Iterable[Evidence]) -> ReportLabels:
    evidence = tuple(evidence)
    labels: dict[str, Label] = {}
    conflicts = []
    for f in FINDINGS:
        mine = [e.present for e in evidence if e.finding == f]
        if any(mine):
            labels[f] = Label.PRESENT
            if not all(mine):
                conflicts.append(f)
        elif mine:
            labels[f] = Label.ABSENT
        else:
            labels[f] = Label.NOT_MENTIONED
    return ReportLabels(labels, evidence, tuple(conflicts))

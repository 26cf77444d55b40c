"""Negation in a prompt, by rule: "no pericardial effusion" is read as the opposite of "pericardial effusion".

Sentence encoders barely see negation: MiniLM puts "no pericardial effusion" at cosine ~0.93 to "pericardial
effusion", so a site's negated prompt would score the finding it denies (docs/reference-model.md measures it). The
appliance therefore reads a prompt as the report extractor reads a report (appliance/truth/extract.py, NegEx-style):
the negation triggers are removed, the affirmative statement is embedded, and its embedding is reversed, so every
cosine to it changes sign and a negated prompt ranks studies exactly opposite to its affirmative form.

Rules (a prompt is one statement):
1. Phrases with a negation word that negate nothing are left alone: "cannot be excluded", "not ruled out",
   "no change", "no interval increase", "not only".
2. Triggers: no, not, without, nor, neither, negative for, absence of, free of, and the contractions isn't, aren't,
   wasn't, weren't, doesn't, don't (read as is, are, was, were, does, do). Each is removed.
3. A trigger denies the whole statement when it opens it ("no effusion", "there is no effusion") or follows its
   verb ("the LV is not dilated", "does not appear impaired"). Elsewhere it denies only a part ("a dilated heart
   without infarction"): such a prompt is embedded as typed and marked partial.
4. An odd number of triggers negates the prompt, an even number ("not without") does not; a "nor" after another
   trigger continues it ("neither dilated nor impaired" denies "dilated or impaired").

"Normal X" is not rewritten: it is the text tower's to read (whether "normal LV size" denies dilation depends on the
finding, which a rule on the prompt alone cannot know).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The report extractor's pre-negation triggers (appliance/truth/extract.py), plus its multi-word ones.
WORD_TRIGGERS = frozenset({"no", "not", "without", "nor", "neither"})
PHRASE_TRIGGERS = ("negative for", "absence of", "free of")
_CONTRACTIONS = {"isn't": "is", "aren't": "are", "wasn't": "was", "weren't": "were", "doesn't": "does",
                 "don't": "do"}
_PSEUDO = re.compile(
    r"\b(?:can ?not|could not|can't|not) (?:be |been |yet be )?(?:excluded|ruled out)\b"
    r"|\bno (?:significant |interval |further |definite )?(?:change|increase|progression|worsening)\b"
    r"|\bnot only\b", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """A prompt as the model reads it: the affirmative statement, and whether the prompt denies it. `partial`: a
    negation that denies only part of the prompt ("a dilated heart without infarction"), which no rule can turn
    into one vector: such a prompt is embedded as typed, and `prompts add` says so."""

    statement: str
    negated: bool
    partial: bool = False

    def describe(self) -> str:
        if self.partial:
            return (f"{self.statement!r}, as typed: only part of it is negated, and the text tower does not read "
                    "negation")
        return f"the opposite of {self.statement!r}" if self.negated else repr(self.statement)


_NEG = "\x00neg"  # a phrase trigger, while the words are counted
# Words after which a trigger denies the rest of the statement: "the RV is not dilated", "does not appear ...".
_VERBS = frozenset({"is", "are", "was", "were", "be", "been", "does", "do", "did", "has", "have", "appears",
                    "appear", "seems", "seem", "shows", "show"})


def read(prompt: str) -> Reading:
    typed = " ".join(prompt.split())
    if _PSEUDO.search(typed):
        return Reading(typed, False)
    text = typed
    for phrase in PHRASE_TRIGGERS:
        text = re.sub(rf"\b{phrase}\b", f" {_NEG} ", text, flags=re.IGNORECASE)
    tokens = re.findall(r"\x00neg|[A-Za-z']+|[^A-Za-z'\s]+", text)
    count, first, kept = 0, None, []
    for token in tokens:
        low = token.lower()
        if low == "nor" and count:  # "neither A nor B", "no A nor B": one negation over both
            kept.append("or")
            continue
        if low in WORD_TRIGGERS or token == _NEG:
            first = len(kept) if first is None else first
            count += 1
        elif low in _CONTRACTIONS:
            first = len(kept) + 1 if first is None else first
            count += 1
            kept.append(_CONTRACTIONS[low])
        else:
            kept.append(token)
    if count == 0:
        return Reading(typed, False)
    before = [t.lower() for t in kept[: first or 0] if any(ch.isalnum() for ch in t)]
    whole = not before or before[-1] in _VERBS or before in (["there", "is"], ["there", "are"], ["there", "was"])
    statement = re.sub(r"\s+([,.;:)])", r"\1", " ".join(kept)).strip()
    if not any(ch.isalnum() for ch in statement):
        return Reading(typed, False)
    if not whole:
        return Reading(typed, False, partial=True)
    return Reading(statement, count % 2 == 1)

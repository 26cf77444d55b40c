"""Negation in a prompt, by rule: "no pericardial effusion" is read as the opposite of "pericardial effusion".

Sentence encoders barely see negation: MiniLM puts "no pericardial effusion" at cosine ~0.93 to "pericardial
effusion", so a site's negated prompt would score the finding it denies (docs/reference-model.md measures it). The
appliance therefore reads a prompt as the report extractor reads a report (appliance/truth/extract.py, NegEx-style):
the negation triggers are removed, the affirmative statement is embedded, and its embedding is reversed, so every
cosine to it changes sign and a negated prompt ranks studies exactly opposite to its affirmative form.

Rules (a prompt is one statement, so the scope is the whole prompt):
1. Phrases with a negation word that negate nothing are left alone: "cannot be excluded", "not ruled out",
   "no change", "no interval increase", "not only".
2. Triggers: no, not, without, nor, neither, negative for, absence of, free of, and the contractions isn't, aren't,
   wasn't, weren't, doesn't, don't (read as is, are, was, were, does, do). Each is removed.
3. An odd number of triggers negates the prompt, an even number ("not without") does not; a "nor" after another
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
_TOKEN = re.compile(r"[A-Za-z']+|[^A-Za-z'\s]+")


@dataclass(frozen=True)
class Reading:
    """A prompt as the model reads it: the affirmative statement, and whether the prompt denies it."""

    statement: str
    negated: bool

    def describe(self) -> str:
        return f"the opposite of {self.statement!r}" if self.negated else repr(self.statement)


def read(prompt: str) -> Reading:
    text = " ".join(prompt.split())
    if _PSEUDO.search(text):
        return Reading(text, False)
    count = 0
    for phrase in PHRASE_TRIGGERS:
        pattern = re.compile(rf"\b{phrase}\b", re.IGNORECASE)
        count += len(pattern.findall(text))
        text = pattern.sub(" ", text)
    kept: list[str] = []
    for token in _TOKEN.findall(text):
        low = token.lower()
        if low == "nor" and count:  # "neither A nor B", "no A nor B": one negation over both
            kept.append("or")
        elif low in WORD_TRIGGERS:
            count += 1
        elif low in _CONTRACTIONS:
            count += 1
            kept.append(_CONTRACTIONS[low])
        else:
            kept.append(token)
    statement = re.sub(r"\s+([,.;:)])", r"\1", " ".join(kept)).strip()
    if count == 0 or not any(ch.isalnum() for ch in statement):
        return Reading(" ".join(prompt.split()), False)
    return Reading(statement, count % 2 == 1)

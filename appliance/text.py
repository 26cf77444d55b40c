"""Report and prompt text -> token ids, and token ids -> embeddings with the bundle's text encoder.

Two kinds of tokenizer, named by the bundle manifest's `text_encoder` block:
- `tokenizer` (a Hugging Face `tokenizer.json`, WordPiece): the pretrained, frozen sentence encoder the reference
  bundle ships (training/text_tower.py); read with the `tokenizers` library exactly as the model was trained;
- `vocabulary` (scanside-words/1): the word vocabulary of bundles whose text encoder was trained from scratch on
  the synthetic reports (format kept so those bundles still load).
The appliance embeds new prompts with the same tokenizer and ONNX file the image side was trained to meet.
numpy, tokenizers and onnxruntime only: no torch here.
"""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.lexicon import Abbreviations
from appliance.negation import Reading
from appliance.negation import read as read_negation

PAD, UNK = "[PAD]", "[UNK]"
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?|%")
FORMAT = "scanside-words/1"


class TokenizerError(ValueError):
    pass


def words(text: str) -> list[str]:
    """Lower-cased words, numbers and '%' signs; punctuation carries nothing a reader relies on here."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class Tokenizer:
    tokens: tuple[str, ...]  # index = id; 0 is padding, 1 unknown
    max_length: int = 64
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD, UNK):
            raise TokenizerError(f"vocabulary must start with {PAD}, {UNK}")
        if len(set(self.tokens)) != len(self.tokens):
            raise TokenizerError("vocabulary has duplicate tokens")
        object.__setattr__(self, "_ids", {t: i for i, t in enumerate(self.tokens)})

    @property
    def size(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 2, max_length: int = 64) -> Tokenizer:
        counts = Counter(w for t in texts for w in words(t))
        vocab = sorted(w for w, c in counts.items() if c >= min_count)
        return cls((PAD, UNK, *vocab), max_length)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask), both (N, max_length) int64; mask is 1 on real tokens. Long texts are cut."""
        ids = np.zeros((len(texts), self.max_length), dtype=np.int64)
        for row, text in enumerate(texts):
            seq = [self._ids.get(w, 1) for w in words(text)][: self.max_length]
            if not seq:
                raise TokenizerError(f"text {text!r} has no words")
            ids[row, : len(seq)] = seq
        return ids, (ids != 0).astype(np.int64)

    def unknown_words(self, text: str) -> list[str]:
        return [w for w in words(text) if w not in self._ids]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "max_length": self.max_length, "tokens": list(self.tokens)})

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TokenizerError(f"vocabulary is not valid JSON: {exc}") from None
        if data.get("format") != FORMAT:
            raise TokenizerError(f"vocabulary format {data.get('format')!r} is not {FORMAT!r}")
        return cls(tuple(data["tokens"]), int(data["max_length"]))


class WordPieceTokenizer:
    """A pretrained model's own tokenizer (`tokenizer.json`), padded per batch, cut at `max_length` pieces."""

    def __init__(self, path: Path, max_length: int = 128) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        try:
            self._tok = HfTokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a bare Exception on a malformed file
            raise TokenizerError(f"{Path(path).name} is not a tokenizer file: {exc}") from None
        self.max_length = max_length
        self._tok.no_padding()
        self._tok.no_truncation()
        model = json.loads(self._tok.to_str()).get("model", {})
        self._unk = str(model.get("unk_token", "[UNK]"))
        self._pad_id = self._tok.token_to_id("[PAD]") or 0
        self.size = self._tok.get_vocab_size()

    def pieces(self, text: str) -> list[str]:
        """The word pieces of `text` without the [CLS]/[SEP] the model adds."""
        return list(self._tok.encode(text, add_special_tokens=False).tokens)

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask), (N, longest) int64, padded with [PAD]; texts longer than max_length are cut."""
        encoded = self._tok.encode_batch(list(texts))
        for text, enc in zip(texts, encoded, strict=True):
            if len(enc.ids) <= 2:
                raise TokenizerError(f"text {text!r} has no words")
        width = min(self.max_length, max(len(e.ids) for e in encoded))
        ids = np.full((len(texts), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, enc in enumerate(encoded):
            seq = enc.ids[:width]
            if len(enc.ids) > width:  # keep the closing [SEP], as the model saw cut texts in training
                seq = [*enc.ids[: width - 1], enc.ids[-1]]
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return ids, mask

    def unknown_words(self, text: str) -> list[str]:
        """The words of `text` the vocabulary cannot represent (each became the unknown token)."""
        enc = self._tok.encode(text, add_special_tokens=False)
        return [text[start:end] for token, (start, end) in zip(enc.tokens, enc.offsets, strict=True)
                if token == self._unk]

    def length(self, text: str) -> int:
        """Pieces the model would see, [CLS] and [SEP] included."""
        return len(self._tok.encode(text).ids)


class TextEncoder:
    """The bundle's text encoder in ONNX Runtime: texts -> L2-normalised embeddings (N, D)."""

    tokenizer: Tokenizer | WordPieceTokenizer

    @classmethod
    def for_bundle(cls, bundle: Any) -> TextEncoder:
        """The text encoder a loaded bundle names in its manifest (`bundle.text_encoder`, `bundle.root`)."""
        te = bundle.text_encoder
        if not te or "path" not in te or not ("tokenizer" in te or "vocabulary" in te):
            raise TokenizerError(f"bundle {bundle.name} has no text encoder: its prompts cannot be embedded here")
        abbreviations = Abbreviations.load(bundle.root / te["abbreviations"]) if te.get("abbreviations") else None
        # Prompts on the appliance always have their negation read by rule: a site's "no effusion" must never
        # score effusion. A bundle's own prompts are affirmative, so their embeddings do not change.
        if "tokenizer" in te:
            return cls(bundle.root / te["path"], tokenizer_path=bundle.root / te["tokenizer"],
                       max_length=int(te.get("max_length", 128)), abbreviations=abbreviations, negation=True)
        return cls(bundle.root / te["path"], bundle.root / te["vocabulary"], abbreviations=abbreviations,
                   negation=True)

    def __init__(self, onnx_path: Path, vocabulary_path: Path | None = None, *, tokenizer_path: Path | None = None,
                 max_length: int = 128, abbreviations: Abbreviations | None = None, negation: bool = False) -> None:
        import onnxruntime as ort

        self.abbreviations = abbreviations
        self.negation = negation

        if (vocabulary_path is None) == (tokenizer_path is None):
            raise TokenizerError("a text encoder needs exactly one of a vocabulary or a tokenizer file")
        if tokenizer_path is not None:
            self.tokenizer = WordPieceTokenizer(Path(tokenizer_path), max_length)
        else:
            self.tokenizer = Tokenizer.from_json(Path(vocabulary_path).read_text())  # type: ignore[arg-type]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input_ids", "attention_mask"]:
            raise TokenizerError(f"text encoder inputs are {names}, expected ['input_ids', 'attention_mask']")

    def with_abbreviations(self, abbreviations: Abbreviations | None) -> TextEncoder:
        """The same model and tokenizer (one ONNX session, not a second load) reading with another lexicon."""
        other = copy.copy(self)
        other.abbreviations = abbreviations
        return other

    def with_negation(self, negation: bool) -> TextEncoder:
        """The same model reading negated prompts by rule (appliance/negation.py), or as the tower alone reads them."""
        other = copy.copy(self)
        other.negation = negation
        return other

    def reading(self, text: str) -> Reading:
        """What the model reads for `text`: the statement it embeds (abbreviations spelled out when the bundle carries
        a lexicon, negation triggers removed when negation is read by rule) and whether it is denied."""
        r = read_negation(text) if self.negation else Reading(text, False)
        statement = r.statement if self.abbreviations is None else self.abbreviations.expand(r.statement)
        return Reading(statement, r.negated)

    def reads_as(self, text: str) -> str:
        """The text the tokenizer is given for `text`."""
        return self.reading(text).statement

    def unrepresentable(self, text: str) -> list[str]:
        """Why the model cannot read `text` faithfully, as the offending words (empty: it can). Words the tokenizer
        maps to its unknown token; a text with no words at all is returned as itself."""
        if not any(ch.isalnum() for ch in text):
            return [text]
        text = self.reads_as(text)
        if isinstance(self.tokenizer, WordPieceTokenizer):
            if not self.tokenizer.pieces(text):
                return [text]
            return self.tokenizer.unknown_words(text)
        if not words(text):
            return [text]
        return self.tokenizer.unknown_words(text)

    def too_long(self, text: str) -> bool:
        text = self.reads_as(text)
        if isinstance(self.tokenizer, WordPieceTokenizer):
            return self.tokenizer.length(text) > self.tokenizer.max_length
        return len(words(text)) > self.tokenizer.max_length

    def embed(self, texts: Sequence[str], batch: int = 64) -> np.ndarray:
        if len(texts) > batch:
            return np.concatenate([self.embed(texts[i : i + batch], batch) for i in range(0, len(texts), batch)])
        readings = [self.reading(t) for t in texts]
        ids, mask = self.tokenizer.encode([r.statement for r in readings])
        (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        out = out.astype(np.float32)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        # a denied statement: every cosine to it changes sign (appliance/negation.py says why)
        return out * np.array([[-1.0 if r.negated else 1.0] for r in readings], dtype=np.float32)

"""Report and prompt text -> token ids, and token ids -> embeddings with the bundle's text encoder.

The same tokenizer trains the text encoder (training/) and embeds new prompts on the appliance, so a prompt
written at the scanner is read exactly as the training reports were. numpy and onnxruntime only: no torch here.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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


class TextEncoder:
    """The bundle's text encoder in ONNX Runtime: texts -> L2-normalised embeddings (N, D)."""

    def __init__(self, onnx_path: Path, vocabulary_path: Path) -> None:
        import onnxruntime as ort

        self.tokenizer = Tokenizer.from_json(Path(vocabulary_path).read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if names != ["input_ids", "attention_mask"]:
            raise TokenizerError(f"text encoder inputs are {names}, expected ['input_ids', 'attention_mask']")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask = self.tokenizer.encode(texts)
        (out,) = self.session.run(None, {"input_ids": ids, "attention_mask": mask})
        out = out.astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

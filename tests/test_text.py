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

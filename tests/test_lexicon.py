"""The abbreviation lexicon: whole words only, case-sensitive, the longest abbreviation first; a bad file refused."""

from __future__ import annotations

import json

import pytest

from appliance.lexicon import CMR, Abbreviations, LexiconError


@pytest.mark.parametrize(("text", "expected"), [
    ("LVH", "left ventricular hypertrophy"),
    ("reduced LVEF", "reduced left ventricular ejection fraction"),  # not "LV" + "EF"
    ("the LV is large", "the left ventricular is large"),
    ("dilated LV, normal RV.", "dilated left ventricular, normal right ventricular."),
    ("idiopathic DCM", "idiopathic dilated cardiomyopathy"),
    ("HFrEF", "heart failure with reduced ejection fraction"),
    ("lv is lower case, LVx is not a word, xLV neither", "lv is lower case, LVx is not a word, xLV neither"),
    ("no abbreviation here", "no abbreviation here"),
])
def test_expansion(text, expected):
    assert CMR.expand(text) == expected


def test_round_trip_and_refusals(tmp_path):
    path = tmp_path / "abbreviations.json"
    path.write_text(CMR.to_json())
    assert Abbreviations.load(path).expansions == CMR.expansions
    path.write_text(json.dumps({"format": "other", "expansions": {}}))
    with pytest.raises(LexiconError, match="is not scanside-abbreviations/1"):
        Abbreviations.load(path)
    path.write_text("{not json")
    with pytest.raises(LexiconError, match=r"abbreviations\.json"):
        Abbreviations.load(path)
    with pytest.raises(LexiconError, match="expected a word"):
        Abbreviations({"L V": "left ventricle"})
    with pytest.raises(LexiconError, match="non-empty expansion"):
        Abbreviations({"LV": " "})


def test_an_empty_lexicon_changes_nothing():
    assert Abbreviations({}).expand("LVH") == "LVH"


def test_a_lexicon_view_shares_the_model_and_reads_differently():
    from pathlib import Path

    from appliance.bundle import load_bundle
    from appliance.text import TextEncoder

    shipped = TextEncoder.for_bundle(load_bundle(Path(__file__).resolve().parent.parent / "engines" / "reference-v1"))
    raw = shipped.with_abbreviations(None)
    assert raw.session is shipped.session and shipped.abbreviations is not None
    assert (raw.reads_as("LVH"), shipped.reads_as("LVH")) == ("LVH", "left ventricular hypertrophy")
    assert float(shipped.embed(["LVH"])[0] @ shipped.embed(["left ventricular hypertrophy"])[0]) > 0.99
    assert float(raw.embed(["LVH"])[0] @ raw.embed(["left ventricular hypertrophy"])[0]) < 0.5

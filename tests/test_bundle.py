from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from appliance.bundle import Bundle, BundleError, Finding, LabelBank, load_bundle, save_label_bank, write_bundle
from tests.bundle_factory import TINY_SPEC, make_tiny_bundle


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture
def bundle_dir(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "tiny"))


def read_manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def write_manifest(root: Path, manifest: dict) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest))


def replace_listed(root: Path, rel: str, data: bytes) -> None:
    """Change a listed file and its hash, to test content checks separately from the hash check."""
    (root / rel).write_bytes(data)
    manifest = read_manifest(root)
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    write_manifest(root, manifest)


def test_placeholder_bundle_loads(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert isinstance(b, Bundle)
    assert (b.name, b.input_name, b.output_name, b.embedding_dim) == ("placeholder", "study", "embedding", 64)
    assert b.input_shape == (-1, 8, 3, 48, 48) and b.batch_size is None and b.sample_shape == (8, 3, 48, 48)
    assert b.preprocess == TINY_SPEC
    assert b.research_only is True
    assert "PLACEHOLDER" in b.description and "not for clinical use" in b.description
    assert "PLACEHOLDER" in json.dumps(b.manifest["made_by"])
    assert set(b.files) == {"encoder.onnx", "label_bank.json"}
    assert b.encoder_path == bundle_dir / "encoder.onnx"
    bank = b.label_bank
    assert len(bank.findings) == 10 and bank.dim == 64 and bank.reference is not None
    assert [f.id for f in bank.findings if f.rare] == ["amyloidosis"]
    for f in bank.findings:
        assert 2 <= len(f.prompts) <= 3
        np.testing.assert_allclose(np.linalg.norm(f.embeddings, axis=1), 1.0)


def test_same_seed_gives_identical_files_and_other_seed_does_not(pristine: Path, tmp_path: Path) -> None:
    again = make_tiny_bundle(tmp_path / "again")
    other = make_tiny_bundle(tmp_path / "other", seed=1)
    assert read_manifest(again)["files"] == read_manifest(pristine)["files"]
    assert read_manifest(other)["files"]["encoder.onnx"] != read_manifest(pristine)["files"]["encoder.onnx"]


def test_unlisted_extra_files_are_ignored(bundle_dir: Path) -> None:
    (bundle_dir / "encoder.plan").write_bytes(b"built on the target GPU")
    load_bundle(bundle_dir)


def test_tampered_file_is_refused_with_both_hashes(bundle_dir: Path) -> None:
    expected = read_manifest(bundle_dir)["files"]["encoder.onnx"]
    data = bytearray((bundle_dir / "encoder.onnx").read_bytes())
    data[-1] ^= 0xFF
    (bundle_dir / "encoder.onnx").write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(BundleError, match=rf"'encoder.onnx'.*expected {expected}, file has {actual}"):
        load_bundle(bundle_dir)


def test_missing_listed_file_is_refused(bundle_dir: Path) -> None:
    (bundle_dir / "label_bank.json").unlink()
    with pytest.raises(BundleError, match=r"listed file 'label_bank\.json' is missing"):
        load_bundle(bundle_dir)


def test_missing_or_unparseable_manifest_is_refused(bundle_dir: Path) -> None:
    text = (bundle_dir / "manifest.json").read_text()
    (bundle_dir / "manifest.json").write_text(text[:-20])
    with pytest.raises(BundleError, match=r"manifest\.json is not valid JSON"):
        load_bundle(bundle_dir)
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(bundle_dir)
    with pytest.raises(BundleError, match="not a directory"):
        load_bundle(bundle_dir / "nowhere")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format="other"), "format is 'other'"),
        (lambda m: m.update(format_version=2), "format_version 2 is not supported"),
        (lambda m: m.pop("encoder"), "missing encoder"),
        (lambda m: m["output"].update(dim=32), "64-dimensional but the encoder outputs 32"),
        (lambda m: m["input"].update(shape=[-1, 8, 3, 64, 64]), r"disagrees with preprocessing.*\[8, 3, 48, 48\]"),
        (lambda m: m["input"].update(layout="NCTHW"), "layout 'NCTHW'"),
        (lambda m: m["preprocessing"].update(frames=0), "frames must be an integer"),
        (lambda m: m["files"].pop("encoder.onnx"), "encoder file 'encoder.onnx' is not listed"),
        (lambda m: m["files"].update({"../escape.bin": "0" * 64}), "plain relative path"),
        (lambda m: m["files"].update({"encoder.onnx": "abc"}), "64 lowercase hex"),
    ],
)
def test_inconsistent_manifest_is_refused(bundle_dir: Path, edit, message: str) -> None:
    manifest = read_manifest(bundle_dir)
    edit(manifest)
    write_manifest(bundle_dir, manifest)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda b: b["findings"][0].update(prompts=[], embeddings=[]), "has no prompts"),
        (lambda b: b["findings"][1].update(threshold=float("nan")), "'lv_dilation': threshold must be a finite"),
        (
            lambda b: b["findings"][2].update(embeddings=[e[:10] for e in b["findings"][2]["embeddings"]]),
            "different embedding sizes",
        ),
        (lambda b: b["findings"][3].update(id="lv_dilation"), "duplicate finding ids"),
        (lambda b: b["findings"][4].pop("calibration"), "missing calibration"),
        (lambda b: b["reference"].update(variances=[1.0]), "one value per component"),
        (lambda b: b["findings"][5].update(id="lv\\rv"), "without ':', '\\\\' or control characters"),
        (lambda b: b["findings"][6].update(name="  "), "name must be a non-empty string"),
    ],
)
def test_bad_label_bank_is_refused(bundle_dir: Path, edit, message: str) -> None:
    bank = json.loads((bundle_dir / "label_bank.json").read_text())
    edit(bank)
    replace_listed(bundle_dir, "label_bank.json", json.dumps(bank).encode())
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle_dir)


def test_label_bank_round_trips_through_json(bundle_dir: Path) -> None:
    bank = load_bundle(bundle_dir).label_bank
    again = LabelBank.from_json(bank.to_json())
    assert [f.id for f in again.findings] == [f.id for f in bank.findings]
    for a, b in zip(again.findings, bank.findings, strict=True):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        assert (a.threshold, a.slope, a.intercept, a.rare) == (b.threshold, b.slope, b.intercept, b.rare)
    np.testing.assert_array_equal(again.reference.components, bank.reference.components)


def test_save_label_bank_keeps_bundle_loadable(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    old_hash = b.files["label_bank.json"]
    first = b.label_bank.findings[0]
    edited = replace(
        first,
        prompts=(*first.prompts, "an edited prompt"),
        embeddings=np.vstack([first.embeddings, np.eye(64)[:1] * 3.0]),
    )
    bank = LabelBank(findings=(edited, *b.label_bank.findings[1:]), reference=b.label_bank.reference)
    saved = save_label_bank(b, bank)
    reloaded = load_bundle(bundle_dir)
    for got in (saved, reloaded):
        assert got.label_bank.findings[0].prompts[-1] == "an edited prompt"
        assert got.files["label_bank.json"] != old_hash
    np.testing.assert_allclose(reloaded.label_bank.findings[0].embeddings[-1], np.eye(64)[0])
    assert sorted(p.name for p in bundle_dir.iterdir()) == ["encoder.onnx", "label_bank.json", "manifest.json"]


def test_save_label_bank_refuses_wrong_dimension(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    small = Finding("x", "X", ("p",), np.ones((1, 8)), 0.0, 1.0, 0.0, 0.1, False)
    with pytest.raises(BundleError, match="8-dimensional but the encoder outputs 64"):
        save_label_bank(b, LabelBank(findings=(small,)))
    load_bundle(bundle_dir)


def test_write_bundle_refuses_to_overwrite_by_accident(bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    args = dict(
        name="x",
        version="1",
        encoder_onnx_bytes=b.encoder_path.read_bytes(),
        label_bank=b.label_bank,
        preprocess=b.preprocess,
        input_name="study",
        output_name="embedding",
        dim=64,
        made_by={"note": "test"},
        description="test",
    )
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(bundle_dir, **args)
    write_bundle(bundle_dir, **args, extra_files={"notes/readme.txt": b"hi"}, overwrite=True)
    again = load_bundle(bundle_dir)
    assert again.name == "x" and "notes/readme.txt" in again.files

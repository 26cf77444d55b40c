from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.bundle import Finding, LabelBank, ReferenceStats
from appliance.scoring import (
    ScoringError,
    ScoringPolicy,
    fit_reference_stats,
    ood_distance,
    score_batch,
    score_embedding,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def hand_bank(reference: ReferenceStats | None = None) -> LabelBank:
    a = Finding(
        id="lv_dilation",
        name="LV dilation",
        prompts=("dilated LV", "big LV"),
        embeddings=np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]),
        threshold=0.5,
        slope=10.0,
        intercept=-5.0,
        prevalence=0.1,
        rare=False,
    )
    b = Finding(
        id="amyloidosis",
        name="Amyloidosis",
        prompts=("amyloid",),
        embeddings=np.array([[0, 0, 2.0, 0]]),  # not unit length: normalised at load
        threshold=0.3,
        slope=4.0,
        intercept=-1.2,
        prevalence=0.01,
        rare=True,
    )
    return LabelBank(findings=(a, b), reference=reference)


def test_scores_match_a_hand_computation() -> None:
    s = score_embedding(np.array([3.0, 4.0, 0.0, 0.0]), hand_bank())  # normalised: (0.6, 0.8, 0, 0)
    dil, amy = s.findings
    assert dil.score == pytest.approx(0.7)  # mean of cosines 0.6 and 0.8
    assert dil.positive and dil.probability == pytest.approx(sigmoid(10 * 0.7 - 5))
    assert dil.review_reasons == ()
    assert amy.score == pytest.approx(0.0) and not amy.positive
    assert amy.probability == pytest.approx(sigmoid(-1.2))
    assert s.review_reasons == () and s.ood_distance is None and not s.needs_review


def test_rare_positive_and_near_threshold_reasons() -> None:
    s = score_embedding(np.array([1.0, 0.0, 1.0, 0.0]), hand_bank())  # (0.707, 0, 0.707, 0)
    dil, amy = s.findings
    assert dil.score == pytest.approx(math.sqrt(0.5) / 2) and not dil.positive
    assert amy.score == pytest.approx(math.sqrt(0.5)) and amy.positive and amy.rare
    assert amy.probability == pytest.approx(sigmoid(4 * math.sqrt(0.5) - 1.2))
    assert amy.review_reasons == ("rare_finding",)
    assert s.review_reasons == ("amyloidosis:rare_finding",)

    s = score_embedding(np.array([1.0, 0.0, 0.0, 0.0]), hand_bank())  # lv_dilation score exactly at threshold
    dil = s.findings[0]
    assert dil.score == pytest.approx(0.5) and dil.positive and dil.probability == pytest.approx(0.5)
    assert s.review_reasons == ("lv_dilation:near_threshold",)

    quiet = ScoringPolicy(review_band=(0.0, 0.0), flag_rare_positive=False)
    assert score_embedding(np.array([1.0, 0.0, 1.0, 0.0]), hand_bank(), quiet).review_reasons == ()


def test_policy_rejects_a_bad_band() -> None:
    with pytest.raises(ValueError, match="review_band"):
        ScoringPolicy(review_band=(0.7, 0.3))


def test_ood_distance_matches_formula() -> None:
    ref = ReferenceStats(
        mean=np.zeros(4),
        components=np.array([[1.0, 0, 0, 0]]),
        variances=np.array([0.25]),
        residual_variance=0.01,
        threshold=3.0,
    )
    # 0.6 along the component (0.36 / 0.25) and 0.8 in the residual (0.64 / 0.01)
    assert ood_distance(np.array([0.6, 0.8, 0, 0]), ref) == pytest.approx(math.sqrt(0.36 / 0.25 + 0.64 / 0.01))


def clustered(rng: np.random.Generator, n: int, dim: int = 16) -> np.ndarray:
    centre = np.zeros(dim)
    centre[0] = 1.0
    spread = rng.standard_normal((n, dim)) * np.linspace(0.3, 0.02, dim)
    return centre + spread


def test_ood_small_for_reference_like_and_large_for_far_away() -> None:
    rng = np.random.default_rng(0)
    train = clustered(rng, 400)
    ref = fit_reference_stats(train, k=4, quantile=0.99)
    train_unit = train / np.linalg.norm(train, axis=1, keepdims=True)
    distances = np.array([ood_distance(x, ref) for x in train_unit])
    assert np.mean(distances > ref.threshold) <= 0.02
    fresh = clustered(rng, 1)[0]
    near = ood_distance(fresh / np.linalg.norm(fresh), ref)
    far_vec = -np.eye(16)[0] + 0.1 * np.eye(16)[5]
    far = ood_distance(far_vec / np.linalg.norm(far_vec), ref)
    assert near < ref.threshold < far and far > 2 * ref.threshold

    bank = LabelBank(
        findings=(Finding("f", "F", ("p",), np.eye(16)[:1], 0.5, 1.0, 0.0, 0.1, False),), reference=ref
    )
    flagged = score_embedding(far_vec, bank)
    assert flagged.review_reasons[0] == "out_of_distribution" and flagged.ood_distance == pytest.approx(far)
    assert "out_of_distribution" not in score_embedding(fresh, bank).review_reasons
    unchecked = score_embedding(far_vec, bank, ScoringPolicy(ood_check=False))
    assert "out_of_distribution" not in unchecked.review_reasons and unchecked.ood_distance == pytest.approx(far)


def test_score_batch_equals_single_scoring() -> None:
    rng = np.random.default_rng(1)
    ref = fit_reference_stats(rng.standard_normal((50, 4)), k=2)
    bank = hand_bank(ref)
    embeddings = rng.standard_normal((7, 4)).astype(np.float32)
    batch = score_batch(embeddings, bank)
    assert len(batch) == 7
    for e, s in zip(embeddings, batch, strict=True):
        single = score_embedding(e, bank)
        assert s.review_reasons == single.review_reasons
        assert s.ood_distance == pytest.approx(single.ood_distance, rel=1e-9)
        for a, b in zip(s.findings, single.findings, strict=True):
            assert (a.finding_id, a.positive, a.review_reasons) == (b.finding_id, b.positive, b.review_reasons)
            assert a.score == pytest.approx(b.score, rel=1e-9)
            assert a.probability == pytest.approx(b.probability, rel=1e-9)


@pytest.mark.parametrize(
    "embedding, message",
    [
        (np.ones(5), "4 values"),
        (np.array([np.nan, 0, 0, 0]), "non-finite"),
        (np.zeros(4), "all zeros"),
        (np.ones((2, 4)), "use score_batch"),
    ],
)
def test_unscorable_embeddings_are_refused(embedding: np.ndarray, message: str) -> None:
    with pytest.raises(ScoringError, match=message):
        score_embedding(embedding, hand_bank())


def test_fit_reference_stats_shapes_and_guards() -> None:
    rng = np.random.default_rng(2)
    ref = fit_reference_stats(rng.standard_normal((20, 6)), k=8)
    assert ref.components.shape == (5, 6)  # k capped at D - 1 so a residual remains
    np.testing.assert_allclose(ref.components @ ref.components.T, np.eye(5), atol=1e-10)
    assert (np.diff(ref.variances) <= 1e-12).all()
    with pytest.raises(ValueError, match="at least 2"):
        fit_reference_stats(np.ones((1, 6)))

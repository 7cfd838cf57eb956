"""EER, minDCF, actual DCF and DET: edge cases, parity with scikit-learn and SpeechBrain."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve
from speechbrain.utils.metric_stats import EER as sb_eer
from speechbrain.utils.metric_stats import minDCF as sb_min_dcf

from arw_sv.metrics import actual_dcf, det_curve, eer, min_dcf, operating_points, rates_at_threshold


def _random(rng, n_tar, n_non, gap=1.5, decimals=None):
    scores = np.concatenate([rng.normal(gap, 1, n_tar), rng.normal(0, 1, n_non)])
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels = np.concatenate([np.ones(n_tar, np.int8), np.zeros(n_non, np.int8)])
    order = rng.permutation(scores.size)
    return scores[order], labels[order]


def _sklearn_eer(scores, labels):
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    k = int(np.argmin(np.abs(fnr - fpr)))
    return (fpr[k] + fnr[k]) / 2


def _rates(scores, labels, threshold, accept_equal):
    accepted = scores >= threshold if accept_equal else scores > threshold
    t = labels == 1
    return (~accepted & t).sum() / t.sum(), (accepted & ~t).sum() / (~t).sum()


def test_perfect_separation_gives_zero_and_a_working_threshold(rng):
    scores = np.concatenate([rng.uniform(2, 3, 50), rng.uniform(0, 1, 70)])
    labels = np.r_[np.ones(50), np.zeros(70)]
    value, threshold = eer(scores, labels)
    assert value == 0.0
    assert _rates(scores, labels, threshold, True) == (0.0, 0.0)
    assert min_dcf(scores, labels, 0.01)[0] == 0.0


def test_inverted_scores_give_one(rng):
    scores = np.concatenate([rng.uniform(0, 1, 50), rng.uniform(2, 3, 70)])
    assert eer(scores, np.r_[np.ones(50), np.zeros(70)])[0] == 1.0


def test_random_scores_give_about_half(rng):
    scores = rng.normal(size=20_001)
    labels = rng.integers(0, 2, scores.size)
    assert abs(eer(scores, labels)[0] - 0.5) < 0.02


@pytest.mark.parametrize("decimals", [None, 1])
def test_eer_matches_sklearn_roc(rng, decimals):
    # Odd class sizes: |FAR - FRR| can then never tie between two points, where the two
    # conventions legitimately pick different sides (see the tie test below).
    for n_tar, n_non in [(101, 303), (2001, 4999), (999, 99)]:
        scores, labels = _random(rng, n_tar, n_non, decimals=decimals)
        assert eer(scores, labels)[0] == pytest.approx(_sklearn_eer(scores, labels), abs=1e-12)


@pytest.mark.parametrize("decimals", [None, 2])
def test_eer_and_min_dcf_match_speechbrain(rng, decimals):
    scores, labels = _random(rng, 1201, 1799, gap=2.0, decimals=decimals)
    pos = torch.tensor(scores[labels == 1], dtype=torch.float32)
    neg = torch.tensor(scores[labels == 0], dtype=torch.float32)
    scores32 = scores.astype(np.float32).astype(np.float64)  # what SpeechBrain sees
    sb_value, sb_threshold = sb_eer(pos, neg)
    value, threshold = eer(scores32, labels)
    assert value == pytest.approx(sb_value, abs=1e-6)
    # Same operating point: our ">=" threshold and SpeechBrain's ">" threshold agree.
    np.testing.assert_allclose(
        _rates(scores32, labels, threshold, True), _rates(scores32, labels, sb_threshold, False)
    )
    for p in (0.01, 0.05):
        sb_dcf, _ = sb_min_dcf(pos, neg, p_target=p)
        # SpeechBrain does not normalise; NIST/WeSpeaker divide by min(p, 1 - p).
        assert min_dcf(scores32, labels, p)[0] * min(p, 1 - p) == pytest.approx(sb_dcf, abs=1e-6)


def test_equidistant_points_resolve_to_the_lower_threshold_like_speechbrain():
    # One target at 0.5, non-targets at 0.3 and 0.7: accepting >= 0.5 gives FAR 0.5 / FRR 0,
    # accepting >= 0.7 gives FAR 0.5 / FRR 1: |FAR - FRR| = 0.5 at both.
    scores = np.array([0.5, 0.3, 0.7])
    labels = np.array([1, 0, 0])
    assert eer(scores, labels) == (0.25, 0.5)
    assert sb_eer(torch.tensor([0.5]), torch.tensor([0.3, 0.7]))[0] == pytest.approx(0.25)


def test_monotone_transform_leaves_rates_unchanged(rng):
    scores, labels = _random(rng, 500, 1500, decimals=2)
    value, threshold = eer(scores, labels)
    warped = np.exp(3 * scores) + 7  # strictly increasing
    value2, threshold2 = eer(warped, labels)
    assert value2 == value
    assert threshold2 == pytest.approx(np.exp(3 * threshold) + 7)
    for p in (0.01, 0.05):
        assert min_dcf(warped, labels, p)[0] == min_dcf(scores, labels, p)[0]


def test_ties_do_not_depend_on_trial_order(rng):
    scores, labels = _random(rng, 400, 600, decimals=0)  # a handful of distinct scores
    reference = (eer(scores, labels), min_dcf(scores, labels, 0.05))
    for _ in range(5):
        order = rng.permutation(scores.size)
        assert (
            eer(scores[order], labels[order]),
            min_dcf(scores[order], labels[order], 0.05),
        ) == reference
    # All scores equal: one threshold accepts all, the other rejects all.
    assert eer(np.zeros(10), np.r_[np.ones(4), np.zeros(6)])[0] == 0.5


def test_integer_weights_equal_repeated_trials(rng):
    scores, labels = _random(rng, 300, 500, decimals=2)
    weights = rng.integers(0, 4, scores.size)
    repeated = np.repeat(np.arange(scores.size), weights)
    assert eer(scores, labels, weights)[0] == pytest.approx(
        eer(scores[repeated], labels[repeated])[0], abs=1e-15
    )
    assert min_dcf(scores, labels, 0.01, weights=weights)[0] == pytest.approx(
        min_dcf(scores[repeated], labels[repeated], 0.01)[0], abs=1e-12
    )


def test_min_dcf_is_normalised_and_at_most_one(rng):
    scores, labels = _random(rng, 50, 5000, gap=0.1)
    value, threshold = min_dcf(scores, labels, 0.01)
    frr, far = _rates(scores, labels, threshold, True)
    assert value == pytest.approx((0.01 * frr + 0.99 * far) / 0.01)
    assert value <= 1.0


def test_actual_dcf_at_a_threshold_and_bayes_threshold(rng):
    scores, labels = _random(rng, 300, 700)
    frr, far = rates_at_threshold(scores, labels, 0.8)
    assert actual_dcf(scores, labels, 0.8, p_target=0.05) == pytest.approx(
        (0.05 * frr + 0.95 * far) / 0.05
    )
    # At the minDCF threshold the actual cost is the minimum.
    value, threshold = min_dcf(scores, labels, 0.05)
    assert actual_dcf(scores, labels, threshold, p_target=0.05) == pytest.approx(value)
    # Bayes threshold for LLRs: log((1 - p) / p).
    bayes = np.log(0.99 / 0.01)
    assert actual_dcf(scores, labels, p_target=0.01) == actual_dcf(
        scores, labels, bayes, p_target=0.01
    )


def test_det_curve_is_monotone_and_spans_the_extremes(rng):
    scores, labels = _random(rng, 200, 300, decimals=1)
    far, frr, thresholds = det_curve(scores, labels)
    assert far[0] == 1.0 and frr[0] == 0.0 and far[-1] == 0.0 and frr[-1] == 1.0
    assert (
        np.all(np.diff(far) <= 0) and np.all(np.diff(frr) >= 0) and np.all(np.diff(thresholds) > 0)
    )
    points = operating_points(scores, labels)
    assert points.misses.dtype.kind == "i"  # exact integer counts without weights


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, np.nan, 0.3], [1, 0, 1], "NaN"),
        ([0.1, 0.2, 0.3], [1, 2, 0], "0 or 1"),
        ([0.1, 0.2], [1, 1], "no target|non-target"),
        ([0.1, 0.2], [1, 0, 1], "labels"),
    ],
)
def test_bad_inputs_are_rejected_with_a_reason(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        eer(np.array(scores), np.array(labels))


# ---- the probit of the DET axes (numpy AS241) -------------------------------------------------


def test_probit_matches_scipy_and_the_standard_library(rng):
    import statistics

    from scipy.special import ndtri

    from arw_sv.metrics.probit import probit

    p = np.concatenate(
        [
            rng.random(50_000),
            10 ** rng.uniform(-300, -1, 5_000),  # the far tails, both sides
            1 - 10 ** rng.uniform(-16, -1, 5_000),
            [0.075, 0.925, 0.07500001, 1e-5, 1 - 1e-5, 0.5],  # region edges, the DET clip
        ]
    )
    got = probit(p)
    np.testing.assert_allclose(got, ndtri(p), rtol=4e-15, atol=0)
    normal = statistics.NormalDist()
    sample = p[::25]
    assert np.array_equal(got[::25], [normal.inv_cdf(x) for x in sample])  # the same AS241
    assert probit(0.5) == 0.0 and probit(0.0) == -np.inf and probit(1.0) == np.inf
    exact = np.arange(1, 2**20, 997) / 2**20  # 1 - p is exact for these
    np.testing.assert_array_equal(probit(1 - exact), -probit(exact))  # odd about 1/2
    assert probit(np.zeros((2, 3))).shape == (2, 3)


@pytest.mark.parametrize("bad", [-0.1, 1.5, np.nan])
def test_probit_rejects_what_is_not_a_probability(bad):
    from arw_sv.metrics.probit import probit

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        probit([0.2, bad])


def test_det_summary_by_count_table_equals_the_direct_probit(rng):
    from arw_sv.metrics.probit import probit
    from arw_sv.metrics.report import _clipped_probit

    scores, labels = rng.normal(size=5000), rng.integers(0, 2, 5000)
    labels[:3] = [0, 1, 1]
    points = operating_points(scores, labels)
    for counts, total, rates in (
        (points.false_alarms, points.n_nontarget, points.far),
        (points.misses, points.n_target, points.frr),
    ):
        direct = probit(np.clip(rates, 1e-5, 1 - 1e-5))
        assert np.array_equal(_clipped_probit(counts, total), direct)
    weighted = operating_points(scores, labels, rng.random(5000))  # float counts: direct
    direct = probit(np.clip(weighted.far, 1e-5, 1 - 1e-5))
    assert np.array_equal(_clipped_probit(weighted.false_alarms, weighted.n_nontarget), direct)

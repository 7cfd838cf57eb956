"""The Q5 probes' two pieces of arithmetic (bench.calibration.quantile_probe): the
exact-parity ranking and the per-kind LLR maps."""

import numpy as np

from arw_sv.metrics.rates import eer
from bench.calibration.quantile_probe import kind_llr, parity_map


def _groups_and_scores(rng):
    n = 60_000
    ga = rng.choice(np.array(["a", "b", "c"]), size=n, p=[0.6, 0.3, 0.1])
    gb = np.where(rng.random(n) < 0.7, ga, rng.choice(np.array(["a", "b", "c"]), size=n))
    labels = ((ga == gb) & (rng.random(n) < 0.1)).astype(np.int8)
    shift = {"a": 0.0, "b": 0.8, "c": 1.6}  # group b and c impostors score higher
    base = np.array([shift[g] for g in ga]) * (ga == gb)
    scores = rng.normal(base + 2.5 * labels, 1.0)
    return scores, labels, ga, gb


def test_parity_map_equalises_every_groups_fmr_at_every_threshold_and_keeps_order():
    rng = np.random.default_rng(0)
    scores, labels, ga, gb = _groups_and_scores(rng)
    for cross in ("bottom", "mean"):
        mapped = parity_map(scores, labels, ga, gb, cross)
        for t in (0.5, 0.9, 0.99, 0.999):
            fmr = []
            for g in ("a", "b", "c"):
                non = (ga == g) & (gb == g) & (labels == 0)
                fmr.append(np.mean(mapped[non] > t))
            # the within-group non-target CDF of each group: FMR 1 - t for all (up to ties)
            assert np.allclose(fmr, 1 - t, atol=2.0 / ((ga == "c") & (gb == "c")).sum() + 1e-3)
        for g in ("a", "b", "c"):  # monotone within a group
            rows = np.flatnonzero((ga == g) & (gb == g))
            order = np.argsort(scores[rows])
            assert (np.diff(mapped[rows][order]) >= 0).all()
    # raw scores are far from parity at 1 - t = 1%
    raw = [np.mean(scores[(ga == g) & (gb == g) & (labels == 0)] > 2.33) for g in "abc"]
    assert max(raw) / min(raw) > 5


def test_parity_map_bottom_puts_cross_group_trials_below_all_and_mean_averages_the_sides():
    rng = np.random.default_rng(1)
    scores, labels, ga, gb = _groups_and_scores(rng)
    bottom = parity_map(scores, labels, ga, gb, "bottom")
    cross = ga != gb
    assert bottom[cross].max() < bottom[~cross].min()
    mean = parity_map(scores, labels, ga, gb, "mean")
    i = int(np.flatnonzero(cross)[0])
    ref = {g: np.sort(scores[(ga == g) & (gb == g) & (labels == 0)]) for g in "abc"}
    direct = np.mean([np.mean(ref[g] < scores[i]) for g in (ga[i], gb[i])])  # no ties here
    assert abs(mean[i] - direct) < 1e-12
    # pushing cross-group impostors down cannot raise the EER of the pooled list
    assert eer(bottom, labels)[0] <= eer(mean, labels)[0]


def test_kind_llr_adds_the_kinds_log_share_ratio_to_a_balanced_fit():
    rng = np.random.default_rng(2)
    n = 40_000
    y = rng.random(n) < 0.2
    same = np.where(y, rng.random(n) < 0.8, rng.random(n) < 0.1)
    s = rng.normal(np.where(y, 2.0, 0.0), 1.0)
    (a_same, c_same), (a_cross, c_cross) = kind_llr(s, y, same)
    # equal-variance Gaussians: the balanced LLR is 2 s - 2 in both kinds
    for a in (a_same, a_cross):
        assert abs(a - 2.0) < 0.1

    def share(kind: np.ndarray) -> float:
        tar = (y[kind].sum() + 0.5) / (y.sum() + 1)
        return np.log(tar) - np.log(((~y)[kind].sum() + 0.5) / ((~y).sum() + 1))

    assert abs(c_same - (-2.0 + share(same))) < 0.1
    assert abs(c_cross - (-2.0 + share(~same))) < 0.1
    assert c_same - c_cross > 2.5  # log(0.8/0.1) - log(0.2/0.9) = 3.6

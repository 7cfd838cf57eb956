"""bench/calibration/paired.py: the paired speaker bootstrap of a back-end's changes."""

import numpy as np
import pytest

from arw_sv.metrics.bootstrap import speaker_multiplicities, trial_weights
from arw_sv.metrics.groups import Grouping
from arw_sv.metrics.report import default_strata, fairness_report
from bench.calibration.paired import _ScoreSet, paired_changes


def _trials(seed=0, n_spk=24, per_pair=20):
    """Every ordered speaker pair with ``per_pair`` trials; speakers alternate between groups
    "a" and "b"; group b's impostors score higher."""
    rng = np.random.default_rng(seed)
    group = np.array(["a", "b"] * (n_spk // 2))
    e, t, y = [], [], []
    for a in range(n_spk):
        for b in range(n_spk):
            if a <= b:
                k = per_pair if a != b else 3 * per_pair
                e += [a] * k
                t += [b] * k
                y += [a == b] * k
    e, t, y = np.array(e), np.array(t), np.array(y)
    s = np.where(y, 2.0, 0.0) + rng.normal(size=y.size)
    s += 0.3 * ((group[e] == "b") & (group[t] == "b") & ~y)
    grouping = Grouping.from_values("g", list(group))
    return s, y, e, t, {"g": grouping}


def test_point_changes_match_the_report():
    s, y, e, t, groupings = _trials()
    shifted = s.copy()
    shifted[(e % 2 == 1) & (t % 2 == 1) & ~y] -= 0.3  # undo b's impostor shift
    both = paired_changes({"raw": s, "cal": shifted}, y, e, t, groupings, n_resamples=20)
    out = both["cal"]
    ra, rb = (fairness_report(x, y, e, t, list(groupings.values()), min_speakers=5)
              for x in (s, shifted))  # fmt: skip
    assert out["min_dcf"]["change"] == pytest.approx(
        rb["overall"]["min_dcf"]["0.01"]["value"] - ra["overall"]["min_dcf"]["0.01"]["value"]
    )
    for key, name in (("0.01", "global_fmr_0.01"), ("eer", "global_eer")):
        a = ra["groups"]["g"]["disparity"]["at_threshold"][name]["fmr_ratio"]
        b = rb["groups"]["g"]["disparity"]["at_threshold"][name]["fmr_ratio"]
        assert out[f"g@{key}"]["change"] == pytest.approx(b - a)
    assert out["g@0.01"]["change"] < 0  # the shift had raised b's FMR above a's


def test_per_resample_ratio_against_direct_weights():
    s, y, e, t, groupings = _trials(seed=1)
    strata = default_strata(list(groupings.values()), 24)
    mult = speaker_multiplicities(strata, 7, np.random.default_rng(3))
    ss = _ScoreSet(s, y, e, t, mult, groupings, 5)
    thr = ss.thresholds["0.01"]
    grp = groupings["g"].speaker_group
    for r in range(7):
        w = trial_weights(mult[r], e, t).astype(float)
        fmr = []
        for g in (0, 1):
            non = (grp[e] == g) & (grp[t] == g) & ~y
            fmr.append(w[non & (s >= thr)].sum() / w[non].sum())
        assert ss.ratio_r["g@0.01"][r] == pytest.approx(max(fmr) / min(fmr))


def test_worse_beyond_noise_flags_a_real_worsening_only():
    s, y, e, t, groupings = _trials(seed=2)
    worse = s.copy()
    worse[(e % 2 == 1) & (t % 2 == 1) & ~y] += 0.5  # b's impostors even higher
    out = paired_changes({"raw": s, "same": s.copy(), "worse": worse}, y, e, t, groupings,
                         n_resamples=100)  # fmt: skip
    assert out["worse"]["g@0.01"]["worse_beyond_noise"]
    assert out["worse"]["g@0.01"]["low"] > 0
    same = out["same"]
    assert not any(row["worse_beyond_noise"] for row in same.values())
    assert same["g@0.01"]["low"] == same["g@0.01"]["high"] == 0.0


def test_reference_must_be_among_the_sets():
    s, y, e, t, groupings = _trials()
    with pytest.raises(ValueError, match="no 'raw'"):
        paired_changes({"cal": s}, y, e, t, groupings, n_resamples=5)


def test_each_sets_own_ratio_and_its_interval():
    s, y, e, t, groupings = _trials(seed=4)
    both = paired_changes({"raw": s, "cal": s + 1.0}, y, e, t, groupings, n_resamples=50)
    raw, cal = both["ratios"]["raw"]["g@0.01"], both["ratios"]["cal"]["g@0.01"]
    report = fairness_report(s, y, e, t, list(groupings.values()), min_speakers=5)
    expected = report["groups"]["g"]["disparity"]["at_threshold"]["global_fmr_0.01"]
    assert raw["value"] == pytest.approx(expected["fmr_ratio"])
    assert raw["low"] <= raw["value"] <= raw["high"]
    assert cal == raw  # a shift of every score changes no rate
    assert both["cal"]["g@0.01"]["change"] == 0.0


def test_null_floor_is_near_one_with_many_speakers_and_wider_with_few():
    from bench.calibration.paired import null_ratio_floor

    def floor(n_spk):
        s, y, e, t, _ = _trials(seed=5, n_spk=n_spk, per_pair=4)
        s = s.copy()
        s[(e % 2 == 1) & (t % 2 == 1) & ~y] -= 0.3  # no planted group difference
        strata = np.arange(n_spk) % 2
        return null_ratio_floor(s, y, e, t, strata, 2, n_splits=30)["eer"]

    small, large = floor(12), floor(60)
    assert 1.0 <= large["median"] < 1.15
    assert small["median"] > large["median"]
    assert small["p90"] >= small["median"]

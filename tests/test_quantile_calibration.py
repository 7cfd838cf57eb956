"""Per-region quantile matching (``quantile``, ``oracle_quantile``): monotone within a
region, FMR parity across regions at every threshold, shrinkage by speakers, exact JSON."""

from __future__ import annotations

import numpy as np
import pytest

from arw_sv.calibration import fit_calibrator, load_calibrator, save_calibrator
from arw_sv.calibration.quantile import LEVELS, apply_quantile_maps

# Three regions whose non-target scores are shifted and scaled differently (a crowded
# region's impostors score high and spread wide), targets above them.
NON = {0: (0.10, 0.08), 1: (0.25, 0.12), 2: (0.02, 0.05)}


def _regions(rng, n_speakers=60, per_speaker=10, dim=8):
    """Utterances in three well-separated regions of the sphere, speakers nested in them."""
    centres = np.eye(dim)[:3] * 6.0
    region = np.repeat(np.arange(n_speakers) % 3, per_speaker)
    speaker = np.repeat(np.arange(n_speakers), per_speaker)
    emb = centres[region] + rng.normal(size=(region.size, dim))
    return emb, region, np.array([f"s{k:03d}" for k in speaker])


def _trials(rng, region, n_non, n_tar):
    """Within-region trials; scores drawn from the region's distributions."""
    enroll = rng.integers(0, region.size, n_non + n_tar)
    test = np.empty_like(enroll)
    for r in range(3):  # the test side in the enrolment side's region
        members = np.flatnonzero(region == r)
        rows = np.flatnonzero(region[enroll] == r)
        test[rows] = rng.choice(members, rows.size)
    labels = np.r_[np.zeros(n_non, bool), np.ones(n_tar, bool)]
    g = region[enroll]
    mu = np.array([NON[r][0] for r in range(3)])[g]
    sd = np.array([NON[r][1] for r in range(3)])[g]
    scores = np.where(labels, mu + 5 * sd, mu) + sd * rng.standard_normal(labels.size)
    return scores, labels, enroll, test


def _fmr_ratio(scores, labels, group, fmr):
    """max/min FMR across groups at the threshold of overall FMR ``fmr`` (by counting)."""
    thr = np.quantile(scores[~labels], 1.0 - fmr)
    rates = [np.mean(scores[~labels & (group == g)] > thr) for g in np.unique(group)]
    return max(rates) / min(rates) if min(rates) > 0 else np.inf


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(7)
    emb, region, speakers = _regions(rng)
    scores, labels, enroll, test = _trials(rng, region, 200_000, 20_000)
    cal = fit_calibrator(
        "quantile", scores, labels, enroll, test, emb, clusters=3, seed=0,
        utterance_speakers=speakers,
    )  # fmt: skip
    # Independent test utterances and trials, drawn the same way.
    emb2, region2, _ = _regions(rng)
    trials = _trials(rng, region2, 300_000, 20_000)
    return cal, emb2, region2, trials


def test_fmr_is_equal_across_regions_at_every_threshold(fitted):
    cal, emb, region, (scores, labels, enroll, test) = fitted
    llr = cal.transform_indexed(scores, enroll, test, emb)
    group = region[enroll]
    for fmr in (0.001, 0.01, 0.05, 0.2):
        raw = _fmr_ratio(scores, labels, group, fmr)
        got = _fmr_ratio(llr, labels, group, fmr)
        assert raw > 3.0, (fmr, raw)  # the planted disparity is there before
        assert got < (1.35 if fmr == 0.001 else 1.12), (fmr, got)
    # FSN (one offset, fitted at FMR 1%) equalises 1% only: at 20% its ratio stays wide.
    fsn = fit_calibrator(
        "fsn", *_calibration_like(fitted), clusters=3, seed=0, target_fmr=0.01
    )  # fmt: skip
    shifted = fsn.transform_indexed(scores, enroll, test, emb)
    assert _fmr_ratio(shifted, labels, group, 0.01) < 1.15
    assert _fmr_ratio(shifted, labels, group, 0.2) > 1.3


def _calibration_like(fitted):
    """A fresh calibration draw (for the FSN comparison)."""
    rng = np.random.default_rng(8)
    emb, region, _ = _regions(rng)
    scores, labels, enroll, test = _trials(rng, region, 200_000, 20_000)
    return scores, labels, enroll, test, emb


def test_monotone_within_a_region(fitted):
    cal, emb, region, _ = fitted
    grid = np.linspace(-1.0, 1.0, 2001)
    for r in range(3):
        row = np.flatnonzero(region == r)[0]
        side = np.full(grid.size, row)
        out = cal.transform_indexed(grid, side, side, emb)
        assert np.all(np.diff(out) > 0), r  # strictly: the global map's slope is positive
    # Between two regions: the mean of two increasing maps, increasing too.
    a, b = np.flatnonzero(region == 0)[0], np.flatnonzero(region == 1)[0]
    out = cal.transform_indexed(grid, np.full(grid.size, a), np.full(grid.size, b), emb)
    assert np.all(np.diff(out) > 0)


def test_the_map_is_the_quantile_transform_on_its_knots():
    # Independent check of one region's map: a region whose non-targets are the global
    # ones scaled by 2 about 0 maps s to s / 2 wherever the knots are reliable.
    rng = np.random.default_rng(3)
    from arw_sv.calibration.quantile import fit_quantile_maps

    base = rng.standard_normal(400_000)
    scores = np.r_[base, 2.0 * rng.standard_normal(400_000)]
    nontarget = np.ones(scores.size, bool)
    touching = [np.arange(400_000), np.arange(400_000, 800_000)]
    knots, w = fit_quantile_maps(scores, nontarget, touching, np.ones(2))
    np.testing.assert_array_equal(w, [1.0, 1.0])
    probe = np.linspace(-2.4, 6.0, 43)  # inside region 1's knots, FMR 0.9 to 0.0013
    mapped = apply_quantile_maps(knots, probe, np.ones(probe.size, int))
    # The global distribution is the 50/50 mixture; region 1's map is G^-1(F_1(s)).
    from statistics import NormalDist

    def mixture_inverse(p):
        lo, hi = -20.0, 20.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            cdf = 0.5 * NormalDist().cdf(mid) + 0.5 * NormalDist(0, 2).cdf(mid)
            lo, hi = (mid, hi) if cdf < p else (lo, mid)
        return 0.5 * (lo + hi)

    want = [mixture_inverse(NormalDist(0, 2).cdf(s)) for s in probe]
    np.testing.assert_allclose(mapped, want, atol=0.03)
    assert LEVELS.min() == pytest.approx(1e-4)


def test_shrinkage_by_speakers(fitted):
    cal, emb, region, (scores, labels, enroll, test) = fitted
    weights = np.asarray(cal.settings["weights"])
    np.testing.assert_array_equal(weights, [1.0, 1.0, 1.0])  # no prior: no shrinkage
    rng = np.random.default_rng(7)
    emb_c, region_c, speakers = _regions(rng)
    cal_scores, cal_labels, ce, ct = _trials(rng, region_c, 200_000, 20_000)
    kwargs = dict(clusters=3, seed=0, utterance_speakers=speakers)
    shrunk = fit_calibrator("quantile", cal_scores, cal_labels, ce, ct, emb_c,
                            prior_speakers=20.0, **kwargs)  # fmt: skip
    # 20 speakers per region and a prior of 20: half the correction, by speakers, however
    # many pairs (220,000) the regions hold.
    np.testing.assert_allclose(shrunk.settings["weights"], [0.5, 0.5, 0.5])
    llr = shrunk.transform_indexed(scores, enroll, test, emb)
    group = region[enroll]
    half = _fmr_ratio(llr, labels, group, 0.01)
    assert 1.15 < half < _fmr_ratio(scores, labels, group, 0.01)
    # An overwhelming prior: every map is the identity, the global linear map alone.
    none = fit_calibrator("quantile", cal_scores, cal_labels, ce, ct, emb_c,
                          prior_speakers=1e12, **kwargs)  # fmt: skip
    out = none.transform_indexed(scores, enroll, test, emb)
    np.testing.assert_allclose(out, none.fallback[0] * scores + none.fallback[1], atol=1e-6)
    with pytest.raises(ValueError, match="each utterance's speaker"):
        fit_calibrator("quantile", cal_scores, cal_labels, ce, ct, emb_c, clusters=3,
                       prior_speakers=4.0)  # fmt: skip


def test_oracle_quantile_uses_the_groups(fitted):
    _, emb, region, (scores, labels, enroll, test) = fitted
    rng = np.random.default_rng(9)
    emb_c, region_c, _ = _regions(rng)
    cal_trials = _trials(rng, region_c, 200_000, 20_000)
    names = np.array(["a", "b", "c"])
    oracle = fit_calibrator("oracle_quantile", *cal_trials, emb_c, groups=names[region_c])
    llr = oracle.transform_indexed(scores, enroll, test, emb, groups=names[region])
    for fmr in (0.01, 0.2):
        assert _fmr_ratio(llr, labels, region[enroll], fmr) < 1.12


def test_json_round_trip_is_exact(fitted, tmp_path):
    cal, emb, _, (scores, _, enroll, test) = fitted
    save_calibrator(cal, tmp_path / "q.json")
    again = load_calibrator(tmp_path / "q.json")
    np.testing.assert_array_equal(
        again.transform_indexed(scores, enroll, test, emb),
        cal.transform_indexed(scores, enroll, test, emb),
    )
    assert again.settings["weights"] == cal.settings["weights"]


# ---- small calibration sets (issue 28, item 4) ------------------------------------------


def _speaker_set(rng, n_speakers, per_speaker=4, dim=8):
    """Utterances of ``n_speakers`` speakers in two regions; ids ``spk/utt``."""
    region = np.arange(n_speakers) % 2
    centre = np.eye(dim)[:2][region] * 3.0 + rng.normal(size=(n_speakers, dim))
    owner = np.repeat(np.arange(n_speakers), per_speaker)
    emb = centre[owner] + 0.5 * rng.normal(size=(owner.size, dim))
    return [f"s{k:04d}" for k in owner], emb


def test_k_follows_the_fitting_speakers():
    from arw_sv.calibration.backend import auto_clusters

    assert [auto_clusters(n) for n in (0, 13, 14, 64, 111, 112, 120, 150, 5000)] == [
        1, 1, 2, 9, 15, 16, 16, 16, 16,
    ]  # fmt: skip


def test_few_speakers_fall_back_to_global_calibration_of_cosines():
    from arw_sv.calibration import cosine_scores, fit_on_speakers
    from arw_sv.calibration.backend import MIN_REGION_SPEAKERS

    rng = np.random.default_rng(0)
    speakers, emb = _speaker_set(rng, 60)
    cal, _, _ = fit_on_speakers(speakers, emb, max_pairs=20_000)
    assert cal.method == "global" and cal.cohort is None  # neither regions nor AS-norm
    assert cal.settings["fallback"].startswith(f"60 calibration speakers (< {MIN_REGION_SPEAKERS})")
    assert "\n" not in cal.settings["fallback"]  # one line
    # It changes no rate: a positive-slope linear map of the cosine, the ranking kept.
    e, t = rng.integers(0, len(emb), 500), rng.integers(0, len(emb), 500)
    raw = cosine_scores(emb, e, t)
    llr = cal.transform_indexed(raw, e, t, emb)
    assert cal.fallback[0] > 0
    np.testing.assert_array_equal(np.argsort(llr, kind="stable"), np.argsort(raw, kind="stable"))
    # k set by the user: no fall-back, the regions are fitted as asked.
    asked, _, _ = fit_on_speakers(speakers, emb, clusters=2, max_pairs=20_000)
    assert asked.method == "fsn" and len(asked.centroids) == 2 and "fallback" not in asked.settings


def test_enough_speakers_get_regions_with_k_from_the_fitting_speakers():
    from arw_sv.calibration import fit_on_speakers
    from arw_sv.calibration.backend import auto_clusters

    rng = np.random.default_rng(1)
    speakers, emb = _speaker_set(rng, 210)
    cal, _, _ = fit_on_speakers(speakers, emb, method="quantile", max_pairs=40_000, top_n=20)
    assert cal.method == "quantile" and cal.cohort is not None
    assert len(cal.centroids) == auto_clusters(210 - 105) == 15  # half went to the cohort
    # The quantile default shrinks by 4 prior speakers: w = n / (n + 4), n the speakers in
    # a region (not its pairs), so every weight is below 1 and rises with n.
    weights = np.asarray(cal.settings["weights"])
    assert cal.settings["prior_speakers"] == 4.0
    assert np.all((weights > 0) & (weights < 1))
    n = 4 * weights / (1 - weights)
    np.testing.assert_allclose(n, np.round(n), atol=1e-9)  # whole speakers
    assert n.sum() >= 105  # every fitting speaker is in some region (some in several)


# ---- AS-norm statistics cached per utterance (issue 28, item 3) -------------------------


def test_cached_cohort_stats_equal_fresh_ones_and_are_reused(monkeypatch, tmp_path, rng):
    from arw_sv.calibration import stats_cache
    from arw_sv.metrics.asnorm import as_norm, cohort_stats

    monkeypatch.setenv("ARW_SV_CACHE", str(tmp_path))
    emb = rng.normal(size=(50, 12)).astype(np.float32)
    cohort = rng.normal(size=(80, 12)).astype(np.float32)
    computed = []

    def counting(x, c, n):
        computed.append(len(x))
        return cohort_stats(x, c, n)

    monkeypatch.setattr(stats_cache, "cohort_stats", counting)
    e, t = rng.integers(0, 30, 200), rng.integers(0, 30, 200)  # rows 30-49 unused
    scores = rng.uniform(-1, 1, 200)
    fresh = as_norm(scores, e, t, emb, cohort, top_n=10)
    stats = stats_cache.cached_cohort_stats(emb, np.r_[e, t], cohort, 10)
    np.testing.assert_array_equal(as_norm(scores, e, t, emb, cohort, 10, stats=stats), fresh)
    assert np.isnan(stats[0][30:]).all()  # only what the trials need
    again = stats_cache.cached_cohort_stats(emb, np.r_[e, t], cohort, 10)
    np.testing.assert_array_equal(again[0], stats[0])
    assert computed == [len(np.unique(np.r_[e, t]))]  # the second call read the file
    stats_cache.cached_cohort_stats(emb, np.arange(50), cohort, 10)  # rows 30-49 now
    assert computed[-1] == 50 - len(np.unique(np.r_[e, t]))
    # Another cohort size or matrix: another file; a damaged file: recomputed, no error.
    stats_cache.cached_cohort_stats(emb, np.arange(5), cohort, 11)
    assert computed[-1] == 5 and len(list((tmp_path / "asnorm").iterdir())) == 2
    for path in (tmp_path / "asnorm").iterdir():
        path.write_bytes(b"not an npz")
    mean, _ = stats_cache.cached_cohort_stats(emb, np.arange(5), cohort, 10)
    assert computed[-1] == 5
    np.testing.assert_array_equal(mean[:5], stats[0][:5])


def test_score_with_the_cache_gives_the_same_llrs(monkeypatch, tmp_path, rng):
    from arw_sv.calibration import calibrate_trials, fit_on_speakers, save_calibrator
    from arw_sv.data.trials import Trials

    monkeypatch.setenv("ARW_SV_CACHE", str(tmp_path / "cache"))
    speakers, emb = _speaker_set(rng, 40)
    cal, _, _ = fit_on_speakers(speakers, emb, clusters=2, max_pairs=5_000, top_n=10)
    save_calibrator(cal, tmp_path / "c.json")
    test = rng.normal(size=(30, emb.shape[1])).astype(np.float32)
    ids = [f"t{i // 3}/{i}" for i in range(30)]
    e, t = rng.integers(0, 30, 100), rng.integers(0, 30, 100)
    trials = Trials(
        labels=np.zeros(100, dtype=np.int8),
        enroll=[ids[i] for i in e],
        test=[ids[i] for i in t],
    )
    unit = test / np.linalg.norm(test, axis=1, keepdims=True)
    raw = np.einsum("nd,nd->n", unit[e], unit[t]).astype(np.float64)
    args = (tmp_path / "c.json", tmp_path / "none.npz", trials, raw, (ids, test), cal)
    # No model sidecar in this test: the fingerprint check is the caller's to skip.
    plain = calibrate_trials(*args, cache=False, model_check=False)
    first = calibrate_trials(*args, model_check=False)
    second = calibrate_trials(*args, model_check=False)
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(second, plain)
    assert len(list((tmp_path / "cache" / "asnorm").iterdir())) == 1
    # A trial side without an embedding: one line naming the embeddings file.
    from arw_sv.calibration import CalibrationError

    bad = Trials(labels=np.zeros(1, dtype=np.int8), enroll=["nobody/1"], test=[ids[0]])
    with pytest.raises(CalibrationError, match="none.npz: 1 trial sides name utterances"):
        calibrate_trials(tmp_path / "c.json", tmp_path / "none.npz", bad, raw[:1], (ids, test),
                         cal, model_check=False)  # fmt: skip


# ---- maps fitted on within-region pairs (quantile_pairs="within") -------------------------


def _unequal_regions(rng, sizes=(36, 6, 18), per_speaker=10, dim=8):
    """``_regions`` with regions of unequal size (region 1, the crowded one, the smallest)."""
    centres = np.eye(dim)[:3] * 6.0
    region = np.repeat(np.repeat(np.arange(3), sizes), per_speaker)
    speaker = np.repeat(np.arange(sum(sizes)), per_speaker)
    emb = centres[region] + rng.normal(size=(region.size, dim))
    return emb, region, np.array([f"s{k:03d}" for k in speaker])


def _with_cross_pairs(rng, region, n_non, n_tar, n_cross):
    """``_trials`` plus ``n_cross`` different-region non-targets that score low (random
    pairs: a small region's pairs are mostly these)."""
    scores, labels, enroll, test = _trials(rng, region, n_non, n_tar)
    a = rng.integers(0, region.size, n_cross)
    b = rng.integers(0, region.size, n_cross)
    keep = region[a] != region[b]
    a, b = a[keep], b[keep]
    cross = -0.1 + 0.05 * rng.standard_normal(a.size)
    return (np.r_[scores, cross], np.r_[labels, np.zeros(a.size, bool)], np.r_[enroll, a],
            np.r_[test, b])  # fmt: skip


def _within_ratio(scores, labels, enroll, test, region, fmr):
    """max/min within-region FMR (both sides in the region, as ``arw-sv eval`` counts a
    group's trials) at the threshold of overall FMR ``fmr``."""
    thr = np.quantile(scores[~labels], 1.0 - fmr)
    same = region[enroll] == region[test]
    rates = [np.mean(scores[~labels & same & (region[enroll] == g)] > thr) for g in range(3)]
    return max(rates) / min(rates) if min(rates) > 0 else np.inf


@pytest.mark.parametrize("method", ["quantile", "oracle_quantile"])
def test_within_pairs_equalise_the_within_region_fmr(method):
    rng = np.random.default_rng(11)
    emb, region, speakers = _unequal_regions(rng)
    cal_trials = _with_cross_pairs(rng, region, 100_000, 20_000, 300_000)
    emb2, region2, _ = _unequal_regions(rng)
    scores, labels, enroll, test = _with_cross_pairs(rng, region2, 200_000, 20_000, 300_000)
    names = np.array(["a", "b", "c"])
    kw = dict(clusters=3, seed=0, utterance_speakers=speakers)
    side = {}
    if method == "oracle_quantile":
        kw, side = (
            dict(groups=names[region], utterance_speakers=speakers),
            {"groups": names[region2]},
        )
    ratios = {}
    for pairs in ("touching", "within"):
        cal = fit_calibrator(method, *cal_trials, emb, quantile_pairs=pairs, **kw)
        llr = cal.transform_indexed(scores, enroll, test, emb2, **side)
        ratios[pairs] = [_within_ratio(llr, labels, enroll, test, region2, f)
                         for f in (0.005, 0.02, 0.1)]  # fmt: skip
    # Touching pairs are mostly the low cross-region ones: the crowded region's map is
    # fitted on the wrong distribution and its within-region FMR stays high.
    assert min(ratios["touching"]) > 1.5, ratios
    assert max(ratios["within"]) < 1.15, ratios


def test_within_pairs_round_trip_and_refusals(tmp_path):
    from arw_sv.calibration import CalibrationError

    rng = np.random.default_rng(12)
    emb, region, speakers = _regions(rng, n_speakers=30)
    trials = _trials(rng, region, 20_000, 4_000)
    cal = fit_calibrator("quantile", *trials, emb, clusters=3, utterance_speakers=speakers,
                         quantile_pairs="within")  # fmt: skip
    assert cal.settings["quantile_pairs"] == "within"
    save_calibrator(cal, tmp_path / "w.json")
    again = load_calibrator(tmp_path / "w.json")
    np.testing.assert_array_equal(
        again.transform_indexed(*trials[::3][:1], trials[2], trials[3], emb),
        cal.transform_indexed(*trials[::3][:1], trials[2], trials[3], emb),
    )
    with pytest.raises(CalibrationError, match="unknown quantile_pairs 'both'"):
        fit_calibrator("quantile", *trials, emb, clusters=3, quantile_pairs="both")
    text = (tmp_path / "w.json").read_text().replace('"within"', '"sideways"')
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(CalibrationError, match="settings.quantile_pairs"):
        load_calibrator(tmp_path / "bad.json")

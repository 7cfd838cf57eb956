"""Groups, disparity (FaDR, GARBE), speaker bootstrap, cohorts and AS-norm."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm

from arw_sv.metrics import (
    Grouping,
    SpeakerBootstrap,
    as_norm,
    assign_trials,
    eer,
    eer_disparity,
    fadr,
    fairness_report,
    garbe,
    gini,
    kmeans_cohorts,
    min_dcf,
    speaker_means,
    speaker_multiplicities,
    trial_weights,
)
from arw_sv.metrics.bootstrap import percentile_interval
from arw_sv.metrics.render import render_markdown


def _trials(rng, n_spk, n_trials, spread=0.5, target_share=0.5):
    """Trials over speakers with per-speaker difficulty (so speakers are correlated)."""
    a = rng.integers(0, n_spk, n_trials)
    same = rng.random(n_trials) < target_share
    b = np.where(same, a, (a + rng.integers(1, n_spk, n_trials)) % n_spk)
    labels = (a == b).astype(np.int8)
    offset = rng.normal(0, spread, n_spk)
    scores = np.where(labels == 1, 2.5 + offset[a], 0.3 * (offset[a] + offset[b])) + rng.normal(
        size=n_trials
    )
    return scores, labels, a, b


def test_trial_to_group_rules():
    grouping = Grouping("g", ("x", "y"), np.array([0, 0, 1, -1]))
    enroll, test = np.array([0, 0, 2, 3, 1]), np.array([1, 2, 2, 0, 3])
    assert assign_trials(grouping, enroll, test, "both").tolist() == [0, -1, 1, -2, -2]
    assert assign_trials(grouping, enroll, test, "enroll").tolist() == [0, 0, 1, -2, 0]
    with pytest.raises(ValueError, match="group rule"):
        assign_trials(grouping, enroll, test, "test")


def test_single_group_equals_global(rng):
    scores, labels, a, b = _trials(rng, 30, 3000)
    everyone = Grouping("all", ("everyone",), np.zeros(30, dtype=np.int64))
    report = fairness_report(scores, labels, a, b, [everyone], min_speakers=1)
    group = report["groups"]["all"]["groups"]["everyone"]
    assert (group["eer"], group["eer_threshold"]) == eer(scores, labels)
    for p in (0.01, 0.05):
        assert group["min_dcf"][f"{p:g}"]["value"] == min_dcf(scores, labels, p)[0]
    assert group["n_trials"] == scores.size and group["n_speakers"] == 30
    assert report["groups"]["all"]["cross_group"]["n_trials"] == 0


def test_groups_partition_the_trials_and_match_direct_computation(rng):
    scores, labels, a, b = _trials(rng, 40, 6000)
    grouping = Grouping.from_values("half", ["lo" if s < 20 else "hi" for s in range(40)])
    for rule in ("both", "enroll"):
        section = fairness_report(
            scores, labels, a, b, [grouping], group_rule=rule, min_speakers=1
        )["groups"]["half"]
        assert section["rule"] == rule
        gid = assign_trials(grouping, a, b, rule)
        for name, entry in section["groups"].items():
            mask = gid == grouping.groups.index(name)
            assert entry["n_trials"] == mask.sum()
            assert entry["eer"] == eer(scores[mask], labels[mask])[0]
        cross = 0 if rule == "enroll" else section["cross_group"]["n_trials"]
        assert sum(g["n_trials"] for g in section["groups"].values()) + cross == scores.size


def test_fadr_and_garbe_by_hand():
    fmr, fnmr = [0.01, 0.02, 0.03], [0.05, 0.05, 0.08]
    # A = 0.03 - 0.01, B = 0.08 - 0.05; FDR = 1 - (0.5 A + 0.5 B).
    assert fadr(fmr, fnmr) == pytest.approx(1 - (0.5 * 0.02 + 0.5 * 0.03))
    assert fadr(fmr, fnmr, alpha=1.0) == pytest.approx(0.98)
    # Gini with the n/(n-1) factor: sum|xi - xj| over ordered pairs / (2 n^2 mean) * n/(n-1).
    assert gini(fmr) == pytest.approx(0.08 / (2 * 9 * 0.02) * 3 / 2)  # = 1/3
    assert gini(fnmr) == pytest.approx(0.12 / (2 * 9 * 0.06) * 3 / 2)  # = 1/6
    assert garbe(fmr, fnmr) == pytest.approx(0.5 * (1 / 3) + 0.5 * (1 / 6))
    assert gini([0.0, 0.0]) == 0.0 and fadr([0.1, 0.1], [0.2, 0.2]) == 1.0


def test_fadr_and_garbe_in_the_report_by_hand():
    # Two groups of two speakers; threshold 0.5 (the global EER threshold here).
    #   group x: targets 0.9, 0.4 (FNMR 1/2); non-targets 0.1, 0.6 (FMR 1/2)
    #   group y: targets 0.8, 0.7 (FNMR 0);  non-targets 0.2, 0.3 (FMR 0)
    scores = np.array([0.9, 0.4, 0.1, 0.6, 0.8, 0.7, 0.2, 0.3])
    labels = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    enroll = np.array([0, 1, 0, 1, 2, 3, 2, 3])
    test = np.array([0, 1, 1, 0, 2, 3, 3, 2])
    grouping = Grouping("g", ("x", "y"), np.array([0, 0, 1, 1]))
    report = fairness_report(scores, labels, enroll, test, [grouping], min_speakers=1)
    assert report["overall"]["eer"] == 0.25 and report["overall"]["eer_threshold"] == 0.6
    at = report["groups"]["g"]["disparity"]["at_threshold"]["global_eer"]
    # At >= 0.6: x FMR 1/2, FNMR 1/2; y FMR 0, FNMR 0.
    assert at["fadr"] == pytest.approx(1 - (0.5 * 0.5 + 0.5 * 0.5))
    assert at["garbe"] == pytest.approx(0.5 * gini([0.5, 0.0]) + 0.5 * gini([0.5, 0.0]))
    assert gini([0.5, 0.0]) == pytest.approx(1.0)


def test_paper_disparity_numbers():
    # Gender gap |1.39 - 0.69| = 0.70 points; nationality spread = population std.
    assert eer_disparity(["m", "f"], [0.0139, 0.0069])["gap"] == pytest.approx(0.0070)
    spread = eer_disparity(["US", "UK", "others"], [0.0104, 0.0076, 0.0122])
    assert round(100 * spread["std"], 2) == 0.19
    assert spread["worst_group"] == "others" and spread["ratio"] == pytest.approx(0.0122 / 0.0076)
    assert eer_disparity(["a", "b"], [0.0, 0.01])["ratio"] is None


def test_undefined_group_is_reported_not_nan(rng):
    scores, labels, a, b = _trials(rng, 20, 2000)
    keep = ~((a == 19) & (b == 19))  # speaker 19 alone: no same-group non-targets, no targets
    scores, labels, a, b = scores[keep], labels[keep], a[keep], b[keep]
    grouping = Grouping.from_values("g", ["solo" if s == 19 else "many" for s in range(20)])
    report = fairness_report(scores, labels, a, b, [grouping], min_speakers=1, bootstrap=20)
    solo = report["groups"]["g"]["groups"]["solo"]
    assert solo["n_trials"] == 0 and solo["eer"] is None and solo["in_disparity"] is False
    assert solo["min_dcf"] == {"0.01": None, "0.05": None}
    text = json.dumps(report, allow_nan=False)  # raises on any NaN
    assert "NaN" not in text
    assert "| solo * | 0 | 0 | 0 | 0 | n/a |" in render_markdown(report)


def _reference_bootstrap(scores, labels, a, b, mult, subset=None):
    weights = trial_weights(mult, a, b)
    sel = np.ones(scores.size, bool) if subset is None else subset
    out_eer, out_dcf = [], []
    for w in weights:
        w = w[sel]
        ok = (w * labels[sel]).sum() > 0 and (w * (1 - labels[sel])).sum() > 0
        out_eer.append(eer(scores[sel], labels[sel], w)[0] if ok else np.nan)
        out_dcf.append(
            [
                min_dcf(scores[sel], labels[sel], p, weights=w)[0] if ok else np.nan
                for p in (0.01, 0.05)
            ]
        )
    return np.array(out_eer), np.array(out_dcf)


@pytest.mark.parametrize(("n_trials", "chunk"), [(600, None), (40_000, None), (40_000, 500)])
def test_bootstrap_equals_weighted_recomputation(rng, monkeypatch, n_trials, chunk):
    # Tied scores, widely varying speakers (so windows must widen) and a few target
    # trials between different speaker ids: the fast engine must still be exact. A tiny
    # memory budget (chunk) forces resample blocks and running sums instead of products.
    if chunk is not None:
        monkeypatch.setattr("arw_sv.metrics.bootstrap._CHUNK_ELEMENTS", chunk)
    scores, labels, a, b = _trials(rng, 25, n_trials, spread=1.5)
    scores = np.round(scores, 1)
    odd = rng.choice(n_trials, 30, replace=False)
    labels[odd] = 1 - labels[odd]
    mult = speaker_multiplicities(rng.integers(0, 3, 25), 40, rng)
    order = np.argsort(scores, kind="stable")
    boot = SpeakerBootstrap(scores[order], labels[order], a[order], b[order], mult)
    got_eer, got_dcf = boot.evaluate()
    want_eer, want_dcf = _reference_bootstrap(scores, labels, a, b, mult)
    np.testing.assert_allclose(got_eer, want_eer, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_dcf, want_dcf, rtol=0, atol=1e-12)
    subset = a < 12
    positions = np.flatnonzero(subset[order])
    got_eer, got_dcf = boot.evaluate(positions)
    want_eer, want_dcf = _reference_bootstrap(scores, labels, a, b, mult, subset)
    np.testing.assert_allclose(got_eer, want_eer, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_dcf, want_dcf, rtol=0, atol=1e-12)


def test_stratified_multiplicities_keep_group_sizes(rng):
    strata = np.array([0, 0, 0, 1, 1, 2])
    mult = speaker_multiplicities(strata, 200, rng)
    assert mult.shape == (200, 6)
    np.testing.assert_array_equal(mult[:, :3].sum(1), 3)
    np.testing.assert_array_equal(mult[:, 3:5].sum(1), 2)
    np.testing.assert_array_equal(mult[:, 5], 1)


def test_speaker_bootstrap_interval_covers_the_true_eer(rng):
    # Target scores N(mu + u_s, 1), non-target N(v_a + v_b, 1) with speaker effects
    # u ~ N(0, tau^2), v ~ N(0, tau^2 / 2): marginally N(mu, 1 + tau^2) and N(0, 1 + tau^2),
    # so the population EER is Phi(-mu / (2 sqrt(1 + tau^2))).
    mu, tau, n_spk = 3.0, 0.8, 40
    truth = norm.cdf(-mu / (2 * math.sqrt(1 + tau**2)))
    covered, n_rep = 0, 40
    for _ in range(n_rep):
        a = np.repeat(np.arange(n_spk), 60)
        b = np.where(np.arange(a.size) % 2 == 0, a, (a + rng.integers(1, n_spk, a.size)) % n_spk)
        labels = (a == b).astype(np.int8)
        u, v = rng.normal(0, tau, n_spk), rng.normal(0, tau / math.sqrt(2), n_spk)
        scores = np.where(labels == 1, mu + u[a], v[a] + v[b]) + rng.normal(size=a.size)
        order = np.argsort(scores, kind="stable")
        mult = speaker_multiplicities(np.zeros(n_spk, int), 200, rng)
        boot = SpeakerBootstrap(scores[order], labels[order], a[order], b[order], mult)
        ci = percentile_interval(boot.evaluate()[0])
        covered += ci["low"] <= truth <= ci["high"]
    assert covered / n_rep >= 0.8  # nominal 0.95; trial resampling covers far less here


def test_bootstrap_intervals_in_report(rng):
    scores, labels, a, b = _trials(rng, 30, 4000)
    grouping = Grouping.from_values("g", ["x" if s < 15 else "y" for s in range(30)])
    report = fairness_report(scores, labels, a, b, [grouping], min_speakers=1, bootstrap=50, seed=3)
    ci = report["overall"]["ci"]["eer"]
    assert ci["low"] <= report["overall"]["eer"] <= ci["high"] and ci["n_valid"] == 50
    assert set(report["groups"]["g"]["disparity"]["ci"]) == {"gap", "ratio", "std"}
    again = fairness_report(scores, labels, a, b, [grouping], min_speakers=1, bootstrap=50, seed=3)
    assert again["overall"]["ci"] == report["overall"]["ci"]  # seeded


def test_cohort_discovery_finds_the_hard_cluster(rng):
    n_spk, dim = 30, 8
    centres = np.eye(dim)[:3] * 5
    cluster = np.arange(n_spk) % 3
    utt_owner = np.repeat(np.arange(n_spk), 4)
    emb = centres[cluster[utt_owner]] + rng.normal(size=(utt_owner.size, dim)) * 0.3
    means = speaker_means(emb, utt_owner, n_spk)
    found = kmeans_cohorts(means, 3, seed=0)
    # Same partition as the true clusters, up to renaming.
    assert len({(c, f) for c, f in zip(cluster, found, strict=True)}) == 3
    scores, labels, a, b = _trials(rng, n_spk, 6000, spread=0.0, target_share=0.5)
    b = np.where(labels == 1, a, a + 3 * rng.integers(0, 10, a.size)) % n_spk  # same cluster
    labels = (a == b).astype(np.int8)
    hard = cluster[a] == 1
    scores = (
        np.where(labels == 1, 2.5, 0.0)
        - hard * np.where(labels == 1, 1.5, -0.5)
        + rng.normal(size=a.size)
    )
    report = fairness_report(scores, labels, a, b, [], cohort_labels=found)
    cohorts = report["cohorts"]
    bottom = cohorts["bottom"]
    assert bottom["name"] == f"c{found[1]:02d}"
    assert bottom["share_of_speakers"] == pytest.approx(1 / 3)
    rest = (cluster[a] != 1) & (cluster[b] != 1)
    assert bottom["rest_eer"] == eer(scores[rest], labels[rest])[0]
    assert bottom["gap"] == pytest.approx(bottom["eer"] - bottom["rest_eer"])
    assert cohorts["ranking"][0] == bottom["name"]


def test_as_norm_matches_a_direct_loop(rng):
    emb = rng.normal(size=(12, 6))
    cohort = rng.normal(size=(40, 6))
    e, t = rng.integers(0, 12, 30), rng.integers(0, 12, 30)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    coh = cohort / np.linalg.norm(cohort, axis=1, keepdims=True)
    scores = np.einsum("nd,nd->n", unit[e], unit[t])
    got = as_norm(scores, e, t, emb, cohort, top_n=10)
    for i in range(30):
        top_e = np.sort(coh @ unit[e[i]])[-10:]
        top_t = np.sort(coh @ unit[t[i]])[-10:]
        want = 0.5 * (
            (scores[i] - top_e.mean()) / top_e.std() + (scores[i] - top_t.mean()) / top_t.std()
        )
        assert got[i] == pytest.approx(want, abs=1e-5)


def test_each_det_plot_is_the_same_as_drawn_alone(rng):
    # The DET plots share one figure; a plot must not carry lines, legend entries or the
    # colour cycle over from the plot drawn before it.
    from arw_sv.metrics.render import render_plots

    scores, labels, a, b = _trials(rng, 12, 3000)
    groupings = [
        Grouping("gender", ("f", "m"), np.arange(12) % 2),
        Grouping("nationality", ("x", "y", "z"), np.arange(12) % 3),
    ]
    report = json.loads(
        json.dumps(fairness_report(scores, labels, a, b, groupings, min_speakers=1))
    )
    together = render_plots(report)
    assert set(together) == {
        "det_overall.png",
        "det_gender.png",
        "det_nationality.png",
        "group_eer.png",
    }
    for name in ("gender", "nationality"):
        alone = dict(report, groups={name: report["groups"][name]})
        assert render_plots(alone)[f"det_{name}.png"] == together[f"det_{name}.png"], name
    assert together["det_gender.png"] != together["det_nationality.png"]


def test_cohort_stats_in_blocks_and_threads_match_a_float64_sort(rng, monkeypatch):
    # The fast path (float32 product, in-place partition, blocks on threads) against the
    # straightforward one: every row's cohort cosines in float64, sorted, the top N.
    from arw_sv.metrics import asnorm

    monkeypatch.setattr(asnorm, "_BLOCK_ROWS", 16)  # several blocks, a ragged last one
    emb = rng.normal(size=(90, 24)).astype(np.float32)
    cohort = rng.normal(size=(200, 24))
    unit = emb / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)
    coh = cohort / np.linalg.norm(cohort, axis=1, keepdims=True)
    top = np.sort(unit @ coh.T, axis=1)[:, -30:]
    results = [asnorm.cohort_stats(emb, cohort, top_n=30, workers=w) for w in (1, 2, 3)]
    for mean, std in results:
        np.testing.assert_allclose(mean, top.mean(axis=1), atol=2e-7)
        np.testing.assert_allclose(std, top.std(axis=1), atol=2e-7)
    for mean, std in results[1:]:  # rows are independent: bit for bit, whatever the threads
        np.testing.assert_array_equal(mean, results[0][0])
        np.testing.assert_array_equal(std, results[0][1])
    # ... and whatever block a row falls in, a last block of one row included (what the
    # per-utterance cache relies on: statistics computed for any subset of the rows).
    for rows in (np.arange(81), np.array([3, 70, 71, 89]), np.array([42])):
        mean, std = asnorm.cohort_stats(emb[rows], cohort, top_n=30)
        np.testing.assert_array_equal(mean, results[0][0][rows])
        np.testing.assert_array_equal(std, results[0][1][rows])

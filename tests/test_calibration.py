"""Score calibration (issue #19): the maps, each method against a hand computation, the
metrics that judge them (Cllr, minCllr, per-group rates at one threshold), the file format
and the refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from arw_sv.calibration import (
    CalibrationError,
    cosine_scores,
    fit_calibrator,
    load_calibrator,
    sample_pairs,
    save_calibrator,
    split_cohort,
)
from arw_sv.calibration.logistic import apply_beta, beta_features, fit_beta, fit_linear
from arw_sv.metrics import Grouping, fairness_report
from arw_sv.metrics.cllr import cllr, min_cllr, pav_blocks


def _population(rng, n_speakers=240, per=8, dim=24, crowded_share=0.25):
    """Speakers in two groups; group 1 crowded (its speakers close together), so its
    impostor scores are higher: a calibration disparity."""
    group = (np.arange(n_speakers) < crowded_share * n_speakers).astype(int)
    centres = rng.normal(size=(n_speakers, dim))
    shared = rng.normal(size=dim) * 0.6
    centres[group == 1] = 0.85 * centres[group == 1] + shared
    speaker = np.repeat(np.arange(n_speakers), per)
    emb = centres[speaker] + 0.6 * rng.normal(size=(speaker.size, dim))
    return emb, speaker, group[speaker]


@pytest.fixture(scope="module")
def calibration_set():
    rng = np.random.default_rng(0)
    emb, speaker, group = _population(rng)
    enroll, test, labels = sample_pairs([f"s{s}" for s in speaker], max_pairs=120_000, seed=0)
    scores = cosine_scores(emb, enroll, test)
    return emb, speaker, group, enroll, test, labels, scores


# ---- maps --------------------------------------------------------------------------------


def test_linear_and_beta_maps_equal_scikit_learns_balanced_logistic_regression(rng):
    from sklearn.linear_model import LogisticRegression

    labels = rng.integers(0, 2, 5000)
    scores = np.tanh(0.3 * rng.normal(size=5000) + 0.5 * labels)
    reference = LogisticRegression(C=1e12, class_weight="balanced", tol=1e-12, max_iter=10_000)
    reference.fit(scores[:, None], labels)
    assert np.allclose(
        fit_linear(scores, labels), [reference.coef_[0, 0], reference.intercept_[0]], atol=1e-4
    )
    x = beta_features(scores)
    reference = LogisticRegression(
        C=1e12, class_weight="balanced", tol=1e-12, max_iter=10_000, fit_intercept=False
    ).fit(x, labels)
    assert np.allclose(fit_beta(scores, labels), reference.coef_[0], atol=1e-4)


def test_beta_maps_stay_monotone(rng):
    labels = rng.integers(0, 2, 4000)
    scores = np.where(labels == 1, rng.uniform(-0.2, 0.2, 4000), rng.choice([-0.9, 0.9], 4000))
    coef = fit_beta(scores, labels)  # a U-shaped optimum: one slope must be dropped
    assert coef[0] >= 0 and coef[1] >= 0
    grid = np.linspace(-0.99, 0.99, 200)
    assert (np.diff(apply_beta(coef, grid)) >= -1e-12).all()


# ---- Cllr and minCllr ------------------------------------------------------------------------


def test_cllr_by_hand():
    llr, labels = np.array([2.0, -1.0, 0.5, -3.0]), np.array([1, 1, 0, 0])
    by_hand = 0.5 * (
        (math.log2(1 + math.exp(-2.0)) + math.log2(1 + math.exp(1.0))) / 2
        + (math.log2(1 + math.exp(0.5)) + math.log2(1 + math.exp(-3.0))) / 2
    )
    assert cllr(llr, labels) == pytest.approx(by_hand, rel=1e-12)
    assert cllr(np.zeros(4), labels) == pytest.approx(1.0)


def test_min_cllr_equals_cllr_after_scikit_learns_isotonic_regression(rng):
    from sklearn.isotonic import IsotonicRegression

    for _ in range(5):
        n = int(rng.integers(50, 3000))
        labels = rng.integers(0, 2, n)
        scores = np.round(rng.normal(size=n) + labels * rng.uniform(0, 3), 2)  # with ties
        order = np.argsort(scores, kind="stable")
        scores, labels = scores[order], labels[order]
        p = IsotonicRegression(out_of_bounds="clip").fit(scores, labels).predict(scores)
        prior = labels.mean()
        with np.errstate(divide="ignore"):
            llr = np.log(p) - np.log1p(-p) - math.log(prior / (1 - prior))
        assert min_cllr(scores, labels) == pytest.approx(cllr(llr, labels), rel=1e-9)
        ends, tar, cnt = pav_blocks(scores, labels)
        assert (np.diff(tar / cnt) > 0).all() and ends[-1] == n


def test_min_cllr_is_invariant_to_monotone_maps_and_at_most_cllr(rng):
    labels = rng.integers(0, 2, 2000)
    scores = np.sort(rng.normal(size=2000))
    assert min_cllr(scores, labels) == pytest.approx(min_cllr(np.exp(3 * scores), labels))
    assert min_cllr(scores, labels) <= cllr(scores, labels) + 1e-12


# ---- the methods -------------------------------------------------------------------------------


def _report(scores, labels, enroll_spk, test_spk, speaker_group, bootstrap=0):
    grouping = Grouping.from_values("g", [f"g{g}" for g in speaker_group])
    return fairness_report(
        scores,
        labels,
        enroll_spk,
        test_spk,
        [grouping],
        min_speakers=1,
        det_points=0,
        bootstrap=bootstrap,
    )


def test_global_calibration_leaves_every_eer_unchanged(calibration_set):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    cal = fit_calibrator("global", scores, labels, enroll, test, emb)
    llr = cal.transform(scores, emb[enroll], emb[test])
    spk_group = group[np.unique(speaker, return_index=True)[1]]
    raw = _report(scores, labels, speaker[enroll], speaker[test], spk_group)
    new = _report(llr, labels, speaker[enroll], speaker[test], spk_group)
    assert new["overall"]["eer"] == raw["overall"]["eer"]
    for name, g in raw["groups"]["g"]["groups"].items():
        assert new["groups"]["g"]["groups"][name]["eer"] == g["eer"]
    assert new["overall"]["cllr"] < raw["overall"]["cllr"]  # now LLRs
    assert new["overall"]["min_cllr"] == pytest.approx(raw["overall"]["min_cllr"])


def test_fsn_offsets_by_hand(calibration_set):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    cal = fit_calibrator("fsn", scores, labels, enroll, test, emb, clusters=3, target_fmr=0.05)
    region = cal.nearest(emb)[0][:, 0]
    non = labels == 0
    thr_global = np.quantile(scores[non], 0.95)
    for c in range(3):
        touching = non & ((region[enroll] == c) | (region[test] == c))
        assert cal.maps[c, 0] == pytest.approx(np.quantile(scores[touching], 0.95) - thr_global)
    i = 7
    shifted = scores[i] - 0.5 * (cal.maps[region[enroll[i]], 0] + cal.maps[region[test[i]], 0])
    got = cal.transform(scores[i : i + 1], emb[enroll[i : i + 1]], emb[test[i : i + 1]])[0]
    assert got == pytest.approx(cal.fallback[0] * shifted + cal.fallback[1])


def test_faircal_mixture_weights_by_hand(calibration_set):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    cal = fit_calibrator("faircal", scores, labels, enroll, test, emb, clusters=3)
    region = cal.nearest(emb)[0][:, 0]
    for c in range(3):
        assert cal.counts[c] == np.count_nonzero((region[enroll] == c) | (region[test] == c))
    cross = np.flatnonzero(region[enroll] != region[test])[:5]
    for i in cross:
        k1, k2 = region[enroll[i]], region[test[i]]
        theta = cal.counts[k1] / (cal.counts[k1] + cal.counts[k2])
        sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
        p = theta * sig(apply_beta(cal.maps[k1], scores[i : i + 1])[0])
        p += (1 - theta) * sig(apply_beta(cal.maps[k2], scores[i : i + 1])[0])
        got = cal.transform(scores[i : i + 1], emb[enroll[i : i + 1]], emb[test[i : i + 1]])[0]
        assert got == pytest.approx(math.log(p / (1 - p)), rel=1e-9)


def test_the_oracle_evens_out_fmr_on_its_own_calibration_data(calibration_set):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    spk_group = group[np.unique(speaker, return_index=True)[1]]
    # Within-group trials only, so each trial has one group.
    same = group[enroll] == group[test]
    e, t, y, s = enroll[same], test[same], labels[same], scores[same]
    raw = _report(s, y, speaker[e], speaker[t], spk_group)
    cal = fit_calibrator("oracle", s, y, e, t, emb, groups=group)
    llr = cal.transform(s, emb[e], emb[t], enroll_groups=group[e], test_groups=group[t])
    new = _report(llr, y, speaker[e], speaker[t], spk_group)
    at = "global_fmr_0.01"
    raw_fmr = [g["at_threshold"][at]["fmr"] for g in raw["groups"]["g"]["groups"].values()]
    new_fmr = [g["at_threshold"][at]["fmr"] for g in new["groups"]["g"]["groups"].values()]
    assert max(raw_fmr) / min(raw_fmr) > 3  # the planted disparity
    n_non = min(g["n_nontarget"] for g in new["groups"]["g"]["groups"].values())
    spread = 4 * math.sqrt(0.01 / n_non) + 0.004  # sampling error of a 1% rate, generous
    assert max(new_fmr) - min(new_fmr) < spread


@pytest.mark.parametrize(
    "method", ["global", "fsn", "faircal", "softcal", "oracle", "oracle_faircal"]
)
def test_a_saved_calibrator_reloads_to_identical_outputs(method, calibration_set, tmp_path):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    kwargs = {"groups": group} if method.startswith("oracle") else {"clusters": 3}
    cal = fit_calibrator(method, scores, labels, enroll, test, emb, **kwargs)
    extra = {"groups": group} if method.startswith("oracle") else {}
    before = cal.transform_indexed(scores, enroll, test, emb, **extra)
    save_calibrator(cal, tmp_path / "cal.json")
    after = load_calibrator(tmp_path / "cal.json").transform_indexed(
        scores, enroll, test, emb, **extra
    )
    assert np.array_equal(before, after) and np.isfinite(after).all()
    json.loads((tmp_path / "cal.json").read_text())  # plain JSON


# ---- AS-norm before the map -------------------------------------------------------------


def _halves(calibration_set):
    """The calibration set split into an AS-norm cohort and fitting speakers' pairs."""
    emb, speaker, group, *_ = calibration_set
    in_cohort = split_cohort([f"s{s}" for s in speaker], 0.5, seed=0)
    rest = np.flatnonzero(~in_cohort)
    pe, pt, labels = sample_pairs([f"s{s}" for s in speaker[rest]], 60_000, seed=1)
    return emb[in_cohort], emb[rest], pe, pt, labels, cosine_scores(emb[rest], pe, pt)


def test_split_cohort_divides_speakers_not_utterances():
    speakers = [f"s{i // 4}" for i in range(40)]  # 10 speakers, 4 utterances each
    mask = split_cohort(speakers, 0.5, seed=3)
    cohort = {s for s, m in zip(speakers, mask, strict=True) if m}
    rest = {s for s, m in zip(speakers, mask, strict=True) if not m}
    assert len(cohort) == 5 and not cohort & rest and mask.sum() == 20
    assert np.array_equal(mask, split_cohort(speakers, 0.5, seed=3))
    assert not np.array_equal(mask, split_cohort(speakers, 0.5, seed=4))
    assert split_cohort(speakers, 0.3, seed=0).sum() == 12  # int(0.3 * 10) = 3 speakers
    for share in (0.0, 1.0, 0.1):  # 0.1 of 10 leaves a cohort of 1 speaker
        with pytest.raises(ValueError, match="cohort"):
            split_cohort(speakers, share)


@pytest.mark.parametrize("method", ["global", "fsn"])
def test_asnorm_then_a_map_equals_the_map_fitted_on_as_normalised_scores(method, calibration_set):
    from arw_sv.metrics import as_norm

    cohort, emb, pe, pt, labels, scores = _halves(calibration_set)
    cal = fit_calibrator(method, scores, labels, pe, pt, emb, clusters=3, cohort=cohort, top_n=50)
    normed = as_norm(scores, pe, pt, emb, cohort, top_n=50)  # the independent path
    plain = fit_calibrator(method, normed, labels, pe, pt, emb, clusters=3)
    assert np.allclose(cal.fallback, plain.fallback) and np.allclose(cal.maps, plain.maps)
    assert cal.settings["top_n"] == 50 and cal.label == f"asnorm+{method}"
    # Applied to new trials: AS-norm against the stored cohort, then the map.
    rng = np.random.default_rng(5)
    e, t = rng.integers(0, len(emb), 3000), rng.integers(0, len(emb), 3000)
    raw = cosine_scores(emb, e, t)
    expected = plain.transform_indexed(as_norm(raw, e, t, emb, cohort, top_n=50), e, t, emb)
    assert np.allclose(cal.transform_indexed(raw, e, t, emb), expected)
    assert np.allclose(
        cal.transform(raw, emb[e], emb[t]), expected
    )  # the per-trial API gives the same


def test_asnorm_lowers_the_crowded_groups_false_accepts_at_one_threshold(calibration_set):
    cohort, emb, pe, pt, labels, scores = _halves(calibration_set)
    _, speaker, group, *_ = calibration_set
    in_cohort = split_cohort([f"s{s}" for s in speaker], 0.5, seed=0)
    g = group[~in_cohort]
    cal = fit_calibrator("fsn", scores, labels, pe, pt, emb, clusters=3, cohort=cohort, top_n=50)
    within = (g[pe] == g[pt]) & (labels == 0)

    def fmr_ratio(s):
        thr = np.quantile(s[labels == 0], 0.99)
        rates = [(s[within & (g[pe] == k)] > thr).mean() for k in (0, 1)]
        return max(rates) / max(min(rates), 1e-9)

    # The crowded group's impostors score high on raw cosine; AS-norm + FSN evens it out.
    assert fmr_ratio(scores) > 3.0
    assert fmr_ratio(cal.transform_indexed(scores, pe, pt, emb)) < 0.5 * fmr_ratio(scores)


def test_an_asnorm_calibrator_reloads_exactly_and_a_broken_cohort_is_one_line(
    calibration_set, tmp_path
):
    cohort, emb, pe, pt, labels, scores = _halves(calibration_set)
    cal = fit_calibrator("fsn", scores, labels, pe, pt, emb, clusters=3, cohort=cohort)
    save_calibrator(cal, tmp_path / "cal.json")
    back = load_calibrator(tmp_path / "cal.json")
    assert back.cohort.dtype == np.float32 and np.array_equal(back.cohort, cohort.astype("f4"))
    before = cal.transform_indexed(scores, pe, pt, emb)
    assert np.array_equal(before, back.transform_indexed(scores, pe, pt, emb))
    doc = json.loads((tmp_path / "cal.json").read_text())
    for field, value in (("base64", "not base64!"), ("shape", [3, 5]), ("dtype", "<f8")):
        broken = {**doc, "cohort": {**doc["cohort"], field: value}}
        (tmp_path / "bad.json").write_text(json.dumps(broken))
        with pytest.raises(CalibrationError, match="bad.json: malformed") as info:
            load_calibrator(tmp_path / "bad.json")
        assert "\n" not in str(info.value)
    with pytest.raises(CalibrationError, match="share the embedding dimension"):
        fit_calibrator("fsn", scores, labels, pe, pt, emb, cohort=cohort[:, :5])
    with pytest.raises(CalibrationError, match="beta maps read cosine scores"):
        fit_calibrator("faircal", scores, labels, pe, pt, emb, clusters=3, cohort=cohort)


def test_too_few_pairs_per_cluster_are_refused(calibration_set):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    few = np.random.default_rng(0).choice(len(scores), 3000, replace=False)
    with pytest.raises(CalibrationError, match="too few calibration pairs for cluster"):
        fit_calibrator(
            "faircal", scores[few], labels[few], enroll[few], test[few], emb, clusters=60
        )
    with pytest.raises(CalibrationError, match="FSN at FMR 0.001 needs 10000"):
        fit_calibrator("fsn", scores, labels, enroll, test, emb, clusters=40, target_fmr=0.001)


def test_sampled_pairs_are_distinct_and_labelled_by_speaker(rng):
    speakers = [f"s{i // 5}" for i in range(200)]
    e, t, y = sample_pairs(speakers, max_pairs=3000, seed=1)
    assert len(e) == 3000 and (e < t).all()
    assert len({(a, b) for a, b in zip(e.tolist(), t.tolist(), strict=True)}) == 3000
    same = np.array([speakers[a] == speakers[b] for a, b in zip(e, t, strict=True)])
    assert np.array_equal(same, y.astype(bool)) and y.sum() == 40 * 10  # every target pair
    again = sample_pairs(speakers, max_pairs=3000, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((e, t, y), again, strict=True))


# ---- the report ----------------------------------------------------------------------------


def test_the_report_has_fmr_0_1_percent_ratios_counts_and_cllr(calibration_set):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    spk_group = group[np.unique(speaker, return_index=True)[1]]
    report = _report(scores, labels, speaker[enroll], speaker[test], spk_group)
    assert set(report["thresholds"]) == {"global_eer", "global_fmr_0.01", "global_fmr_0.001"}
    groups = report["groups"]["g"]["groups"]
    for name in report["thresholds"]:
        fmr = [g["at_threshold"][name]["fmr"] for g in groups.values()]
        fnmr = [g["at_threshold"][name]["fnmr"] for g in groups.values()]
        at = report["groups"]["g"]["disparity"]["at_threshold"][name]
        assert at["fmr_ratio"] == pytest.approx(max(fmr) / min(fmr))
        assert at["fnmr_ratio"] == pytest.approx(max(fnmr) / min(fnmr))
        for g in groups.values():
            entry = g["at_threshold"][name]
            assert entry["false_accepts"] == round(entry["fmr"] * g["n_nontarget"])
            assert entry["misses"] == round(entry["fnmr"] * g["n_target"])
    assert 0 < report["overall"]["min_cllr"] < 1 and groups["g0"]["cllr"] is not None


def test_bootstrap_rates_at_a_threshold_equal_the_weighted_reference(rng):
    from arw_sv.metrics.bootstrap import SpeakerBootstrap, speaker_multiplicities, trial_weights

    n, p = 3000, 40
    enroll, test = rng.integers(0, p, n), rng.integers(0, p, n)
    labels = (enroll == test).astype(np.int8)
    scores = rng.normal(size=n) + 2 * labels
    order = np.argsort(scores)
    mult = speaker_multiplicities(np.zeros(p, dtype=int), 20, rng)
    boot = SpeakerBootstrap(scores[order], labels[order], enroll[order], test[order], mult)
    pos = np.arange(n)
    fmr, fnmr = boot.rates_at(pos, 0.7)
    w = trial_weights(mult, enroll[order], test[order]).astype(float)
    acc, y = scores[order] >= 0.7, labels[order].astype(bool)
    assert np.allclose(fmr, (w * (acc & ~y)).sum(1) / (w * ~y).sum(1))
    assert np.allclose(fnmr, (w * (~acc & y)).sum(1) / (w * y).sum(1))


# ---- the command line --------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded(tiny_manifests, tmp_path_factory):
    """A tiny model's embeddings of the tiny corpus's test speakers, split by speaker into
    a calibration half and an evaluation half, with a trial list for the evaluation half."""
    from arw_sv.cli import main
    from arw_sv.data.manifest import read_manifest, write_manifest
    from arw_sv.train.loop import fit
    from tests.conftest import tiny_config

    out = tmp_path_factory.mktemp("cal")
    fit(tiny_config(out / "run", tiny_manifests[0], "train.steps=2"))
    test = read_manifest(tiny_manifests[1])
    speakers = test.speakers
    cal = [u for u in test if speakers.index(u.speaker) % 2 == 0]
    ev = [u for u in test if speakers.index(u.speaker) % 2 == 1]
    write_manifest(cal, out / "cal.csv")
    write_manifest(ev, out / "eval.csv")
    ckpt = str(out / "run" / "checkpoints" / "step_2.pt")
    for name in ("cal", "eval"):
        argv = ["embed", ckpt, "--manifest", str(out / f"{name}.csv"), "--out",
                str(out / f"{name}.npz"), "--quiet"]  # fmt: skip
        assert main(argv) == 0
    assert main(["trials", str(out / "eval.csv"), "--out", str(out / "trials.txt"),
                 "--targets", "20", "--within", "20", "--across", "20"]) == 0  # fmt: skip
    return out


def test_cli_calibrate_score_and_eval_side_by_side(embedded, capsys):
    from arw_sv.cli import main
    from arw_sv.data.trials import read_scores

    out = embedded
    assert main(["calibrate", "--embeddings", str(out / "cal.npz"), "--method", "global",
                 "--score-norm", "none", "--exclude", str(out / "trials.txt"), "--out", str(out / "cal.json")]) == 0  # fmt: skip
    assert main(["score", "--embeddings", str(out / "eval.npz"), "--trials", str(out / "trials.txt"),
                 "--calibration", str(out / "cal.json"), "--out", str(out / "llr.txt")]) == 0  # fmt: skip
    assert main(["score", "--embeddings", str(out / "eval.npz"), "--trials", str(out / "trials.txt"),
                 "--out", str(out / "raw.txt")]) == 0  # fmt: skip
    (_, llr), (_, raw) = read_scores(out / "llr.txt"), read_scores(out / "raw.txt")
    cal = load_calibrator(out / "cal.json")
    assert np.allclose(llr, cal.fallback[0] * raw + cal.fallback[1])
    assert cal.fingerprint and len(cal.fingerprint) == 16
    capsys.readouterr()
    assert main(["eval", "--embeddings", str(out / "eval.npz"), "--trials", str(out / "trials.txt"),
                 "--meta", str(out / "eval.csv"), "--calibration", str(out / "cal.json"),
                 "--no-plots", "--out", str(out / "e")]) == 0  # fmt: skip
    report = json.loads((out / "e" / "report.json").read_text())
    assert report["calibrated"]["method"] == "global"
    assert report["calibrated"]["report"]["overall"]["eer"] == report["overall"]["eer"]
    assert "Raw cosine against calibrated" in (out / "e" / "report.md").read_text()
    assert "calibrated (global)" in capsys.readouterr().out


def test_cli_calibrate_with_asnorm_keeps_the_cohort_out_of_the_pairs(embedded, capsys):
    from arw_sv.calibration.store import calibrate_trials
    from arw_sv.cli import main
    from arw_sv.data.trials import (
        read_embeddings,
        read_scores,
        read_trials,
        speaker_of,
        utterance_rows,
    )

    out = embedded
    ids, _ = read_embeddings(out / "cal.npz")
    speakers = sorted({speaker_of(u) for u in ids})
    # A trial list over the calibration speakers: those naming a cohort speaker drop out.
    assert main(["trials", str(out / "cal.csv"), "--out", str(out / "cal_trials.txt"),
                 "--targets", "20", "--within", "20", "--across", "20"]) == 0  # fmt: skip
    for extra, name in (
        ([], "asn.json"),
        (["--trials", str(out / "cal_trials.txt")], "asn_t.json"),
    ):
        argv = ["calibrate", "--embeddings", str(out / "cal.npz"), "--method", "global",
                "--score-norm", "asnorm", "--top-n", "5", *extra, "--out", str(out / name)]  # fmt: skip
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert "AS-norm (cohort" in captured.out
        assert f"warning: {len(speakers)} calibration speakers" in captured.err  # < 250
        cal = load_calibrator(out / name)
        assert cal.speakers == tuple(speakers) and cal.settings["top_n"] == 5
        assert 0 < len(cal.cohort) < len(ids)
    assert main(["score", "--embeddings", str(out / "eval.npz"), "--trials", str(out / "trials.txt"),
                 "--calibration", str(out / "asn.json"), "--out", str(out / "asn.txt")]) == 0  # fmt: skip
    trials = read_trials(out / "trials.txt")
    _, llr = read_scores(out / "asn.txt")
    embeddings = read_embeddings(out / "eval.npz")
    e, t = utterance_rows(trials.enroll, embeddings[0]), utterance_rows(trials.test, embeddings[0])
    raw = cosine_scores(embeddings[1], e, t)
    again = calibrate_trials(out / "asn.json", out / "eval.npz", trials, raw, embeddings)
    assert np.allclose(llr, again, atol=1e-5)  # written to text with limited digits
    assert main(["calibrate", "--embeddings", str(out / "cal.npz"), "--score-norm", "asnorm",
                 "--clusters", "2", "--cohort-share", "0.99", "--out", str(out / "x.json")]) == 2  # fmt: skip
    assert "cohort" in capsys.readouterr().err


def test_cli_refuses_overlapping_speakers_and_another_models_embeddings(embedded, tmp_path, capsys):
    from arw_sv.cli import main

    out = embedded
    # Calibration speakers that are also test speakers.
    argv = ["calibrate", "--embeddings", str(out / "eval.npz"), "--method", "global", "--score-norm", "none",
            "--exclude", str(out / "trials.txt"), "--out", str(tmp_path / "c.json")]  # fmt: skip
    assert main(argv) == 2
    assert "calibration speaker(s) are in" in capsys.readouterr().err
    assert main([*argv[:5], "--out", str(tmp_path / "c.json")]) == 0  # without --exclude
    capsys.readouterr()  # its warning (few calibration speakers) is not the refusal below
    score = ["score", "--embeddings", str(out / "eval.npz"), "--trials", str(out / "trials.txt"),
             "--calibration", str(tmp_path / "c.json"), "--out", str(tmp_path / "s.txt")]  # fmt: skip
    assert main(score) == 2
    err = capsys.readouterr().err.strip()
    assert "were calibration speakers" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.txt").exists()
    # A calibrator of another model: another dimension, another fingerprint.
    cal = load_calibrator(out / "cal.json")
    from dataclasses import replace

    save_calibrator(replace(cal, fingerprint="0" * 16), tmp_path / "other.json")
    score[-3], score[-1] = str(tmp_path / "other.json"), str(tmp_path / "s.txt")
    assert main(score) == 2 and "from model" in capsys.readouterr().err
    save_calibrator(replace(cal, dim=cal.dim + 1, centroids=np.zeros((0, cal.dim + 1))),
                    tmp_path / "other.json")  # fmt: skip
    assert main(score) == 2 and "-dim embeddings" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    score[-3] = str(tmp_path / "bad.json")
    assert main(score) == 2 and "not an arw-sv calibration file" in capsys.readouterr().err


# ---- the synthetic corpus's calibration split ---------------------------------------------


def test_the_calibration_split_adds_speakers_and_changes_no_other(tmp_path, tiny_corpus):
    from arw_sv.data.manifest import build_manifest
    from arw_sv.synth import generate_corpus, preset
    from arw_sv.synth.config import apply_overrides

    cfg = apply_overrides(preset("tiny"), ["calibration_speakers_per_cell=2"])
    info = generate_corpus(tmp_path / "c", cfg, progress=False)
    plain = build_manifest(tiny_corpus.root, tiny_corpus.meta_path)
    both = build_manifest(info.root, info.meta_path, splits=("dev", "test", "cal"))
    cal = [u for u in both if u.split == "cal"]
    n_cells = 2 * len(cfg.nationalities)
    assert len({u.speaker for u in cal}) == 2 * n_cells
    assert {u.speaker for u in cal}.isdisjoint({u.speaker for u in plain})
    assert {(u.nationality, u.gender) for u in cal} == {
        (u.nationality, u.gender) for u in plain if u.split == "test"
    }
    rest = {u.utt_id: u for u in both if u.split != "cal"}
    assert set(rest) == {u.utt_id for u in plain}
    for u in list(plain)[:: max(1, len(plain) // 6)]:  # the same audio, bit for bit
        assert (info.wav_dir / u.utt_id).read_bytes() == (
            tiny_corpus.wav_dir / u.utt_id
        ).read_bytes()
    assert info.trials_path.read_bytes() == tiny_corpus.trials_path.read_bytes()
    assert json.loads(info.manifest_path.read_text())["num_calibration_speakers"] == 2 * n_cells


def test_beta_methods_refuse_scores_outside_the_cosine_range(calibration_set):
    emb, speaker, group, enroll, test, labels, scores = calibration_set
    with pytest.raises(CalibrationError, match=r"beta maps read cosine scores in \[-1, 1\]"):
        fit_calibrator("faircal", 5 * scores, labels, enroll, test, emb, clusters=3)
    fit_calibrator("fsn", 5 * scores, labels, enroll, test, emb, clusters=3)  # any scale


def test_training_leaves_out_calibration_and_test_speakers(tiny_manifests, tmp_path):
    """A manifest that also holds calibration (or test) speakers trains on dev only."""
    from dataclasses import replace

    from arw_sv.data.manifest import read_manifest, write_manifest
    from arw_sv.train.loop import _training_manifest
    from tests.conftest import tiny_config

    dev = read_manifest(tiny_manifests[0])
    cal_speakers = set(dev.speakers[:3])
    mixed = [replace(u, split="cal") if u.speaker in cal_speakers else u for u in dev]
    write_manifest(mixed, tmp_path / "mixed.csv")
    kept = _training_manifest(tiny_config(tmp_path / "run", tmp_path / "mixed.csv"))
    assert set(kept.speakers) == set(dev.speakers) - cal_speakers
    assert {u.split for u in kept} == {"dev"}
    write_manifest(dev, tmp_path / "dev.csv")  # dev alone: everything
    assert len(_training_manifest(tiny_config(tmp_path / "r2", tmp_path / "dev.csv"))) == len(dev)


def test_the_cli_defaults_are_the_recommended_back_end():
    from arw_sv.calibration.backend import RECOMMENDED
    from arw_sv.cli.calibrate import DEFAULTS

    assert DEFAULTS == RECOMMENDED


def test_cli_calibrate_falls_back_to_global_with_few_speakers_in_one_line(embedded, capsys):
    # Issue 28: with --clusters unset and under 200 calibration speakers, the default
    # back-end becomes a global map of cosine scores, and says so in one line.
    from arw_sv.cli import main

    out = embedded
    assert main(["calibrate", "--embeddings", str(out / "cal.npz"),
                 "--out", str(out / "fallback.json")]) == 0  # fmt: skip
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if "global calibration" in line]
    assert len(lines) == 1 and "(< 200)" in lines[0] and "changes no rate" in lines[0]
    assert "global: fitted on" in captured.out
    cal = load_calibrator(out / "fallback.json")
    assert cal.method == "global" and cal.cohort is None


def test_score_and_eval_reuse_the_trials_rows_when_trials_are_skipped(embedded, capsys):
    """`score --calibration --allow-missing` indexes the trials once and hands the kept
    trials' rows to the calibration: the LLRs are those of calibrate_trials run on the kept
    trials from scratch, and `eval` writes the same; rows of the wrong length are refused."""
    from arw_sv.calibration.store import calibrate_trials
    from arw_sv.cli import main
    from arw_sv.data.trials import read_embeddings, read_scores, read_trials, score_trial_list

    out = embedded
    assert main(["calibrate", "--embeddings", str(out / "cal.npz"), "--method", "global",
                 "--score-norm", "asnorm", "--top-n", "5", "--out", str(out / "r.json")]) == 0  # fmt: skip
    lines = (out / "trials.txt").read_text().splitlines()
    label, enroll, _ = lines[0].split()
    # Trials 2 and 5 name an utterance without an embedding: they are skipped.
    lines[1] = f"{label} {enroll} nobody/x/00001.wav"
    lines[4] = f"0 ghost/y/00002.wav {enroll}"
    (out / "skip.txt").write_text("\n".join(lines) + "\n")
    argv = ["--embeddings", str(out / "eval.npz"), "--trials", str(out / "skip.txt"),
            "--calibration", str(out / "r.json"), "--allow-missing"]  # fmt: skip
    assert main(["score", *argv, "--out", str(out / "skip_llr.txt")]) == 0
    assert "2 skipped" in capsys.readouterr().out
    assert main(["eval", *argv, "--out", str(out / "skip_eval"), "--no-plots"]) == 0
    kept, llr = read_scores(out / "skip_llr.txt")
    embeddings = read_embeddings(out / "eval.npz")
    scored = score_trial_list(read_trials(out / "skip.txt"), embeddings, allow_missing=True)
    assert scored.trials.enroll == kept.enroll and scored.trials.test == kept.test
    again = calibrate_trials(out / "r.json", out / "eval.npz", scored.trials, scored.scores,
                             embeddings)  # fmt: skip
    assert len(llr) == len(lines) - 2 and np.allclose(llr, again, atol=1e-6)
    _, from_eval = read_scores(out / "skip_eval" / "scores_calibrated.txt")
    assert np.array_equal(from_eval, llr)
    short = (np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="rows for"):
        score_trial_list(scored.trials, embeddings, rows=short)
    with pytest.raises(ValueError, match="rows for"):
        calibrate_trials(out / "r.json", out / "eval.npz", scored.trials, scored.scores,
                         embeddings, rows=short)  # fmt: skip

"""The probes behind calibration-log Q4 and Q5, kept so that their numbers can be reproduced.

``within``: AS-norm + quantile maps (label-free with 16 regions, and the label oracle)
fitted three ways: on every pair touching a region (the shipped default), on within-region
pairs mapped to all non-targets (``within_all``: what ``quantile_pairs="within"`` became),
and on within-region pairs mapped to the pooled within-region non-targets
(``within_within``). It swaps the private fit function for the two variants: a probe, not
an API.

``cells``: label-free pair-cell maps after AS-norm. k-means regions of both sides, one map
per unordered pair of regions fitted on that cell's non-targets, mapped to all non-targets
(``target=all``) or, for same-region cells only, to the same-region non-targets
(``target=diag``; other cells keep the identity).

``bound``: how much overall accuracy exact FMR parity at *every* threshold costs at the
least, measured on the test trials themselves with the labels. Parity at every threshold
fixes each group's map of its within-group trials up to one map common to all (each group's
within-group non-target CDF; ``arw-sv eval`` counts a group's FMR on its within-group
trials), so the pooled ranking of within-group trials is unique; only cross-group trials
(all non-targets) are free. With them pushed below every other trial (``cross=bottom``, a
labels-only advantage) the EER is a lower bound for any back-end that maps a given score
(cosine or AS-norm) per group to exact parity; ``cross=mean`` maps them by the mean of
their two sides' maps, as the shipped region maps do. In-sample and with labels: a ceiling,
never a method.

``cross``: label-free within-region quantile maps (``quantile_pairs="within"``) followed
by two linear LLR maps instead of one: one for same-region trials and one for cross-region
trials, each class-balanced and shifted by the log-ratio of how often targets and
non-targets fall in that kind of trial (so the pair's kind counts as evidence, as the Bayes
LLR of score and kind would). ``bound`` says why: exact parity costs no EER only if
cross-group impostors are pushed down.

Usage (the folders ``bench/calibration/scratch_heldout.sh`` writes: CORPUS holds
``all.csv`` and ``trials.txt``, MODEL ``test.npz`` and ``cal.npz``)::

    python -m bench.calibration.quantile_probe within CORPUS MODEL [--key nationality]
    python -m bench.calibration.quantile_probe cells CORPUS MODEL [--k 2 4 8]
    python -m bench.calibration.quantile_probe bound CORPUS MODEL [--key nationality]
    python -m bench.calibration.quantile_probe cross CORPUS MODEL [--k 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import arw_sv.calibration.methods as methods
from arw_sv.calibration import cosine_scores, fit_on_speakers, sample_pairs, split_cohort
from arw_sv.calibration.logistic import fit_linear
from arw_sv.calibration.quantile import apply_quantile_maps, fit_quantile_maps
from arw_sv.data.meta import read_speaker_meta
from arw_sv.data.trials import read_embeddings, read_trials, speaker_of, utterance_rows
from arw_sv.evaluate import evaluate_scores
from arw_sv.metrics import as_norm
from bench.calibration.experiment import summarise

GROUPINGS = ("nationality", "gender")


class _Model:
    def __init__(self, corpus: Path, model: Path) -> None:
        self.meta = read_speaker_meta(corpus / "all.csv")
        self.trials = read_trials(corpus / "trials.txt")
        self.test_ids, self.test = read_embeddings(model / "test.npz")
        cal_ids, self.cal = read_embeddings(model / "cal.npz")
        self.cal_speakers = np.array([speaker_of(u) for u in cal_ids])
        self.e = utterance_rows(self.trials.enroll, self.test_ids)
        self.t = utterance_rows(self.trials.test, self.test_ids)
        self.raw = cosine_scores(self.test, self.e, self.t)

    def row(self, name: str, scores: np.ndarray) -> None:
        report = evaluate_scores(scores, self.trials.labels, self.trials.enroll,
                                 self.trials.test, self.meta, min_speakers=5, det_points=0,
                                 bootstrap=0, group_by=[(g,) for g in GROUPINGS])  # fmt: skip
        s = summarise(report, GROUPINGS)

        def ratios(g: str) -> str:
            return " ".join(f"{s[f'{g}@{t}']['fmr_ratio']:.2f}" for t in ("0.001", "0.01", "eer"))

        print(f"{name:36s} EER {100 * s['eer']:.2f} minDCF {s['min_dcf']:.3f} "
              f"Cllr {s['cllr']:.3f} | nat {ratios('nationality')} | gender {ratios('gender')}",
              flush=True)  # fmt: skip


def _within_fit(target: str):
    """``_fit_quantile`` on within-region pairs, mapped to all non-targets or to the pooled
    within-region ones."""

    def fit(s, y, ka, kb, region, utterance_speakers, prior_speakers, k=None, pairs=None):
        k = int(region.max()) + 1 if k is None else k
        same = ka == kb
        fitting = [np.flatnonzero(same & (ka == c)) for c in range(k)]
        shrink = methods._shrink_weights(region, utterance_speakers, prior_speakers, k)
        non = ~y if target == "all" else ~y & same
        knots, w = fit_quantile_maps(s, non, fitting, shrink)
        mapped = 0.5 * (apply_quantile_maps(knots, s, ka) + apply_quantile_maps(knots, s, kb))
        counts = np.array([p.size for p in fitting], dtype=np.float64)
        return knots.reshape(k, -1), counts, fit_linear(mapped, y), w

    return fit


def within(m: _Model, key: str) -> None:
    group_of = {s: m.meta[s].attribute(key) for s in m.meta}
    cal_groups = np.array([group_of[s] for s in m.cal_speakers])
    test_groups = np.array([group_of[speaker_of(u)] for u in m.test_ids])
    original = methods._fit_quantile
    try:
        for variant in ("touching", "within_all", "within_within"):
            methods._fit_quantile = (original if variant == "touching"
                                     else _within_fit(variant.split("_")[1]))  # fmt: skip
            for method, kw in (("oracle_quantile", {}), ("quantile", {"clusters": 16})):
                oracle = method.startswith("oracle")
                cal, _, _ = fit_on_speakers(list(m.cal_speakers), m.cal, method=method,
                                            cohort_size=len(m.cal), seed=0,
                                            groups=cal_groups if oracle else None, **kw)  # fmt: skip
                m.row(f"{variant} asnorm+{method}",
                      cal.transform_indexed(m.raw, m.e, m.t, m.test,
                                            groups=test_groups if oracle else None))  # fmt: skip
    finally:
        methods._fit_quantile = original


def _cohort_split(m: _Model) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half the calibration speakers as AS-norm cohort: (cohort, the other half's rows,
    the test trials' AS-norm scores against the cohort)."""
    in_cohort = split_cohort(list(m.cal_speakers), 0.5, 0)
    cohort = m.cal[in_cohort]
    s_test = as_norm(m.raw, m.e, m.t, m.test, cohort, top_n=300)
    return cohort, np.flatnonzero(~in_cohort), s_test


def _asnorm_pairs(m: _Model):
    """:func:`_cohort_split`, and 10^6 pairs of the non-cohort half: (fitting embeddings,
    pair rows, labels, their AS-norm scores, the test trials')."""
    cohort, rows, s_test = _cohort_split(m)
    fitting = m.cal[rows]
    pe, pt, y = sample_pairs(list(m.cal_speakers[rows]), 1_000_000, 0)
    s_cal = as_norm(cosine_scores(fitting, pe, pt), pe, pt, fitting, cohort, top_n=300)
    return fitting, pe, pt, np.asarray(y, bool), s_cal, s_test


def _regions(fitting: np.ndarray, test: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means regions (cosine) of the fitting embeddings, and the test's nearest ones."""
    from sklearn.cluster import KMeans

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    centres = unit(KMeans(k, n_init=4, random_state=0).fit(unit(fitting)).cluster_centers_)
    return np.argmax(unit(fitting) @ centres.T, 1), np.argmax(unit(test) @ centres.T, 1)


def cells(m: _Model, ks: list[int]) -> None:
    fitting, pe, pt, y, s_cal, s_test = _asnorm_pairs(m)
    for k in ks:
        rc, rt = _regions(fitting, m.test, k)
        cc = np.minimum(rc[pe], rc[pt]) * k + np.maximum(rc[pe], rc[pt])
        ct = np.minimum(rt[m.e], rt[m.t]) * k + np.maximum(rt[m.e], rt[m.t])
        pairs = [np.flatnonzero(cc == c) for c in range(k * k)]
        for target in ("all", "diag"):
            non = ~y if target == "all" else ~y & (rc[pe] == rc[pt])
            knots, _ = fit_quantile_maps(s_cal, non, pairs, np.ones(k * k))
            lin = fit_linear(apply_quantile_maps(knots, s_cal, cc), y)
            m.row(f"cells k={k} target={target}",
                  lin[0] * apply_quantile_maps(knots, s_test, ct) + lin[1])  # fmt: skip


def kind_llr(mapped: np.ndarray, y: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per kind of pair (same-region, cross-region): class-balanced linear map plus the
    log-ratio of the kind's share of targets and of non-targets (counts smoothed by 1/2).
    Returns ((a, c) same, (a, c) cross); a kind with fewer than 10 targets takes the other
    kind's slope and intercept, keeping its own share term."""
    kinds = (same, ~same)
    n_tar, n_non = int(y.sum()), int((~y).sum())
    fits, priors = [], []
    for kind in kinds:
        k_tar, k_non = int(y[kind].sum()), int((~y[kind]).sum())
        priors.append(np.log((k_tar + 0.5) / (n_tar + 1.0)) - np.log((k_non + 0.5) / (n_non + 1.0)))
        fits.append(fit_linear(mapped[kind], y[kind]) if min(k_tar, k_non) >= 10 else None)
    fallback = next(f for f in fits if f is not None)
    return tuple(
        (f if f is not None else fallback) + np.array([0.0, prior])
        for f, prior in zip(fits, priors, strict=True)
    )


def cross(m: _Model, ks: list[int]) -> None:
    fitting, pe, pt, y, s_cal, s_test = _asnorm_pairs(m)
    m.row("raw", m.raw)
    for k in ks:
        rc, rt = _regions(fitting, m.test, k)
        ka, kb, ta, tb = rc[pe], rc[pt], rt[m.e], rt[m.t]
        pairs = [np.flatnonzero((ka == c) & (kb == c)) for c in range(k)]
        knots, _ = fit_quantile_maps(s_cal, ~y, pairs, np.ones(k))
        mc = 0.5 * (apply_quantile_maps(knots, s_cal, ka) + apply_quantile_maps(knots, s_cal, kb))
        mt = 0.5 * (apply_quantile_maps(knots, s_test, ta) + apply_quantile_maps(knots, s_test, tb))
        one = fit_linear(mc, y)
        m.row(f"within k={k}, one linear map", one[0] * mt + one[1])
        same, other = kind_llr(mc, y, ka == kb)
        print(f"  same-region {same.round(3)}, cross-region {other.round(3)}; "
              f"cross-region share of targets {np.mean(ka[y] != kb[y]):.3f}, "
              f"of non-targets {np.mean(ka[~y] != kb[~y]):.3f}", flush=True)  # fmt: skip
        llr = np.where(ta == tb, same[0] * mt + same[1], other[0] * mt + other[1])
        m.row(f"within k={k}, a map per kind of pair", llr)


def parity_map(
    scores: np.ndarray, labels: np.ndarray, ga: np.ndarray, gb: np.ndarray, cross: str = "bottom"
) -> np.ndarray:
    """Each within-group trial's score as its group's within-group non-target CDF (mid-rank),
    cross-group trials at -1 (``bottom``) or the mean of both sides' CDFs (``mean``): the
    unique exact-parity ranking (module docstring). Shape: all (N,)."""
    out = np.empty(scores.size, dtype=np.float64)
    same = ga == gb
    cdf = {}
    for g in np.unique(np.concatenate([ga, gb])):
        ref = np.sort(scores[same & (ga == g) & (labels == 0)])
        if ref.size == 0:
            raise ValueError(f"group {g!r} has no within-group non-target trial")
        cdf[g] = ref

    def at(g, s: np.ndarray) -> np.ndarray:
        ref = cdf[g]
        return 0.5 * (np.searchsorted(ref, s, "left") + np.searchsorted(ref, s, "right")) / ref.size

    for g in cdf:
        rows = same & (ga == g)
        out[rows] = at(g, scores[rows])
    rows = np.flatnonzero(~same)
    if cross == "bottom":
        out[rows] = -1.0
    else:
        a, b = ga[rows], gb[rows]
        out[rows] = 0.0
        for g in cdf:
            for side in (a, b):
                pick = rows[side == g]
                out[pick] += 0.5 * at(g, scores[pick])
    return out


def bound(m: _Model, key: str) -> None:
    group = {s: str(m.meta[s].attribute(key)) for s in m.meta}
    ga = np.array([group[speaker_of(u)] for u in m.trials.enroll])
    gb = np.array([group[speaker_of(u)] for u in m.trials.test])
    labels = np.asarray(m.trials.labels)
    norm = _cohort_split(m)[2]
    print(f"{key}: {int((ga == gb).sum())} within-group and {int((ga != gb).sum())} "
          "cross-group trials", flush=True)  # fmt: skip
    for name, s in (("cosine", m.raw), ("as-norm", norm)):
        m.row(f"{name}", s)
        for cross in ("bottom", "mean"):
            m.row(f"{name} exact parity, cross={cross}", parity_map(s, labels, ga, gb, cross))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("probe", choices=("within", "cells", "bound", "cross"))
    p.add_argument("corpus", type=Path)
    p.add_argument("model", type=Path)
    p.add_argument("--key", default="nationality", help="the oracle's attribute (within, bound)")
    p.add_argument("--k", type=int, nargs="+", default=[2, 4, 8], help="regions (cells, cross)")
    args = p.parse_args()
    model = _Model(args.corpus, args.model)
    if args.probe in ("cells", "cross"):
        (cells if args.probe == "cells" else cross)(model, args.k)
    else:
        (within if args.probe == "within" else bound)(model, args.key)


if __name__ == "__main__":
    main()

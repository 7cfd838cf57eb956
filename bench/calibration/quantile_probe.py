"""The probes behind calibration-log Q4, kept so that their numbers can be reproduced.

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

Usage (the folders ``bench/calibration/scratch_heldout.sh`` writes: CORPUS holds
``all.csv`` and ``trials.txt``, MODEL ``test.npz`` and ``cal.npz``)::

    python -m bench.calibration.quantile_probe within CORPUS MODEL [--key nationality]
    python -m bench.calibration.quantile_probe cells CORPUS MODEL [--k 2 4 8]
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


def cells(m: _Model, ks: list[int]) -> None:
    from sklearn.cluster import KMeans

    in_cohort = split_cohort(list(m.cal_speakers), 0.5, 0)
    cohort, rows = m.cal[in_cohort], np.flatnonzero(~in_cohort)
    fitting = m.cal[rows]
    pe, pt, y = sample_pairs(list(m.cal_speakers[rows]), 1_000_000, 0)
    y = np.asarray(y, bool)
    s_cal = as_norm(cosine_scores(fitting, pe, pt), pe, pt, fitting, cohort, top_n=300)
    s_test = as_norm(m.raw, m.e, m.t, m.test, cohort, top_n=300)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    for k in ks:
        centres = unit(KMeans(k, n_init=4, random_state=0).fit(unit(fitting)).cluster_centers_)
        rc = np.argmax(unit(fitting) @ centres.T, 1)
        rt = np.argmax(unit(m.test) @ centres.T, 1)
        cc = np.minimum(rc[pe], rc[pt]) * k + np.maximum(rc[pe], rc[pt])
        ct = np.minimum(rt[m.e], rt[m.t]) * k + np.maximum(rt[m.e], rt[m.t])
        pairs = [np.flatnonzero(cc == c) for c in range(k * k)]
        for target in ("all", "diag"):
            non = ~y if target == "all" else ~y & (rc[pe] == rc[pt])
            knots, _ = fit_quantile_maps(s_cal, non, pairs, np.ones(k * k))
            lin = fit_linear(apply_quantile_maps(knots, s_cal, cc), y)
            m.row(f"cells k={k} target={target}",
                  lin[0] * apply_quantile_maps(knots, s_test, ct) + lin[1])  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("probe", choices=("within", "cells"))
    p.add_argument("corpus", type=Path)
    p.add_argument("model", type=Path)
    p.add_argument("--key", default="nationality", help="the oracle's attribute (within)")
    p.add_argument("--k", type=int, nargs="+", default=[2, 4, 8], help="regions (cells)")
    args = p.parse_args()
    model = _Model(args.corpus, args.model)
    within(model, args.key) if args.probe == "within" else cells(model, args.k)


if __name__ == "__main__":
    main()

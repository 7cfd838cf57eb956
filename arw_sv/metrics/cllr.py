"""Cllr and minCllr: how well scores work as log-likelihood ratios (Brümmer and du Preez, 2006).

``Cllr = 1/2 [mean_targets log2(1 + e^-s) + mean_nontargets log2(1 + e^s)]`` reads each
score ``s`` as a natural-log likelihood ratio: 0 is perfect, 1 is what a system that always
says "don't know" (s = 0) gets. ``minCllr`` is the Cllr after the best monotone
recalibration of the scores, found by the pool-adjacent-violators algorithm (PAV): the
isotonic regression of the labels on the scores gives each score a posterior ``p``, and
``LLR = logit(p) - logit(P_target)`` with the empirical target share ``P_target``. Tied
scores are pooled first, so they always get one value. ``Cllr - minCllr`` is the
calibration loss; a monotone map of the scores leaves ``minCllr`` unchanged.

Shape legend (the package one, :mod:`arw_sv`): N trials.
"""

from __future__ import annotations

import math

import numpy as np

_LN2 = math.log(2.0)


def cllr(llr: np.ndarray, labels: np.ndarray) -> float:
    """Cllr of scores read as natural-log likelihood ratios (bits; 0 is perfect).

    Raises:
        ValueError: no target or no non-target trial.

    Shape:
        llr, labels: (N,).
    """
    llr = np.asarray(llr, dtype=np.float64)
    target = np.asarray(labels).astype(bool)
    if target.all() or not target.any():
        raise ValueError("Cllr needs target and non-target trials")
    miss = np.logaddexp(0.0, -llr[target]).mean()
    false_alarm = np.logaddexp(0.0, llr[~target]).mean()
    return float((miss + false_alarm) / (2.0 * _LN2))


def pav_blocks(sorted_scores: np.ndarray, sorted_labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """PAV on score-sorted trials: the pooled blocks of the isotonic fit.

    Returns:
        ``(ends, n_target, n_trials)``: for each block, the index one past its last trial,
        and its counts; the fitted posterior of a block is ``n_target / n_trials``, non-
        decreasing from block to block.

    Shape:
        sorted_scores, sorted_labels: (N,) in ascending score order.
    """
    scores = np.asarray(sorted_scores, dtype=np.float64)
    labels = np.asarray(sorted_labels).astype(np.int64)
    if scores.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    # Pool ties, then runs of one label (a run never violates monotonicity inside).
    new = np.flatnonzero(np.diff(scores) != 0) + 1
    starts = np.concatenate(([0], new))
    tar = np.add.reduceat(labels, starts)
    cnt = np.diff(np.concatenate((starts, [scores.size])))
    kind = np.where(tar == 0, 0, np.where(tar == cnt, 1, 2))  # 0 pure non, 1 pure tar, 2 mix
    merge = np.concatenate(([True], (kind[1:] != kind[:-1]) | (kind[1:] == 2)))
    heads = np.flatnonzero(merge)
    tar = np.add.reduceat(tar, heads).tolist()
    cnt = np.add.reduceat(cnt, heads).tolist()
    ends = np.concatenate((starts[heads[1:]], [scores.size])).tolist()
    # The stack of pooled blocks: merge while the previous mean is not below the new one
    # (t1 / n1 >= t2 / n2, compared without division).
    st_t, st_n, st_e = [], [], []
    for t, n, e in zip(tar, cnt, ends, strict=True):
        while st_t and st_t[-1] * n >= t * st_n[-1]:
            t += st_t.pop()
            n += st_n.pop()
            st_e.pop()
        st_t.append(t)
        st_n.append(n)
        st_e.append(e)
    return np.array(st_e), np.array(st_t), np.array(st_n)


def min_cllr(sorted_scores: np.ndarray, sorted_labels: np.ndarray) -> float:
    """MinCllr of score-sorted trials (see module docstring; bits).

    Raises:
        ValueError: no target or no non-target trial.

    Shape:
        sorted_scores, sorted_labels: (N,) in ascending score order.
    """
    _, tar, cnt = pav_blocks(sorted_scores, sorted_labels)
    n_tar, n_all = int(tar.sum()), int(cnt.sum())
    n_non = n_all - n_tar
    if n_tar == 0 or n_non == 0:
        raise ValueError("minCllr needs target and non-target trials")
    non = cnt - tar
    odds_prior = n_tar / n_non  # posterior odds / this = likelihood ratio
    with np.errstate(divide="ignore", invalid="ignore"):
        # Targets of block b: log2(1 + 1/LR_b), LR_b = (t_b / non_b) / odds_prior; a block
        # with targets has t_b > 0, one with non-targets non_b > 0, so no term is infinite.
        target_terms = np.where(tar > 0, tar * np.log1p(non * odds_prior / np.maximum(tar, 1)), 0.0)
        non_terms = np.where(non > 0, non * np.log1p(tar / (odds_prior * np.maximum(non, 1))), 0.0)
    return float((target_terms.sum() / n_tar + non_terms.sum() / n_non) / (2.0 * _LN2))


def calibration_summary(sorted_scores: np.ndarray, sorted_labels: np.ndarray) -> dict:
    """``{"cllr", "min_cllr"}`` of score-sorted trials (``None`` without both classes)."""
    labels = np.asarray(sorted_labels)
    n_tar = int(labels.sum())
    if n_tar == 0 or n_tar == labels.size:
        return {"cllr": None, "min_cllr": None}
    return {
        "cllr": cllr(sorted_scores, labels),
        "min_cllr": min_cllr(sorted_scores, labels),
    }

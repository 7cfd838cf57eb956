"""Is a back-end worse than raw cosine *beyond noise*? A paired speaker bootstrap.

Issue 28 asks that the recommended back-end never make minDCF or any grouping's FMR ratio
worse than raw scores "beyond noise". The summary's fixed 5% rule ignores how noisy a
ratio of two small rates is. Here every score set (raw and each back-end) is evaluated under
the *same* speaker resamples (stratified by the combination of the groupings, as
``arw-sv eval --bootstrap`` does), so each resample gives a paired change:

- ``min_dcf``: the back-end's minDCF(0.01) minus raw's;
- ``<grouping>@<threshold>``: the max/min ratio of the groups' FMRs (trials with both sides
  in the group, groups of at least ``min_speakers`` speakers) minus raw's, each at its own
  global threshold (FMR 0.1%, FMR 1%, the EER threshold) fixed at the full sample's value.

A change is *worse beyond noise* when the lower end of its percentile interval is above 0.
The point estimate is the full sample's change.
"""

from __future__ import annotations

import numpy as np

from arw_sv.metrics.bootstrap import SpeakerBootstrap, percentile_interval, speaker_multiplicities
from arw_sv.metrics.groups import assign_trials, max_min_ratio
from arw_sv.metrics.rates import (
    eer_from_points,
    min_dcf_from_points,
    points_from_sorted,
    threshold_at_far,
)
from arw_sv.metrics.report import default_strata

#: threshold key -> FMR target (None: the EER threshold)
THRESHOLDS = {"0.001": 0.001, "0.01": 0.01, "eer": None}


def _global_thresholds(points) -> dict[str, float]:
    """The full sample's global threshold at each of :data:`THRESHOLDS`, as the report sets
    them (``threshold_at_far``; the EER threshold of ``eer_from_points``)."""
    return {key: (eer_from_points(points)[1] if f is None else threshold_at_far(points, f))
            for key, f in THRESHOLDS.items()}  # fmt: skip


def _ratios(fmr: np.ndarray) -> np.ndarray:
    """Per-resample max/min over groups; NaN where a group has no false accept or no
    non-target. Shape: fmr (G, R) -> (R,)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = fmr.max(axis=0) / fmr.min(axis=0)
    out[~np.isfinite(out)] = np.nan
    return out


class _ScoreSet:
    """One score set's full-sample numbers and its per-resample ones."""

    def __init__(self, scores, labels, enroll_spk, test_spk, mult, groupings, min_speakers):
        order = np.argsort(scores, kind="stable")
        self.sorted = scores[order]
        lab = np.asarray(labels, dtype=bool)[order]
        enroll, test = enroll_spk[order], test_spk[order]
        points = points_from_sorted(self.sorted, lab)
        self.thresholds = _global_thresholds(points)
        boot = SpeakerBootstrap(self.sorted, lab, enroll, test, mult, (0.01,))
        self.min_dcf = min_dcf_from_points(points, 0.01)[0]
        self.min_dcf_r = boot.evaluate()[1][:, 0]
        self.ratio, self.ratio_r = {}, {}
        for name, grouping in groupings.items():
            group = assign_trials(grouping, enroll, test, "both")
            keep = [g for g in range(len(grouping.groups))
                    if np.unique(np.r_[enroll[group == g], test[group == g]]).size >= min_speakers]  # fmt: skip
            for key, thr in self.thresholds.items():
                full, per = [], []
                for g in keep:
                    pos = np.flatnonzero((group == g) & ~lab)
                    full.append(float(np.mean(self.sorted[pos] >= thr)) if pos.size else np.nan)
                    per.append(boot.rates_at(np.flatnonzero(group == g), thr)[0])
                self.ratio[f"{name}@{key}"] = (max_min_ratio(full) if len(full) > 1
                                               and np.isfinite(full).all() else None)  # fmt: skip
                self.ratio_r[f"{name}@{key}"] = (_ratios(np.array(per)) if len(per) > 1
                                                 else np.full(mult.shape[0], np.nan))  # fmt: skip


def paired_changes(
    score_sets: dict[str, np.ndarray],
    labels: np.ndarray,
    enroll_spk: np.ndarray,
    test_spk: np.ndarray,
    groupings: dict,
    *,
    reference: str = "raw",
    n_resamples: int = 200,
    seed: int = 0,
    min_speakers: int = 5,
    confidence: float = 0.95,
) -> dict:
    """Each score set's change against ``reference`` under shared speaker resamples.

    Args:
        score_sets: name -> trial scores (one of them ``reference``).
        labels: 1 for a same-speaker trial.
        enroll_spk, test_spk: each trial's speaker indices.
        groupings: name -> :class:`arw_sv.metrics.groups.Grouping` over those indices.
        reference: the score set the others are compared with.
        n_resamples, seed, confidence: the bootstrap's.
        min_speakers: groups with fewer speakers in their trials are left out.

    Returns:
        ``{name: {metric: {"change", "low", "high", "worse_beyond_noise"}}}`` for every
        name but ``reference``; metrics ``min_dcf`` and ``<grouping>@<threshold>``; and
        ``{"ratios": {name: {<grouping>@<threshold>: {"value", "low", "high"}}}}``, each
        set's own ratio with its interval (reference included).

    Shape:
        each score set, labels, enroll_spk, test_spk: (N,).
    """
    if reference not in score_sets:
        raise ValueError(f"no {reference!r} among the score sets")
    enroll_spk, test_spk = np.asarray(enroll_spk), np.asarray(test_spk)
    n_spk = int(max(enroll_spk.max(), test_spk.max()) + 1)
    strata = default_strata(list(groupings.values()), n_spk)
    mult = speaker_multiplicities(strata, n_resamples, np.random.default_rng(seed))
    sets = {name: _ScoreSet(np.asarray(s, dtype=np.float64), labels, enroll_spk, test_spk, mult,
                            groupings, min_speakers)
            for name, s in score_sets.items()}  # fmt: skip
    ref = sets[reference]
    out = {"ratios": {
        name: {key: {"value": cur.ratio[key], **_interval(cur.ratio_r[key], confidence)}
               for key in cur.ratio}
        for name, cur in sets.items()
    }}  # fmt: skip
    for name, cur in sets.items():
        if name == reference:
            continue
        rows = {}
        diff = cur.min_dcf_r - ref.min_dcf_r
        rows["min_dcf"] = _row(cur.min_dcf - ref.min_dcf, diff, confidence)
        for key, r in cur.ratio.items():
            a = ref.ratio[key]
            point = None if r is None or a is None else r - a
            rows[key] = _row(point, cur.ratio_r[key] - ref.ratio_r[key], confidence)
        out[name] = rows
    return out


def _interval(values: np.ndarray, confidence: float) -> dict:
    ci = percentile_interval(values, confidence)
    return {"low": ci["low"], "high": ci["high"]}


def _row(point, diffs: np.ndarray, confidence: float) -> dict:
    ci = _interval(diffs, confidence)
    return {"change": point, **ci,
            "worse_beyond_noise": bool(ci["low"] is not None and ci["low"] > 0)}  # fmt: skip


def null_ratio_floor(
    scores: np.ndarray,
    labels: np.ndarray,
    enroll_spk: np.ndarray,
    test_spk: np.ndarray,
    strata: np.ndarray,
    n_groups: int,
    *,
    n_splits: int = 100,
    seed: int = 0,
) -> dict:
    """The max/min FMR ratio that speaker sampling alone produces: the speakers are dealt at
    random into ``n_groups`` pseudo-groups of equal composition (each stratum, e.g. each
    nationality x gender cell, spread evenly over them), so every pseudo-group has the same
    expected FMR, and the ratio across them is measured as a real grouping's is (trials with
    both sides in the pseudo-group, at the full sample's global thresholds).

    Returns:
        ``{threshold key: {"median", "p90"}}`` over ``n_splits`` deals (None where a deal
        left a pseudo-group without a false accept).

    Shape:
        scores, labels, enroll_spk, test_spk: (N,); strata: (P,) every speaker's stratum.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    order = np.argsort(s, kind="stable")
    thresholds = _global_thresholds(points_from_sorted(s[order], y[order]))
    strata = np.asarray(strata)
    rng = np.random.default_rng(seed)
    values: dict[str, list] = {key: [] for key in thresholds}
    non = ~y
    for _ in range(n_splits):
        pseudo = np.empty(strata.size, dtype=np.int64)
        start = rng.integers(n_groups)  # which pseudo-group a stratum's remainder starts at
        for stratum in np.unique(strata):
            members = rng.permutation(np.flatnonzero(strata == stratum))
            pseudo[members] = (np.arange(members.size) + start) % n_groups
            start = (start + members.size) % n_groups
        ga, gb = pseudo[enroll_spk], pseudo[test_spk]
        same = ga == gb
        for key, thr in thresholds.items():
            fmr = [np.mean(s[non & same & (ga == g)] >= thr) for g in range(n_groups)]
            values[key].append(max_min_ratio(fmr))
    out = {}
    for key, v in values.items():
        finite = np.array([x for x in v if x is not None])
        out[key] = ({"median": float(np.median(finite)), "p90": float(np.percentile(finite, 90))}
                    if finite.size == len(v) else None)  # fmt: skip
    return out

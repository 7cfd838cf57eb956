"""Error rates of a verification system from one sort of its scores.

Conventions (shared by every function here and documented in ``docs/evaluation.md``):

- Decision rule: a trial is *accepted* iff ``score >= threshold``.
- Operating points: one per distinct score (the threshold at that score) plus one that
  rejects everything (threshold just above the largest score). Tied scores therefore move
  together, whatever the order of the trials, exactly as scikit-learn's ``roc_curve``.
- FRR (miss rate, FNMR) = rejected targets / targets; FAR (false-alarm rate, FMR) =
  accepted non-targets / non-targets.
- EER = (FAR + FRR) / 2 at the operating point where |FAR - FRR| is smallest; when two
  points straddle the crossing at equal distance, the lower threshold wins (SpeechBrain's
  choice). The comparison is made on integer counts, so ties are exact, not rounding
  accidents.
- minDCF = min over operating points of ``c_miss * p * FRR + c_fa * (1 - p) * FAR``,
  divided by ``min(c_miss * p, c_fa * (1 - p))`` (NIST SRE / WeSpeaker normalisation).

Shape legend (the package one, :mod:`arw_sv`): N trials, O operating points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

P_TARGETS = (0.01, 0.05)


@dataclass(frozen=True)
class OperatingPoints:
    """Miss and false-alarm counts at every distinct threshold, in increasing order.

    Attributes:
        thresholds: accept iff ``score >= threshold``. Shape: (O,).
        misses: (weighted) count of targets rejected at each threshold. Shape: (O,).
        false_alarms: (weighted) count of non-targets accepted. Shape: (O,).
        n_target: (weighted) number of target trials.
        n_nontarget: (weighted) number of non-target trials.
    """

    thresholds: np.ndarray
    misses: np.ndarray
    false_alarms: np.ndarray
    n_target: float
    n_nontarget: float

    @property
    def frr(self) -> np.ndarray:
        """Miss rate (FNMR) at every threshold. Shape: (O,)."""
        return self.misses / self.n_target

    @property
    def far(self) -> np.ndarray:
        """False-alarm rate (FMR) at every threshold. Shape: (O,)."""
        return self.false_alarms / self.n_nontarget


def check_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert scores (finite floats) and labels (0/1).

    Raises:
        ValueError: shapes differ, a score is NaN or infinite, or a label is not 0 or 1.

    Shape:
        scores, labels: (N,).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    bad = ~np.isfinite(scores)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} scores are NaN or infinite (first at index {int(np.argmax(bad))})"
        )
    if labels.dtype == bool:
        labels = labels.astype(np.int8)
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"labels must be 0 or 1; index {i} is {labels[i]!r}")
    return scores, labels.astype(np.int8)


def points_from_sorted(
    sorted_scores: np.ndarray, sorted_labels: np.ndarray, sorted_weights: np.ndarray | None = None
) -> OperatingPoints:
    """Operating points of trials already sorted by score (ascending).

    The engine behind every metric: cumulative target and non-target counts, sampled
    at the boundaries between distinct scores.

    Shape:
        sorted_scores, sorted_labels, sorted_weights: (N,).
    """
    n = sorted_scores.size
    is_target = sorted_labels.astype(bool)
    if sorted_weights is None:
        tar = is_target.astype(np.int64)
        cum_tar = np.concatenate(([0], np.cumsum(tar)))
        cum_all = np.arange(n + 1, dtype=np.int64)
        cum_non = cum_all - cum_tar
    else:
        w = np.asarray(sorted_weights, dtype=np.float64)
        cum_tar = np.concatenate(([0.0], np.cumsum(np.where(is_target, w, 0.0))))
        cum_non = np.concatenate(([0.0], np.cumsum(np.where(is_target, 0.0, w))))
    n_tar, n_non = cum_tar[-1], cum_non[-1]
    # Cut k = number of lowest-scored trials rejected; valid only between distinct scores.
    cuts = np.concatenate(([0], np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1]) + 1, [n]))
    thresholds = np.empty(cuts.size, dtype=np.float64)
    thresholds[:-1] = sorted_scores[cuts[:-1]] if n else []
    thresholds[-1] = np.nextafter(sorted_scores[-1], np.inf) if n else np.inf
    return OperatingPoints(
        thresholds=thresholds,
        misses=cum_tar[cuts],
        false_alarms=n_non - cum_non[cuts],
        n_target=n_tar.item(),
        n_nontarget=n_non.item(),
    )


def operating_points(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> OperatingPoints:
    """Sort the trials once and return their operating points.

    Args:
        scores: trial scores (higher = more likely the same speaker).
        labels: 1 for a target trial, 0 for a non-target trial.
        weights: optional non-negative trial weights (e.g. bootstrap multiplicities).

    Shape:
        scores, labels, weights: (N,).
    """
    scores, labels = check_scores_labels(scores, labels)
    order = np.argsort(scores)  # tie order is irrelevant: ties are cut as blocks
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[order]
    return points_from_sorted(scores[order], labels[order], w)


def _require_both_classes(points: OperatingPoints, what: str) -> None:
    if points.n_target <= 0 or points.n_nontarget <= 0:
        raise ValueError(
            f"{what} is undefined: {points.n_target:g} target and "
            f"{points.n_nontarget:g} non-target trials"
        )


def eer_from_points(points: OperatingPoints) -> tuple[float, float]:
    """EER and its threshold from precomputed operating points (see module conventions)."""
    _require_both_classes(points, "EER")
    # FAR - FRR scaled by n_target * n_nontarget: exact in integers (or integer-valued floats).
    gap = points.false_alarms * points.n_target - points.misses * points.n_nontarget
    k = int(np.argmin(np.abs(gap)))
    rate = 0.5 * (points.false_alarms[k] / points.n_nontarget + points.misses[k] / points.n_target)
    return float(rate), float(points.thresholds[k])


def dcf_from_points(
    points: OperatingPoints, p_target: float, c_miss: float = 1.0, c_fa: float = 1.0
) -> np.ndarray:
    """Normalised detection cost at every operating point. Shape: (O,)."""
    _require_both_classes(points, "DCF")
    cost = c_miss * p_target * points.frr + c_fa * (1.0 - p_target) * points.far
    return cost / min(c_miss * p_target, c_fa * (1.0 - p_target))


def min_dcf_from_points(
    points: OperatingPoints, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> tuple[float, float]:
    """Normalised minDCF and its threshold from precomputed operating points."""
    cost = dcf_from_points(points, p_target, c_miss, c_fa)
    k = int(np.argmin(cost))
    return float(cost[k]), float(points.thresholds[k])


def eer(
    scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> tuple[float, float]:
    """Equal error rate and its threshold.

    Args:
        scores: trial scores.
        labels: 1 target, 0 non-target.
        weights: optional trial weights.

    Returns:
        ``(eer, threshold)``: EER as a fraction in [0, 1]; accept iff ``score >= threshold``.

    Raises:
        ValueError: no target or no non-target trials, NaN scores, labels not 0/1.

    Shape:
        scores, labels, weights: (N,).

    Example:
        >>> eer([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
        (0.0, 0.8)
    """
    return eer_from_points(operating_points(scores, labels, weights))


def min_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    weights: np.ndarray | None = None,
) -> tuple[float, float]:
    """Normalised minimum detection cost and its threshold.

    Returns:
        ``(min_dcf, threshold)``; ``min_dcf`` is in [0, 1] for ``p_target <= 0.5``.

    Shape:
        scores, labels, weights: (N,).
    """
    return min_dcf_from_points(operating_points(scores, labels, weights), p_target, c_miss, c_fa)


def actual_dcf(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float | None = None,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Normalised detection cost at a fixed threshold (accept iff ``score >= threshold``).

    Args:
        scores: trial scores, finite.
        labels: 1 for a target trial, 0 for a non-target.
        threshold: the decision threshold. ``None`` means the Bayes threshold for
            calibrated log-likelihood-ratio scores, ``log(c_fa (1 - p) / (c_miss p))``.
        p_target: prior probability of a target trial, ``p`` above.
        c_miss: cost of rejecting a target.
        c_fa: cost of accepting a non-target.

    Returns:
        ``(c_miss p P_miss + c_fa (1 - p) P_fa) / min(c_miss p, c_fa (1 - p))``: 1 is the
        cost of always accepting or always rejecting, whichever is cheaper.

    Raises:
        ValueError: the scores or labels are invalid (:func:`check_scores_labels`), or the
            trials lack targets or non-targets.

    Shape:
        scores, labels: (N,).
    """
    scores, labels = check_scores_labels(scores, labels)
    if threshold is None:
        threshold = float(np.log(c_fa * (1.0 - p_target) / (c_miss * p_target)))
    frr, far = rates_at_threshold(scores, labels, threshold)
    if frr is None or far is None:
        raise ValueError("actual DCF is undefined without both target and non-target trials")
    cost = c_miss * p_target * frr + c_fa * (1.0 - p_target) * far
    return float(cost / min(c_miss * p_target, c_fa * (1.0 - p_target)))


def rates_at_threshold(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> tuple[float | None, float | None]:
    """FRR (FNMR) and FAR (FMR) at a threshold; ``None`` where a class is absent.

    Shape:
        scores, labels: (N,).
    """
    accepted = np.asarray(scores) >= threshold
    is_target = np.asarray(labels).astype(bool)
    n_tar = int(is_target.sum())
    n_non = is_target.size - n_tar
    frr = float((~accepted & is_target).sum() / n_tar) if n_tar else None
    far = float((accepted & ~is_target).sum() / n_non) if n_non else None
    return frr, far


def threshold_at_far(points: OperatingPoints, target_far: float) -> float:
    """Lowest threshold whose false-alarm rate is at most ``target_far``."""
    _require_both_classes(points, "A threshold at a false-alarm rate")
    k = int(np.argmax(points.far <= target_far))  # FAR falls with k; the last point has FAR 0
    return float(points.thresholds[k])


def det_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection error trade-off: false-alarm and miss rates at every threshold.

    Returns:
        ``(far, frr, thresholds)``, thresholds increasing (FAR falling, FRR rising).

    Shape:
        scores, labels: (N,); each output: (O,).
    """
    points = operating_points(scores, labels)
    _require_both_classes(points, "A DET curve")
    return points.far, points.frr, points.thresholds

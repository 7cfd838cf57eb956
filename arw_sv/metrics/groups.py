"""Trials by demographic group, and measures of disparity between groups.

A *grouping* (gender, nationality, ...) gives every speaker a group or none. A trial joins
a group by one of two rules, named in every report:

- ``"both"`` (default; Peri et al.): enrolment and test speaker are both in the group.
  Trials whose speakers are in different groups are counted as *cross-group* trials.
- ``"enroll"`` (SVEva Fair, FairVoice): the enrolment speaker's group.

Trials with a speaker outside the grouping (no metadata, or no value for the attribute)
are *unassigned*.

Shape legend (the package one, :mod:`arw_sv`): N trials, P speakers, G groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CROSS_GROUP = -1
UNASSIGNED = -2
GROUP_RULES = ("both", "enroll")


@dataclass(frozen=True)
class Grouping:
    """A partition of (some of) the speakers into named groups.

    Attributes:
        name: what the grouping is (``"gender"``, ``"nationality"``, ...).
        groups: group names; a group's id is its position.
        speaker_group: group id of every speaker, -1 where the speaker has none. Shape: (P,).
        notes: how the groups were formed (pooling, mapping), copied into the report.
    """

    name: str
    groups: tuple[str, ...]
    speaker_group: np.ndarray
    notes: dict | None = None

    @classmethod
    def from_values(
        cls,
        name: str,
        values: Sequence[str | None],
        notes: dict | None = None,
        order: Sequence[str] | None = None,
    ) -> Grouping:
        """Build from one value per speaker (``None`` = no group); groups in ``order`` (age
        bands by age), else sorted by name; a value ``order`` lacks follows it.
        """
        present = {v for v in values if v is not None}
        first = [v for v in (order or ()) if v in present]
        groups = tuple(first + sorted(present - set(first)))
        index = {g: i for i, g in enumerate(groups)}
        ids = np.array([index[v] if v is not None else -1 for v in values], dtype=np.int64)
        return cls(name, groups, ids, notes)


def assign_trials(
    grouping: Grouping, enroll_spk: np.ndarray, test_spk: np.ndarray, rule: str = "both"
) -> np.ndarray:
    """Group id of every trial, or ``CROSS_GROUP`` / ``UNASSIGNED``.

    Shape:
        enroll_spk, test_spk: (N,) speaker indices; output: (N,).
    """
    if rule not in GROUP_RULES:
        raise ValueError(f"group rule must be one of {GROUP_RULES}, not {rule!r}")
    ga = grouping.speaker_group[enroll_spk]
    if rule == "enroll":
        return np.where(ga >= 0, ga, UNASSIGNED)
    gb = grouping.speaker_group[test_spk]
    out = np.where(ga == gb, ga, CROSS_GROUP)
    out[(ga < 0) | (gb < 0)] = UNASSIGNED
    return out


def speakers_per_group(
    grouping: Grouping,
    trial_group: np.ndarray,
    enroll_spk: np.ndarray,
    test_spk: np.ndarray,
    rule: str,
) -> np.ndarray:
    """Number of speakers that take part in each group's trials. Shape: (G,)."""
    n_spk = grouping.speaker_group.size
    inside = trial_group >= 0
    present = np.zeros(n_spk, dtype=bool)
    present[enroll_spk[inside]] = True
    if rule == "both":
        present[test_spk[inside]] = True
    ids = grouping.speaker_group[present]
    return np.bincount(ids[ids >= 0], minlength=len(grouping.groups))


def gini(values: Sequence[float]) -> float:
    """Gini coefficient with the small-sample factor n/(n-1) used by GARBE.

    ``G = n/(n-1) * sum_i sum_j |x_i - x_j| / (2 n^2 mean(x))``; 0 when all values are equal
    (including all zero).
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2:
        raise ValueError("the Gini coefficient needs at least two groups")
    total_diff = np.abs(x[:, None] - x[None, :]).sum()
    if total_diff == 0.0:
        return 0.0
    return float(n / (n - 1) * total_diff / (2.0 * n * n * x.mean()))


def fadr(fmr: Sequence[float], fnmr: Sequence[float], alpha: float = 0.5) -> float:
    """Fairness discrepancy rate (de Freitas Pereira and Marcel, 2021).

    ``FDR = 1 - (alpha * max|FMR_i - FMR_j| + (1 - alpha) * max|FNMR_i - FNMR_j|)``: 1 is
    perfectly fair. Rates are fractions, each list has one entry per group.
    """
    a = float(np.ptp(np.asarray(fmr, dtype=np.float64)))
    b = float(np.ptp(np.asarray(fnmr, dtype=np.float64)))
    return 1.0 - (alpha * a + (1.0 - alpha) * b)


def garbe(fmr: Sequence[float], fnmr: Sequence[float], alpha: float = 0.5) -> float:
    """Gini aggregation rate for biometric equitability (Howard et al., 2022).

    ``GARBE = alpha * Gini(FMR) + (1 - alpha) * Gini(FNMR)``: 0 is perfectly fair.
    """
    return alpha * gini(fmr) + (1.0 - alpha) * gini(fnmr)


def eer_disparity(names: Sequence[str], eers: Sequence[float]) -> dict:
    """Spread of group EERs: gap, ratio, population std (ddof 0), worst and best group.

    Args:
        names: group names.
        eers: group EERs as fractions (only defined ones).

    Returns:
        A dict; ``ratio`` is ``None`` when the best group's EER is 0.
    """
    values = np.asarray(eers, dtype=np.float64)
    if values.size == 0:
        return {
            "n_groups": 0,
            "gap": None,
            "ratio": None,
            "std": None,
            "worst_group": None,
            "worst_eer": None,
            "best_group": None,
            "best_eer": None,
        }
    worst, best = int(np.argmax(values)), int(np.argmin(values))
    return {
        "n_groups": int(values.size),
        "gap": float(values[worst] - values[best]),
        "ratio": float(values[worst] / values[best]) if values[best] > 0 else None,
        "std": float(values.std(ddof=0)),
        "worst_group": names[worst],
        "worst_eer": float(values[worst]),
        "best_group": names[best],
        "best_eer": float(values[best]),
    }


def rate_disparity(
    fmr: Sequence[float], fnmr: Sequence[float], threshold: float, alpha: float = 0.5
) -> dict:
    """FaDR and GARBE at one threshold, with the spreads they are built from."""
    if len(fmr) < 2:
        return {
            "threshold": threshold,
            "alpha": alpha,
            "fadr": None,
            "garbe": None,
            "fmr_gap": None,
            "fnmr_gap": None,
            "fmr_ratio": None,
            "fnmr_ratio": None,
            "gini_fmr": None,
            "gini_fnmr": None,
        }
    return {
        "threshold": threshold,
        "alpha": alpha,
        "fadr": fadr(fmr, fnmr, alpha),
        "garbe": garbe(fmr, fnmr, alpha),
        "fmr_gap": float(np.ptp(fmr)),
        "fnmr_gap": float(np.ptp(fnmr)),
        "fmr_ratio": max_min_ratio(fmr),
        "fnmr_ratio": max_min_ratio(fnmr),
        "gini_fmr": gini(fmr),
        "gini_fnmr": gini(fnmr),
    }


def max_min_ratio(values: Sequence[float]) -> float | None:
    """Max / min of rates across groups (NIST FRVT's demographic differential); None when
    the smallest is 0 (a group without a single error: the ratio is unbounded).
    """
    low = min(values)
    return float(max(values) / low) if low > 0 else None

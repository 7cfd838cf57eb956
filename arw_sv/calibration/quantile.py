"""Per-region quantile matching of non-target scores: FMR parity at every threshold.

FSN moves each region's scores by one offset, fitted at one false-match rate, so regions
share the global FMR at that threshold only. Here each region ``c`` gets a monotone map
``m_c`` that sends its non-target score distribution ``F_c`` onto the global one ``G``,
``m_c(s) = G^-1(F_c(s))`` (histogram matching, one quantile per knot where FSN matches
one quantile in all): after it, a region's non-targets pass any global threshold as often
as everyone's, on the calibration pairs. A trial between regions ``a`` and ``b`` gets
``(m_a(s) + m_b(s)) / 2`` (FSN's mean of the two sides' offsets, generalised; a mean of
increasing maps is increasing), and one global linear map turns that into an LLR.

The map is piecewise linear through knots at the non-target upper-tail probabilities
:data:`LEVELS` (42 FMRs: log-spaced from 10^-4 to 0.1, where thresholds live, then
every 0.05 to 0.95): ``x_cj`` the region's quantile at
``1 - p_j``, ``y_j`` the global one. A knot needs at least :data:`MIN_FALSE_ACCEPTS`
region non-targets above it; rarer knots take the last reliable knot's offset (a constant
shift), and beyond the outer knots the map is a shift too, so it stays continuous and
increasing everywhere. **Shrinkage:** a region seen through few speakers is pulled toward
the identity (the global map alone) in proportion to its evidence,
``m'_c(s) = s + w_c (m_c(s) - s)``, ``w_c = n_c / (n_c + prior)`` with ``n_c`` the number of
*speakers* with an utterance in region ``c`` (pairs overstate evidence: 10 utterances of
one speaker give 45 pairs but one voice). ``m'_c`` is a convex mix of two increasing maps,
so still increasing; its knots are ``(x_cj, x_cj + w_c (y_j - x_cj))``.

Shape legend (the package one, :mod:`arw_sv`): N trials, U utterances, C clusters (the regions),
O operating points (the knots).
"""

from __future__ import annotations

import numpy as np

#: Non-target upper-tail probabilities (FMR) of the knots, rarest first (x increasing).
LEVELS = np.unique(np.r_[np.logspace(-4.0, -1.0, 25), np.linspace(0.1, 0.95, 18)])
MIN_FALSE_ACCEPTS = 10  # region non-targets above a knot, for it to be estimated


def fit_quantile_maps(
    scores: np.ndarray,
    nontarget: np.ndarray,
    touching: list[np.ndarray],
    shrink: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-region knots of the shrunk quantile maps.

    Args:
        scores: calibration pair scores (after AS-norm, when used).
        nontarget: which pairs are different-speaker.
        touching: for each region, the pairs with at least one side in it.
        shrink: for each region, its shrinkage weight ``w_c`` in [0, 1] (1: none).

    Returns:
        ``(knots, weights)``: knots (C, 2, O), row 0 the region's scores ``x``, row 1 what
        they map to; weights (C,) the weights used: ``shrink``, 0 where a region has
        fewer than two reliable knots (its map is the identity).

    Shape:
        scores, nontarget: (N,); shrink: (C,).
    """
    s = np.asarray(scores, dtype=np.float64)
    levels = 1.0 - LEVELS[::-1]  # increasing quantile levels: x increasing
    target_q = np.quantile(s[nontarget], levels)
    knots = np.empty((len(touching), 2, levels.size))
    weights = np.zeros(len(touching))
    for c, pairs in enumerate(touching):
        non = s[pairs][nontarget[pairs]]
        x = target_q.copy()  # a region with no evidence: the identity
        if non.size:
            reliable = LEVELS[::-1] * non.size >= MIN_FALSE_ACCEPTS
            if reliable.sum() >= 2:
                x[reliable] = np.quantile(non, levels[reliable])
                last = np.flatnonzero(reliable)[-1]  # the rarest reliable knot
                x[last + 1 :] = target_q[last + 1 :] + (x[last] - target_q[last])
                weights[c] = shrink[c]
        x = np.maximum.accumulate(x)  # ties in a small region: keep the knots ordered
        knots[c, 0] = x
        knots[c, 1] = x + weights[c] * (target_q - x)
    return knots, weights


def apply_quantile_maps(knots: np.ndarray, scores: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``m'_c(s)`` for each score under its region's map (-1: no region, the identity).

    Shape:
        knots: (C, 2, O); scores, region: (N,) -> (N,).
    """
    s = np.asarray(scores, dtype=np.float64)
    out = s.copy()
    for c in range(len(knots)):
        rows = np.flatnonzero(region == c)
        if rows.size == 0:
            continue
        x, v = knots[c, 0], knots[c, 1]
        mapped = np.interp(s[rows], x, v)
        low, high = s[rows] < x[0], s[rows] > x[-1]  # outside the knots: a shift
        mapped[low] = s[rows][low] + (v[0] - x[0])
        mapped[high] = s[rows][high] + (v[-1] - x[-1])
        out[rows] = mapped
    return out

"""Speaker-level bootstrap of EER and minDCF that reuses one sort for every resample.

Why speakers, not trials: the trials of one speaker share that speaker's voice, channel
and embedding quirks, so they are correlated; resampling trials treats them as
independent and gives intervals that are too narrow.

Scheme. A resample draws speakers with replacement (within strata, so that every group
keeps its number of speakers). Speaker ``s`` drawn ``W_s`` times stands for ``W_s``
copies of itself, and every trial becomes a weighted trial:

- a same-speaker trial of ``s`` counts ``W_s`` times (each copy brings its own target
  trials; pairing two copies of one person would invent target trials never recorded);
- a trial between different speakers ``a`` and ``b`` counts ``W_a * W_b`` times (every
  copy of ``a`` meets every copy of ``b``).

A resampled EER is then the EER of the weighted trials. The weights are integers, so the
weighted counts are exact, and the EER of a resample equals ``eer(scores, labels,
weights=w)`` bit for bit (a test checks this).

Speed. Every resample shares the global sort. Only trials near the operating points can
change the answer: for each subset of trials the engine takes a window of thresholds
around the unweighted EER and minDCF points, computes the weighted counts below and
above the window once per resample (as sums over speakers, or over speaker pairs via a
small matrix product), and runs cumulative sums inside the window only. A resample whose
optimum might lie outside the window is detected exactly (a sign test for EER, a lower
bound for DCF) and recomputed with a wider window, up to the whole list, so the window
changes the speed, never the result.

Shape legend (the package one, :mod:`arw_sv`): N trials, P speakers, R resamples, O target priors.
"""

from __future__ import annotations

import numpy as np

from arw_sv.metrics.rates import points_from_sorted

_CHUNK_ELEMENTS = 2_000_000  # resamples x window trials per block: bounds memory (~50 MB)
_FULL_RANGE_BELOW = 1_000  # subsets this small skip the window logic
_DENSE_PAIRS_MAX = 3_000  # speakers; above this the pair-count matrix is kept sparse


def speaker_multiplicities(
    strata: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> np.ndarray:
    """How many times each speaker is drawn in each resample, stratified.

    Args:
        strata: stratum id of every speaker; within a stratum of ``n`` speakers each
            resample draws ``n`` speakers with replacement.
        n_resamples: number of resamples R.
        rng: the random generator.

    Shape:
        strata: (P,); output: (R, P) int32.
    """
    strata = np.asarray(strata)
    out = np.zeros((n_resamples, strata.size), dtype=np.int32)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        n = members.size
        out[:, members] = rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples)
    return out


def trial_weights(
    multiplicities: np.ndarray, enroll_spk: np.ndarray, test_spk: np.ndarray
) -> np.ndarray:
    """Weights of trials under resamples (the reference definition, see module docstring).

    Shape:
        multiplicities: (R, P) or (P,); enroll_spk, test_spk: (N,); output: (R, N) or (N,).
    """
    wa = multiplicities[..., enroll_spk]
    return np.where(enroll_spk == test_spk, wa, wa * multiplicities[..., test_spk])


def _weighted_count(mult_t: np.ndarray, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Weighted number of trials in a set, for every resample.

    Same-speaker trials: a vector-matrix product with per-speaker counts. Other trials:
    gathered directly when they are few; otherwise the quadratic form
    ``sum_ab W_a C_ab W_b`` over the speaker-pair count matrix C, dense (BLAS) when the
    speakers are few, sparse otherwise. All exact in float64 for integer counts.

    Shape:
        mult_t: (P, R) float64 (speakers x resamples); output: (R,).
    """
    n_spk, n_res = mult_t.shape
    same = enroll == test
    per_speaker = np.bincount(enroll[same], minlength=n_spk)
    nz = np.flatnonzero(per_speaker)  # read only the speakers involved (groups are small)
    total = per_speaker[nz].astype(np.float64) @ mult_t[nz]
    a, b = enroll[~same], test[~same]
    if a.size == 0:
        return total
    if a.size <= 4 * n_spk:
        step = max(1, _CHUNK_ELEMENTS // n_res)
        for i in range(0, a.size, step):
            total += (mult_t[a[i : i + step]] * mult_t[b[i : i + step]]).sum(0)
        return total
    # The speakers involved, renumbered 0..L-1 (bincount, not np.unique: no sort of N ids).
    present = np.zeros(n_spk, dtype=bool)
    present[a] = True
    present[b] = True
    speakers = np.flatnonzero(present)
    renumber = np.cumsum(present) - 1
    la, lb = renumber[a], renumber[b]
    n_loc = speakers.size
    w_loc = mult_t[speakers]
    if n_loc <= _DENSE_PAIRS_MAX and n_loc * n_loc <= 64 * a.size:
        pairs = np.bincount(la * n_loc + lb, minlength=n_loc * n_loc).reshape(n_loc, n_loc)
        return total + ((pairs.astype(np.float64) @ w_loc) * w_loc).sum(0)
    from scipy import sparse  # here: importing it costs 0.3 s, and only large sets need it

    pairs = sparse.csr_matrix((np.ones(a.size), (la, lb)), shape=(n_loc, n_loc))
    return total + (np.asarray(pairs @ w_loc) * w_loc).sum(0)


def _cumulative(mult_t: np.ndarray, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Running weighted count over a list of trials, with a leading 0.

    Shape:
        mult_t: (P, R) int; output: (n + 1, R) int64.
    """
    w = mult_t[enroll].astype(np.int64)
    cross = enroll != test
    if cross.any():
        w[cross] *= mult_t[test[cross]]
    out = np.zeros((enroll.size + 1, mult_t.shape[1]), dtype=np.int64)
    np.cumsum(w, axis=0, out=out[1:])
    return out


class _Subset:
    """One subset of the sorted trials with what every pass over it shares."""

    def __init__(self, scores, labels, enroll, test, mult_tf):
        self.labels, self.enroll, self.test = labels, enroll, test
        n = scores.size
        self.cuts = np.concatenate(([0], np.flatnonzero(scores[1:] != scores[:-1]) + 1, [n]))
        self.plain = points_from_sorted(scores, labels)
        # Targets / non-targets below each trial position (index = position 0..n).
        self.tar_below = np.concatenate(([0], np.cumsum(labels)))
        self.non_below = np.arange(n + 1) - self.tar_below
        self.n_tar = _weighted_count(mult_tf, enroll[labels], test[labels])
        self.n_non = _weighted_count(mult_tf, enroll[~labels], test[~labels])

    def outside(self, mult_tf, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Weighted targets rejected below ``start`` and non-targets accepted from ``stop``."""
        tar = self.labels[:start]
        non = ~self.labels[stop:]
        misses = _weighted_count(mult_tf, self.enroll[:start][tar], self.test[:start][tar])
        fas = _weighted_count(mult_tf, self.enroll[stop:][non], self.test[stop:][non])
        return misses, fas


class SpeakerBootstrap:
    """EER and minDCF of trial subsets under many speaker resamples.

    Args:
        sorted_scores: all trial scores, sorted ascending.
        sorted_labels: their labels (1 target, 0 non-target).
        sorted_enroll: enrolment speaker index of each sorted trial.
        sorted_test: test speaker index of each sorted trial.
        multiplicities: speaker draw counts (see ``speaker_multiplicities``).
        p_targets: priors for minDCF.

    Shape:
        sorted_*: (N,); multiplicities: (R, P).
    """

    def __init__(
        self,
        sorted_scores: np.ndarray,
        sorted_labels: np.ndarray,
        sorted_enroll: np.ndarray,
        sorted_test: np.ndarray,
        multiplicities: np.ndarray,
        p_targets: tuple[float, ...] = (0.01, 0.05),
    ) -> None:
        self.scores = sorted_scores
        self.labels = sorted_labels.astype(bool)
        self.enroll = sorted_enroll
        self.test = sorted_test
        # Speakers x resamples: gathering a trial's weights reads one contiguous row.
        self.mult_t = np.ascontiguousarray(np.asarray(multiplicities, dtype=np.int32).T)
        self.mult_tf = self.mult_t.astype(np.float64)  # for BLAS products
        self.p_targets = tuple(p_targets)

    @property
    def n_resamples(self) -> int:
        """R, the number of bootstrap resamples."""
        return self.mult_t.shape[1]

    def rates_at(self, positions: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """FMR and FNMR of one subset at a fixed threshold (accept iff score >= threshold)
        under every resample: weighted counts of the false accepts over the non-targets and
        of the misses over the targets.

        Returns:
            ``(fmr, fnmr)``; NaN where a resample leaves no non-target (or no target).

        Shape:
            positions: (n,) indices into the sorted arrays; outputs: (R,), (R,).
        """
        scores, labels = self.scores[positions], self.labels[positions]
        enroll, test = self.enroll[positions], self.test[positions]
        accepted = scores >= threshold

        def count(mask: np.ndarray) -> np.ndarray:
            if not mask.any():
                return np.zeros(self.n_resamples)
            return _weighted_count(self.mult_tf, enroll[mask], test[mask])

        with np.errstate(invalid="ignore", divide="ignore"):
            fmr = count(~labels & accepted) / count(~labels)
            fnmr = count(labels & ~accepted) / count(labels)
        return fmr, fnmr

    def evaluate(self, positions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """EER and normalised minDCF of one subset of trials under every resample.

        Args:
            positions: indices into the sorted arrays, ascending (so still sorted by
                score); ``None`` for all trials.

        Returns:
            ``(eer, min_dcf)``; NaN where a resample leaves no target or no non-target.

        Shape:
            eer: (R,); min_dcf: (R, O).
        """
        sel = slice(None) if positions is None else positions
        eer_out = np.full(self.n_resamples, np.nan)
        dcf_out = np.full((self.n_resamples, len(self.p_targets)), np.nan)
        labels = self.labels[sel]
        if labels.size == 0 or labels.all() or not labels.any():
            return eer_out, dcf_out
        sub = _Subset(self.scores[sel], labels, self.enroll[sel], self.test[sel], self.mult_tf)
        defined = np.flatnonzero((sub.n_tar > 0) & (sub.n_non > 0))
        plain, last = sub.plain, sub.cuts.size - 1
        far, frr = plain.far, plain.frr
        gap = plain.false_alarms * plain.n_target - plain.misses * plain.n_nontarget
        eer0 = 0.5 * (far + frr)[int(np.argmin(np.abs(gap)))]
        dcf0 = [float(((p * frr + (1 - p) * far) / min(p, 1 - p)).min()) for p in self.p_targets]
        far_dcf = max(
            d * min(p, 1 - p) / (1 - p) for d, p in zip(dcf0, self.p_targets, strict=True)
        )

        def window(far_lo: float, frr_hi: float) -> tuple[int, int]:
            if labels.size < _FULL_RANGE_BELOW or (far_lo >= 1.0 and frr_hi >= 1.0):
                return 0, last
            lo = max(0, int(np.count_nonzero(far >= far_lo)) - 1)
            return lo, min(last, int(np.searchsorted(frr, frr_hi, side="left")))

        todo, slack = defined, 0.5
        while todo.size:
            lo, hi = window(
                (1 + slack) * (eer0 + 10.0 / plain.n_nontarget),
                (1 + slack) * (eer0 + 10.0 / plain.n_target),
            )
            todo = self._eer_pass(sub, lo, hi, todo, eer_out)
            slack = 2 * slack + 1
        todo, slack = defined, 0.5
        while todo.size:
            lo, hi = window(
                (1 + slack) * (far_dcf + 10.0 / plain.n_nontarget),
                (1 + slack) * (max(dcf0) + 10.0 / plain.n_target),
            )
            todo = self._dcf_pass(sub, lo, hi, todo, dcf_out)
            slack = 2 * slack + 1
        return eer_out, dcf_out

    def _columns(self, todo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if todo.size == self.n_resamples:
            return self.mult_t, self.mult_tf
        return self.mult_t[:, todo], self.mult_tf[:, todo]

    def _eer_pass(
        self, sub: _Subset, lo: int, hi: int, todo: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        """EER of resamples ``todo`` from the operating points ``lo..hi`` (all of them).

        Returns the resamples whose crossing may lie outside the window.
        """
        start, stop = int(sub.cuts[lo]), int(sub.cuts[hi])
        mult_t, mult_tf = self._columns(todo)
        misses_lo, fa_hi = sub.outside(mult_tf, start, stop)
        win = slice(start, stop)
        is_tar = sub.labels[win]
        ta, tb = sub.enroll[win][is_tar], sub.test[win][is_tar]
        na, nb = sub.enroll[win][~is_tar], sub.test[win][~is_tar]
        cut_pos = sub.cuts[lo : hi + 1]
        t_idx = sub.tar_below[cut_pos] - sub.tar_below[start]
        n_idx = sub.non_below[cut_pos] - sub.non_below[start]
        step = max(1, _CHUNK_ELEMENTS // max(1, stop - start, cut_pos.size))
        retry = []
        for r0 in range(0, todo.size, step):
            cols = slice(r0, r0 + step)
            block = mult_t[:, cols]
            cum_non = _cumulative(block, na, nb)
            misses = (misses_lo[cols] + _cumulative(block, ta, tb)[t_idx]).astype(np.float64)
            fas = (fa_hi[cols] + (cum_non[-1] - cum_non[n_idx])).astype(np.float64)
            ids = todo[cols]
            nt, nn = sub.n_tar[ids], sub.n_non[ids]
            gap = fas * nt - misses * nn
            k = np.argmin(np.abs(gap), axis=0)
            r = np.arange(k.size)
            # The crossing lies inside the window iff the gap changes sign inside it.
            ok = ((gap[0] >= 0) | (lo == 0)) & (gap[-1] <= 0)
            eer = 0.5 * (fas[k, r] / nn + misses[k, r] / nt)
            out[ids[ok]] = eer[ok]
            retry.append(ids[~ok])
        return np.concatenate(retry)

    def _dcf_pass(
        self, sub: _Subset, lo: int, hi: int, todo: np.ndarray, out: np.ndarray
    ) -> np.ndarray:
        """The minDCF of resamples ``todo`` over the operating points ``lo..hi``.

        Only candidate points are evaluated: the cost falls across non-targets and rises
        across targets, so its minimum is at the top of a block holding a non-target and
        the bottom of one holding a target (or an end of the window). Target counts come
        from a (candidates x speakers) @ (speakers x resamples) product, since a
        same-speaker target's weight is its speaker's multiplicity.

        Returns the resamples whose minimum may lie outside the window.
        """
        cuts, labels = sub.cuts, sub.labels
        tar_in = sub.tar_below[cuts[1:]] - sub.tar_below[cuts[:-1]]  # per block of tied scores
        non_in = (cuts[1:] - cuts[:-1]) - tar_in
        k = np.arange(lo + 1, hi)
        cand = np.concatenate(
            ([lo], k[(non_in[k - 1] > 0) & (tar_in[k] > 0)], [hi] if hi > lo else [])
        )
        cand_pos = cuts[cand]
        start, stop = int(cuts[lo]), int(cuts[hi])
        mult_t, mult_tf = self._columns(todo)
        misses_lo, fa_hi = sub.outside(mult_tf, start, stop)
        win = slice(start, stop)
        is_tar = labels[win]
        ta, tb = sub.enroll[win][is_tar], sub.test[win][is_tar]
        na, nb = sub.enroll[win][~is_tar], sub.test[win][~is_tar]
        n_idx = sub.non_below[cand_pos] - sub.non_below[start]
        # Same-speaker targets: per-speaker counts below each candidate, unless that
        # (speakers x candidates) matrix would be large; the rest by running sums.
        same = ta == tb
        spk = np.unique(ta[same])
        if spk.size * cand.size > 4 * _CHUNK_ELEMENTS:
            same[:] = False
            spk = spk[:0]
        local = np.searchsorted(spk, ta[same])
        t_pos = np.flatnonzero(is_tar)[same] + start
        first_cand = np.searchsorted(cand_pos, t_pos, side="right")
        counts = np.bincount(
            local * (cand.size + 1) + first_cand, minlength=spk.size * (cand.size + 1)
        )
        below = np.cumsum(counts.reshape(spk.size, cand.size + 1), axis=1)[:, :-1].T.astype(
            np.float64
        )
        direct = ~same
        direct_idx = np.cumsum(np.concatenate(([0], direct)))[
            sub.tar_below[cand_pos] - sub.tar_below[start]
        ]
        step = max(1, _CHUNK_ELEMENTS // max(1, na.size, cand.size, int(direct.sum())))
        retry = []
        for r0 in range(0, todo.size, step):
            cols = slice(r0, r0 + step)
            block = mult_t[:, cols]
            misses = misses_lo[cols] + below @ mult_tf[spk, cols]
            if direct.any():
                misses = misses + _cumulative(block, ta[direct], tb[direct])[direct_idx]
            cum_non = _cumulative(block, na, nb)
            fas = (fa_hi[cols] + (cum_non[-1] - cum_non[n_idx])).astype(np.float64)
            ids = todo[cols]
            nt, nn = sub.n_tar[ids], sub.n_non[ids]
            ok = np.ones(ids.size, dtype=bool)
            best = np.empty((ids.size, len(self.p_targets)))
            frr, far = misses / nt, fas / nn
            for i, p in enumerate(self.p_targets):
                norm = min(p, 1 - p)
                best[:, i] = (p / norm * frr + (1 - p) / norm * far).min(axis=0)
                # Points below the window cost at least their false alarms at its bottom;
                # points above it at least their misses at its top.
                if lo > 0:
                    ok &= best[:, i] <= (1 - p) * fas[0] / nn / norm
                ok &= best[:, i] <= p * misses[-1] / nt / norm
            out[ids[ok]] = best[ok]
            retry.append(ids[~ok])
        return np.concatenate(retry)


def percentile_interval(values: np.ndarray, confidence: float = 0.95) -> dict:
    """Percentile bootstrap interval over the resamples where the value is defined.

    Shape:
        values: (R,).
    """
    values = np.asarray(values, dtype=np.float64)
    valid = values[np.isfinite(values)]
    out = {"low": None, "high": None, "n_valid": int(valid.size), "n_resamples": int(values.size)}
    if valid.size:
        tail = 50.0 * (1.0 - confidence)
        low, high = np.percentile(valid, [tail, 100.0 - tail])
        out["low"], out["high"] = float(low), float(high)
    return out

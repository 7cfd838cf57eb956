"""Pairs of labelled utterances: every same-speaker pair (or a sample) and a sample of
different-speaker pairs, both deterministic for a seed. Calibration fits on them
(:mod:`arw_sv.calibration`), and held-out cohort discovery scores cohorts with them
(:mod:`arw_sv.data.cohort_sampling`).

Shape legend (the package one, :mod:`arw_sv`): U utterances, N trials (here pairs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sample_pairs(
    speakers: Sequence[str], max_pairs: int = 1_000_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of utterances for calibration, half same-speaker at most.

    Same-speaker: every pair of a speaker's utterances, or a uniform sample of them when
    there are more than ``max_pairs // 2``. Different-speaker: the rest of ``max_pairs``,
    drawn uniformly among distinct pairs of utterances of different speakers (all of them
    when there are fewer).

    Returns:
        ``(enroll, test, labels)``: utterance indices and 1/0 labels.

    Shape:
        speakers: (U,) -> (N,), (N,), (N,).
    """
    rng = np.random.default_rng(seed)
    names, owner = np.unique(np.asarray(speakers, dtype=str), return_inverse=True)
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(names) + 1))
    ea, eb = [], []
    for s in range(len(names)):
        members = order[bounds[s] : bounds[s + 1]]
        i, j = np.triu_indices(members.size, k=1)
        ea.append(members[i])
        eb.append(members[j])
    ta = np.concatenate(ea) if ea else np.zeros(0, dtype=np.int64)
    tb = np.concatenate(eb) if eb else np.zeros(0, dtype=np.int64)
    if ta.size > max_pairs // 2:
        keep = np.sort(rng.choice(ta.size, max_pairs // 2, replace=False))
        ta, tb = ta[keep], tb[keep]
    n = owner.size
    want = max_pairs - ta.size
    possible = n * (n - 1) // 2 - sum(
        int(c) * (int(c) - 1) // 2 for c in np.bincount(owner, minlength=len(names))
    )
    if possible <= want:
        i, j = np.triu_indices(n, k=1)
        cross = owner[i] != owner[j]
        na, nb = i[cross], j[cross]
    else:
        keys = np.zeros(0, dtype=np.int64)
        while keys.size < want:
            a = rng.integers(0, n, 2 * (want - keys.size) + 16)
            b = rng.integers(0, n, a.size)
            a, b = np.minimum(a, b), np.maximum(a, b)
            good = owner[a] != owner[b]
            keys = np.unique(np.concatenate([keys, a[good] * n + b[good]]))
        keys = rng.permutation(keys)[:want]
        keys.sort()
        na, nb = keys // n, keys % n
    enroll = np.concatenate([ta, na]).astype(np.int64)
    test = np.concatenate([tb, nb]).astype(np.int64)
    labels = np.concatenate([np.ones(ta.size, np.int8), np.zeros(na.size, np.int8)])
    return enroll, test, labels

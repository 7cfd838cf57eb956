"""Calibration pairs from labelled utterances: every same-speaker pair (or a sample) and a
sample of different-speaker pairs, both deterministic for a seed.

Shape legend (the package one, :mod:`arw_sv`): U utterances, N trials (here pairs), D embedding.
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


def cosine_scores(embeddings: np.ndarray, enroll: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Cosine of each pair of rows, in blocks (bounded memory).

    Shape:
        embeddings: (U, D); enroll, test: (N,) -> (N,).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.empty(len(enroll))
    step = 65_536
    for i in range(0, len(enroll), step):
        out[i : i + step] = np.einsum("nd,nd->n", x[enroll[i : i + step]], x[test[i : i + step]])
    return out


def split_cohort(speakers: Sequence[str], share: float = 0.5, seed: int = 0) -> np.ndarray:
    """Which utterances go to the AS-norm cohort: all those of ``int(share * S)`` of the S
    speakers, drawn with ``seed``; the rest fit the calibrator (no pair meets its own
    speaker in the cohort).

    Raises:
        ValueError: ``share`` not in (0, 1), or a side left with fewer than 2 speakers.

    Shape:
        speakers: (U,) -> (U,) bool.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the cohort share must lie in (0, 1), got {share}")
    names = np.unique(np.asarray(speakers, dtype=str))
    n_cohort = int(share * len(names))
    if n_cohort < 2 or len(names) - n_cohort < 2:
        raise ValueError(
            f"{len(names)} calibration speakers cannot be split {share:g} / {1 - share:g} into "
            "an AS-norm cohort and fitting speakers of at least 2 each"
        )
    cohort = set(np.random.default_rng(seed).permutation(names)[:n_cohort])
    return np.array([s in cohort for s in speakers], dtype=bool)

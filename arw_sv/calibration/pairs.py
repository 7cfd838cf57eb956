"""Calibration pairs and their scores: :func:`sample_pairs` (from :mod:`arw_sv.data.pairs`),
cosine scores of pairs, and the split of calibration speakers into an AS-norm cohort and
fitting speakers.

Shape legend (the package one, :mod:`arw_sv`): U utterances, N trials (here pairs), D embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arw_sv.data.pairs import sample_pairs

__all__ = ["cosine_scores", "sample_pairs", "split_cohort"]


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

"""What an embeddings ``.npz`` must hold before anything scores it, checked like a manifest.

Every row is a real, finite, non-zero vector of one dimension, small enough that float32
norms and dot products cannot overflow, and an utterance id names one vector. A file that
breaks one of these gives one line naming the file and the first offending id, instead of
a ``ComplexWarning`` that drops imaginary parts, a ``TypeError`` deep in AS-norm,
scikit-learn's multi-line text, or a calibrator fitted on degenerate scores.

Shape legend (the package one, :mod:`arw_sv`): U utterances, D embedding dimension.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

MAX_VALUE = 1e15  # |x| beyond it: float32 squared norms of a 4096-dim vector overflow
MAX_DIM = 65_536


def check_embeddings(
    path: str | Path, ids: Sequence[str], matrix: np.ndarray, error: type[Exception] = ValueError
) -> tuple[list[str], np.ndarray]:
    """Validate utterance embeddings read from ``path``; returns them with exact duplicate
    rows (same id, same vector) dropped and integer vectors as float32.

    Raises:
        error: one line naming ``path`` and the first offending id (duplicates with
            different vectors, complex or non-numeric values, NaN or infinite values,
            values over :data:`MAX_VALUE`, an all-zero vector, every vector the same, a
            dimension of 0 or over :data:`MAX_DIM`).

    Shape:
        matrix: (U, D) -> (U', D), U' <= U.
    """
    ids = list(ids)
    kind = matrix.dtype.kind
    if kind == "c":
        raise error(f"{path}: complex embeddings ({matrix.dtype}); expected real numbers")
    if kind not in "iuf":
        raise error(f"{path}: embeddings of type {matrix.dtype}; expected real numbers")
    if kind != "f":
        matrix = matrix.astype(np.float32)
    if not ids:
        return ids, matrix
    if not 1 <= matrix.shape[1] <= MAX_DIM:
        raise error(f"{path}: {matrix.shape[1]}-dim embeddings (1 to {MAX_DIM})")
    # Two reductions without temporaries decide the common case (NaN propagates through
    # max and min); the row-by-row masks below only name the first bad vector.
    hi, lo = matrix.max(axis=1), matrix.min(axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        clean = (np.isfinite(hi) & np.isfinite(lo) & (np.maximum(hi, -lo) <= MAX_VALUE)
                 & ((hi != 0) | (lo != 0))).all()  # fmt: skip
    if not clean:
        _name_bad_vector(path, ids, matrix, error)
    if len(set(ids)) != len(ids):
        ids, matrix = _without_duplicates(path, ids, matrix, error)
    if len(ids) > 1 and not (matrix[1] != matrix[0]).any() and (matrix == matrix[0]).all():
        raise error(f"{path}: all {len(ids)} vectors are the same; not a model's embeddings")
    return ids, matrix


def _name_bad_vector(path, ids: list[str], matrix: np.ndarray, error) -> None:
    for bad, what in (
        (~np.isfinite(matrix).all(axis=1), "NaN or infinite values"),
        ((np.abs(matrix) > MAX_VALUE).any(axis=1), f"values over {MAX_VALUE:g} in magnitude"),
        (~matrix.any(axis=1), "an all-zero vector"),
    ):
        rows = np.flatnonzero(bad)
        if rows.size:
            more = f" ({rows.size} such vectors)" if rows.size > 1 else ""
            raise error(f"{path}: {ids[rows[0]]!r} has {what}{more}")


def _without_duplicates(
    path, ids: list[str], matrix: np.ndarray, error
) -> tuple[list[str], np.ndarray]:
    first: dict[str, int] = {}
    keep = []
    for row, utt in enumerate(ids):
        if utt not in first:
            first[utt] = row
            keep.append(row)
        elif not np.array_equal(matrix[row], matrix[first[utt]]):
            raise error(f"{path}: {utt!r} is listed twice with different vectors")
    return [ids[i] for i in keep], matrix[keep]

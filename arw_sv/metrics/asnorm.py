"""Adaptive symmetric score normalisation (AS-norm), vectorised.

For a trial between enrolment ``e`` and test ``t`` with cosine score ``s``:

    s' = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2

where ``mu_e`` and ``sigma_e`` are the mean and standard deviation of the ``top_n``
highest cosine scores of ``e`` against a cohort of impostor embeddings (and likewise
for ``t``). Statistics are computed once per distinct utterance, not per trial: a matrix
product against the cohort and a top-k, in blocks (Cumani et al., 2011; Matejka et al.,
2017).

Shape legend (the package one, :mod:`arw_sv`): N trials, U utterances, E cohort embeddings, D embedding dim.
"""

from __future__ import annotations

import os

import numpy as np

_BLOCK_ROWS = 1024  # 1,024 x 4,000 float32 cosines (16 MB): the partition stays in cache


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cohort_stats(
    embeddings: np.ndarray, cohort: np.ndarray, top_n: int = 300, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each embedding's top-N cohort cosine scores.

    The standard deviation is the population one (ddof 0), as in WeSpeaker's AS-norm.
    numpy does it all, so AS-norm needs no torch (whose import alone took 2-4 s on the
    loaded 2-core machine): the float32 product of a block of rows with the cohort
    (BLAS, on its threads), then, on ``workers`` threads (default: the cores this process
    may use), an in-place partition (introselect; it beats ``torch.topk`` on CPU for
    k ~ 300 of 4,000) and the statistics, accumulated in float64 from the float32 cosines
    without a copy. One block's selection overlaps the next one's product, and at most
    ``workers + 1`` blocks are in flight (bounded memory). Every row is computed alone,
    so the result depends on neither the block size nor the number of workers (tested).

    Shape:
        embeddings: (U, D); cohort: (E, D); outputs: (U,) each.
    """
    if top_n < 2:
        raise ValueError(
            f"AS-norm's top_n (the adaptive cohort size) must be at least 2, got {top_n}"
        )
    emb = _unit_rows(embeddings)
    coh_t = np.ascontiguousarray(_unit_rows(cohort).T)
    n_coh = coh_t.shape[1]
    top_n = min(top_n, n_coh)
    if top_n < 2:
        raise ValueError("AS-norm needs a cohort of at least 2 embeddings")
    if coh_t.shape[0] != emb.shape[1]:
        raise ValueError(
            f"the AS-norm cohort has {coh_t.shape[0]}-dim embeddings, the trials' are "
            f"{emb.shape[1]}-dim: embeddings of another model?"
        )
    mean = np.empty(emb.shape[0])
    std = np.empty(emb.shape[0])

    def product(start: int) -> np.ndarray:
        block = emb[start : start + _BLOCK_ROWS]
        if len(block) == 1:  # BLAS takes one row through gemv, which rounds differently
            return (np.repeat(block, 2, axis=0) @ coh_t)[:1]
        return block @ coh_t

    def select(start: int, cosines: np.ndarray) -> None:
        cosines.partition(n_coh - top_n, axis=1)
        top = cosines[:, n_coh - top_n :]
        rows = slice(start, start + top.shape[0])
        mean[rows] = top.mean(axis=1, dtype=np.float64)
        std[rows] = top.std(axis=1, dtype=np.float64)

    starts = range(0, emb.shape[0], _BLOCK_ROWS)
    workers = _cores() if workers is None else workers
    if workers <= 1 or len(starts) <= 1:
        for start in starts:
            select(start, product(start))
        return mean, std
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for start in starts:
            pending.append(pool.submit(select, start, product(start)))
            if len(pending) > workers:
                pending.popleft().result()
        for future in pending:
            future.result()
    return mean, std


def as_norm(
    scores: np.ndarray,
    enroll_idx: np.ndarray,
    test_idx: np.ndarray,
    embeddings: np.ndarray,
    cohort: np.ndarray,
    top_n: int = 300,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """AS-norm of trial scores.

    Args:
        scores: raw cosine scores of the trials.
        enroll_idx: row of each trial's enrolment utterance in ``embeddings``.
        test_idx: row of each trial's test utterance.
        embeddings: the utterance embeddings (rows not named by a trial are skipped).
        cohort: impostor embeddings (speakers disjoint from the test set).
        top_n: size of the adaptive cohort.
        stats: each embedding row's cohort mean and standard deviation, known already
            (e.g. :mod:`arw_sv.calibration.stats_cache`); by default computed here.

    Shape:
        scores, enroll_idx, test_idx: (N,); embeddings: (U, D); cohort: (E, D); output: (N,).
    """
    enroll_idx = np.asarray(enroll_idx)
    test_idx = np.asarray(test_idx)
    if stats is None:
        embeddings = np.asarray(embeddings)
        flags = np.zeros(len(embeddings), dtype=bool)
        flags[enroll_idx], flags[test_idx] = True, True
        used = np.flatnonzero(flags)  # the distinct rows, sorted, in O(U + N)
        position = np.zeros(len(embeddings), dtype=np.int64)
        position[used] = np.arange(used.size)
        mean, std = cohort_stats(embeddings[used], cohort, top_n)
        e, t = position[enroll_idx], position[test_idx]
    else:
        (mean, std), e, t = stats, enroll_idx, test_idx
    std = np.maximum(std, 1e-12)
    s = np.asarray(scores, dtype=np.float64)
    return 0.5 * ((s - mean[e]) / std[e] + (s - mean[t]) / std[t])

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

import numpy as np

_BLOCK_ROWS = 1024  # 1,024 x 4,000 float32 cosines (16 MB): the partition stays in cache


def _unit_rows(x: np.ndarray):
    import torch

    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)


def cohort_stats(
    embeddings: np.ndarray, cohort: np.ndarray, top_n: int = 300, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each embedding's top-N cohort cosine scores.

    The standard deviation is the population one (ddof 0), as in WeSpeaker's AS-norm.
    torch does the float32 matrix product (imported here, so the rest of the metrics need
    no torch); numpy's partition selects the top N in place, and the statistics are
    accumulated in float64 from the float32 cosines without a copy. Blocks of rows run on
    ``workers`` threads (default: torch's intra-op thread count, i.e. every core the
    process may use): the product and the partition both release the GIL, so one block's
    selection overlaps the next one's product. Every row is computed alone, so the result
    does not depend on the block size or the number of workers (tested).

    Shape:
        embeddings: (U, D); cohort: (E, D); outputs: (U,) each.
    """
    import torch

    emb = _unit_rows(embeddings)
    coh_t = _unit_rows(cohort).T.contiguous()
    n_coh = coh_t.shape[1]
    top_n = min(top_n, n_coh)
    if top_n < 2:
        raise ValueError("AS-norm needs a cohort of at least 2 embeddings")
    mean = np.empty(emb.shape[0])
    std = np.empty(emb.shape[0])

    def block(start: int) -> None:
        with torch.no_grad():
            cosines = (emb[start : start + _BLOCK_ROWS] @ coh_t).numpy()
        # np.partition (introselect) beats torch.topk on CPU for k ~ 300 of 4,000.
        cosines.partition(n_coh - top_n, axis=1)
        top = cosines[:, n_coh - top_n :]
        rows = slice(start, start + top.shape[0])
        mean[rows] = top.mean(axis=1, dtype=np.float64)
        std[rows] = top.std(axis=1, dtype=np.float64)

    starts = range(0, emb.shape[0], _BLOCK_ROWS)
    workers = torch.get_num_threads() if workers is None else workers
    if workers <= 1 or len(starts) <= 1:
        for start in starts:
            block(start)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(block, starts))
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
        used, inverse = np.unique(np.concatenate([enroll_idx, test_idx]), return_inverse=True)
        mean, std = cohort_stats(np.asarray(embeddings)[used], cohort, top_n)
        e, t = inverse[: enroll_idx.size], inverse[enroll_idx.size :]
    else:
        (mean, std), e, t = stats, enroll_idx, test_idx
    std = np.maximum(std, 1e-12)
    s = np.asarray(scores, dtype=np.float64)
    return 0.5 * ((s - mean[e]) / std[e] + (s - mean[t]) / std[t])

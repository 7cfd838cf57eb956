"""AS-norm cohort statistics cached per utterance, across runs.

AS-norm's cost is each test utterance against the cohort (a product with E cohort
embeddings and a top-N selection): about 9 CPU-seconds for 145,000 utterances against
4,000. Those statistics depend only on the utterance's embedding, the cohort and N, not on
the trial list, so ``arw-sv score`` / ``eval`` keep them: VoxCeleb1-O, -E and -H, or
re-scoring after a change of threshold or format, share one set of embeddings and pay for
AS-norm once. Each file holds a (U,) mean and standard deviation for one embedding matrix
(NaN where an utterance has not been needed yet); its name is a BLAKE2b digest of the
matrix, the cohort and N, so another matrix or calibrator never reads it. Statistics are
computed row by row, so cached ones equal fresh ones (bit for bit in the tests and on
OpenBLAS, whose float32 product rounds a row the same in any block of two or more rows). Files go under
:func:`arw_sv.atomic.cache_dir` ``/asnorm``, written atomically; an unwritable or damaged
cache is skipped, never an error.

Shape legend (the package one, :mod:`arw_sv`): U utterances, E cohort embeddings, D embedding.
"""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np

from arw_sv.atomic import atomic_write_bytes, cache_dir
from arw_sv.metrics.asnorm import cohort_stats

log = logging.getLogger(__name__)
_VERSION = b"asnorm-stats-1"


def _digest(embeddings: np.ndarray, cohort: np.ndarray, top_n: int) -> str:
    h = hashlib.blake2b(_VERSION, digest_size=16)
    for array in (embeddings, cohort):
        h.update(str((array.dtype.str, array.shape)).encode())
        h.update(np.ascontiguousarray(array).data)
    h.update(str(int(top_n)).encode())
    return h.hexdigest()


def cached_cohort_stats(
    embeddings: np.ndarray, rows: np.ndarray, cohort: np.ndarray, top_n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each needed row's top-N cohort cosines, from the
    cache where known (:func:`arw_sv.metrics.asnorm.cohort_stats` for the rest).

    Returns:
        ``(mean, std)``, each (U,): filled at ``rows``, NaN elsewhere unless cached earlier.

    Shape:
        embeddings: (U, D); rows: (R,) indices; cohort: (E, D).
    """
    embeddings = np.asarray(embeddings)
    path = cache_dir() / "asnorm" / f"{_digest(embeddings, cohort, top_n)}.npz"
    n = len(embeddings)
    mean, std = np.full(n, np.nan), np.full(n, np.nan)
    try:
        with np.load(path, allow_pickle=False) as data:
            if data["mean"].shape == (n,) and data["std"].shape == (n,):
                mean, std = data["mean"].astype(np.float64), data["std"].astype(np.float64)
    except FileNotFoundError:
        pass
    except Exception as exc:  # a damaged cache file costs a recomputation, nothing more
        log.warning("ignoring the AS-norm cache %s (%s)", path, str(exc)[:100])
    flags = np.zeros(n, dtype=bool)
    flags[np.asarray(rows)] = True  # O(N), where np.unique sorts or hashes 1.1M sides
    needed = np.flatnonzero(flags)
    missing = needed[np.isnan(mean[needed]) | np.isnan(std[needed])]
    if missing.size:
        mean[missing], std[missing] = cohort_stats(embeddings[missing], cohort, top_n)
        buffer = io.BytesIO()
        np.savez(buffer, mean=mean, std=std)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as exc:
            log.warning("could not write the AS-norm cache %s (%s)", path, exc)
    return mean, std

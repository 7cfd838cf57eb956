"""Cohort discovery without demographic labels (after Dheram et al., Interspeech 2022).

Speakers are clustered by k-means on their mean embedding; the report then ranks the
clusters by EER like any other grouping, and compares the worst ("bottom") cohort with
the trials of all the other clusters (see ``arw_sv.metrics.report``).

Shape legend (the package one, :mod:`arw_sv`): U utterances, P speakers, D embedding dimension.
"""

from __future__ import annotations

import numpy as np


def speaker_means(
    embeddings: np.ndarray, speaker_of_utt: np.ndarray, n_speakers: int
) -> np.ndarray:
    """Mean of each speaker's L2-normalised embeddings, itself L2-normalised.

    Normalising before averaging keeps a few loud or long utterances from dominating;
    normalising after puts every speaker on the unit sphere, where Euclidean k-means
    matches the cosine scoring used for verification.

    Args:
        embeddings: one row per utterance.
        speaker_of_utt: speaker index of each row (0..P-1).
        n_speakers: P. A speaker without utterances gets a zero row.

    Shape:
        embeddings: (U, D); speaker_of_utt: (U,); output: (P, D).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sums = np.zeros((n_speakers, x.shape[1]))
    np.add.at(sums, np.asarray(speaker_of_utt), x)
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)


def kmeans_cohorts(speaker_embeddings: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster speakers with k-means (scikit-learn, k-means++ with 10 restarts).

    Shape:
        speaker_embeddings: (P, D); output: (P,) cluster ids in 0..n_clusters-1.
    """
    from sklearn.cluster import KMeans  # imported here: only cohort discovery needs it

    n_spk = speaker_embeddings.shape[0]
    if not 2 <= n_clusters <= n_spk:
        raise ValueError(f"need 2 <= clusters <= speakers ({n_spk}), got {n_clusters}")
    model = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed)
    return model.fit_predict(speaker_embeddings).astype(np.int64)

"""Label-free sampling targets from an ERM model's embeddings: cohorts and JTT error sets.

Two alternatives to adversarial reweighting that need no demographic labels, both computed
once, before fine-tuning, from the initial (ERM) model's embeddings of the training set:

* **Cohort oversampling** (after Dheram et al., Interspeech 2022): k-means cohorts of the
  speakers' mean embeddings, each cohort scored by *crowding* (a speaker's mean cosine
  similarity to its ``k`` nearest other speakers, averaged over the cohort: crowded
  speakers are the ones verification confuses); the most crowded cohorts are oversampled.
* **JTT** (Liu et al., ICML 2021): the training utterances the ERM model gets wrong (the
  nearest speaker centroid is another speaker's) are up-sampled by a factor.

Pure numpy; the embedding pre-pass and its cache live in :mod:`arw_sv.prepass`.
Shape legend (the package one, :mod:`arw_sv`): U utterances, P speakers, D embedding dimension, C cohorts.
"""

from __future__ import annotations

import numpy as np

from arw_sv.data.pairs import sample_pairs
from arw_sv.metrics.cohorts import kmeans_cohorts, speaker_means


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def crowding(speaker_embeddings: np.ndarray, neighbours: int = 5) -> np.ndarray:
    """Each speaker's mean cosine similarity to its ``neighbours`` nearest other speakers.

    Shape:
        speaker_embeddings: (P, D); output: (P,).
    """
    x = _unit(speaker_embeddings)
    n = x.shape[0]
    if not 1 <= neighbours < n:
        raise ValueError(f"crowding: need 1 <= neighbours < speakers ({n}), got {neighbours}")
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nearest = -np.sort(-sim, axis=1)[:, :neighbours]
    return nearest.mean(axis=1)


def cohort_crowding(
    cohorts: np.ndarray, speaker_crowding: np.ndarray, n_cohorts: int
) -> np.ndarray:
    """Mean crowding of each cohort's speakers (NaN for an empty cohort).

    Shape:
        cohorts: (P,); speaker_crowding: (P,); output: (C,).
    """
    out = np.full(n_cohorts, np.nan)
    for c in range(n_cohorts):
        members = cohorts == c
        if members.any():
            out[c] = float(speaker_crowding[members].mean())
    return out


def discover_cohorts(
    embeddings: np.ndarray,
    speaker_of_utt: np.ndarray,
    n_speakers: int,
    n_cohorts: int,
    top: int,
    neighbours: int = 5,
    seed: int = 0,
) -> dict[str, list]:
    """k-means cohorts of speakers, scored by crowding; the ``top`` most crowded selected.

    Returns:
        ``cohort`` (per speaker), ``speaker_crowding`` (per speaker), ``cohort_crowding``
        (per cohort), ``selected`` (cohort ids, most crowded first) and ``oversample``
        (per speaker: in a selected cohort), as JSON-ready lists.

    Shape:
        embeddings: (U, D); speaker_of_utt: (U,).
    """
    if not 1 <= top < n_cohorts:
        raise ValueError(f"cohort oversampling: need 1 <= top ({top}) < n_cohorts ({n_cohorts})")
    means = speaker_means(embeddings, speaker_of_utt, n_speakers)
    cohorts = kmeans_cohorts(means, n_cohorts, seed=seed)
    per_speaker = crowding(means, neighbours)
    per_cohort = cohort_crowding(cohorts, per_speaker, n_cohorts)
    order = np.argsort(-np.nan_to_num(per_cohort, nan=-np.inf), kind="stable")
    selected = [int(c) for c in order[:top]]
    return {
        "cohort": cohorts.tolist(),
        "speaker_crowding": per_speaker.tolist(),
        "cohort_crowding": per_cohort.tolist(),
        "selected": selected,
        "oversample": np.isin(cohorts, selected).tolist(),
    }


def jtt_errors(embeddings: np.ndarray, speaker_of_utt: np.ndarray, n_speakers: int) -> np.ndarray:
    """Utterances whose nearest speaker centroid is not their own speaker's.

    A speaker's centroid is the normalised mean of its normalised embeddings; the
    utterance's own centroid leaves the utterance out (otherwise it votes for itself). An
    utterance that is its speaker's only one is counted as right.

    Shape:
        embeddings: (U, D); speaker_of_utt: (U,); output: (U,) bool.
    """
    x = _unit(embeddings)
    spk = np.asarray(speaker_of_utt, dtype=np.int64)
    sums = np.zeros((n_speakers, x.shape[1]))
    np.add.at(sums, spk, x)
    counts = np.bincount(spk, minlength=n_speakers)
    scores = x @ _unit(sums).T  # (U, P)
    rows = np.arange(len(spk))
    own = _unit(sums[spk] - x)
    own_score = np.einsum("ud,ud->u", x, own)
    scores[rows, spk] = -np.inf
    wrong = scores.max(axis=1) > own_score
    return wrong & (counts[spk] > 1)


def jtt_repeats(errors: np.ndarray, upweight: int) -> np.ndarray:
    """Per-utterance draw counts: ``upweight`` for an error, 1 otherwise.

    Shape:
        errors: (U,) bool; output: (U,) int.
    """
    if upweight < 1:
        raise ValueError(f"data.jtt_upweight: at least 1, got {upweight}")
    return np.where(np.asarray(errors, dtype=bool), int(upweight), 1).astype(np.int64)


def _heldout_pairs(
    speaker_of_utt: np.ndarray, max_nontargets: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every same-speaker pair of utterances and ``max_nontargets`` distinct
    different-speaker pairs, drawn with ``seed`` by :func:`arw_sv.data.pairs.sample_pairs`
    (which keeps same-speaker pairs to half of all when they outnumber ``max_nontargets``).

    Shape:
        speaker_of_utt: (U,) -> (N,), (N,), (N,) labels 1/0.
    """
    counts = np.bincount(np.unique(speaker_of_utt, return_inverse=True)[1])
    n_targets = int((counts * (counts - 1) // 2).sum())
    enroll, test, labels = sample_pairs(
        speaker_of_utt.astype(str), n_targets + max_nontargets, seed=seed
    )
    return enroll, test, labels.astype(np.int64)


def heldout_speaker_errors(
    embeddings: np.ndarray, speaker_of_utt: np.ndarray, max_nontargets: int = 200_000,
    seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """Each held-out speaker's error, ``(FNMR_s + FMR_s) / 2``, at the EER threshold of the
    held-out trials (every same-speaker pair, ``max_nontargets`` others drawn with ``seed``;
    a trial counts for both of its speakers). 0 for a speaker in no trial of a kind.

    Shape:
        embeddings (U, D), speaker_of_utt (U,) with indices 0..n-1 -> (n,).
    """
    from arw_sv.metrics.rates import eer

    spk = np.asarray(speaker_of_utt)
    n = int(spk.max()) + 1
    x = _unit(np.asarray(embeddings, dtype=np.float64))
    a, b, labels = _heldout_pairs(spk, max_nontargets, seed)
    scores = np.einsum("nd,nd->n", x[a], x[b])
    threshold = eer(scores, labels)[1]
    errors = np.zeros(n)
    for wrong, kind in (((labels == 1) & (scores < threshold), labels == 1),
                        ((labels == 0) & (scores >= threshold), labels == 0)):  # fmt: skip
        bad = np.bincount(spk[a][wrong], minlength=n) + np.bincount(spk[b][wrong], minlength=n)
        total = np.bincount(spk[a][kind], minlength=n) + np.bincount(spk[b][kind], minlength=n)
        errors += np.divide(bad, total, out=np.zeros(n), where=total > 0) / 2
    return errors


def neighbour_errors(
    train_means: np.ndarray, heldout_means: np.ndarray, errors: np.ndarray, neighbours: int
) -> np.ndarray:
    """Each training speaker's mean held-out error over its ``neighbours`` most similar
    held-out speakers (cosine of speaker means; ties by held-out index).

    Shape:
        train_means (n, D), heldout_means (m, D), errors (m,) -> (n,).
    """
    k = min(neighbours, heldout_means.shape[0])
    similarity = _unit(train_means) @ _unit(heldout_means).T
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return errors[nearest].mean(axis=1)


def heldout_cohorts(
    train_embeddings: np.ndarray,
    train_speaker_of_utt: np.ndarray,
    n_train_speakers: int,
    heldout_embeddings: np.ndarray,
    heldout_speaker_of_utt: np.ndarray,
    n_cohorts: int,
    top: int,
    max_nontargets: int = 200_000,
    seed: int = 0,
    min_flagged: int = 1,
) -> dict[str, list | float]:
    """Cohort discovery on held-out speakers (Dheram et al., Interspeech 2022), label-free.

    k-means cohorts of the *held-out* speakers' mean embeddings (speakers neither trained
    nor tested on); each cohort's EER on held-out trials whose enrolment or test speaker
    is in it (every same-speaker pair and at most ``max_nontargets`` different-speaker
    pairs, drawn with ``seed``); the ``top`` cohorts of highest EER are the bottom ones,
    and the training speakers whose mean embedding is nearest to a bottom cohort's
    centroid are flagged for oversampling; where fewer than the bottom cohorts' share of
    held-out speakers (and fewer than ``min_flagged``: the batch slots they must fill)
    would be (k-means on held-out speakers can leave a bottom cohort no nearest training
    speaker), the most similar others fill up to that. Unlike :func:`discover_cohorts`, the ranking
    comes from errors on speech the model has not fitted.

    Returns:
        ``cohort`` (per held-out speaker), ``cohort_eer`` (per cohort; NaN where a cohort
        has no target trial), ``selected`` (bottom cohorts, worst first), ``train_cohort``
        and ``oversample`` (per training speaker), ``bottom_eer`` and ``rest_eer`` (EER of
        the trials touching a bottom cohort and of the others), ``bottom_share`` (the bottom
        cohorts' share of held-out speakers), JSON-ready.

    Shape:
        train_embeddings: (U, D); heldout_embeddings: (U', D); *_speaker_of_utt: (U,), (U',).
    """
    from arw_sv.metrics.rates import eer

    if not 1 <= top < n_cohorts:
        raise ValueError(f"held-out cohorts: need 1 <= top ({top}) < n_cohorts ({n_cohorts})")
    held_spk = np.asarray(heldout_speaker_of_utt)
    n_held = int(held_spk.max()) + 1
    means = speaker_means(heldout_embeddings, held_spk, n_held)
    cohorts = kmeans_cohorts(means, n_cohorts, seed=seed)
    centroids = _unit(np.stack([means[cohorts == c].sum(axis=0) for c in range(n_cohorts)]))
    # Held-out trials: every same-speaker pair, a seeded sample of the others.
    x = _unit(heldout_embeddings)
    a, b, labels = _heldout_pairs(held_spk, max_nontargets, seed)
    scores = np.einsum("nd,nd->n", x[a], x[b])
    ca, cb = cohorts[held_spk[a]], cohorts[held_spk[b]]
    per_cohort = np.full(n_cohorts, np.nan)
    for c in range(n_cohorts):
        touch = (ca == c) | (cb == c)
        if labels[touch].any() and (labels[touch] == 0).any():
            per_cohort[c] = eer(scores[touch], labels[touch])[0]
    order = np.argsort(-np.nan_to_num(per_cohort, nan=-np.inf), kind="stable")
    selected = [int(c) for c in order[:top]]
    bottom = np.isin(ca, selected) | np.isin(cb, selected)

    def eer_of(mask: np.ndarray) -> float | None:
        ok = labels[mask].any() and (labels[mask] == 0).any()
        return float(eer(scores[mask], labels[mask])[0]) if ok else None

    train_means = speaker_means(train_embeddings, train_speaker_of_utt, n_train_speakers)
    similarity = train_means @ centroids.T
    train_cohort = np.argmax(similarity, axis=1)
    oversample = np.isin(train_cohort, selected)
    bottom_share = float(np.isin(cohorts, selected).mean())
    want = min(n_train_speakers, max(1, min_flagged, round(bottom_share * n_train_speakers)))
    filled = max(0, want - int(oversample.sum()))
    if filled:  # the most similar to a bottom centroid among those not flagged yet
        closeness = np.where(oversample, -np.inf, similarity[:, selected].max(axis=1))
        oversample[np.argsort(-closeness, kind="stable")[:filled]] = True
    return {
        "cohort": cohorts.tolist(),
        "cohort_eer": per_cohort.tolist(),
        "selected": selected,
        "train_cohort": train_cohort.tolist(),
        "oversample": oversample.tolist(),
        "filled": filled,
        "bottom_eer": eer_of(bottom),
        "rest_eer": eer_of(~bottom),
        "bottom_share": bottom_share,
    }

"""Fitting a calibrator from calibration speakers' embeddings, as ``arw-sv calibrate``, the
demo and the recipe do: the cohort split for AS-norm, the pairs, the fit.

:data:`RECOMMENDED` is the back-end the held-out benchmark chose among the label-free
methods (docs/calibration-log.md, H1-H2): AS-norm against half of the calibration speakers
(top 300 of at most 4,000 utterances), then FSN with 16 k-means clusters at FMR 1%.

Small calibration sets (issue 28): when the caller leaves ``clusters`` unset (None, the
default), k is chosen from the speakers that fit the map, :func:`auto_clusters` (16 from
112 fitting speakers on, so the validated set-ups keep 16: the held-out corpora 150, the
demo 120), and below :data:`MIN_REGION_SPEAKERS` calibration speakers the fit falls back
to one global linear map of the cosine scores (no AS-norm, no regions: it changes no rate), because with 50-100
speakers regions and a small cohort made minDCF and group gaps worse (C5, and the issue's
64-speaker LibriSpeech runs); the calibrator's ``settings["fallback"]`` says so in one line.
``prior_speakers`` shrinks each region's correction by ``n_c / (n_c + prior)``, n_c its
speakers; :data:`PRIOR_SPEAKERS` holds the per-method default.

Shape legend (the package one, :mod:`arw_sv`): U utterances, N trials (here pairs), D embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from arw_sv.calibration.methods import CalibrationError, Calibrator, fit_calibrator
from arw_sv.calibration.pairs import cosine_scores, sample_pairs, split_cohort

MIN_REGION_SPEAKERS = 200  # calibration speakers; below: global calibration of cosine scores
SPEAKERS_PER_CLUSTER = 7  # fitting speakers per k-means region when k is automatic
MAX_AUTO_CLUSTERS = 16
PRIOR_SPEAKERS = {"quantile": 4.0}  # the shrinkage prior by method (others: none)

RECOMMENDED: dict[str, Any] = {
    "method": "fsn",
    "clusters": None,  # automatic: auto_clusters, or the global fall-back
    "target_fmr": 0.01,
    "score_norm": "asnorm",
    "cohort_share": 0.5,
    "cohort_size": 4000,
    "top_n": 300,
}


def auto_clusters(fitting_speakers: int) -> int:
    """The k-means k for ``fitting_speakers`` speakers: one region per :data:`SPEAKERS_PER_CLUSTER`, at
    most :data:`MAX_AUTO_CLUSTERS`, at least 1.
    """
    return int(max(1, min(MAX_AUTO_CLUSTERS, fitting_speakers // SPEAKERS_PER_CLUSTER)))


def fit_on_speakers(
    speakers: Sequence[str],
    embeddings: np.ndarray,
    *,
    method: str = RECOMMENDED["method"],
    clusters: int | None = RECOMMENDED["clusters"],
    target_fmr: float = RECOMMENDED["target_fmr"],
    top: int = 4,
    temperature: float = 0.05,
    score_norm: str = RECOMMENDED["score_norm"],
    cohort_share: float = RECOMMENDED["cohort_share"],
    cohort_size: int = RECOMMENDED["cohort_size"],
    top_n: int = RECOMMENDED["top_n"],
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    max_pairs: int = 1_000_000,
    seed: int = 0,
    fingerprint: str | None = None,
    prior_speakers: float | None = None,
    groups: Sequence[str] | None = None,
    quantile_pairs: str = "touching",
) -> tuple[Calibrator, int, int]:
    """Fit a calibrator on calibration utterances labelled by speaker only.

    Args:
        speakers: each utterance's speaker.
        embeddings: their embeddings.
        method: one of :data:`~arw_sv.calibration.METHODS` (the oracles need ``groups``).
        clusters: k-means clusters (``fsn``, ``faircal``, ``softcal``, ``quantile``); None:
            :func:`auto_clusters` of the fitting speakers, or the global fall-back below
            :data:`MIN_REGION_SPEAKERS` calibration speakers.
        target_fmr: FSN's operating point.
        top: ``softcal``'s nearest centroids per side.
        temperature: ``softcal``'s softmax temperature.
        score_norm: ``none`` or ``asnorm`` (AS-norm first).
        cohort_share: with AS-norm, the share of the speakers that form its cohort.
        cohort_size: with AS-norm, the cohort's utterances at most (drawn with ``seed``).
        top_n: with AS-norm, the adaptive cohort size.
        pairs: ``(enroll, test, labels)`` rows of ``embeddings`` to fit on (a given trial
            list); by default every same-speaker pair and a sample of different-speaker
            ones. With AS-norm, pairs naming a cohort utterance are left out.
        max_pairs: sampled pairs at most.
        seed: pair sampling, cohort and k-means seed.
        fingerprint: the embedding model's, recorded for the model check.
        prior_speakers: the regions' shrinkage prior (``fsn``, ``quantile``); None: the
            method's :data:`PRIOR_SPEAKERS` default.
        groups: each utterance's group, for the label oracles (``oracle``,
            ``oracle_quantile``: benchmarks' ceilings, AS-norm included when asked).
        quantile_pairs: which non-target pairs fit a region's quantile map (see
            :func:`~arw_sv.calibration.fit_calibrator`).

    Returns:
        ``(calibrator, pairs fitted on, same-speaker pairs among them)``.

    Raises:
        CalibrationError: too few speakers for the cohort split, no pair left, or what
            :func:`fit_calibrator` refuses.

    Shape:
        speakers: (U,); embeddings: (U, D); pairs: (N,) each.
    """
    speakers = [str(s) for s in speakers]
    embeddings = np.asarray(embeddings)
    if score_norm not in ("none", "asnorm"):
        raise CalibrationError(f"unknown score normalisation {score_norm!r}; none or asnorm")
    if cohort_size < 2 or top_n < 2:
        raise CalibrationError("the AS-norm cohort size and top_n must be at least 2")
    fallback = None
    n_speakers = len(set(speakers))
    if clusters is None and method != "global" and n_speakers < MIN_REGION_SPEAKERS:
        fallback = (
            f"{n_speakers} calibration speakers (< {MIN_REGION_SPEAKERS}): global calibration of "
            f"cosine scores instead of {'AS-norm + ' if score_norm == 'asnorm' else ''}{method}; "
            "it changes no rate"
        )
        method, score_norm = "global", "none"
    if prior_speakers is None:
        prior_speakers = PRIOR_SPEAKERS.get(method, 0.0)
    rows = np.arange(len(speakers))
    cohort = None
    if score_norm == "asnorm":
        try:
            in_cohort = split_cohort(speakers, cohort_share, seed)
        except ValueError as exc:
            raise CalibrationError(str(exc)) from None
        chosen = np.flatnonzero(in_cohort)
        if chosen.size > cohort_size:
            rng = np.random.default_rng(seed)
            chosen = np.sort(rng.choice(chosen, cohort_size, replace=False))
        cohort = embeddings[chosen]
        rows = np.flatnonzero(~in_cohort)
    matrix = embeddings[rows]
    if pairs is None:
        enroll, test, labels = sample_pairs([speakers[i] for i in rows], max_pairs, seed)
    else:
        new_row = np.full(len(speakers), -1)
        new_row[rows] = np.arange(rows.size)
        enroll, test = new_row[np.asarray(pairs[0])], new_row[np.asarray(pairs[1])]
        keep = (enroll >= 0) & (test >= 0)
        if not keep.any():
            raise CalibrationError("every calibration pair names an AS-norm cohort speaker")
        enroll, test, labels = enroll[keep], test[keep], np.asarray(pairs[2])[keep]
    scores = cosine_scores(matrix, enroll, test)
    fitting = [speakers[i] for i in rows]
    if clusters is None:
        clusters = auto_clusters(len(set(fitting)))
    calibrator = fit_calibrator(
        method, scores, labels, enroll, test, matrix, clusters=clusters,
        target_fmr=target_fmr, top=top, temperature=temperature, seed=seed,
        speakers=tuple(sorted(set(speakers))), fingerprint=fingerprint, cohort=cohort,
        top_n=top_n, prior_speakers=prior_speakers, utterance_speakers=np.asarray(fitting),
        groups=None if groups is None else np.asarray(groups)[rows],
        quantile_pairs=quantile_pairs,
    )  # fmt: skip
    if fallback:
        calibrator.settings["fallback"] = fallback
    return calibrator, int(len(scores)), int(np.asarray(labels).sum())

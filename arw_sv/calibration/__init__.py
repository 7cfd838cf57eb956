"""Score calibration: cosine scores to log-likelihood ratios, fitted after training on
calibration speakers (disjoint from training and test speakers; no group labels).

A back-end layer of its own, as in BOSARIS: it reads scores and embeddings and writes
calibrated scores; evaluation and the CLI use it, training never does. ::

    from arw_sv.calibration import fit_calibrator, sample_pairs, cosine_scores

    enroll, test, labels = sample_pairs(speaker_of_each_utterance, max_pairs=1_000_000)
    scores = cosine_scores(embeddings, enroll, test)
    cal = fit_calibrator("faircal", scores, labels, enroll, test, embeddings, clusters=16)
    llr = cal.transform(trial_scores, enroll_embeddings, test_embeddings)
    save_calibrator(cal, "cal.json"); load_calibrator("cal.json")   # JSON, exact

    # The recommended back-end in one call (AS-norm against half the speakers, then FSN
    # with 16 clusters on the other half's pairs; RECOMMENDED holds the settings):
    cal, n_pairs, n_targets = fit_on_speakers(speaker_of_each_utterance, embeddings)

Methods and their equations: :mod:`arw_sv.calibration.methods`; the maps:
:mod:`arw_sv.calibration.logistic`; the metrics that judge them (Cllr, minCllr, per-group
FMR at one threshold): :mod:`arw_sv.metrics`.
"""

from arw_sv.calibration.backend import RECOMMENDED, fit_on_speakers
from arw_sv.calibration.methods import METHODS, CalibrationError, Calibrator, fit_calibrator
from arw_sv.calibration.pairs import cosine_scores, sample_pairs, split_cohort
from arw_sv.calibration.store import (
    calibrate_trials,
    check_compatible,
    load_calibrator,
    save_calibrator,
)

__all__ = [
    "METHODS",
    "RECOMMENDED",
    "CalibrationError",
    "Calibrator",
    "calibrate_trials",
    "check_compatible",
    "cosine_scores",
    "fit_calibrator",
    "fit_on_speakers",
    "load_calibrator",
    "sample_pairs",
    "save_calibrator",
    "split_cohort",
]

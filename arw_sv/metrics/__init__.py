"""Verification and fairness metrics (pure numpy; torch only for AS-norm's top-k).

- ``rates``: EER, minDCF, actual DCF, DET curve from one sort of the scores.
- ``groups``: trial-to-group rules, FaDR, GARBE, EER spread between groups.
- ``bootstrap``: speaker-level bootstrap that reuses the sort for every resample.
- ``report``: ``fairness_report``, the dict behind ``report.json``.
- ``cohorts``: k-means cohort discovery; ``asnorm``: AS-norm score normalisation.

Conventions (EER definition, decision rule, normalisation) are in ``rates`` and
``docs/evaluation.md``.
"""

from arw_sv.metrics.asnorm import as_norm, cohort_stats
from arw_sv.metrics.bootstrap import SpeakerBootstrap, speaker_multiplicities, trial_weights
from arw_sv.metrics.cohorts import kmeans_cohorts, speaker_means
from arw_sv.metrics.groups import (
    Grouping,
    assign_trials,
    eer_disparity,
    fadr,
    garbe,
    gini,
)
from arw_sv.metrics.rates import (
    OperatingPoints,
    actual_dcf,
    det_curve,
    eer,
    min_dcf,
    operating_points,
    rates_at_threshold,
)
from arw_sv.metrics.report import fairness_report

__all__ = [
    "Grouping",
    "OperatingPoints",
    "SpeakerBootstrap",
    "actual_dcf",
    "as_norm",
    "assign_trials",
    "cohort_stats",
    "det_curve",
    "eer",
    "eer_disparity",
    "fadr",
    "fairness_report",
    "garbe",
    "gini",
    "kmeans_cohorts",
    "min_dcf",
    "operating_points",
    "rates_at_threshold",
    "speaker_means",
    "speaker_multiplicities",
    "trial_weights",
]

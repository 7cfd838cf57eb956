"""Data in and out of training and evaluation.

Manifests and the corpora they are read from (:mod:`~arw_sv.data.manifest`,
:mod:`~arw_sv.data.corpora`), training crops and P x K batch sampling
(:mod:`~arw_sv.data.dataset`, :mod:`~arw_sv.data.sampler`,
:mod:`~arw_sv.data.cohort_sampling`), speaker metadata (:mod:`~arw_sv.data.meta`), trial
lists, score files and cosine scoring (:mod:`~arw_sv.data.trials`,
:mod:`~arw_sv.data.trial_gen`).
"""

"""The fairness benchmarks: ``python -m bench.fairness`` (:mod:`bench.fairness.cli`) runs the
from-scratch protocol (:mod:`~bench.fairness.scratch`, and the original 600-step one) or the
fine-tuning protocol (:mod:`~bench.fairness.finetune`); one run is :mod:`~bench.fairness.runs`,
the reports :mod:`~bench.fairness.summary`, :mod:`~bench.fairness.shares` and
:mod:`~bench.fairness.criterion`. Results in docs/benchmark.md and docs/fairness-log.md."""

"""Benchmarks: ``arw-sv bench fairness`` (ERM vs ARW on a planted disparity) and the
per-step training overhead of ARW (``bench/overhead.py``)."""

from arw_sv.bench.fairness import METHODS, add_subparser, run_benchmark

__all__ = ["METHODS", "add_subparser", "run_benchmark"]

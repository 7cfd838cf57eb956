"""The benchmarks: clients of ``arw_sv`` like any user, outside the library.

Run from the repository root, one module per benchmark (``--help`` on each):

    python -m bench.fairness --out runs/bench_fairness     # ERM vs ARW on a planted disparity
    python -m bench.overhead                               # per-step cost of ARW-PW over ERM
    python -m bench.train_speed / data_speed / extract_speed / metrics_speed / eval_speed
    python -m bench.gpu                                    # the prepared GPU script

``bench/conf/*.yaml`` are the benchmark configs (:func:`bench.common.config_path`).
"""

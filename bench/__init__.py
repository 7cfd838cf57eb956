"""The benchmarks: clients of ``arw_sv`` like any user, outside the library.

Three families, one module per benchmark (run from the repository root, ``--help`` on each):

- ``bench/speed/``: speed and memory, each against a named peer measured in the same run:

      python -m bench.speed.train / data / extract / metrics / eval / calibration
      python -m bench.speed.overhead          # per-step cost of ARW-PW over ERM
      python -m bench.speed.gpu               # the prepared GPU script

- ``bench/fairness/``: the fairness protocols (from scratch, fine-tuning), their runs,
  criteria, reports and analyses:

      python -m bench.fairness --protocol scratch --mechanisms representation ...
      python -m bench.fairness --protocol finetune ...
      python -m bench.fairness.criterion / cohort_table / reanalyse / subsample

- ``bench/calibration/``: decision-threshold fairness of the score back-ends:

      python -m bench.calibration ...         # = bench.calibration.experiment
      python -m bench.calibration.summary / librispeech; bench/calibration/heldout.sh

``bench/conf/*.yaml`` are the benchmark configs (:func:`bench.common.config_path`);
``bench/common.py`` the helpers the families share.
"""

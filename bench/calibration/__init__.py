"""The calibration experiments: ``python -m bench.calibration`` (:mod:`~bench.calibration.
experiment`) compares the score back-ends on held-out speakers; results in
docs/calibration-log.md and docs/evaluation.md."""

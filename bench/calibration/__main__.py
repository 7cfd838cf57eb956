"""``python -m bench.calibration``: see :mod:`bench.calibration.experiment`."""

import sys

from bench.calibration.experiment import main

sys.exit(main() or 0)

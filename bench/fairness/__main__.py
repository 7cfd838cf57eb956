"""``python -m bench.fairness``: see :mod:`bench.fairness.cli`."""

import sys

from bench.fairness.cli import main

sys.exit(main())

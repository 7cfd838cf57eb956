"""The fairness benchmark: ERM vs ARW-APS/PL/PW and group-balanced ERM over seeds.

Same as ``arw-sv bench fairness``; see ``arw_sv/bench/fairness.py`` and docs/benchmark.md.

    python bench/fairness.py --out runs/bench_fairness --seeds 0 1 2 --jobs 2
"""

import sys

from arw_sv.bench.fairness import main

if __name__ == "__main__":
    sys.exit(main())

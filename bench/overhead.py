"""Per-step training overhead of ARW-PW over ERM; see ``arw_sv/bench/overhead.py``.

python bench/overhead.py --threads 1                 # the fairness benchmark's model
python bench/overhead.py --config demo_arw_pw        # the demo's c256 model
"""

import sys

from arw_sv.bench.overhead import main

if __name__ == "__main__":
    sys.exit(main())

"""Per-step wall time of one training of the fine-tuning protocol's model, eager or compiled.

Times the interval between consecutive learner steps (so data loading and everything else
in the loop is included), after a warm-up of 10 steps, and the first step's wait (a cold or
warm ``torch.compile``). Used for docs/benchmark.md, "Where the time goes"::

    .venv/bin/python -m bench.speed.step_time --manifest runs/ft/acoustics/corpus0/manifests/train.csv
    .venv/bin/python -m bench.speed.step_time --manifest ... --compile   # twice: cold, then warm cache

Pause other benchmark processes first (``kill -STOP``): the numbers are per-core times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.speed.step_time``."""
    p = argparse.ArgumentParser(prog="python -m bench.speed.step_time", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--manifest", required=True, help="a training manifest (CSV)")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--compile", action="store_true", help="train.compile=true")
    p.add_argument("overrides", nargs="*", help="more training overrides")
    args = p.parse_args(argv)

    import torch

    import arw_sv.train.loop as loop
    from arw_sv.config import load_config
    from bench.common import config_path
    from bench.fairness.finetune import FULL

    torch.set_num_threads(1)
    stamps: list[float] = []
    step = loop.learner_step

    def timed(*a, **k):
        stamps.append(time.perf_counter())
        return step(*a, **k)

    loop.learner_step = timed
    with tempfile.TemporaryDirectory() as out:
        cfg = load_config(
            config_path("bench_erm"),
            [f"data.train_manifest={args.manifest}", f"train.out_dir={out}", "train.threads=1",
             *FULL.overrides, f"train.steps={args.steps}", "train.checkpoint_every=100000",
             f"train.compile={'true' if args.compile else 'false'}", *args.overrides],
        )  # fmt: skip
        loop.fit(cfg, progress=False)
    gaps = np.diff(stamps).tolist()
    if len(gaps) < 12:
        print(f"--steps {args.steps}: at least 13 steps are needed", file=sys.stderr)
        return 2
    print(json.dumps({"compile": args.compile, "first_step_s": round(gaps[0], 2),
                      "median_step_s": round(statistics.median(gaps[10:]), 4)}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

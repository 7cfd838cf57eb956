"""Recompute the adversary analysis and the training monitors of finished benchmark runs.

For runs written by an older version of :func:`bench.fairness.runs.run_one` (before the analysis
used the trainer's own weight function, or before the monitors were recorded): every
``result.json`` under ``--out`` gets its ``analysis`` recomputed from its checkpoint and its
``monitors`` read from its ``history.jsonl``; nothing else in it changes. Then re-run the
benchmark's command (every run is complete, so it only rebuilds ``results.*``).

    python -m bench.fairness.reanalyse --out runs/ft
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def reanalyse(out: Path, *, threads: int = 1, base: Path | None = None) -> int:
    """Update every ``result.json`` under ``out``; returns how many were updated.

    ``base``: the folder the benchmark ran in (its recorded paths may be relative to it).
    """
    import torch

    from arw_sv.atomic import atomic_write_text
    from arw_sv.checkpoint import load_checkpoint
    from arw_sv.config import config_from_dict
    from arw_sv.data.manifest import read_manifest
    from bench.fairness.analysis import analyse_checkpoint
    from bench.fairness.runs import training_monitors

    torch.set_num_threads(threads)
    base = Path(base or ".")

    def at(p: str) -> Path:
        return Path(p) if Path(p).is_absolute() else base / p

    done = 0
    for path in sorted(Path(out).rglob("result.json")):
        result = json.loads(path.read_text())
        checkpoint = at(result["checkpoint"])
        cfg = config_from_dict(load_checkpoint(checkpoint)["config"])
        manifest = read_manifest(at(cfg.data.train_manifest))
        n = (result.get("analysis") or {}).get("n_utterances", 500)
        result["analysis"] = analyse_checkpoint(
            checkpoint, manifest, n_utterances=n, seed=result["seed"]
        )
        result["monitors"] = training_monitors(at(cfg.train.out_dir) / "history.jsonl", cfg.data)
        atomic_write_text(path, json.dumps(result, indent=1))
        done += 1
        print(f"{path}: re-analysed", flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.fairness.reanalyse``."""
    p = argparse.ArgumentParser(prog="python -m bench.fairness.reanalyse", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", required=True, help="a benchmark output folder")
    p.add_argument("--base", default=".", help="the folder the benchmark ran in")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    n = reanalyse(Path(args.out), threads=args.threads, base=Path(args.base))
    print(f"{n} runs re-analysed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

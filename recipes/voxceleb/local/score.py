#!/usr/bin/env python3
"""Cosine scores of trial lists, and their AS-norm normalised versions (stage 5 of run.sh).

::

    python local/score.py --embeddings exp/x/embeddings/vox1.npz --out-dir exp/x/scores \\
        --trials O=veri_test2.txt --trials E=list_test_all2.txt \\
        [--cohort exp/x/embeddings/cohort.npz --top-n 300]

writes ``vox1_<NAME>.txt`` (cosine) and, with a cohort, ``vox1_<NAME>_asnorm.txt`` for each
list. AS-norm (adaptive symmetric normalisation, ``arw_sv.evaluate.as_norm_trials``, the one
``arw-sv eval --asnorm-cohort`` uses): each side's score statistics come from its ``top-n``
closest cohort embeddings; WeSpeaker uses the mean embeddings of the training speakers as
the cohort and ``top-n`` 300, as run.sh does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from arw_sv.data.trials import read_embeddings, read_trials, score_trial_list, write_scores
from arw_sv.evaluate import as_norm_trials


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--embeddings", required=True)
    p.add_argument("--trials", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--cohort", help="cohort embeddings (.npz) for AS-norm")
    p.add_argument("--top-n", type=int, default=300)
    args = p.parse_args(argv)
    embeddings = read_embeddings(args.embeddings)
    cohort = read_embeddings(args.cohort)[1] if args.cohort else None
    for item in args.trials:
        name, _, path = item.partition("=")
        try:
            scored = score_trial_list(read_trials(path), embeddings)
        except KeyError as exc:
            print(f"score: error: {path}: {exc.args[0]}", file=sys.stderr)
            return 2
        out = args.out_dir / f"vox1_{name}.txt"
        write_scores(out, scored.trials, scored.scores)
        print(f"score: {len(scored.scores)} trials -> {out}")
        if cohort is not None:
            normed = as_norm_trials(scored.trials, scored.scores, embeddings, cohort, args.top_n)
            out = args.out_dir / f"vox1_{name}_asnorm.txt"
            write_scores(out, scored.trials, normed)
            print(f"score: {len(normed)} trials -> {out} (AS-norm, top {args.top_n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

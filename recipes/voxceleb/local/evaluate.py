#!/usr/bin/env python3
"""EER, minDCF and the fairness report of every score file of a run (stage 6 of run.sh).

Runs ``arw-sv eval`` (``arw_sv.cli.eval``) once per score file, in one process::

    python local/evaluate.py exp/x --meta vox1_meta.csv --trials O=veri_test2.txt ... \\
        [--bootstrap 1000] [--no-plots]

reading ``exp/x/scores/vox1_<NAME>[_asnorm].txt`` and writing ``exp/x/eval/vox1_<NAME>[...]/``
(report.json, report.md, plots). With ``--calibration exp/x/calibration.json`` the cosine
report is made from the embeddings instead and shows raw and calibrated scores side by side
(per-group FMR and FNMR at one threshold, Cllr; ``exp/x/eval/vox1_<NAME>/scores_calibrated.txt``). Trials are assigned to a group when both speakers are in it;
nationalities with fewer than 5 speakers in a list are pooled into "others" (see
docs/evaluation.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from arw_sv.cli.eval import main as evaluate


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("exp", type=Path)
    p.add_argument("--meta", required=True, help="vox1_meta.csv")
    p.add_argument("--trials", action="append", required=True, metavar="NAME=PATH")
    p.add_argument("--bootstrap", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--calibration", help="a calibrator (arw-sv calibrate) for the cosine scores")
    args = p.parse_args(argv)
    for item in args.trials:
        name, _, path = item.partition("=")
        for kind in ("", "_asnorm"):
            scores = args.exp / "scores" / f"vox1_{name}{kind}.txt"
            if not scores.is_file():
                continue
            source = ["--scores", str(scores)]
            if args.calibration and kind == "":
                embeddings = args.exp / "embeddings" / "vox1.npz"
                source = ["--embeddings", str(embeddings), "--calibration", args.calibration]
            cmd = [
                *source,
                "--trials",
                path,
                "--meta",
                args.meta,
                "--bootstrap",
                str(args.bootstrap),
                "--out",
                str(args.exp / "eval" / f"vox1_{name}{kind}"),
            ]
            if args.no_plots:
                cmd.append("--no-plots")
            status = evaluate(cmd)
            if status:
                return status
    return 0


if __name__ == "__main__":
    sys.exit(main())

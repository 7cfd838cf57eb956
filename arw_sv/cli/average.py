"""``arw-sv average RUN [--num N] [--out PATH]``: average the last N checkpoints of a run.

The averaging itself is :func:`arw_sv.train.average.average_run` (its docstring says what is
averaged and what comes from the newest checkpoint); this module is the command line.
"""

from __future__ import annotations

import argparse


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``average`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    parser = subparsers.add_parser(
        "average",
        help="average the last N checkpoints of a run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", help="training run folder (train.out_dir)")
    parser.add_argument("--num", type=int, default=None, help="default: train.average_last")
    parser.add_argument("--out", default=None, help="default: <run>/avg_<num>.pt")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Average ``args.num`` checkpoints of ``args.run`` into ``args.out``; prints where.

    Returns:
        0.

    Raises:
        ValueError: too few checkpoints, or no ``--num`` and no ``train.average_last``.
        CheckpointError: a checkpoint cannot be read, or its parameters differ from the
            newest one's.
    """
    from arw_sv.train.average import average_run

    out = average_run(args.run, args.num, args.out)
    print(f"averaged -> {out}")
    return 0

"""``arw-sv trials``: a trial list from a manifest (targets, within- and cross-group non-targets).

::

    arw-sv trials test.csv --out trials.txt --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``trials`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser(
        "trials",
        help="generate a trial list from a manifest (targets, within- and cross-group non-targets)",
    )
    p.add_argument("manifest")
    p.add_argument("--out", required=True, help="trial list <1|0> <enroll> <test>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", help="only the speakers of this split (e.g. test)")
    p.add_argument("--targets", type=int, default=10, help="target trials per speaker")
    p.add_argument("--within", type=int, default=10, help="non-targets per speaker in its group")
    p.add_argument(
        "--across", type=int, default=10, help="non-targets per speaker with other groups"
    )
    p.add_argument(
        "--max-per-speaker",
        type=int,
        help="cap on the trials naming one speaker (default 2 x its own quota; 0: no cap)",
    )
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Generate and write the trial list described by parsed ``trials`` arguments."""
    from arw_sv.atomic import atomic_write_text
    from arw_sv.data.manifest import ManifestError, read_manifest
    from arw_sv.data.trial_gen import TrialPlan, format_summary, manifest_trials, quota_notes

    manifest = read_manifest(args.manifest)
    if args.split:
        manifest = manifest.subset(args.split)
        if not len(manifest):
            raise ManifestError(f"{args.manifest}: no utterances in split {args.split!r}")
    plan = TrialPlan(args.targets, args.within, args.across, args.max_per_speaker)
    if Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name")
    trials, summary = manifest_trials(manifest, plan, seed=args.seed)
    atomic_write_text(args.out, "".join(f"{lab} {a} {b}\n" for lab, a, b in trials))
    print(format_summary(summary))
    for note in quota_notes(manifest, plan):
        print(f"note: {note}")
    print(f"{len(trials)} trials -> {args.out}")
    return 0

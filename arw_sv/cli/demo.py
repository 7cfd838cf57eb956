"""``arw-sv demo``: synthetic corpus -> ERM -> ERM and the label-free fairness method
fine-tuned from it -> EER reports side by side, and per-group error rates at one threshold
before and after the recommended label-free calibration.

Every stage is skipped when its output is already complete (:func:`arw_sv.demo.run_demo`).
"""

from __future__ import annotations

import argparse

#: The default of ``--fairness`` (:data:`arw_sv.demo.RECOMMENDED`, kept here so that the
#: parser does not import the demo; tests/test_demo.py checks the two agree).
RECOMMENDED = "demo_arw_pw_paironly"


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser(
        "demo", help="synthetic corpus -> ERM -> fairness fine-tune -> EER reports side by side"
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--synth-preset", default="demo", help="synthetic corpus preset")
    p.add_argument("--config", default="demo", help="shipped training config name (ERM)")
    p.add_argument(
        "--fairness",
        default=RECOMMENDED,
        help=f"shipped config fine-tuned beside ERM continued (default {RECOMMENDED}; "
        "'none': evaluate the ERM model alone)",
    )
    p.add_argument(
        "--finetune-steps", type=int, default=200, help="steps of each fine-tune from ERM"
    )
    p.add_argument("--workers", type=int, default=2, help="corpus generation processes")
    p.add_argument("--bootstrap", type=int, default=200, help="speaker resamples for CIs")
    p.add_argument(
        "--calibration-speakers", type=int, default=40,
        help="calibration speakers per gender x nationality cell (0: no calibration)",
    )  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", help="dotted training overrides, e.g. train.steps=400")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo described by parsed ``demo`` arguments."""
    from arw_sv.demo import run_demo

    run_demo(
        args.out,
        synth_preset=args.synth_preset,
        config=args.config,
        fairness=None if args.fairness == "none" else args.fairness,
        finetune_steps=args.finetune_steps,
        overrides=tuple(args.overrides),
        workers=args.workers,
        bootstrap=args.bootstrap,
        calibration_speakers_per_cell=args.calibration_speakers,
        progress=not args.quiet,
    )
    return 0

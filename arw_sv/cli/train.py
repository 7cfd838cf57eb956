"""``arw-sv train``: train an extractor (ERM or ARW) from a YAML config.

::

    arw-sv train demo train.steps=400              # a shipped config by name (`arw-sv configs`)
    arw-sv train my.yaml --resume                  # continue from the last checkpoint
    # fine-tune a trained model with the recommended fairness setting (as `arw-sv demo` does):
    arw-sv train demo_arw_pw_paironly --finetune runs/erm/checkpoints/step_600.pt \
        data.train_manifest=train.csv train.out_dir=runs/fair
"""

from __future__ import annotations

import argparse


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser("train", help="train an extractor (ERM or ARW) from a YAML config")
    p.add_argument("config", help="YAML config, or a shipped config's name (`arw-sv configs`)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=0.001")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: accept a config that differs from the checkpoint's (logged)",
    )
    p.add_argument(
        "--finetune",
        metavar="CHECKPOINT",
        default=None,
        help="fine-tune this trained model (or speechbrain:FOLDER): train.init_checkpoint "
        "plus a fresh optimizer at --finetune-lr, a short warm-up, the AAM margin at its "
        "final value and the adversary from step 0 (arw_sv.finetune)",
    )
    p.add_argument("--finetune-steps", type=int, default=300, help="with --finetune (300)")
    p.add_argument("--finetune-lr", type=float, default=0.0005, help="with --finetune")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Train the run described by parsed ``train`` arguments."""
    from arw_sv.config import load_config
    from arw_sv.shipped import resolve_config
    from arw_sv.train.loop import fit

    overrides = list(args.overrides)
    if args.finetune:
        from arw_sv.finetune import finetune_overrides

        # before the user's own overrides, so that e.g. train.steps=... still wins
        tune = finetune_overrides(args.finetune, args.finetune_steps, args.finetune_lr)
        overrides = [*tune, *overrides]
    cfg = load_config(resolve_config(args.config), overrides)
    result = fit(
        cfg,
        resume=args.resume,
        progress=not args.quiet,
        allow_config_change=args.allow_config_change,
    )
    print(
        f"trained {result.steps} steps ({result.utterances_per_second:.1f} utt/s); "
        f"checkpoint: {result.checkpoint}"
    )
    return 0

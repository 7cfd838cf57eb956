"""The ``arw-sv synth`` sub-command.

::

    arw-sv synth --out data/synth                       # the demo corpus
    arw-sv synth --out data/bench --preset bench --workers 2
    arw-sv synth --out data/synth num_dev_speakers=120 dev_nationality_share=0.6,0.3,0.1
"""

from __future__ import annotations

import argparse

from arw_sv.synth.config import PRESETS


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``synth`` on the ``arw-sv`` command's sub-parsers; it sets ``func=run``."""
    parser = subparsers.add_parser(
        "synth",
        help="generate the built-in synthetic VoxCeleb1-style speaker corpus",
        description="Generate a deterministic synthetic speaker corpus laid out like VoxCeleb1 "
        "(wav/<spk>/<session>/<utt>.wav, vox1_meta.csv, trials.txt).",
    )
    parser.add_argument(
        "--out", required=True, help="corpus folder (new, empty, or same-config corpus)"
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default="demo", help="base config (default: demo)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="random seed (overrides the preset's)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes; the output does not depend on it"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="SynthConfig overrides in the training overrides' language (YAML values), e.g. "
        "num_dev_speakers=120 'nationality_spread=[1, 1, 0.6]'",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Generate the corpus described by parsed ``synth`` arguments; return an exit code."""
    from arw_sv.synth.config import apply_overrides, preset
    from arw_sv.synth.corpus import generate_corpus

    cfg = preset(args.preset)
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    cfg = apply_overrides(cfg, overrides)
    info = generate_corpus(args.out, cfg, progress=not args.quiet, workers=args.workers)
    state = "generated" if info.generated else "already complete, nothing to do"
    print(
        f"{info.root}: {state}: {info.num_dev_speakers} dev + {info.num_test_speakers} test"
        + (
            f" + {n_cal} calibration"
            if (n_cal := cfg.calibration_speakers_per_cell * 2 * len(cfg.nationalities))
            else ""
        )
        + " speakers, "
        f"{info.num_utterances} utterances ({info.total_duration_s / 3600:.2f} h), {info.num_trials} trials"
    )
    return 0

"""``arw-sv score``: cosine-score a trial list against embeddings (numpy only, no torch)."""

from __future__ import annotations

import argparse

NO_MODEL_CHECK = (
    "with --calibration: apply a calibrator that names no model, or to embeddings without "
    "a model sidecar (<npz>.model.json); the check that both come from one model is skipped"
)


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``score`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser("score", help="cosine-score a trial list against embeddings")
    p.add_argument("--embeddings", required=True, help=".npz from `arw-sv embed`")
    p.add_argument("--trials", required=True, help="<1|0> <enroll> <test> lines")
    p.add_argument("--out", required=True, help="writes <label> <enroll> <test> <score>")
    p.add_argument(
        "--format",
        choices=("arw", "wespeaker", "kaldi"),
        default="arw",
        help="score file format: arw (default), wespeaker (<enroll> <test> <score> "
        "<target|nontarget>) or kaldi (<enroll> <test> <score>)",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip (and count) trials naming utterances without an embedding",
    )
    p.add_argument(
        "--calibration",
        help="a calibrator from `arw-sv calibrate`: write calibrated LLRs instead of cosines",
    )
    p.add_argument("--no-model-check", action="store_true", help=NO_MODEL_CHECK)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Score and write the trials named by parsed ``score`` arguments."""
    from arw_sv.data.trials import (
        read_embeddings,
        read_trials,
        score_trial_list,
        trial_rows,
        write_scores,
    )

    embeddings = read_embeddings(args.embeddings)
    trials = read_trials(args.trials)
    enroll, test = trial_rows(trials, embeddings[0])  # once, for scoring and calibration
    scored = score_trial_list(trials, embeddings, args.allow_missing, rows=(enroll, test))
    scores = scored.scores
    if args.calibration:
        from arw_sv.calibration import calibrate_trials

        kept = (enroll >= 0) & (test >= 0)  # the trials score_trial_list kept
        scores = calibrate_trials(
            args.calibration, args.embeddings, scored.trials, scores, embeddings,
            model_check=not args.no_model_check, rows=(enroll[kept], test[kept]),
        )  # fmt: skip
    write_scores(args.out, scored.trials, scores, args.format)
    skipped = f" ({scored.n_skipped} skipped: missing embeddings)" if scored.n_skipped else ""
    print(f"{len(scored.trials)} trials scored{skipped} -> {args.out}")
    return 0

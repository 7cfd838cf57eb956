"""``arw-sv eval``: EER, minDCF and fairness report of a model's trial scores.

Inputs: a score file (arw-sv's ``<label> <enroll> <test> <score>``, WeSpeaker's ``<enroll>
<test> <score> <target|nontarget>`` or Kaldi's ``<enroll> <test> <score>`` with ``--key``),
or embeddings (``.npz``) plus a trial list; speaker metadata (vox1_meta.csv, vox2_meta.csv
or a manifest). Outputs in ``--out``: ``report.json`` (schema in ``docs/evaluation.md``),
``report.md`` and PNG plots. The maths lives in ``arw_sv.metrics``, the reading and wiring
in ``arw_sv.evaluate``; this module is the command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

# The score formats, without importing numpy for ``arw-sv eval --help`` (a test checks
# they are ``arw_sv.data.trials.SCORE_FORMATS``).
SCORE_FORMATS = ("arw", "wespeaker", "kaldi")
#: The most bootstrap resamples (10,000 already gives stable 95% intervals).
MAX_BOOTSTRAP = 100_000


def _add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("inputs")
    src.add_argument("--scores", type=Path, help="score file (arw, wespeaker or kaldi format)")
    src.add_argument(
        "--score-format", choices=SCORE_FORMATS, help="format of --scores (default: detected)"
    )
    src.add_argument("--embeddings", type=Path, help="utterance embeddings (.npz)")
    src.add_argument(
        "--trials",
        "--key",
        type=Path,
        help="trial list <1|0> <enroll> <test> or Kaldi key <enroll> <test> <target|nontarget>",
    )
    src.add_argument("--meta", type=Path, help="vox1_meta.csv, vox2_meta.csv or a manifest CSV")
    src.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip trials naming utterances without a score/embedding (and count them)",
    )
    grp = p.add_argument_group("groups")
    grp.add_argument(
        "--min-speakers",
        type=int,
        default=5,
        help="pool values with fewer speakers into 'others' (every attribute but gender; "
        "default 5)",
    )
    grp.add_argument(
        "--group-by",
        action="append",
        metavar="ATTR[,ATTR]",
        help="group by a speaker attribute of --meta (age_band, accent, ...), or a cross "
        "'gender,age_band' (repeatable; default: gender, nationality and their cross)",
    )
    grp.add_argument(
        "--bins",
        action="append",
        default=[],
        metavar="ATTR=E1,E2,...",
        help="band a numeric attribute: age=0,13,18,60,200 makes age_band (repeatable)",
    )
    grp.add_argument(
        "--group-rule",
        choices=("both", "enroll"),
        default="both",
        help="a trial is in a group when both speakers are (default) or the enrolment one is",
    )
    grp.add_argument(
        "--nationality-map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="relabel a nationality before pooling, e.g. Norway=France (repeatable)",
    )
    grp.add_argument(
        "--cohorts",
        type=int,
        default=0,
        metavar="K",
        help="k-means cohort discovery with K clusters (needs --embeddings)",
    )
    st = p.add_argument_group("statistics")
    st.add_argument(
        "--bootstrap", type=int, default=0, metavar="N", help="speaker resamples for CIs"
    )
    st.add_argument("--confidence", type=float, default=0.95)
    st.add_argument("--asnorm-cohort", type=Path, help="cohort embeddings (.npz) for AS-norm")
    st.add_argument("--asnorm-top-n", type=int, default=300)
    st.add_argument(
        "--calibration",
        type=Path,
        help="a calibrator from `arw-sv calibrate`: report raw and calibrated side by side "
        "(needs --embeddings)",
    )
    st.add_argument(
        "--no-model-check",
        action="store_true",
        help="with --calibration: apply it even if it or the embeddings name no model",
    )
    st.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("outputs")
    o.add_argument("--out", type=Path, required=True, help="output folder")
    o.add_argument("--no-plots", action="store_true")


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` on an ``argparse`` sub-parser set (sets ``func=run``)."""
    p = subparsers.add_parser(
        "eval",
        help="EER, minDCF and fairness report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by parsed arguments; returns the exit status."""
    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import (
        TrialsError,
        read_embeddings,
        read_scores,
        read_trials,
        score_trial_list,
        trial_rows,
        write_scores,
    )
    from arw_sv.evaluate import (
        align_scores,
        as_norm_trials,
        calibrated_section,
        evaluate_scores,
        write_report,
    )

    try:
        inputs: dict = {}
        embeddings = rows = None
        if args.embeddings is not None and args.scores is not None:
            raise ValueError("give either --scores or --embeddings, not both")
        if args.bootstrap < 0 or args.cohorts < 0 or args.min_speakers < 0:
            raise ValueError("--bootstrap, --cohorts and --min-speakers must be >= 0")
        if args.bootstrap > MAX_BOOTSTRAP:  # memory grows with it (1e9: 30 GiB)
            raise ValueError(
                f"--bootstrap: at most {MAX_BOOTSTRAP} resamples, got {args.bootstrap}"
            )
        if not 0.0 < args.confidence < 1.0:
            raise ValueError(f"--confidence must be in (0, 1), got {args.confidence}")
        bad_map = [item for item in args.nationality_map if item.count("=") != 1]
        if bad_map:
            raise ValueError(f"--nationality-map takes FROM=TO, got {bad_map[0]!r}")
        from arw_sv.data.attributes import parse_bins, parse_group_by

        group_by = None if args.group_by is None else parse_group_by(args.group_by)
        bins = parse_bins(args.bins)
        if (group_by or bins) and args.meta is None:
            raise ValueError("--group-by and --bins need speaker metadata (--meta)")
        if args.embeddings is not None:
            if args.trials is None:
                raise ValueError("--embeddings needs --trials")
            embeddings = read_embeddings(args.embeddings)
            trials = read_trials(args.trials)
            rows = trial_rows(trials, embeddings[0])  # once, for scoring and calibration
            trials, scores, skipped = score_trial_list(
                trials, embeddings, args.allow_missing, rows=rows
            )
            kept = (rows[0] >= 0) & (rows[1] >= 0)
            rows = (rows[0][kept], rows[1][kept])  # those of the trials kept
            if args.asnorm_cohort is not None:
                cohort = read_embeddings(args.asnorm_cohort)[1]
                if cohort.shape[1] != embeddings[1].shape[1]:
                    raise ValueError(
                        f"{args.asnorm_cohort}: {cohort.shape[1]}-dim embeddings, "
                        f"{args.embeddings} has {embeddings[1].shape[1]}-dim ones"
                    )
                scores = as_norm_trials(trials, scores, embeddings, cohort, args.asnorm_top_n)
                inputs["asnorm"] = {
                    "cohort": str(args.asnorm_cohort),
                    "cohort_size": len(cohort),
                    "top_n": args.asnorm_top_n,
                }
        elif args.scores is not None:
            if args.asnorm_cohort is not None:
                raise ValueError("--asnorm-cohort needs --embeddings (AS-norm uses the embeddings)")
            if args.trials is not None:
                trials, scores, skipped = align_scores(
                    args.scores, args.trials, args.allow_missing, args.score_format
                )
            else:
                (trials, scores), skipped = read_scores(args.scores, args.score_format), 0
                if (trials.labels < 0).any():
                    raise ValueError(
                        f"{args.scores}: Kaldi scores have no labels; give the key file with "
                        "--key (<enroll> <test> <target|nontarget>, or <1|0> <enroll> <test>)"
                    )
        else:
            raise ValueError("give --scores, or --embeddings with --trials")
        if trials.duplicates:
            source = args.trials if args.trials is not None else args.scores
            print(
                f"arw-sv eval: warning: {trials.duplicates} trials of {source} repeat an "
                "earlier line exactly; each is counted as often as it appears",
                file=sys.stderr,
            )
        mapping = dict(item.split("=", 1) for item in args.nationality_map)
        meta = read_speaker_meta(args.meta) if args.meta else None
        shared = dict(
            min_speakers=args.min_speakers,
            group_rule=args.group_rule,
            nationality_map=mapping,
            bootstrap=args.bootstrap,
            confidence=args.confidence,
            seed=args.seed,
            group_by=group_by,
            bins=bins,
            meta_source=str(args.meta),
        )
        sides = (trials.labels, trials.enroll, trials.test, meta)
        report = evaluate_scores(
            scores, *sides, embeddings=embeddings, cohorts=args.cohorts, **shared
        )
        report["inputs"].update(
            inputs,
            scores=None if args.scores is None else str(args.scores),
            embeddings=None if args.embeddings is None else str(args.embeddings),
            trials=None if args.trials is None else str(args.trials),
            meta=None if args.meta is None else str(args.meta),
            skipped_missing=skipped,
            duplicate_trials=trials.duplicates,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        if args.calibration is not None:
            if embeddings is None:
                raise ValueError(
                    "--calibration needs --embeddings (it reads each side's embedding)"
                )
            from arw_sv.calibration import calibrate_trials, load_calibrator

            calibrator = load_calibrator(args.calibration)
            llr = calibrate_trials(
                args.calibration, args.embeddings, trials, scores, embeddings, calibrator,
                model_check=not args.no_model_check, rows=rows,
            )  # fmt: skip
            report["calibrated"] = calibrated_section(
                llr, *sides, file=args.calibration, method=calibrator.label, **shared
            )
        if args.embeddings is not None:
            write_scores(args.out / "scores.txt", trials, scores)
            if args.calibration is not None:
                write_scores(args.out / "scores_calibrated.txt", trials, llr)
        written = write_report(report, args.out, plots=not args.no_plots)
    except (TrialsError, ValueError, KeyError, OSError) as err:  # CalibrationError too
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"arw-sv eval: error: {message}", file=sys.stderr)
        return 2
    o = report["overall"]
    print(
        f"EER {100 * o['eer']:.3f}%  minDCF(0.01) {o['min_dcf']['0.01']['value']:.4f}  "
        f"minDCF(0.05) {o['min_dcf']['0.05']['value']:.4f}  on {o['n_trials']} trials"
        + (f" ({skipped} skipped: missing)" if skipped else "")
    )
    if report.get("calibrated"):
        c = report["calibrated"]["report"]["overall"]
        print(
            f"calibrated ({report['calibrated']['method']}): EER {100 * c['eer']:.3f}%  "
            f"Cllr {c['cllr']:.3f} (raw {o['cllr']:.3f})  minCllr {c['min_cllr']:.3f}"
        )
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``eval/evaluate.py`` (same options as ``arw-sv eval``)."""
    parser = argparse.ArgumentParser(
        prog="arw-sv eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)

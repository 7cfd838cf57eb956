"""``arw-sv eval``: EER, minDCF and fairness report of a model's trial scores.

Inputs: a score file (arw-sv's ``<label> <enroll> <test> <score>``, WeSpeaker's ``<enroll>
<test> <score> <target|nontarget>`` or Kaldi's ``<enroll> <test> <score>`` with ``--key``),
or embeddings (``.npz``) plus a trial list; speaker metadata (vox1_meta.csv, vox2_meta.csv
or a manifest). Outputs in ``--out``: ``report.json`` (schema in ``docs/evaluation.md``),
``report.md`` and PNG plots. The maths lives in ``arw_sv.metrics``; this module only reads,
wires and writes.

Library use (e.g. from the demo)::

    report = evaluate_scores(scores, labels, enroll_ids, test_ids, read_speaker_meta(path))
    write_report(report, "runs/demo/eval")
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from arw_sv.atomic import atomic_write_bytes
from arw_sv.data.meta import SpeakerInfo, pool_nationalities, read_speaker_meta
from arw_sv.data.trials import (
    SCORE_FORMATS,
    Trials,
    TrialsError,
    read_embeddings,
    read_scores,
    read_trials,
    score_trial_list,
    speaker_of,
    write_scores,
)

if TYPE_CHECKING:
    from arw_sv.metrics.groups import Grouping

# The metrics (scipy) are imported by the functions that use them, so that building the
# ``eval`` parser (``arw-sv eval --help``) costs numpy and argparse only.


def speaker_indices(
    enroll_ids: Sequence[str], test_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Speaker index of every trial side, and the speaker ids in order of first appearance.

    Speaker = first path component (``speaker_of``). Hashing the short speaker prefix is
    several times faster than hashing each freshly parsed utterance id.

    Shape:
        outputs: (N,), (N,).
    """
    enroll_spk = [u.partition("/")[0] for u in enroll_ids]
    test_spk = [u.partition("/")[0] for u in test_ids]
    index: dict[str, int] = dict.fromkeys(enroll_spk)  # C-speed passes, first-seen order
    index.update(dict.fromkeys(test_spk))
    for i, speaker in enumerate(index):
        index[speaker] = i

    def column(speakers: list[str]) -> np.ndarray:
        return np.fromiter(map(index.__getitem__, speakers), dtype=np.int64, count=len(speakers))

    return column(enroll_spk), column(test_spk), list(index)


def speaker_groupings(
    speakers: Sequence[str],
    meta: Mapping[str, SpeakerInfo] | None,
    min_speakers: int = 5,
    nationality_map: Mapping[str, str] | None = None,
) -> list[Grouping]:
    """Gender, pooled nationality and gender x nationality groupings of ``speakers``."""
    from arw_sv.metrics.groups import Grouping

    if not meta:
        return []
    info = [meta.get(s) for s in speakers]
    gender = [i.gender if i else None for i in info]
    pooled, notes = pool_nationalities(meta, min_speakers, nationality_map, speakers)
    nationality = [pooled.get(s) for s in speakers]
    groupings = []
    if any(g is not None for g in gender):
        groupings.append(Grouping.from_values("gender", gender))
    if any(n is not None for n in nationality):
        groupings.append(Grouping.from_values("nationality", nationality, notes))
        if any(g is not None for g in gender):
            cells = [
                f"{g}/{n}" if g and n else None for g, n in zip(gender, nationality, strict=True)
            ]
            groupings.append(Grouping.from_values("gender_x_nationality", cells, notes))
    return groupings


def evaluate_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    enroll_ids: Sequence[str],
    test_ids: Sequence[str],
    speaker_meta: Mapping[str, SpeakerInfo] | None = None,
    *,
    min_speakers: int = 5,
    group_rule: str = "both",
    nationality_map: Mapping[str, str] | None = None,
    bootstrap: int = 0,
    confidence: float = 0.95,
    embeddings: tuple[Sequence[str], np.ndarray] | None = None,
    cohorts: int = 0,
    seed: int = 0,
    det_points: int = 100,
) -> dict:
    """The full evaluation report of scored trials, as a dict (``report.json``).

    Args:
        scores: trial scores.
        labels: 1 target, 0 non-target.
        enroll_ids: enrolment utterance ids (speaker = first path component).
        test_ids: test utterance ids.
        speaker_meta: from ``read_speaker_meta``; ``None`` reports overall numbers only.
        min_speakers: nationalities with fewer speakers (in these trials) are pooled into
            "others"; any group with fewer speakers is left out of disparity measures.
        group_rule: ``"both"`` or ``"enroll"`` (see ``arw_sv.metrics.groups``).
        nationality_map: relabelling applied before pooling (``{"Norway": "France"}``).
        bootstrap: number of speaker resamples for confidence intervals (0 = none).
        confidence: level of the intervals.
        embeddings: utterance ``(ids, matrix)``, needed for cohort discovery.
        cohorts: number of k-means cohorts (0 = no cohort discovery).
        seed: seed for resampling and k-means.
        det_points: points kept per DET curve in the report.

    Shape:
        scores, labels: (N,); embeddings matrix: (U, D).
    """
    from arw_sv.metrics import fairness_report, kmeans_cohorts, speaker_means

    enroll_spk, test_spk, speakers = speaker_indices(enroll_ids, test_ids)
    index = {s: i for i, s in enumerate(speakers)}
    groupings = speaker_groupings(speakers, speaker_meta, min_speakers, nationality_map)
    cohort_labels = None
    if cohorts:
        if embeddings is None:
            raise ValueError("cohort discovery needs embeddings")
        ids, matrix = embeddings
        rows = [i for i, u in enumerate(ids) if speaker_of(u) in index]
        owner = np.array([index[speaker_of(ids[i])] for i in rows], dtype=np.int64)
        means = speaker_means(np.asarray(matrix)[rows], owner, len(speakers))
        cohort_labels = kmeans_cohorts(means, cohorts, seed)
    report = fairness_report(
        scores,
        labels,
        enroll_spk,
        test_spk,
        groupings,
        group_rule=group_rule,
        min_speakers=min_speakers,
        bootstrap=bootstrap,
        confidence=confidence,
        cohort_labels=cohort_labels,
        seed=seed,
        det_points=det_points,
    )
    unknown = [s for s in speakers if speaker_meta is not None and s not in speaker_meta]
    report["inputs"] = {
        "n_trials": int(np.size(scores)),
        "n_speakers": len(speakers),
        "speakers_without_metadata": {"count": len(unknown), "first": unknown[:5]},
        "metadata": speaker_meta is not None,
    }
    return report


def write_report(report: dict, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (optionally) PNG plots, each atomically.

    Returns:
        The paths written.
    """
    from arw_sv.metrics.render import render_markdown, render_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: an undefined value must be None, never a NaN that JSON can't hold.
    text = json.dumps(report, indent=1, allow_nan=False)
    atomic_write_bytes(out / "report.json", (text + "\n").encode())
    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    written = [out / "report.json", out / "report.md"]
    if plots:
        for name, png in render_plots(report).items():
            atomic_write_bytes(out / name, png)
            written.append(out / name)
    return written


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
        help="pool nationalities with fewer speakers into 'others' (default 5)",
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


def _align_scores(
    scores_path: Path, trials_path: Path, allow_missing: bool, fmt: str | None = None
) -> tuple[Trials, np.ndarray, int]:
    """Scores of the trial list's trials, looked up in a score file by (enroll, test)."""
    scored, values = read_scores(scores_path, fmt)
    lookup = {(e, t): i for i, (e, t) in enumerate(zip(scored.enroll, scored.test, strict=True))}
    trials = read_trials(trials_path)
    idx = np.fromiter(
        (lookup.get(k, -1) for k in zip(trials.enroll, trials.test, strict=True)),
        dtype=np.int64,
        count=len(trials),
    )
    missing = idx < 0
    if missing.any():
        first = [f"{trials.enroll[i]} {trials.test[i]}" for i in np.flatnonzero(missing)[:3]]
        if not allow_missing:
            raise KeyError(
                f"{int(missing.sum())} of {len(trials)} trials of {trials_path} are not in "
                f"{scores_path} (first: {'; '.join(first)}); --allow-missing skips them"
            )
        trials, idx = trials.subset(~missing), idx[~missing]
    # A Kaldi score file has no labels (-1): the key's are the only ones.
    wrong = np.flatnonzero((scored.labels[idx] >= 0) & (scored.labels[idx] != trials.labels))
    if wrong.size:
        raise ValueError(
            f"{wrong.size} trials have different labels in {scores_path} and {trials_path}"
        )
    return trials, values[idx], int(missing.sum())


def run(args: argparse.Namespace) -> int:
    """Run the evaluation described by parsed arguments; returns the exit status."""
    from arw_sv.metrics import as_norm

    try:
        inputs: dict = {}
        embeddings = None
        if args.embeddings is not None and args.scores is not None:
            raise ValueError("give either --scores or --embeddings, not both")
        if args.bootstrap < 0 or args.cohorts < 0 or args.min_speakers < 0:
            raise ValueError("--bootstrap, --cohorts and --min-speakers must be >= 0")
        if not 0.0 < args.confidence < 1.0:
            raise ValueError(f"--confidence must be in (0, 1), got {args.confidence}")
        bad_map = [item for item in args.nationality_map if item.count("=") != 1]
        if bad_map:
            raise ValueError(f"--nationality-map takes FROM=TO, got {bad_map[0]!r}")
        if args.embeddings is not None:
            if args.trials is None:
                raise ValueError("--embeddings needs --trials")
            embeddings = read_embeddings(args.embeddings)
            trials, scores, skipped = score_trial_list(
                read_trials(args.trials), embeddings, args.allow_missing
            )
            if args.asnorm_cohort is not None:
                cohort = read_embeddings(args.asnorm_cohort)[1]
                row = {u: i for i, u in enumerate(embeddings[0])}
                scores = as_norm(
                    scores,
                    [row[u] for u in trials.enroll],
                    [row[u] for u in trials.test],
                    embeddings[1],
                    cohort,
                    args.asnorm_top_n,
                )
                inputs["asnorm"] = {
                    "cohort": str(args.asnorm_cohort),
                    "cohort_size": len(cohort),
                    "top_n": args.asnorm_top_n,
                }
        elif args.scores is not None:
            if args.asnorm_cohort is not None:
                raise ValueError("--asnorm-cohort needs --embeddings (AS-norm uses the embeddings)")
            if args.trials is not None:
                trials, scores, skipped = _align_scores(
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
        mapping = dict(item.split("=", 1) for item in args.nationality_map)
        meta = read_speaker_meta(args.meta) if args.meta else None
        report = evaluate_scores(
            scores,
            trials.labels,
            trials.enroll,
            trials.test,
            meta,
            min_speakers=args.min_speakers,
            group_rule=args.group_rule,
            nationality_map=mapping,
            bootstrap=args.bootstrap,
            confidence=args.confidence,
            embeddings=embeddings,
            cohorts=args.cohorts,
            seed=args.seed,
        )
        report["inputs"].update(
            inputs,
            scores=None if args.scores is None else str(args.scores),
            embeddings=None if args.embeddings is None else str(args.embeddings),
            trials=None if args.trials is None else str(args.trials),
            meta=None if args.meta is None else str(args.meta),
            skipped_missing=skipped,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        if args.embeddings is not None:
            write_scores(args.out / "scores.txt", trials, scores)
        written = write_report(report, args.out, plots=not args.no_plots)
    except (TrialsError, ValueError, KeyError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"arw-sv eval: error: {message}", file=sys.stderr)
        return 2
    o = report["overall"]
    print(
        f"EER {100 * o['eer']:.3f}%  minDCF(0.01) {o['min_dcf']['0.01']['value']:.4f}  "
        f"minDCF(0.05) {o['min_dcf']['0.05']['value']:.4f}  on {o['n_trials']} trials"
        + (f" ({skipped} skipped: missing)" if skipped else "")
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

r"""``arw-sv calibrate``: fit a score calibrator on calibration speakers' embeddings.

::

    arw-sv embed CKPT --manifest cal.csv --out cal.npz
    arw-sv calibrate --embeddings cal.npz --exclude train.csv --exclude test_trials.txt \
        --out cal.json          # AS-norm + FSN (k = 16); or --method faircal --score-norm none
    arw-sv score --embeddings test.npz --trials trials.txt --calibration cal.json --out llr.txt
    arw-sv eval --embeddings test.npz --trials trials.txt --calibration cal.json --out eval/

The calibration speakers (an utterance's speaker is the first component of its id, or
``--manifest``'s ``speaker``) must be neither training nor test speakers: ``--exclude``
names manifests or trial lists whose speakers are refused, and ``score`` / ``eval`` refuse
test trials of a calibration speaker. Pairs are every same-speaker pair and a sample of
different-speaker pairs (``--max-pairs`` in all), or the trials of ``--trials``.

The defaults are the recommended label-free back-end (docs/calibration-log.md): AS-norm,
then FSN with 16 clusters. ``--score-norm asnorm`` (the default) puts AS-norm before the
calibrator: ``--cohort-share`` of the calibration speakers (half by default) become its
cohort, stored in the calibrator, and the other speakers' pairs, AS-normalised against it,
fit the map (trials that name a cohort speaker are left out). ``score`` and ``eval`` then
normalise every trial the same way; ``--score-norm none`` fits the map on cosine scores.
"""

from __future__ import annotations

import argparse
import sys

#: Fewer calibration speakers than this draw a warning (docs/calibration-log.md, C5).
MIN_SPEAKERS = 250
METHODS = (
    "global",
    "fsn",
    "faircal",
    "softcal",
    "quantile",
)  # the oracle needs labels: benchmarks only
NO_MODEL_CHECK = (
    "fit on embeddings that name no model (no <npz>.model.json from `arw-sv embed`); the "
    "calibrator then names none, and score/eval refuse it unless given --no-model-check too"
)
#: The defaults: the recommended back-end (:data:`arw_sv.calibration.backend.RECOMMENDED`,
#: restated so that the parser imports no numpy; tests/test_calibration.py checks they agree).
DEFAULTS = {"method": "fsn", "clusters": None, "score_norm": "asnorm", "cohort_share": 0.5,
            "cohort_size": 4000, "top_n": 300, "target_fmr": 0.01}  # fmt: skip


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``calibrate`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser(
        "calibrate",
        help="fit a score calibrator (AS-norm + FSN by default; FairCal, softcal, global) on "
        "calibration speakers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--embeddings", required=True, help="calibration utterances' .npz")
    p.add_argument("--manifest", help="speakers of the utterances (default: from their ids)")
    p.add_argument("--split", help="with --manifest: only this split's utterances")
    p.add_argument("--trials", help="calibration pairs as a trial list (default: sampled)")
    p.add_argument("--method", choices=METHODS, default=DEFAULTS["method"])
    p.add_argument(
        "--clusters", type=int, default=DEFAULTS["clusters"],
        help="k-means clusters (fsn, faircal, softcal, quantile); default: one per 7 fitting "
        "speakers, at most 16, and global calibration of cosine scores below 200 "
        "calibration speakers",
    )  # fmt: skip
    p.add_argument(
        "--prior-speakers", type=float, default=None,
        help="shrink each region's correction by n / (n + this), n its speakers "
        "(fsn, quantile; default 4 for quantile, 0 for fsn)",
    )  # fmt: skip
    p.add_argument("--target-fmr", type=float, default=DEFAULTS["target_fmr"],
                   help="fsn: the FMR of its thresholds")  # fmt: skip
    p.add_argument("--top", type=int, default=4, help="softcal: nearest centroids per side")
    p.add_argument("--temperature", type=float, default=0.05, help="softcal: softmax temperature")
    p.add_argument(
        "--score-norm", choices=("none", "asnorm"), default=DEFAULTS["score_norm"],
        help="asnorm: AS-norm against a cohort of calibration speakers, then the map",
    )  # fmt: skip
    p.add_argument("--cohort-share", type=float, default=DEFAULTS["cohort_share"],
                   help="asnorm: the share of calibration speakers that form the cohort")  # fmt: skip
    p.add_argument("--top-n", type=int, default=DEFAULTS["top_n"],
                   help="asnorm: adaptive cohort size")  # fmt: skip
    p.add_argument("--cohort-size", type=int, default=DEFAULTS["cohort_size"],
                   help="asnorm: cohort utterances at most (a seeded sample of the cohort "
                   "speakers'; AS-norm's cost grows with it)")  # fmt: skip
    p.add_argument("--max-pairs", type=int, default=1_000_000, help="sampled pairs at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        help="a manifest or trial list whose speakers must not be calibration speakers "
        "(training and test sets); repeatable",
    )
    p.add_argument("--out", required=True, help="the calibrator (JSON)")
    p.add_argument("--no-model-check", action="store_true", help=NO_MODEL_CHECK)
    p.set_defaults(func=run)
    return p


def _speakers_of(path: str) -> set[str]:
    from arw_sv.data.manifest import read_manifest
    from arw_sv.data.trials import read_trials, speaker_of

    if path.endswith(".csv"):
        return {u.speaker for u in read_manifest(path)}
    trials = read_trials(path)
    return {speaker_of(u) for u in (*trials.enroll, *trials.test)}


def run(args: argparse.Namespace) -> int:
    """Fit and save the calibrator described by parsed ``calibrate`` arguments."""
    from arw_sv.calibration import CalibrationError, save_calibrator
    from arw_sv.calibration.backend import fit_on_speakers
    from arw_sv.calibration.methods import check_softcal_settings
    from arw_sv.calibration.store import require_model
    from arw_sv.data.manifest import read_manifest
    from arw_sv.data.trials import (
        read_embedding_model,
        read_embeddings,
        read_trials,
        speaker_of,
        utterance_rows,
    )

    if (
        (args.clusters is not None and args.clusters < 1)
        or args.max_pairs < 2
        or not 0 < args.target_fmr < 1
    ):
        raise ValueError("--clusters >= 1, --max-pairs >= 2 and 0 < --target-fmr < 1, please")
    check_softcal_settings(args.top, args.temperature, ("--top", "--temperature"))
    ids, matrix = read_embeddings(args.embeddings)
    model = read_embedding_model(args.embeddings) or {}
    if not args.no_model_check:
        require_model(args.embeddings, model)
    owner = {u: speaker_of(u) for u in ids}
    if args.manifest:
        manifest = read_manifest(args.manifest)
        if args.split:
            manifest = manifest.subset(args.split)
        known = {u.utt_id: u.speaker for u in manifest}
        rows = [i for i, u in enumerate(ids) if u in known]
        if not rows:
            raise CalibrationError(f"{args.embeddings}: no utterance of {args.manifest} in it")
        ids, matrix = [ids[i] for i in rows], matrix[rows]
        owner = {u: known[u] for u in ids}
    speakers = sorted(set(owner.values()))
    for path in args.exclude:
        overlap = sorted(set(speakers) & _speakers_of(path))
        if overlap:
            raise CalibrationError(
                f"{len(overlap)} calibration speaker(s) are in {path}, e.g. "
                f"{', '.join(overlap[:3])}; calibration speakers must be disjoint from "
                "training and test speakers"
            )
    pairs = None
    if args.trials:
        trials = read_trials(args.trials)
        enroll, test = utterance_rows(trials.enroll, ids), utterance_rows(trials.test, ids)
        if (enroll < 0).any() or (test < 0).any():
            raise CalibrationError(f"{args.trials}: trials name utterances without an embedding")
        pairs = (enroll, test, trials.labels)
    try:
        calibrator, n_pairs, n_tar = fit_on_speakers(
            [owner[u] for u in ids], matrix, method=args.method, clusters=args.clusters,
            target_fmr=args.target_fmr, top=args.top, temperature=args.temperature,
            score_norm=args.score_norm, cohort_share=args.cohort_share,
            cohort_size=args.cohort_size, top_n=args.top_n, pairs=pairs,
            max_pairs=args.max_pairs, seed=args.seed, fingerprint=model.get("fingerprint"),
            prior_speakers=args.prior_speakers,
        )  # fmt: skip
    except CalibrationError as exc:
        raise CalibrationError(f"{args.trials or args.embeddings}: {exc}") from None
    save_calibrator(calibrator, args.out)
    if calibrator.settings.get("fallback"):
        print(f"arw-sv calibrate: {calibrator.settings['fallback']}", file=sys.stderr)
    elif len(speakers) < MIN_SPEAKERS:
        print(
            f"arw-sv calibrate: warning: {len(speakers)} calibration speakers; below about "
            f"{MIN_SPEAKERS} the benchmark saw minDCF get worse and new group gaps appear "
            "(docs/calibration-log.md, C5)",
            file=sys.stderr,
        )
    norm = ""
    if calibrator.cohort is not None:
        norm = f"AS-norm (cohort {len(calibrator.cohort)} utterances) + "
    print(
        f"{norm}{calibrator.method}: fitted on {n_pairs} pairs ({n_tar} same-speaker) of "
        f"{len(speakers)} speakers, {len(ids)} utterances -> {args.out}"
    )
    return 0

r"""``arw-sv calibrate``: fit a score calibrator on calibration speakers' embeddings.

::

    arw-sv embed CKPT --manifest cal.csv --out cal.npz
    arw-sv calibrate --embeddings cal.npz --method faircal --clusters 16 \
        --exclude train.csv --exclude test_trials.txt --out cal.json
    arw-sv score --embeddings test.npz --trials trials.txt --calibration cal.json --out llr.txt
    arw-sv eval --embeddings test.npz --trials trials.txt --calibration cal.json --out eval/

The calibration speakers (an utterance's speaker is the first component of its id, or
``--manifest``'s ``speaker``) must be neither training nor test speakers: ``--exclude``
names manifests or trial lists whose speakers are refused, and ``score`` / ``eval`` refuse
test trials of a calibration speaker. Pairs are every same-speaker pair and a sample of
different-speaker pairs (``--max-pairs`` in all), or the trials of ``--trials``.
"""

from __future__ import annotations

import argparse

METHODS = ("global", "fsn", "faircal", "softcal")  # the oracle needs labels: benchmarks only


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``calibrate`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser(
        "calibrate",
        help="fit a score calibrator (global, FSN, FairCal, softcal) on calibration speakers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--embeddings", required=True, help="calibration utterances' .npz")
    p.add_argument("--manifest", help="speakers of the utterances (default: from their ids)")
    p.add_argument("--split", help="with --manifest: only this split's utterances")
    p.add_argument("--trials", help="calibration pairs as a trial list (default: sampled)")
    p.add_argument("--method", choices=METHODS, default="faircal")
    p.add_argument(
        "--clusters", type=int, default=16, help="k-means clusters (fsn, faircal, softcal)"
    )
    p.add_argument("--target-fmr", type=float, default=0.01, help="fsn: the FMR of its thresholds")
    p.add_argument("--top", type=int, default=4, help="softcal: nearest centroids per side")
    p.add_argument("--temperature", type=float, default=0.05, help="softcal: softmax temperature")
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
    import numpy as np

    from arw_sv.calibration import (
        CalibrationError,
        cosine_scores,
        fit_calibrator,
        sample_pairs,
        save_calibrator,
    )
    from arw_sv.data.manifest import read_manifest
    from arw_sv.data.trials import (
        read_embedding_model,
        read_embeddings,
        read_trials,
        speaker_of,
        utterance_rows,
    )

    if args.clusters < 1 or args.max_pairs < 2 or not 0 < args.target_fmr < 1:
        raise ValueError("--clusters >= 1, --max-pairs >= 2 and 0 < --target-fmr < 1, please")
    ids, matrix = read_embeddings(args.embeddings)
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
    if args.trials:
        trials = read_trials(args.trials)
        enroll, test = utterance_rows(trials.enroll, ids), utterance_rows(trials.test, ids)
        if (enroll < 0).any() or (test < 0).any():
            raise CalibrationError(f"{args.trials}: trials name utterances without an embedding")
        labels = trials.labels
    else:
        enroll, test, labels = sample_pairs([owner[u] for u in ids], args.max_pairs, args.seed)
    scores = cosine_scores(matrix, enroll, test)
    model = read_embedding_model(args.embeddings) or {}
    calibrator = fit_calibrator(
        args.method,
        scores,
        labels,
        enroll,
        test,
        matrix,
        clusters=args.clusters,
        target_fmr=args.target_fmr,
        top=args.top,
        temperature=args.temperature,
        seed=args.seed,
        speakers=tuple(speakers),
        fingerprint=model.get("fingerprint"),
    )
    save_calibrator(calibrator, args.out)
    n_tar = int(np.asarray(labels).sum())
    print(
        f"{args.method}: fitted on {len(scores)} pairs ({n_tar} same-speaker) of "
        f"{len(speakers)} speakers, {len(ids)} utterances -> {args.out}"
    )
    return 0

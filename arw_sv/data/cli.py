"""The ``arw-sv manifest`` and ``arw-sv trials`` sub-commands.

::

    arw-sv manifest data/voxceleb1 --meta vox1_meta.csv --out vox1.csv
    arw-sv manifest kaldi/data/train --out train.csv             # wav.scp, utt2spk, spk2gender
    arw-sv manifest LibriSpeech/train-clean-100 --out libri.csv  # gender from SPEAKERS.TXT
    arw-sv manifest corpus.csv --speakers speakers.csv --out manifest.csv
    arw-sv trials test.csv --out trials.txt --seed 0
"""

from __future__ import annotations

import argparse

from arw_sv.data.corpora import FORMATS


def add_subparsers(subparsers: argparse._SubParsersAction) -> None:
    """Register ``manifest`` and ``trials`` on the ``arw-sv`` sub-parsers."""
    p = subparsers.add_parser(
        "manifest",
        help="build a manifest CSV from a VoxCeleb, Kaldi, LibriSpeech or CSV corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("corpus", help="corpus folder (or a .csv of path,speaker,...)")
    p.add_argument(
        "--format", choices=FORMATS, help="corpus layout (default: detected when unambiguous)"
    )
    p.add_argument(
        "--meta", help="voxceleb: vox1_meta.csv / vox2_meta.csv; librispeech: SPEAKERS.TXT"
    )
    p.add_argument("--splits", nargs="+", default=["dev", "test"], help="voxceleb: sets to keep")
    p.add_argument("--split", default="dev", help="kaldi/csv: the split of every utterance")
    p.add_argument("--speakers", help="speaker-attribute CSV: speaker,gender,nationality,split")
    p.add_argument("--allow-pipes", action="store_true", help="kaldi: run wav.scp pipe commands")
    p.add_argument("--pipe-dir", help="kaldi: where piped recordings are written")
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_manifest)

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
        help="cap on the trials naming one speaker (default 2 x its own quota)",
    )
    p.set_defaults(func=run_trials)


def run_manifest(args: argparse.Namespace) -> int:
    """Build and write the manifest described by parsed ``manifest`` arguments."""
    from arw_sv.data import corpora
    from arw_sv.data.manifest import ManifestError, build_manifest, write_manifest

    fmt = args.format or corpora.detect_format(args.corpus)
    if fmt == "voxceleb":
        if not args.meta:
            raise ManifestError("--format voxceleb needs --meta (vox1_meta.csv / vox2_meta.csv)")
        manifest = build_manifest(args.corpus, args.meta, splits=tuple(args.splits))
        if args.speakers:
            manifest = corpora.apply_speaker_table(list(manifest), args.speakers)
    elif fmt == "kaldi":
        manifest = corpora.read_kaldi(
            args.corpus,
            split=args.split,
            speakers=args.speakers,
            allow_pipes=args.allow_pipes,
            pipe_dir=args.pipe_dir,
        )
    elif fmt == "librispeech":
        manifest = corpora.read_librispeech(args.corpus, speakers=args.speakers, meta=args.meta)
    else:
        manifest = corpora.read_corpus_csv(args.corpus, split=args.split, speakers=args.speakers)
    write_manifest(manifest, args.out)
    print(f"{fmt}: {len(manifest)} utterances of {len(manifest.speakers)} speakers -> {args.out}")
    return 0


def run_trials(args: argparse.Namespace) -> int:
    """Generate and write the trial list described by parsed ``trials`` arguments."""
    from arw_sv.atomic import atomic_write_text
    from arw_sv.data.manifest import ManifestError, read_manifest
    from arw_sv.data.trial_gen import TrialPlan, format_summary, manifest_trials

    manifest = read_manifest(args.manifest)
    if args.split:
        manifest = manifest.subset(args.split)
        if not len(manifest):
            raise ManifestError(f"{args.manifest}: no utterances in split {args.split!r}")
    plan = TrialPlan(args.targets, args.within, args.across, args.max_per_speaker)
    trials, summary = manifest_trials(manifest, plan, seed=args.seed)
    atomic_write_text(args.out, "".join(f"{lab} {a} {b}\n" for lab, a, b in trials))
    print(format_summary(summary))
    print(f"{len(trials)} trials -> {args.out}")
    return 0

"""``arw-sv manifest``: a manifest CSV from a VoxCeleb, Kaldi, LibriSpeech or CSV corpus.

::

    arw-sv manifest data/voxceleb1 --meta vox1_meta.csv --out vox1.csv
    arw-sv manifest kaldi/data/train --out train.csv             # wav.scp, utt2spk, spk2gender
    arw-sv manifest LibriSpeech/train-clean-100 --out libri.csv  # gender from SPEAKERS.TXT
    arw-sv manifest corpus.csv --speakers speakers.csv --out manifest.csv
"""

from __future__ import annotations

import argparse

from arw_sv.data.corpora import FORMATS


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``manifest`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
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
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
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

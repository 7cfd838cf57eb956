"""``arw-sv manifest``: a manifest CSV from a VoxCeleb, Kaldi, LibriSpeech, CSV, Hugging Face
or Lhotse corpus.

::

    arw-sv manifest data/voxceleb1 --meta vox1_meta.csv --out vox1.csv
    arw-sv manifest kaldi/data/train --out train.csv             # wav.scp, utt2spk, spk2gender
    arw-sv manifest LibriSpeech/train-clean-100 --out libri.csv  # gender from SPEAKERS.TXT
    arw-sv manifest corpus.csv --speakers speakers.csv --out manifest.csv
    arw-sv manifest --format hf cv_en/train --speaker-column client_id \
        --attributes gender,age,accent --out cv.csv      # audio written to cv_audio/
    arw-sv manifest --format lhotse data/manifests --out lhotse.csv  # recordings+supervisions
"""

from __future__ import annotations

import argparse

from arw_sv.data.corpora import FORMATS


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``manifest`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser(
        "manifest",
        help="build a manifest CSV from a VoxCeleb, Kaldi, LibriSpeech, CSV, HF or Lhotse corpus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "corpus", help="corpus folder (or a .csv of path,speaker,..., a .parquet, a cuts file)"
    )
    p.add_argument(
        "--format", choices=FORMATS, help="corpus layout (default: detected when unambiguous)"
    )
    p.add_argument(
        "--meta", help="voxceleb: vox1_meta.csv / vox2_meta.csv; librispeech: SPEAKERS.TXT"
    )
    p.add_argument("--splits", nargs="+", default=["dev", "test"], help="voxceleb: sets to keep")
    p.add_argument(
        "--split", default="dev", help="kaldi/csv/hf/lhotse: the split of every utterance"
    )
    p.add_argument("--speakers", help="speaker-attribute CSV: speaker,gender,nationality,split")
    p.add_argument(
        "--allow-pipes", action="store_true", help="kaldi/lhotse: run pipe/command sources"
    )
    p.add_argument("--pipe-dir", help="kaldi/lhotse: where piped recordings are written")
    hf = p.add_argument_group("hf (pip install 'arw-sv[hf]')")
    hf.add_argument("--audio-column", default="audio", help="the Audio column (default audio)")
    hf.add_argument("--speaker-column", default="speaker_id", help="default speaker_id")
    hf.add_argument(
        "--attributes",
        action="append",
        default=[],
        metavar="COL[,COL]",
        help="columns kept as speaker attributes (gender, nationality, age, accent, ...)",
    )
    hf.add_argument(
        "--audio-dir", help="where embedded audio is written (default: <out>_audio beside --out)"
    )
    lh = p.add_argument_group("lhotse (pip install 'arw-sv[lhotse]')")
    lh.add_argument(
        "--allow-overlap",
        action="store_true",
        help="keep supervisions of two speakers that overlap in one recording or cut",
    )
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
    elif fmt == "hf":
        from pathlib import Path

        from arw_sv.data.hf import read_hf

        out = Path(args.out)
        manifest = read_hf(
            args.corpus,
            audio_dir=args.audio_dir or out.with_name(out.stem + "_audio"),
            audio_column=args.audio_column,
            speaker_column=args.speaker_column,
            attributes=[c.strip() for item in args.attributes for c in item.split(",")],
            split=args.split,
            speakers=args.speakers,
        )
    elif fmt == "lhotse":
        from arw_sv.data.lhotse_manifests import read_lhotse

        manifest = read_lhotse(
            args.corpus,
            split=args.split,
            speakers=args.speakers,
            allow_overlap=args.allow_overlap,
            allow_pipes=args.allow_pipes,
            pipe_dir=args.pipe_dir,
        )
    else:
        manifest = corpora.read_corpus_csv(args.corpus, split=args.split, speakers=args.speakers)
    write_manifest(manifest, args.out)
    print(f"{fmt}: {len(manifest)} utterances of {len(manifest.speakers)} speakers -> {args.out}")
    return 0

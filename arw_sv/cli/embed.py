"""``arw-sv embed``: embed a manifest or a folder of audio into one ``.npz``."""

from __future__ import annotations

import argparse
from pathlib import Path

# ``arw_sv.inference.BACKENDS`` without importing torch for ``--help`` (a test checks they agree).
BACKENDS = ("auto", "onnx", "jit", "eager")


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``embed`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser("embed", help="embed a manifest or folder into one .npz")
    p.add_argument("checkpoint", help="training checkpoint, or speechbrain:FOLDER_OR_HUB_ID")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest")
    src.add_argument("--folder", help="ids are paths relative to this folder")
    p.add_argument("--split", help="with --manifest: only this split (dev/test)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="what runs the model (default auto: on CPU the TorchScript trace, ONNX Runtime "
        "from an hour of audio on or once the model's export is cached; see SpeakerEncoder)",
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Embed the utterances named by parsed ``embed`` arguments."""
    from arw_sv.data.manifest import AUDIO_SUFFIXES, read_manifest
    from arw_sv.inference import embed_utterances

    if args.manifest:
        manifest = read_manifest(args.manifest)
        if args.split:
            manifest = manifest.subset(args.split)
        ids, paths = [u.utt_id for u in manifest], [u.path for u in manifest]
        spans = [(u.start, u.duration) for u in manifest]  # Kaldi segments, or whole files
    else:
        root = Path(args.folder)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise ValueError(f"no audio files (.wav, .flac) under {root}")
        ids = [str(p.relative_to(root)) for p in files]
        paths = [str(p) for p in files]
        spans = None
    out = embed_utterances(
        args.checkpoint, ids, paths, args.out, progress=not args.quiet, backend=args.backend,
        spans=spans,
    )  # fmt: skip
    print(f"{len(ids)} embeddings -> {out}")
    return 0

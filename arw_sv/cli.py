"""The ``arw-sv`` command: synth, manifest, train, embed, score, eval, demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("arw_sv")


def _train(args: argparse.Namespace) -> int:
    from arw_sv.config import load_config
    from arw_sv.train.loop import fit

    cfg = load_config(args.config, args.overrides)
    result = fit(
        cfg,
        resume=args.resume,
        progress=not args.quiet,
        allow_config_change=args.allow_config_change,
    )
    print(
        f"trained {result.steps} steps ({result.utterances_per_second:.1f} utt/s); "
        f"checkpoint: {result.checkpoint}"
    )
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from arw_sv.data.manifest import build_manifest, write_manifest

    manifest = build_manifest(args.corpus, args.meta, splits=tuple(args.splits))
    write_manifest(manifest, args.out)
    print(f"{len(manifest)} utterances of {len(manifest.speakers)} speakers -> {args.out}")
    return 0


def embed_utterances(
    checkpoint: str | Path, ids: list[str], paths: list[str], out: str | Path, *, progress: bool
) -> Path:
    """Embed ``paths`` and write ``{utt_id: vector}`` to an ``.npz`` atomically."""
    from arw_sv.atomic import atomic_path
    from arw_sv.inference import SpeakerEncoder

    encoder = SpeakerEncoder.from_checkpoint(checkpoint)
    vectors = encoder.embed_files(paths, progress=progress)
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **{utt: vec for utt, vec in zip(ids, vectors, strict=True)})
    return out


def _embed(args: argparse.Namespace) -> int:
    from arw_sv.data.manifest import AUDIO_SUFFIXES, read_manifest

    if args.manifest:
        manifest = read_manifest(args.manifest)
        if args.split:
            manifest = manifest.subset(args.split)
        ids, paths = [u.utt_id for u in manifest], [u.path for u in manifest]
    else:
        root = Path(args.folder)
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise ValueError(f"no audio files (.wav, .flac) under {root}")
        ids = [str(p.relative_to(root)) for p in files]
        paths = [str(p) for p in files]
    out = embed_utterances(args.checkpoint, ids, paths, args.out, progress=not args.quiet)
    print(f"{len(ids)} embeddings -> {out}")
    return 0


def _score(args: argparse.Namespace) -> int:
    from arw_sv.data.trials import read_embeddings, read_trials, score_trial_list, write_scores

    scored = score_trial_list(
        read_trials(args.trials), read_embeddings(args.embeddings), args.allow_missing
    )
    write_scores(args.out, scored.trials, scored.scores)
    skipped = f" ({scored.n_skipped} skipped: missing embeddings)" if scored.n_skipped else ""
    print(f"{len(scored.trials)} trials scored{skipped} -> {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arw-sv",
        description="Fair speaker verification: ECAPA-TDNN + adversarial reweighting.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the terminal")
    sub = parser.add_subparsers(dest="command", required=True)

    from arw_sv import bench, demo, evaluate, export, synth
    from arw_sv.train import average

    synth.add_subparser(sub)

    p = sub.add_parser("manifest", help="build a manifest CSV from a VoxCeleb-layout folder")
    p.add_argument("corpus", help="folder holding wav/<speaker>/<session>/<utt>.wav")
    p.add_argument("--meta", required=True, help="vox1_meta.csv / vox2_meta.csv format")
    p.add_argument("--splits", nargs="+", default=["dev", "test"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=_manifest)

    p = sub.add_parser("train", help="train an extractor (ERM or ARW) from a YAML config")
    p.add_argument("config", help="YAML config (see arw_sv/configs/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=0.001")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: accept a config that differs from the checkpoint's (logged)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("embed", help="embed a manifest or folder into one .npz")
    p.add_argument("checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest")
    src.add_argument("--folder", help="ids are paths relative to this folder")
    p.add_argument("--split", help="with --manifest: only this split (dev/test)")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_embed)

    p = sub.add_parser("score", help="cosine-score a trial list against embeddings")
    p.add_argument("--embeddings", required=True, help=".npz from `arw-sv embed`")
    p.add_argument("--trials", required=True, help="<1|0> <enroll> <test> lines")
    p.add_argument("--out", required=True, help="writes <label> <enroll> <test> <score>")
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="skip (and count) trials naming utterances without an embedding",
    )
    p.set_defaults(func=_score)

    evaluate.add_subparser(sub)
    export.add_subparser(sub)
    average.add_subparser(sub)
    bench.add_subparser(sub)
    demo.add_subparser(sub)
    return parser


def _one_line(exc: BaseException) -> str:
    """The message of an expected failure, without traceback text a worker process added."""
    # KeyError's str() adds quotes around the message; show the message itself.
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc)
    if "Traceback (most recent call last)" in text:  # re-raised from a DataLoader worker
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may also follow an option (`train cfg.yaml --quiet train.lr=0.01`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from arw_sv.audio import AudioError
    from arw_sv.config import ConfigError
    from arw_sv.data.manifest import ManifestError
    from arw_sv.train.checkpoint import CheckpointError

    # The NaN stop is an expected failure too; its module needs torch, which only train has.
    expected: tuple[type[BaseException], ...] = ()
    if args.command == "train":
        from arw_sv.train.step import NonFiniteError

        expected = (NonFiniteError,)
    try:
        return int(args.func(args) or 0)
    except (
        ConfigError,
        ManifestError,
        AudioError,
        CheckpointError,
        OSError,
        KeyError,
        ValueError,
        *expected,
    ) as exc:
        print(f"arw-sv {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

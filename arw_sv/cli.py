"""The ``arw-sv`` command: synth, manifest, train, embed, score, eval, demo.

Start-up stays cheap (no torch) because nothing is imported before it is needed: the
sub-commands defined here import their modules when they run, and those defined in their
own module (``_MODULE_COMMANDS``) have that module imported, and its ``add_subparser``
called, only when they are chosen on the command line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

log = logging.getLogger("arw_sv")

# Sub-commands whose parser is built by ``add_subparser(subparsers)`` of their own module:
# name -> (module, help shown by ``arw-sv --help``; tests check it equals the module's own).
_MODULE_COMMANDS = {
    "synth": (
        "arw_sv.synth.cli",
        "generate the built-in synthetic VoxCeleb1-style speaker corpus",
    ),
    "eval": ("arw_sv.evaluate", "EER, minDCF and fairness report"),
    "export": (
        "arw_sv.export",
        "export the extractor to ONNX or TorchScript (fbank inside, dynamic batch/length)"
        " or as a SpeechBrain pretrained folder (EncoderClassifier.from_hparams loads it)",
    ),
    "average": ("arw_sv.train.average", "average the last N checkpoints of a run"),
    "bench": ("arw_sv.bench.fairness", "benchmarks (fairness)"),
    "demo": (
        "arw_sv.demo",
        "synthetic corpus -> ERM -> fairness fine-tune -> EER reports side by side",
    ),
    "configs": (
        "arw_sv.shipped",
        "list the shipped configs, or copy one out to edit (--copy NAME DIR)",
    ),
}


def _train(args: argparse.Namespace) -> int:
    from arw_sv.config import load_config
    from arw_sv.shipped import resolve_config
    from arw_sv.train.loop import fit

    cfg = load_config(resolve_config(args.config), args.overrides)
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


def _embed(args: argparse.Namespace) -> int:
    from arw_sv.data.manifest import AUDIO_SUFFIXES, read_manifest
    from arw_sv.inference import embed_utterances

    if args.manifest:
        manifest = read_manifest(args.manifest)
        if args.split:
            manifest = manifest.subset(args.split)
        if any(u.start for u in manifest):
            raise ValueError(f"{args.manifest}: embedding Kaldi segments is not supported yet")
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
    write_scores(args.out, scored.trials, scored.scores, args.format)
    skipped = f" ({scored.n_skipped} skipped: missing embeddings)" if scored.n_skipped else ""
    print(f"{len(scored.trials)} trials scored{skipped} -> {args.out}")
    return 0


class _LazySubParsers(argparse._SubParsersAction):
    """Sub-parsers whose arguments their module adds only when that sub-command is chosen.

    ``add_lazy(name)`` registers an empty parser with the help from ``_MODULE_COMMANDS``;
    choosing it (or ``load(name)``) imports the module and runs its ``add_subparser`` on that
    parser, so a module is imported only by the command that uses it.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pending: set[str] = set()

    def add_lazy(self, name: str) -> argparse.ArgumentParser:
        self._pending.add(name)
        return self.add_parser(name, help=_MODULE_COMMANDS[name][1])

    def load(self, name: str) -> argparse.ArgumentParser:
        """The parser of ``name``, with its arguments (imports the module the first time)."""
        parser = self._name_parser_map[name]
        if name in self._pending:
            self._pending.discard(name)
            module = importlib.import_module(_MODULE_COMMANDS[name][0])
            module.add_subparser(_FillIn(name, parser))
        return parser

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        if values and values[0] in self._pending:
            self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


class _FillIn:
    """Stands in for a sub-parser set: ``add_parser(name, ...)`` returns the lazy parser,
    with the description and formatter the module asked for."""

    def __init__(self, name: str, parser: argparse.ArgumentParser) -> None:
        self._name, self._parser = name, parser

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if name != self._name:
            raise ValueError(f"module of sub-command {self._name!r} registers {name!r}")
        kwargs.pop("help", None)
        for key, value in kwargs.items():
            if key not in ("description", "epilog", "formatter_class"):
                raise TypeError(f"lazy sub-command {name!r}: unsupported add_parser({key}=...)")
            setattr(self._parser, key, value)
        return self._parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arw-sv",
        description="Fair speaker verification: ECAPA-TDNN + adversarial reweighting.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the terminal")
    sub = parser.add_subparsers(action=_LazySubParsers, dest="command", required=True)
    sub.add_lazy("synth")

    from arw_sv.data import cli as data_cli  # manifest, trials: argparse only, no torch

    data_cli.add_subparsers(sub)

    p = sub.add_parser("train", help="train an extractor (ERM or ARW) from a YAML config")
    p.add_argument("config", help="YAML config, or a shipped config's name (`arw-sv configs`)")
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
    p.add_argument("checkpoint", help="training checkpoint, or speechbrain:FOLDER_OR_HUB_ID")
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
    p.set_defaults(func=_score)

    for name in ("eval", "export", "average", "bench", "demo", "configs"):
        sub.add_lazy(name)
    return parser


# Errors reported as one line instead of a traceback, besides the built-in ones in main().
_ERRORS = {
    "arw_sv.audio": "AudioError",
    "arw_sv.config": "ConfigError",
    "arw_sv.data.manifest": "ManifestError",
    "arw_sv.checkpoint": "CheckpointError",
    "arw_sv.train.step": "NonFiniteError",  # the NaN stop
}


def _loaded_errors() -> tuple[type[Exception], ...]:
    """The ``_ERRORS`` classes of the modules imported so far: a module that was never
    imported cannot have raised its error, and importing it here would import torch."""
    return tuple(
        getattr(sys.modules[module], name)
        for module, name in _ERRORS.items()
        if module in sys.modules
    )


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
    try:
        return int(args.func(args) or 0)
    except (OSError, KeyError, ValueError, *_loaded_errors()) as exc:
        print(f"arw-sv {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The ``arw-sv`` command: all of its argparse, one module per sub-command.

Start-up stays cheap (no torch) because nothing is imported before it is needed: every
sub-command is registered here by name and help only (``_MODULE_COMMANDS``); its module
(``arw_sv.cli.<name>``, argparse and printing only) is imported, and its ``add_subparser``
called, when it is chosen on the command line, and that module imports the library only
when the command runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

log = logging.getLogger("arw_sv")

# Every sub-command, in the order of ``arw-sv --help``: name -> (module whose
# ``add_subparser(subparsers)`` builds its parser, help shown by ``arw-sv --help``; tests
# check it equals the module's own).
_MODULE_COMMANDS = {
    "synth": (
        "arw_sv.cli.synth",
        "generate the built-in synthetic VoxCeleb1-style speaker corpus",
    ),
    "manifest": (
        "arw_sv.cli.manifest",
        "build a manifest CSV from a VoxCeleb, Kaldi, LibriSpeech, CSV, HF or Lhotse corpus",
    ),
    "trials": (
        "arw_sv.cli.trials",
        "generate a trial list from a manifest (targets, within- and cross-group non-targets)",
    ),
    "train": ("arw_sv.cli.train", "train an extractor (ERM or ARW) from a YAML config"),
    "embed": ("arw_sv.cli.embed", "embed a manifest or folder into one .npz"),
    "calibrate": (
        "arw_sv.cli.calibrate",
        "fit a score calibrator (AS-norm + FSN by default; FairCal, softcal, global) on "
        "calibration speakers",
    ),
    "score": ("arw_sv.cli.score", "cosine-score a trial list against embeddings"),
    "eval": ("arw_sv.cli.eval", "EER, minDCF and fairness report"),
    "export": (
        "arw_sv.cli.export",
        "export the extractor to ONNX or TorchScript (fbank inside, dynamic batch/length)"
        " or as a SpeechBrain pretrained folder (EncoderClassifier.from_hparams loads it)",
    ),
    "average": ("arw_sv.cli.average", "average the last N checkpoints of a run"),
    "demo": (
        "arw_sv.cli.demo",
        "synthetic corpus -> ERM -> fairness fine-tune -> EER reports side by side",
    ),
    "configs": (
        "arw_sv.cli.configs",
        "list the shipped configs, or copy one out to edit (--copy NAME DIR)",
    ),
}


def _bench_moved(args: argparse.Namespace) -> int:
    print("arw-sv bench: moved out of the library; run `python -m bench.fairness` from the "
          "repository root", file=sys.stderr)  # fmt: skip
    return 2


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
    with the description and formatter the module asked for.
    """

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
    """The ``arw-sv`` parser: ``-v`` and every sub-command, each sub-command's module
    imported only when it is the one chosen on the command line.
    """
    parser = argparse.ArgumentParser(
        prog="arw-sv",
        description="Fair speaker verification: ECAPA-TDNN + adversarial reweighting.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the terminal")
    sub = parser.add_subparsers(action=_LazySubParsers, dest="command", required=True)
    for name in _MODULE_COMMANDS:
        sub.add_lazy(name)
    p = sub.add_parser("bench", help="moved: `python -m bench.fairness` from the repository root")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_bench_moved)
    return parser


# Errors reported as one line instead of a traceback, besides the built-in ones in main().
_ERRORS = {
    "arw_sv.audio": "AudioError",
    "arw_sv.config": "ConfigError",
    "arw_sv.data.manifest": "ManifestError",
    "arw_sv.checkpoint": "CheckpointError",
    "arw_sv.train.step": "NonFiniteError",  # the NaN stop
    "arw_sv.calibration.methods": "CalibrationError",
}


def _loaded_errors() -> tuple[type[Exception], ...]:
    """The ``_ERRORS`` classes of the modules imported so far: a module that was never
    imported cannot have raised its error, and importing it here would import torch.
    """
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
    """Run ``arw-sv`` on ``argv`` (default ``sys.argv[1:]``).

    ``train`` also takes ``key=value`` overrides after its options; any other unknown
    argument is a usage error (argparse exits with status 2). An expected failure
    (``OSError``, ``KeyError``, ``ValueError`` or a package error listed in ``_ERRORS``)
    prints one ``arw-sv <command>: error: ...`` line on stderr instead of a traceback.

    Returns:
        The exit status: the sub-command's own (0 when it returns None), 2 on an expected
        failure.
    """
    parser = build_parser()
    # Overrides may also follow an option (`train cfg.yaml --quiet train.lr=0.01`).
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    # torch's deprecation notices (LeafSpec from copyreg when a TorchScript trace loads,
    # the legacy ONNX exporter) are for arw-sv's developers, not its users: in front of an
    # error line or in every `embed` they read as the problem. The library still shows them.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch(\.|$)")
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (OSError, KeyError, ValueError, *_loaded_errors()) as exc:
        print(f"arw-sv {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2

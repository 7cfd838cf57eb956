"""``arw-sv export``: the extractor as ONNX, TorchScript or a SpeechBrain folder.

Exporters, runtimes and the parity check live in :mod:`arw_sv.export` (its docstring
describes the exported graph); this module is the command line.

::

    arw-sv export runs/demo/checkpoints/step_400.pt --format onnx
    arw-sv export runs/demo/checkpoints/step_400.pt --format speechbrain --out sb_model
"""

from __future__ import annotations

import argparse

# ``arw_sv.export.FORMATS`` without importing torch for ``--help`` (a test checks they agree).
FORMATS = ("onnx", "torchscript", "speechbrain")


def run(args: argparse.Namespace) -> int:
    """``arw-sv export CHECKPOINT --format onnx|torchscript|speechbrain --out PATH``."""
    from arw_sv.export import export_checkpoint

    result = export_checkpoint(
        args.checkpoint, args.format, args.out, force=getattr(args, "force", False)
    )
    fmt, cosine = args.format, result.cosine
    reference = "SpeechBrain's EncoderClassifier" if fmt == "speechbrain" else fmt
    print(
        f"{fmt} -> {result.path} ({result.size_bytes / 2**20:.1f} MiB); min cosine, {reference} "
        f"vs arw-sv PyTorch: {cosine:.6f} on 3.0 s and 5.37 s inputs"
    )
    if cosine < 0.9999:
        print(f"arw-sv export: error: parity check failed (cosine {cosine:.6f} < 0.9999)")
        return 1
    return 0


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register ``export`` on an ``argparse`` sub-parser set (sets ``func=run``)."""
    p = subparsers.add_parser(
        "export",
        help="export the extractor to ONNX or TorchScript (fbank inside, dynamic batch/length)"
        " or as a SpeechBrain pretrained folder (EncoderClassifier.from_hparams loads it)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="training checkpoint (step_N.pt)")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument(
        "--out",
        help="output file or folder (default: beside the checkpoint, .onnx / .ts.pt / "
        ".speechbrain/)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="speechbrain: replace a non-empty --out folder (refused otherwise)",
    )
    p.set_defaults(func=run)
    return p

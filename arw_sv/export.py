"""Export the embedding extractor to ONNX and TorchScript (``arw-sv export``:
:mod:`arw_sv.cli.export`).

``--format speechbrain`` instead writes a SpeechBrain pretrained folder (the
``spkrec-ecapa-voxceleb`` layout, :mod:`arw_sv.speechbrain_folder`) that
``EncoderClassifier.from_hparams(source=folder)`` loads; it is checked against SpeechBrain's
own ``encode_batch`` before the command succeeds.

The exported graph is the whole extractor, **fbank inside**: waveforms at the model's sample
rate in, L2-normalised embeddings out, with a dynamic batch and a dynamic length::

    waveforms (B, S) float32  ->  embeddings (B, D) float32, unit norm

SpeechBrain's ``Fbank`` computes its STFT with ``torch.stft`` (complex tensors), which neither
exporter handles well, so the graph holds an STFT-free equivalent: the Hamming-windowed DFT
as a strided ``conv1d`` whose 2 x (n_fft/2 + 1) kernels are the cosine and sine rows, then the
power spectrum, the same triangular mel matrix, ``10 log10`` with SpeechBrain's ``amin`` and
``top_db`` floor, and the per-utterance mean normalisation. It matches ``FbankFrontend`` to
about 1e-3 dB (float32 rounding of the DFT), so no feature code has to be ported to the
consumer's side. The ECAPA part runs the same submodules as PyTorch; only the attentive
statistics pooling is rewritten without SpeechBrain's length mask (whose ``len(tensor)``
would freeze the batch size into a trace), which is exact for unpadded input.

Every item of a call is taken at its full length ``S``: as :class:`~arw_sv.inference.
SpeakerEncoder` does, feed items of equal length together (:class:`OnnxEncoder` and
:class:`TorchScriptEncoder` below group a padded batch by length for you). The files carry
their metadata (sample rate, embedding size, metric) as ONNX ``metadata_props`` or a
TorchScript extra file ``arw_sv.json``.

Shape legend (the package one, :mod:`arw_sv`): B batch, S samples, T frames, F mel bins, D embedding.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from arw_sv.atomic import atomic_path
from arw_sv.models.ecapa import EcapaTdnn
from arw_sv.models.exportable import (  # noqa: F401 (re-exported: the public export names)
    MIN_SECONDS,
    DftFbank,
    ExportableEncoder,
    example_input,
    metadata,
)
from arw_sv.runtime import (  # noqa: F401 (re-exported)
    ONNX_OPSET,
    GroupedRunner,
    OnnxEncoder,
    export_onnx,
    probe,
)

FORMATS = ("onnx", "torchscript", "speechbrain")
PARITY_COSINE = 0.9999  # the least cosine an export must reach against the PyTorch model


def export_torchscript(extractor: EcapaTdnn, path: str | Path) -> Path:
    """Write ``extractor`` as a traced TorchScript module (dynamic batch and length).

    The trace is checked against eager PyTorch at two other shapes before it is written.
    """
    model = ExportableEncoder(extractor).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation notice
        traced = torch.jit.trace(
            model,
            (example_input(extractor),),
            check_inputs=[(example_input(extractor, 3, 2.3),), (example_input(extractor, 1, 0.7),)],
            check_tolerance=1e-4,
        )
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(
            traced, str(tmp), _extra_files={"arw_sv.json": json.dumps(metadata(extractor))}
        )
    return path


def export(extractor: EcapaTdnn, path: str | Path, fmt: str) -> Path:
    """Export to ``fmt`` (one of :data:`FORMATS`; a ``speechbrain`` folder without a head
    here, see :func:`arw_sv.speechbrain_folder.write_folder` for one with it).
    """
    if fmt == "speechbrain":
        from arw_sv.speechbrain_folder import write_folder

        return write_folder(extractor.eval(), path)
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    extractor = extractor.eval()
    return export_onnx(extractor, path) if fmt == "onnx" else export_torchscript(extractor, path)


class TorchScriptEncoder(GroupedRunner):
    """An exported TorchScript extractor (``torch.jit.load``)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        files = {"arw_sv.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(path), map_location=device, _extra_files=files)
        self.module.eval()
        meta = json.loads(files["arw_sv.json"] or "{}")
        self.device = torch.device(device)
        self.sample_rate = int(meta.get("sample_rate", 16000))
        self.dim = int(meta.get("embedding_dim", 192))

    @torch.inference_mode()
    def _run(self, waveforms: np.ndarray) -> np.ndarray:
        return self.module(torch.from_numpy(waveforms).to(self.device)).float().cpu().numpy()


class SpeechBrainRunner(GroupedRunner):
    """A SpeechBrain folder run by SpeechBrain's own ``EncoderClassifier.encode_batch``."""

    def __init__(self, folder: str | Path) -> None:
        import tempfile

        from speechbrain.inference.speaker import EncoderClassifier

        self._cache = tempfile.TemporaryDirectory(prefix="arw_sv_sb_")
        self.model = EncoderClassifier.from_hparams(source=str(folder), savedir=self._cache.name)
        self.sample_rate = int(self.model.hparams.compute_features.compute_STFT.sample_rate)
        self.dim = int(self.model.mods.embedding_model.fc.conv.out_channels)

    @torch.inference_mode()
    def _run(self, waveforms: np.ndarray) -> np.ndarray:
        emb = self.model.encode_batch(torch.from_numpy(waveforms)).reshape(len(waveforms), -1)
        return F.normalize(emb, dim=-1).numpy()


def load_exported(path: str | Path) -> GroupedRunner:
    """An :class:`OnnxEncoder` or :class:`TorchScriptEncoder`, by file suffix."""
    return OnnxEncoder(path) if Path(path).suffix == ".onnx" else TorchScriptEncoder(path)


def parity(
    extractor: EcapaTdnn, exported: GroupedRunner, seconds: Sequence[float] = (3.0, 5.37)
) -> float:
    """Lowest cosine between exported and PyTorch embeddings on noisy tones of these lengths
    (in one padded batch, so the grouping by length is exercised too).

    The reference is the eager extractor on each item at its own length (what
    ``SpeakerEncoder`` computes; not imported here: inference and export stay side by side).
    """
    audio, lengths = probe(extractor.sample_rate, seconds)
    extractor = extractor.eval()
    with torch.inference_mode():
        reference = torch.cat(
            [extractor(audio[i : i + 1, :n]) for i, n in enumerate(lengths.tolist())]
        )
    reference = F.normalize(reference.float(), dim=-1)
    return float((reference * exported(audio, lengths)).sum(dim=-1).min())


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote and how close it is to the PyTorch model."""

    path: Path
    size_bytes: int
    cosine: float  # min cosine, exported vs arw-sv PyTorch, on 3.0 s and 5.37 s inputs


def export_checkpoint(
    checkpoint: str | Path, fmt: str, out: str | Path | None = None, *, force: bool = False
) -> ExportResult:
    """Export a training checkpoint's extractor as ``fmt`` (one of ``FORMATS``) and check it.

    ``out`` defaults to beside the checkpoint (``.onnx``, ``.ts.pt``, ``.speechbrain/``).
    The parity check runs the written file (SpeechBrain's own ``EncoderClassifier`` for a
    SpeechBrain folder) against the PyTorch extractor. A SpeechBrain folder is written as a
    whole and moved into place only once it loads and passes the check; a non-empty
    ``out`` folder is refused unless ``force``.

    Raises:
        FileExistsError: ``out`` is a non-empty folder and not ``force``.
        ValueError: the SpeechBrain folder fails the parity check (nothing is written).
    """
    from arw_sv.checkpoint import load_extractor

    extractor, _, state = load_extractor(checkpoint)
    suffix = {"onnx": ".onnx", "torchscript": ".ts.pt", "speechbrain": ".speechbrain"}[fmt]
    out = Path(out) if out else Path(checkpoint).with_suffix(suffix)
    if fmt == "speechbrain":
        from arw_sv.speechbrain_folder import write_folder

        found: dict[str, float] = {}

        def check(folder: Path) -> None:
            found["cosine"] = parity(extractor, SpeechBrainRunner(folder))
            found["size"] = sum(p.stat().st_size for p in folder.iterdir())
            if found["cosine"] < PARITY_COSINE:
                raise ValueError(
                    f"{out}: SpeechBrain's EncoderClassifier on the export disagrees with "
                    f"arw-sv (min cosine {found['cosine']:.6f} < {PARITY_COSINE}); not written"
                )

        # The AAM head goes along as SpeechBrain's classifier, its speakers as labels.
        write_folder(
            extractor,
            out,
            speakers=list(state.get("speakers", [])),
            class_vectors=state["learner"]["aam.weight"],
            force=force,
            check=check,
        )
        return ExportResult(out, int(found["size"]), found["cosine"])
    export(extractor, out, fmt)
    runner = load_exported(out) if fmt == "onnx" else TorchScriptEncoder(out)
    return ExportResult(out, out.stat().st_size, parity(extractor, runner))

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
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from arw_sv.atomic import atomic_path
from arw_sv.audio import FbankFrontend
from arw_sv.models.ecapa import EcapaTdnn
from arw_sv.models.traceable import TraceableEcapa

FORMATS = ("onnx", "torchscript", "speechbrain")
ONNX_OPSET = 18
# Shortest input the graph accepts: ECAPA's widest "same" reflect padding (4 frames) needs at
# least 5 frames, i.e. 4 hops of audio; 0.1 s leaves a margin.
MIN_SECONDS = 0.1


class DftFbank(nn.Module):
    """SpeechBrain ``Fbank`` without ``torch.stft``, plus per-utterance mean normalisation.

    Built from a :class:`~arw_sv.audio.FbankFrontend` so the window, mel matrix and dB
    settings are the ones training used.

    Shape:
        waveforms (B, S) -> feats (B, T, F), T = 1 + S // hop
    """

    def __init__(self, frontend: FbankFrontend) -> None:
        super().__init__()
        stft = frontend.fbank.compute_STFT
        mel = frontend.fbank.compute_fbanks
        if stft.win_length != stft.n_fft or not stft.center or stft.pad_mode != "constant":
            raise ValueError("DftFbank supports win_length == n_fft, centred, zero-padded STFTs")
        n_fft, bins = stft.n_fft, stft.n_fft // 2 + 1
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        n = torch.arange(n_fft, dtype=torch.float64)[None, :]
        angle = 2 * math.pi * k * n / n_fft
        window = stft.window.to(torch.float64)
        # Real and imaginary DFT rows, windowed: conv1d with stride hop is the framed DFT.
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
        self.register_buffer("basis", basis.to(torch.float32)[:, None, :], persistent=False)
        centres = mel.f_central.repeat(mel.all_freqs_mat.shape[1], 1).transpose(0, 1)
        bands = mel.band.repeat(mel.all_freqs_mat.shape[1], 1).transpose(0, 1)
        matrix = mel._create_fbank_matrix(centres, bands).to(torch.float32)  # (bins, F)
        self.register_buffer("mel", matrix, persistent=False)
        self.bins, self.pad, self.hop = bins, n_fft // 2, stft.hop_length
        self.amin, self.top_db = float(mel.amin), float(mel.top_db)
        self.db_offset = float(mel.multiplier * mel.db_multiplier)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The features :class:`~arw_sv.audio.FbankFrontend` gives unpadded items, with the
        STFT as a strided ``conv1d`` over a windowed DFT basis. Shape: (B, S) -> (B, T, F).
        """
        framed = F.pad(waveforms.unsqueeze(1), (self.pad, self.pad))
        spec = F.conv1d(framed, self.basis, stride=self.hop)  # (B, 2 * bins, T)
        real, imag = spec[:, : self.bins], spec[:, self.bins :]
        power = (real * real + imag * imag).transpose(1, 2)  # (B, T, bins)
        db = 10.0 * torch.log10(torch.clamp(power @ self.mel, min=self.amin)) - self.db_offset
        floor = db.amax(dim=(1, 2), keepdim=True) - self.top_db
        db = torch.maximum(db, floor)
        return db - db.mean(dim=1, keepdim=True)


class ExportableEncoder(nn.Module):
    """Waveforms to unit-norm embeddings in one traceable graph (fbank inside).

    Shares its parameters with ``extractor`` (no copy).

    Shape:
        waveforms (B, S) -> (B, D), L2-normalised
    """

    def __init__(self, extractor: EcapaTdnn) -> None:
        super().__init__()
        self.fbank = DftFbank(extractor.frontend)
        self.body = TraceableEcapa(extractor.ecapa)
        self.sample_rate = extractor.sample_rate
        self.embedding_dim = extractor.embedding_dim

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings of unpadded waveforms at ``sample_rate``, at least
        ``MIN_SECONDS`` long. Shape: (B, S) -> (B, D).
        """
        return F.normalize(self.body(self.fbank(waveforms)), dim=-1)


def metadata(extractor: EcapaTdnn) -> dict[str, str]:
    """What a consumer of an exported file needs to know, as strings."""
    return {
        "producer": "arw-sv",
        "sample_rate": str(extractor.sample_rate),
        "embedding_dim": str(extractor.embedding_dim),
        "metric": "cosine",
        "input": "waveforms (B, S) float32 at sample_rate, every item S samples long",
        "output": "embeddings (B, D) float32, L2-normalised",
        "fbank": "inside the graph (80-dim log-mel, per-utterance mean normalised)",
    }


def _example(extractor: EcapaTdnn, batch: int = 2, seconds: float = 1.5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    samples = int(seconds * extractor.sample_rate)
    return 0.1 * torch.randn(batch, samples, generator=generator)


def export_onnx(extractor: EcapaTdnn, path: str | Path, *, opset: int = ONNX_OPSET) -> Path:
    """Write ``extractor`` as one self-contained ONNX file (dynamic batch and length).

    Uses the ``torch.export`` based exporter (needs ``onnxscript``); weights are stored inside
    the file (no ``.data`` side file), so it is written atomically.
    """
    import onnx

    # The exporter warns that torchvision's ops are missing; this model uses none of them.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    model = ExportableEncoder(extractor).eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    samples = torch.export.Dim(
        "samples", min=int(MIN_SECONDS * extractor.sample_rate), max=2**31 - 1
    )
    path = Path(path)
    with torch.no_grad():
        program = torch.onnx.export(
            model,
            (_example(extractor),),
            input_names=["waveforms"],
            output_names=["embeddings"],
            dynamic_shapes={"waveforms": {0: batch, 1: samples}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    for key, value in metadata(extractor).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def export_torchscript(extractor: EcapaTdnn, path: str | Path) -> Path:
    """Write ``extractor`` as a traced TorchScript module (dynamic batch and length).

    The trace is checked against eager PyTorch at two other shapes before it is written.
    """
    model = ExportableEncoder(extractor).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit's deprecation notice
        traced = torch.jit.trace(
            model,
            (_example(extractor),),
            check_inputs=[(_example(extractor, 3, 2.3),), (_example(extractor, 1, 0.7),)],
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


class _GroupedRunner:
    """Runs an exported graph on a padded batch, one call per distinct length (exact)."""

    sample_rate: int
    dim: int
    metric = "cosine"

    def _run(self, waveforms: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(
        self,
        waveforms: torch.Tensor | np.ndarray,
        lengths: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Embed zero-padded ``waveforms`` with absolute ``lengths``.

        Shape:
            waveforms (B, S), lengths (B,) -> (B, D), L2-normalised
        """
        audio = np.asarray(torch.as_tensor(waveforms, dtype=torch.float32))
        if audio.ndim == 1:
            audio = audio[None]
        batch, samples = audio.shape
        lengths = np.full(batch, samples) if lengths is None else np.asarray(lengths)
        out = np.empty((batch, self.dim), dtype=np.float32)
        for length in np.unique(lengths):
            rows = np.flatnonzero(lengths == length)
            out[rows] = self._run(np.ascontiguousarray(audio[rows, :length]))
        return torch.from_numpy(out)


class OnnxEncoder(_GroupedRunner):
    """An exported ONNX extractor run by onnxruntime (CPU unless ``providers`` says otherwise).

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (0: onnxruntime's default).
        providers: onnxruntime execution providers.
    """

    def __init__(
        self,
        path: str | Path,
        threads: int = 0,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        meta = self.session.get_modelmeta().custom_metadata_map
        self.sample_rate = int(meta.get("sample_rate", 16000))
        self.dim = int(meta.get("embedding_dim", self.session.get_outputs()[0].shape[-1]))

    def _run(self, waveforms: np.ndarray) -> np.ndarray:
        return self.session.run(["embeddings"], {"waveforms": waveforms})[0]


class TorchScriptEncoder(_GroupedRunner):
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


class SpeechBrainRunner(_GroupedRunner):
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


def load_exported(path: str | Path) -> _GroupedRunner:
    """An :class:`OnnxEncoder` or :class:`TorchScriptEncoder`, by file suffix."""
    return OnnxEncoder(path) if Path(path).suffix == ".onnx" else TorchScriptEncoder(path)


def parity(
    extractor: EcapaTdnn, exported: _GroupedRunner, seconds: Sequence[float] = (3.0, 5.37)
) -> float:
    """Lowest cosine between exported and PyTorch embeddings on noisy tones of these lengths
    (in one padded batch, so the grouping by length is exercised too).

    The reference is the eager extractor on each item at its own length (what
    ``SpeakerEncoder`` computes; not imported here: inference and export stay side by side).
    """
    rate = extractor.sample_rate
    generator = torch.Generator().manual_seed(1)
    lengths = [int(s * rate) for s in seconds]
    audio = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        t = torch.arange(n) / rate
        tone = 0.3 * torch.sin(2 * math.pi * (120 + 40 * i) * t)
        audio[i, :n] = tone + 0.05 * torch.randn(n, generator=generator)
    extractor = extractor.eval()
    with torch.inference_mode():
        reference = torch.cat([extractor(audio[i : i + 1, :n]) for i, n in enumerate(lengths)])
    reference = F.normalize(reference.float(), dim=-1)
    return float((reference * exported(audio, lengths)).sum(dim=-1).min())


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_checkpoint` wrote and how close it is to the PyTorch model."""

    path: Path
    size_bytes: int
    cosine: float  # min cosine, exported vs arw-sv PyTorch, on 3.0 s and 5.37 s inputs


def export_checkpoint(
    checkpoint: str | Path, fmt: str, out: str | Path | None = None
) -> ExportResult:
    """Export a training checkpoint's extractor as ``fmt`` (one of ``FORMATS``) and check it.

    ``out`` defaults to beside the checkpoint (``.onnx``, ``.ts.pt``, ``.speechbrain/``).
    The parity check runs the written file (SpeechBrain's own ``EncoderClassifier`` for a
    SpeechBrain folder) against the PyTorch extractor.
    """
    from arw_sv.checkpoint import load_extractor

    extractor, _, state = load_extractor(checkpoint)
    suffix = {"onnx": ".onnx", "torchscript": ".ts.pt", "speechbrain": ".speechbrain"}[fmt]
    out = Path(out) if out else Path(checkpoint).with_suffix(suffix)
    if fmt == "speechbrain":
        from arw_sv.speechbrain_folder import write_folder

        # The AAM head goes along as SpeechBrain's classifier, its speakers as labels.
        write_folder(
            extractor,
            out,
            speakers=list(state.get("speakers", [])),
            class_vectors=state["learner"]["aam.weight"],
        )
        runner: _GroupedRunner = SpeechBrainRunner(out)
        size = sum(p.stat().st_size for p in out.iterdir())
    else:
        export(extractor, out, fmt)
        runner = load_exported(out) if fmt == "onnx" else TorchScriptEncoder(out)
        size = out.stat().st_size
    return ExportResult(out, size, parity(extractor, runner))

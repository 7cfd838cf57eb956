"""The extractor as one traceable graph, fbank inside: what every exported or compiled form runs.

``ExportableEncoder`` holds the STFT-free fbank (:class:`DftFbank`) and the traceable ECAPA
(:class:`~arw_sv.models.traceable.TraceableEcapa`): waveforms at the model's sample rate in,
L2-normalised embeddings out, with a dynamic batch and length. It lives next to the model,
below its two users (:mod:`arw_sv.runtime`, which ``SpeakerEncoder`` uses for ONNX Runtime,
and :mod:`arw_sv.export`, which writes files); :mod:`arw_sv.export`'s docstring says why the
fbank is rewritten and how close it is.

Shape legend (the package one, :mod:`arw_sv`): B batch, S samples, T frames, F mel bins,
D embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from arw_sv.audio import FbankFrontend
from arw_sv.models.ecapa import EcapaTdnn
from arw_sv.models.traceable import TraceableEcapa

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


def example_input(extractor: EcapaTdnn, batch: int = 2, seconds: float = 1.5) -> torch.Tensor:
    """Fixed quiet noise to trace or export with. Shape: -> (batch, seconds x sample_rate)."""
    generator = torch.Generator().manual_seed(0)
    samples = int(seconds * extractor.sample_rate)
    return 0.1 * torch.randn(batch, samples, generator=generator)

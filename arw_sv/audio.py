"""Audio reading, cropping and the log-mel filterbank front end.

Shape legend: B batch, S samples, T frames, F mel bins.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

log = logging.getLogger(__name__)


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and why."""


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """Return ``(frames, sample_rate, channels)`` without decoding the samples."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError variants
        raise AudioError(f"{path}: cannot read audio header ({exc})") from None
    return info.frames, info.samplerate, info.channels


def read_audio(
    path: str | Path,
    sample_rate: int = 16000,
    *,
    start: int = 0,
    frames: int = -1,
) -> np.ndarray:
    """Read a mono float32 waveform at ``sample_rate``.

    Stereo files are down-mixed and other sample rates resampled (both logged once per call),
    so callers always get what the model expects.

    Args:
        path: audio file (anything libsndfile reads: wav, flac, ogg).
        sample_rate: the rate the caller needs.
        start: first sample to read (in the file's own rate).
        frames: number of samples to read (-1: to the end).

    Shape:
        returns (S,)

    Raises:
        AudioError: unreadable, corrupt or empty file, naming it.
    """
    try:
        data, file_rate = sf.read(
            str(path), start=start, frames=frames, dtype="float32", always_2d=True
        )
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no samples (empty or truncated file)")
    if data.shape[1] > 1:
        log.info("%s: %d channels, down-mixed to mono", path, data.shape[1])
        data = data.mean(axis=1, keepdims=True)
    wav = np.ascontiguousarray(data[:, 0])
    if file_rate != sample_rate:
        import torchaudio.functional as taf

        log.info("%s: resampled from %d Hz to %d Hz", path, file_rate, sample_rate)
        wav = taf.resample(torch.from_numpy(wav), file_rate, sample_rate).numpy()
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return wav


def crop_or_repeat(wav: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``length`` samples; shorter clips are tiled by repetition first.

    Shape:
        wav (S,) -> (length,)
    """
    if wav.shape[0] < length:
        wav = np.tile(wav, math.ceil(length / wav.shape[0]))
    start = int(rng.integers(0, wav.shape[0] - length + 1))
    return wav[start : start + length]


class FbankFrontend(nn.Module):
    """80-dim log-mel filterbank (SpeechBrain ``Fbank``) with per-utterance mean normalisation.

    The mean is taken over each item's own frames only, so zero padding does not shift it.

    Shape:
        waveforms (B, S), lengths (B,) absolute samples or None -> feats (B, T, F),
        frame_lengths (B,) absolute frames.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_length_ms: float = 25.0,
        hop_length_ms: float = 10.0,
    ) -> None:
        super().__init__()
        from speechbrain.lobes.features import Fbank

        self.sample_rate = sample_rate
        self.hop = int(round(sample_rate * hop_length_ms / 1000))
        self.fbank = Fbank(
            sample_rate=sample_rate,
            n_mels=n_mels,
            win_length=win_length_ms,
            hop_length=hop_length_ms,
            n_fft=int(round(sample_rate * win_length_ms / 1000)),
        )

    def frame_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames an item of ``lengths`` samples fills (centred STFT: 1 + S // hop)."""
        return torch.div(lengths, self.hop, rounding_mode="floor") + 1

    @torch.no_grad()
    def forward(
        self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long, device=waveforms.device)
        with torch.autocast(waveforms.device.type, enabled=False):
            feats = self.fbank(waveforms.float())
        frames = self.frame_lengths(lengths).clamp(max=feats.shape[1])
        mask = torch.arange(feats.shape[1], device=feats.device)[None, :] < frames[:, None]
        mask = mask.unsqueeze(-1).to(feats.dtype)
        mean = (feats * mask).sum(dim=1, keepdim=True) / frames.view(-1, 1, 1).to(feats.dtype)
        return (feats - mean) * mask, frames

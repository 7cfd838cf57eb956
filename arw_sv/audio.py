"""Audio reading, cropping and the log-mel filterbank front end.

Shape legend (the package one, :mod:`arw_sv`): B batch, S samples, T frames, F mel bins.
"""

from __future__ import annotations

import functools
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


# The shortest usable utterance. ECAPA's reflect-padded convolutions need more frames than
# their widest padding, and a clip under 0.1 s (10 fbank frames) carries no speaker
# identity worth an embedding; both training and extraction refuse it, naming the file.
MIN_SECONDS = 0.1
# Peak amplitude below which a file is reported as silent (-100 dBFS).
SILENCE_PEAK = 1e-5


def _exists(path: str | Path) -> None:
    # libsndfile reports a missing file as "System error."; say what it is.
    if not Path(path).is_file():
        raise AudioError(f"{path}: no such file")


def check_usable(
    wav: np.ndarray, path: str | Path, sample_rate: int, *, warn_silent: bool = True
) -> np.ndarray:
    """Refuse a clip shorter than :data:`MIN_SECONDS`; warn (naming it) when it is silent.

    Shape:
        wav (S,) -> (S,)

    Raises:
        AudioError: too short, naming the file and its length.
    """
    if wav.shape[0] < MIN_SECONDS * sample_rate:
        raise AudioError(
            f"{path}: {wav.shape[0] / sample_rate:.3f} s is shorter than the minimum "
            f"{MIN_SECONDS:g} s"
        )
    if warn_silent and float(np.abs(wav).max()) < SILENCE_PEAK:
        log.warning("%s: silent (peak below %g); its embedding is meaningless", path, SILENCE_PEAK)
    return wav


def _wav_declared_frames(path: str | Path) -> int | None:
    """Frames a PCM WAV's ``data`` chunk declares (libsndfile silently trims to the file)."""
    if Path(path).suffix.lower() != ".wav":
        return None
    with open(path, "rb") as handle:
        head = handle.read(4096)
    at = head.find(b"data", 12)
    if head[:4] != b"RIFF" or at < 0 or len(head) < at + 8:
        return None
    fmt = head.find(b"fmt ", 12)
    if fmt < 0 or len(head) < fmt + 24:
        return None
    block_align = int.from_bytes(head[fmt + 20 : fmt + 22], "little")
    size = int.from_bytes(head[at + 4 : at + 8], "little")
    return size // block_align if block_align else None


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """Return ``(frames, sample_rate, channels)`` without decoding the samples."""
    _exists(path)
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
        AudioError: missing, unreadable, corrupt or empty file, naming it.
    """
    _exists(path)
    try:
        data, file_rate = sf.read(
            str(path), start=start, frames=frames, dtype="float32", always_2d=True
        )
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({exc})") from None
    if data.shape[0] == 0:
        raise AudioError(f"{path}: no samples (empty or truncated file)")
    if start == 0 and frames < 0:
        declared = _wav_declared_frames(path)
        if declared is not None and data.shape[0] < declared:
            log.warning(
                "%s: truncated (header says %d samples, %d read)", path, declared, data.shape[0]
            )
    if data.shape[1] > 1:
        log.info("%s: %d channels, down-mixed to mono", path, data.shape[1])
        data = data.mean(axis=1, keepdims=True)
    wav = np.ascontiguousarray(data[:, 0])
    if file_rate != sample_rate:
        log.info("%s: resampled from %d Hz to %d Hz", path, file_rate, sample_rate)
        wav = resample(wav, file_rate, sample_rate)
    if not np.isfinite(wav).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return wav


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``wav`` at ``to_rate``: ``torchaudio.functional.resample``'s windowed sinc, exactly,
    with its kernel built once per pair of rates (building it is most of the cost on a
    short clip).

    Shape:
        wav (S,) -> (S * to_rate / from_rate,)
    """
    if from_rate == to_rate:
        return wav
    from torchaudio.functional.functional import _apply_sinc_resample_kernel

    gcd = math.gcd(from_rate, to_rate)
    kernel, width = _resample_kernel(from_rate, to_rate)
    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    return _apply_sinc_resample_kernel(x, from_rate, to_rate, gcd, kernel, width).numpy()


@functools.lru_cache(maxsize=8)
def _resample_kernel(from_rate: int, to_rate: int):
    """The float32 kernel ``torchaudio.functional.resample`` builds (default arguments)."""
    from torchaudio.functional.functional import _get_sinc_resample_kernel

    gcd = math.gcd(from_rate, to_rate)
    return _get_sinc_resample_kernel(
        from_rate,
        to_rate,
        gcd,
        6,
        0.99,
        "sinc_interp_hann",
        None,
        torch.device("cpu"),
        torch.float32,
    )


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
        """Features of a padded batch, and how many frames of each are real.

        Computed in float32 even under autocast; frames past an item's length are zero.

        Args:
            waveforms: audio at ``sample_rate``, zero-padded after each item's end.
            lengths: absolute samples of each item; ``None``: every item fills all S.

        Returns:
            ``(feats, frame_lengths)``: mean-normalised log-mel features and the frame
            count of each item (at most T).

        Shape:
            waveforms (B, S), lengths (B,) -> feats (B, T, F), frame_lengths (B,)
        """
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

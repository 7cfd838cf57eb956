"""Training crops and full-utterance loading as torch datasets.

Shape legend (the package one, :mod:`arw_sv`): B batch, S samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from arw_sv.audio import audio_info, check_usable, crop_or_repeat, read_audio
from arw_sv.data.manifest import Manifest

_AUGMENT_STREAM = 1  # the augmenter's RNG is keyed (crop seed, 1): independent of the crop


class CropDataset(Dataset):
    """Random fixed-length crops, indexed by ``(utterance index, crop seed[, speed index])``.

    The crop position comes from the seed the sampler attached, not from a global RNG, so
    crops are identical across loader workers, ranks and resumes. Clips shorter than the
    crop are tiled by repetition (as SpeechBrain and WeSpeaker do).

    With ``speeds``, a key's third field ``k > 0`` plays the crop at ``speeds[k - 1]`` times
    the speed and labels it as speaker class ``speaker + k * n_speakers`` (WeSpeaker's
    convention). With an ``augmenter``, the crop is then corrupted by it, from an RNG keyed
    by the crop seed.

    Args:
        manifest: the training utterances.
        crop_seconds: crop length.
        sample_rate: the rate crops are returned at.
        augmenter: an :class:`arw_sv.augment.Augmenter`, or None.
        speeds: the perturbed speed factors (speed index 1, 2, ...), e.g. ``(0.9, 1.1)``.
    """

    def __init__(
        self,
        manifest: Manifest,
        crop_seconds: float,
        sample_rate: int = 16000,
        *,
        augmenter=None,
        speeds: Sequence[float] = (),
    ) -> None:
        self.manifest = manifest
        self.labels = manifest.speaker_indices()
        self.n_speakers = len(manifest.speakers)
        self.crop = int(round(crop_seconds * sample_rate))
        self.sample_rate = sample_rate
        self.augmenter = augmenter if augmenter is not None and augmenter.enabled else None
        self.speeds = tuple(speeds)

    def __len__(self) -> int:
        return len(self.manifest)

    def _window(self, index: int, length: int, rng: np.random.Generator) -> np.ndarray:
        utt = self.manifest[index]
        # Read only the window we need when the file is at our rate and long enough (saves
        # decoding time); the window is in samples at our rate, so only a file at that rate.
        # A Kaldi segment starts `utt.start` seconds into its recording (0 for whole files).
        _frames, file_rate, _channels = audio_info(utt.path)
        total = int(round(utt.duration * file_rate))
        offset = int(round(utt.start * file_rate))
        if file_rate == self.sample_rate and total > length + 1:
            start = int(rng.integers(0, total - length))
            wav = read_audio(utt.path, self.sample_rate, start=offset + start, frames=length)
            if wav.shape[0] != length:  # header and data disagree: fall back
                wav = crop_or_repeat(self._whole(utt, offset, total), length, rng)
        else:
            # Another rate: read it (or its segment) whole, resampled (logged), then crop.
            wav = crop_or_repeat(self._whole(utt, offset, total), length, rng)
        return wav

    def _whole(self, utt, offset: int, total: int) -> np.ndarray:
        """The whole file, or its segment (offset and total in the file's own samples)."""
        if utt.start:
            wav = read_audio(utt.path, self.sample_rate, start=offset, frames=total)
        else:
            wav = read_audio(utt.path, self.sample_rate)
        return check_usable(wav, utt.path, self.sample_rate, warn_silent=False)

    def __getitem__(self, key: tuple[int, ...]) -> tuple[torch.Tensor, int, int]:
        index, seed = int(key[0]), int(key[1])
        speed_index = int(key[2]) if len(key) > 2 else 0
        rng = np.random.default_rng(seed)
        if speed_index == 0:
            wav = self._window(index, self.crop, rng)
        else:
            from arw_sv.augment import speed_perturb

            speed = self.speeds[speed_index - 1]
            # Enough source samples that the sped-up (or slowed) crop still fills `crop`.
            wav = self._window(index, math.ceil(self.crop * speed) + 1, rng)
            wav = speed_perturb(wav, speed, self.sample_rate)[: self.crop]
            if wav.shape[0] < self.crop:
                wav = np.pad(wav, (0, self.crop - wav.shape[0]))
        if self.augmenter is not None:
            wav = self.augmenter(wav, np.random.default_rng([seed, _AUGMENT_STREAM]))
        label = self.labels[index] + speed_index * self.n_speakers
        return torch.from_numpy(np.ascontiguousarray(wav)), label, index


def collate_crops(
    items: list[tuple[torch.Tensor, int, int]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack crops into ``(waveforms (B, S), speaker labels (B,), utterance indices (B,))``."""
    wavs, labels, indices = zip(*items, strict=True)
    return (
        torch.stack(wavs),
        torch.tensor(labels, dtype=torch.long),
        torch.tensor(indices, dtype=torch.long),
    )

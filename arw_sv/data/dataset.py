"""Training crops and full-utterance loading as torch datasets.

Shape legend: B batch, S samples.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from arw_sv.audio import crop_or_repeat, read_audio
from arw_sv.data.manifest import Manifest


class CropDataset(Dataset):
    """Random fixed-length crops, indexed by ``(utterance index, crop seed)``.

    The crop position comes from the seed the sampler attached, not from a global RNG, so
    crops are identical across loader workers and across a resume. Clips shorter than the
    crop are tiled by repetition (as SpeechBrain and WeSpeaker do).
    """

    def __init__(self, manifest: Manifest, crop_seconds: float, sample_rate: int = 16000) -> None:
        self.manifest = manifest
        self.labels = manifest.speaker_indices()
        self.crop = int(round(crop_seconds * sample_rate))
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        index, seed = key
        utt = self.manifest[index]
        rng = np.random.default_rng(seed)
        # Read only the window we need when the file is long enough (saves decoding time).
        total = int(round(utt.duration * self.sample_rate))
        if total > self.crop + 1:
            start = int(rng.integers(0, total - self.crop))
            wav = read_audio(utt.path, self.sample_rate, start=start, frames=self.crop)
            if wav.shape[0] != self.crop:  # header and data disagree, or resampled: fall back
                wav = crop_or_repeat(read_audio(utt.path, self.sample_rate), self.crop, rng)
        else:
            wav = crop_or_repeat(read_audio(utt.path, self.sample_rate), self.crop, rng)
        return torch.from_numpy(np.ascontiguousarray(wav)), self.labels[index], index


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

"""``SpeakerEncoder``: the public inference surface (waveforms in, unit-norm embeddings out).

Shape legend: B batch, S samples, D embedding.

Example:
    >>> enc = SpeakerEncoder.from_checkpoint("runs/demo/erm/checkpoints/step_800.pt")
    >>> enc.sample_rate, enc.dim, enc.metric
    (16000, 192, 'cosine')
    >>> emb = enc(torch.randn(2, 32000))          # (2, 192), L2-normalised
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from arw_sv.audio import read_audio
from arw_sv.config import config_from_dict
from arw_sv.models.ecapa import EcapaTdnn
from arw_sv.train.checkpoint import load_checkpoint


class SpeakerEncoder:
    """Immutable speaker-embedding extractor; never holds the training head or adversary.

    Items are embedded at their own length: a batch is split into groups of equal length,
    so no item ever sees another's padding and a padded item's embedding equals its
    unpadded one.

    Args:
        extractor: a trained :class:`~arw_sv.models.ecapa.EcapaTdnn`.
        device: where to run it.
        max_batch: largest number of equal-length items per forward pass.
    """

    metric = "cosine"

    def __init__(
        self, extractor: EcapaTdnn, device: str | torch.device = "cpu", max_batch: int = 64
    ):
        self._device = torch.device(device)
        self._extractor = extractor.to(self._device).eval()
        for p in self._extractor.parameters():
            p.requires_grad_(False)
        self._max_batch = max_batch

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu"
    ) -> SpeakerEncoder:
        """Rebuild the extractor a training checkpoint describes and load its weights."""
        from arw_sv.train.build import extractor_from_config

        state = load_checkpoint(path)
        cfg = config_from_dict(state["config"])
        extractor = extractor_from_config(cfg.model, cfg.features)
        extractor.load_state_dict(state["extractor"])
        return cls(extractor, device=device)

    @property
    def sample_rate(self) -> int:
        return self._extractor.sample_rate

    @property
    def dim(self) -> int:
        return self._extractor.embedding_dim

    @property
    def device(self) -> torch.device:
        return self._device

    def __setattr__(self, name: str, value) -> None:
        if hasattr(self, "_max_batch"):
            raise AttributeError("SpeakerEncoder is immutable")
        super().__setattr__(name, value)

    @torch.inference_mode()
    def __call__(
        self,
        waveforms: torch.Tensor | np.ndarray,
        lengths: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Embed a batch of waveforms at ``sample_rate``.

        Args:
            waveforms: float audio, zero-padded on the right.
            lengths: absolute lengths in samples (None: all ``S``).

        Shape:
            waveforms (B, S), lengths (B,) -> (B, D), L2-normalised, on CPU.
        """
        waveforms = torch.as_tensor(waveforms, dtype=torch.float32)
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (B, S), got shape {tuple(waveforms.shape)}")
        batch, samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.shape != (batch,) or (lengths < 1).any() or (lengths > samples).any():
            raise ValueError(f"lengths must be (B,) in [1, {samples}], got {lengths.tolist()}")
        out = torch.empty(batch, self.dim)
        for length in lengths.unique().tolist():
            rows = torch.nonzero(lengths == length).squeeze(1)
            for chunk in rows.split(self._max_batch):
                audio = waveforms[chunk, :length].to(self._device)
                out[chunk] = self._extractor(audio).float().cpu()
        return F.normalize(out, dim=-1)

    def embed_file(self, path: str | Path) -> torch.Tensor:
        """Embed a whole file (read with soundfile, down-mixed and resampled if needed).

        Shape:
            -> (D,)
        """
        return self(torch.from_numpy(read_audio(path, self.sample_rate)))[0]

    def embed_files(self, paths: Iterable[str | Path], *, progress: bool = False) -> np.ndarray:
        """Embed many files, one forward pass each (whole utterances, no crops).

        Shape:
            -> (N, D) float32, in the order of ``paths``.

        Raises:
            AudioError: a file cannot be read (names it).
        """
        from tqdm import tqdm

        paths = list(paths)
        out = np.empty((len(paths), self.dim), dtype=np.float32)
        for i, path in enumerate(tqdm(paths, desc="embed", unit="utt", disable=not progress)):
            out[i] = self.embed_file(path).numpy()
        return out

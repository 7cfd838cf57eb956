"""ECAPA-TDNN speaker-embedding extractor (SpeechBrain's implementation) with presets.

Shape legend (the package one, :mod:`arw_sv`): B batch, S samples, T frames, F mel bins, D embedding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from arw_sv.audio import FbankFrontend

if TYPE_CHECKING:
    from arw_sv.config import FeatureConfig, ModelConfig

# Channel widths of the five TDNN/SE-Res2Net layers. c512/c1024 are the published ECAPA
# sizes (Desplanques et al., 2020); c256 is the CPU demo size; tiny is for tests.
PRESETS: dict[str, tuple[int, ...]] = {
    "tiny": (32, 32, 32, 32, 96),
    "c256": (256, 256, 256, 256, 768),
    "c512": (512, 512, 512, 512, 1536),
    "c1024": (1024, 1024, 1024, 1024, 3072),
}


class EcapaTdnn(nn.Module):
    """Fbank front end + ECAPA-TDNN: waveforms in, embeddings (not normalised) out.

    Shape:
        waveforms (B, S), lengths (B,) absolute samples or None -> (B, D)
    """

    def __init__(
        self,
        channels: tuple[int, ...] = PRESETS["c512"],
        embedding_dim: int = 192,
        attention_channels: int = 128,
        sample_rate: int = 16000,
        n_mels: int = 80,
        win_length_ms: float = 25.0,
        hop_length_ms: float = 10.0,
        *,
        kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1),
        dilations: tuple[int, ...] = (1, 2, 3, 4, 1),
        res2net_scale: int | None = None,
        se_channels: int | None = None,
        global_context: bool = True,
    ) -> None:
        super().__init__()
        from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

        if len(channels) != 5:
            raise ValueError(f"model.channels needs 5 widths, got {list(channels)}")
        # The keyword-only settings exist for SpeechBrain folders whose hyperparams.yaml
        # departs from the published ECAPA (arw_sv.speechbrain_folder); configs never set them.
        scale = res2net_scale or (8 if min(channels[:4]) >= 64 else 4)
        if any(c % scale for c in channels[:4]):
            raise ValueError(f"model.channels {list(channels)} must be divisible by {scale}")
        self.sample_rate = sample_rate
        self.embedding_dim = embedding_dim
        self.frontend = FbankFrontend(sample_rate, n_mels, win_length_ms, hop_length_ms)
        self.ecapa = ECAPA_TDNN(
            input_size=n_mels,
            lin_neurons=embedding_dim,
            channels=list(channels),
            kernel_sizes=list(kernel_sizes),
            dilations=list(dilations),
            attention_channels=attention_channels,
            res2net_scale=scale,
            se_channels=se_channels or min(128, channels[0]),
            global_context=global_context,
        )

    def embed_features(
        self, feats: torch.Tensor, frame_lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ECAPA on ready features. Shape: (B, T, F), (B,) frames -> (B, D)."""
        relative = None
        if frame_lengths is not None:
            relative = frame_lengths.to(feats.dtype) / feats.shape[1]
        return self.ecapa(feats, relative).squeeze(1)

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of a padded batch of waveforms, not normalised.

        ``lengths`` (absolute samples) keeps the padding out of the features and the
        pooling; ``None``: every item fills all S.

        Shape:
            waveforms (B, S), lengths (B,) -> (B, D)
        """
        feats, frames = self.frontend(waveforms, lengths)
        return self.embed_features(feats, frames if lengths is not None else None)


def build_extractor(
    preset: str = "c512",
    channels: tuple[int, ...] = (),
    embedding_dim: int = 192,
    attention_channels: int = 128,
    sample_rate: int = 16000,
    n_mels: int = 80,
    win_length_ms: float = 25.0,
    hop_length_ms: float = 10.0,
    se_channels: int = 0,
    res2net_scale: int = 0,
    attention_exact: bool = False,
) -> EcapaTdnn:
    """Build an ECAPA-TDNN from a preset name (or explicit channel widths).

    As configs have always built it, the attention width is at most the last channel width
    (``min(attention_channels, channels[-1])``) unless ``attention_exact``; 0 for ``se_channels`` means
    ``min(128, channels[0])`` and for ``res2net_scale`` 8 (4 below 64 channels). A
    SpeechBrain folder's own values go to :class:`EcapaTdnn` unchanged.
    """
    if preset not in PRESETS:
        raise ValueError(f"model.preset {preset!r} is not one of {', '.join(PRESETS)}")
    widths = tuple(channels) or PRESETS[preset]
    return EcapaTdnn(
        channels=widths,
        embedding_dim=embedding_dim,
        attention_channels=attention_channels
        if attention_exact
        else min(attention_channels, widths[-1]),
        sample_rate=sample_rate,
        n_mels=n_mels,
        win_length_ms=win_length_ms,
        hop_length_ms=hop_length_ms,
        se_channels=se_channels or None,
        res2net_scale=res2net_scale or None,
    )


def extractor_from_config(model: ModelConfig, features: FeatureConfig) -> EcapaTdnn:
    """The embedding extractor a config describes (also used to rebuild it for inference)."""
    return build_extractor(
        preset=model.preset,
        channels=model.channels,
        embedding_dim=model.embedding_dim,
        attention_channels=model.attention_channels,
        attention_exact=model.attention_exact,
        se_channels=model.se_channels,
        res2net_scale=model.res2net_scale,
        sample_rate=features.sample_rate,
        n_mels=features.n_mels,
        win_length_ms=features.win_length_ms,
        hop_length_ms=features.hop_length_ms,
    )

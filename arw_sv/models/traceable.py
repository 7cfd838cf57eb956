"""SpeechBrain's ECAPA-TDNN forward rewritten so that a trace keeps batch and length dynamic.

Used by both users of a trained extractor: ``inference`` (the frozen CPU trace inside
``SpeakerEncoder``) and ``export`` (ONNX and TorchScript files), so it lives next to the
model, below both.

Shape legend (the package one, :mod:`arw_sv`): B batch, H channels, T frames, F mel bins,
D embedding.
"""

from __future__ import annotations

import torch
from torch import nn


def unmasked_pooling(asp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """SpeechBrain's attentive statistics pooling for unpadded input, without the mask.

    Shape: (B, H, T) -> (B, 2H, 1)
    """
    if asp.global_context:
        mean = x.mean(dim=2, keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=2, keepdim=True).clamp(asp.eps))
        attn = torch.cat([x, mean.expand_as(x), std.expand_as(x)], dim=1)
    else:
        attn = x
    attn = torch.softmax(asp.conv(asp.tanh(asp.tdnn(attn))), dim=2)
    mean = (attn * x).sum(dim=2)
    std = torch.sqrt((attn * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2).clamp(asp.eps))
    return torch.cat([mean, std], dim=1).unsqueeze(2)


class TraceableEcapa(nn.Module):
    """SpeechBrain's ECAPA-TDNN forward for unpadded input, written so a trace stays dynamic.

    Calls the extractor's own blocks (shared parameters, no copy); only the pooling is the
    unmasked rewrite :func:`unmasked_pooling`. Equal to ``ECAPA_TDNN(feats)`` up to float rounding.

    Shape:
        feats (B, T, F) -> (B, D), not normalised
    """

    def __init__(self, ecapa: nn.Module) -> None:
        super().__init__()
        self.ecapa = ecapa

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """Embeddings of unpadded features, not normalised. Shape: (B, T, F) -> (B, D)."""
        x = feats.transpose(1, 2)  # (B, F, T)
        outputs = []
        for block in self.ecapa.blocks:
            x = block(x)
            outputs.append(x)
        x = self.ecapa.mfa(torch.cat(outputs[1:], dim=1))
        x = self.ecapa.fc(self.ecapa.asp_bn(unmasked_pooling(self.ecapa.asp, x)))
        return x.squeeze(2)

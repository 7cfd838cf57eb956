"""Additive angular margin (AAM, ArcFace) softmax head with a per-sample loss.

Shape legend (the package one, :mod:`arw_sv`): B batch, D embedding, M classes (training
speakers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from arw_sv.config import LossConfig


class AAMSoftmax(nn.Module):
    """AAM-softmax: logits ``s * cos(theta_y + m)`` for the true class, ``s * cos(theta_j)``
    for the others (Deng et al., 2019; as SpeechBrain's ``AdditiveAngularMargin``).

    The margin is an attribute the trainer sets from a :class:`MarginSchedule` (warm-up),
    not a parameter. Past
    ``theta + m > pi`` the target logit would rise again, so there it continues as
    ``cos(theta) - m sin(m)`` (the usual "easy margin off" fix), keeping it monotonic.

    Shape:
        embeddings (B, D), labels (B,) -> per-sample losses (B,)
    """

    def __init__(
        self, embedding_dim: int, n_classes: int, margin: float = 0.2, scale: float = 30.0
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, embedding_dim))
        nn.init.xavier_normal_(self.weight)
        self.margin = margin
        self.scale = scale

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled margin logits. Shape: (B, D), (B,) -> (B, M)."""
        cosine = F.linear(F.normalize(embeddings, dim=-1), F.normalize(self.weight, dim=-1))
        cosine = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
        m = self.margin
        sine = torch.sqrt(1.0 - cosine * cosine)
        with_margin = cosine * math.cos(m) - sine * math.sin(m)
        # Beyond theta > pi - m, cos(theta + m) would increase again: use a linear fallback.
        with_margin = torch.where(
            cosine > math.cos(math.pi - m), with_margin, cosine - math.sin(math.pi - m) * m
        )
        target = F.one_hot(labels, cosine.shape[-1]).to(torch.bool)
        return self.scale * torch.where(target, with_margin, cosine)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of each sample on the margin logits, unreduced.

        Shape:
            embeddings (B, D), labels (B,) -> (B,)
        """
        return F.cross_entropy(self.logits(embeddings, labels), labels, reduction="none")

    def extra_repr(self) -> str:
        """The sizes, margin and scale, for the module's ``repr``."""
        n, d = self.weight.shape
        return f"embedding_dim={d}, n_classes={n}, margin={self.margin}, scale={self.scale}"


def margin_at(step: int, final_margin: float, start: int, ramp_steps: int) -> float:
    """Margin warm-up: 0 before ``start``, linear to ``final_margin`` over ``ramp_steps``."""
    if ramp_steps <= 0:
        return final_margin if step >= start else 0.0
    return final_margin * min(1.0, max(0.0, (step - start) / ramp_steps))


@dataclass(frozen=True)
class MarginSchedule:
    """The AAM margin as a function of the training step (WeSpeaker's margin scheduler).

    0 before ``start``, then linear to ``final`` over ``ramp_steps`` (a jump at ``start``
    when ``ramp_steps`` is 0). Holds no state: the margin at a step is recomputed, so a
    resumed run needs nothing in its checkpoint for it.

    Example:
        >>> schedule = MarginSchedule(final=0.2, start=10, ramp_steps=20)
        >>> schedule(0), schedule(20), schedule(30)
        (0.0, 0.1, 0.2)
    """

    final: float
    start: int = 0
    ramp_steps: int = 0

    @classmethod
    def from_config(cls, loss: LossConfig) -> MarginSchedule:
        """``loss.aam_margin`` reached over ``loss.margin_warmup_steps`` from
        ``loss.margin_warmup_start``.
        """
        return cls(loss.aam_margin, loss.margin_warmup_start, loss.margin_warmup_steps)

    def __call__(self, step: int) -> float:
        """The margin (radians) at training step ``step``."""
        return margin_at(step, self.final, self.start, self.ramp_steps)

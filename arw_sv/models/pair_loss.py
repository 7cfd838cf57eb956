"""Pairwise metric-learning loss over a P x K batch: binary cross-entropy on scaled cosine.

Every ordered pair (i, j), i != j, of the batch is a binary "same speaker?" decision with
logit ``z_ij = w * cos(e_i, e_j) + b``; its loss is the binary cross-entropy against the
same-speaker target. The loss is returned *per pair*, unreduced, because the adversarial
reweighting formulations (``arw_sv.arw``) weight pairs and samples before reducing.

The learnable scale and bias follow GE2E (Wan et al., ICASSP 2018: w = 10, b = -5 at
initialisation, w kept positive); the per-pair sigmoid loss is the SigLIP form (Zhai et al.,
ICCV 2023). See docs/method.md for why a pair-decomposable loss is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class PairTerms:
    """Unreduced pair losses of one batch and the masks that say which pairs are which.

    Attributes:
        loss: per-pair loss, zero where ``valid`` is False (the diagonal).
        positive: same-speaker pairs, i != j.
        valid: pairs that enter the loss, i.e. i != j.

    Shape:
        loss, positive, valid: (B, B).
    """

    loss: Tensor
    positive: Tensor
    valid: Tensor

    @property
    def negative(self) -> Tensor:
        """Different-speaker pairs. Shape: (B, B) bool."""
        return self.valid & ~self.positive

    def detach(self) -> PairTerms:
        """The same terms with the loss cut from the graph (the adversary's view)."""
        return PairTerms(loss=self.loss.detach(), positive=self.positive, valid=self.valid)


def _softplus_inverse(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class PairwiseSimilarityLoss(nn.Module):
    """Per-pair binary cross-entropy on ``w * cos + b`` with learnable w > 0 and b.

    The scale is parameterised as ``w = softplus(w_raw)``: it stays positive without the dead
    gradient that a clamp has once the constraint is active.

    Args:
        init_scale: initial w (> 0).
        init_bias: initial b.
        margin: additive cosine margin m in [0, 1): same-speaker pairs get the logit
            ``w * (cos - m) + b``, different-speaker pairs ``w * (cos + m) + b`` (the pair
            analogue of AM-softmax's margin; 0 is the plain loss).

    Shape:
        forward: emb (B, D), labels (B,) -> PairTerms with (B, B) fields.

    Example:
        >>> loss_fn = PairwiseSimilarityLoss()
        >>> terms = loss_fn(torch.randn(4, 8), torch.tensor([0, 0, 1, 1]))
        >>> terms.loss.shape, int(terms.positive.sum())
        (torch.Size([4, 4]), 4)
    """

    def __init__(
        self, init_scale: float = 10.0, init_bias: float = -5.0, margin: float = 0.0
    ) -> None:
        super().__init__()
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        if not 0.0 <= margin < 1.0:
            raise ValueError(f"the pair margin must be in [0, 1), got {margin}")
        self.margin = float(margin)
        self.w_raw = nn.Parameter(torch.tensor(_softplus_inverse(init_scale)))
        self.bias = nn.Parameter(torch.tensor(float(init_bias)))

    @property
    def scale(self) -> Tensor:
        """The positive scale w. Shape: () scalar."""
        return F.softplus(self.w_raw)

    def logits(self, emb: Tensor) -> Tensor:
        """Pair logits ``w * cos(e_i, e_j) + b``.

        Shape:
            emb (B, D) -> (B, B).
        """
        unit = F.normalize(emb, dim=1)
        return self.scale * (unit @ unit.T) + self.bias

    def forward(self, emb: Tensor, labels: Tensor) -> PairTerms:
        """Per-pair losses and masks for one batch.

        Args:
            emb: speaker embeddings (need not be normalised).
            labels: speaker index of each row.

        Shape:
            emb (B, D), labels (B,) -> PairTerms(loss (B, B), positive (B, B), valid (B, B)).
        """
        if emb.dim() != 2 or labels.shape != emb.shape[:1]:
            raise ValueError(
                f"expected emb (B, D) and labels (B,), got {emb.shape}, {labels.shape}"
            )
        # Cosines near 1 lose most of their precision in half precision: compute in float32.
        with torch.autocast(device_type=emb.device.type, enabled=False):
            if emb.dtype in (torch.float16, torch.bfloat16):
                emb = emb.float()
            logits = self.logits(emb)
            same = labels[:, None] == labels[None, :]
            if self.margin:
                logits = logits - self.scale * self.margin * (2.0 * same.to(logits.dtype) - 1.0)
            valid = ~torch.eye(len(labels), dtype=torch.bool, device=emb.device)
            loss = F.binary_cross_entropy_with_logits(
                logits, same.to(logits.dtype), reduction="none"
            )
            loss = loss.masked_fill(~valid, 0.0)
        return PairTerms(loss=loss, positive=same & valid, valid=valid)

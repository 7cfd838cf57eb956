"""The min-max game, in two step functions that each own one optimizer.

``learner_step`` runs the extractor forward once, takes the adversary's weights *detached*,
and lowers the weighted loss. ``adversary_step`` takes the learner's losses from that same
forward pass *detached* and raises the weighted loss (as ARL's code does: one forward, each
player steps on its own variables). Both go through :func:`backward_and_step`, so mixed
precision, clipping and the non-finite checks cannot be lost for one of them.

Shape legend: B batch, S samples, D embedding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from arw_sv.arw import ClusterIndex, arl_weights, weighted_objective
from arw_sv.config import AdversaryConfig, LossConfig
from arw_sv.models.pair_loss import PairTerms


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/inf; training stops instead of going on silently."""


@dataclass(frozen=True)
class Detached:
    """What the adversary sees of one batch: the learner's outputs cut from its graph."""

    embeddings: torch.Tensor  # (B, D)
    sample_loss: torch.Tensor  # (B,)
    pairs: PairTerms  # (B, B) fields
    cluster_ids: torch.Tensor  # (B,)


@dataclass(frozen=True)
class LearnerStats:
    loss: float
    aam_loss: float
    pair_loss: float
    grad_norm: float
    weight_mean: float | None = None
    weight_max: float | None = None
    weight_std: float | None = None


@dataclass(frozen=True)
class AdversaryStats:
    objective: float
    grad_norm: float


def backward_and_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[nn.Parameter],
    *,
    scaler: torch.amp.GradScaler | None = None,
    clip: float = 0.0,
    what: str = "learner",
) -> float:
    """Backward, unscale, clip, check and step; the one path both players use.

    Returns:
        The gradient norm before clipping.

    Raises:
        NonFiniteError: the loss, or (without an fp16 scaler, which skips such steps by
            design) the gradient, is not finite.
    """
    if not torch.isfinite(loss.detach()):
        raise NonFiniteError(f"{what} loss is {loss.item()}")
    params = [p for p in parameters if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)  # skips the update itself when fp16 gradients overflowed
        scaler.update()
    else:
        if not torch.isfinite(grad_norm):
            raise NonFiniteError(f"{what} gradient norm is {grad_norm.item()}")
        optimizer.step()
    return float(grad_norm)


class Learner(nn.Module):
    """The extractor with its training losses (AAM head and pair loss); all the learner owns."""

    def __init__(self, extractor: nn.Module, aam: nn.Module, pair: nn.Module) -> None:
        super().__init__()
        self.extractor, self.aam, self.pair = extractor, aam, pair

    def forward(
        self, waveforms: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, PairTerms]:
        embeddings = self.extractor(waveforms)
        # Losses in float32 even under autocast: the margin maths and BCE need the range.
        emb32 = embeddings.float()
        return embeddings, self.aam(emb32, labels), self.pair(emb32, labels)


def _objective(
    cfg: AdversaryConfig,
    loss_cfg: LossConfig,
    sample_loss: torch.Tensor,
    pairs: PairTerms,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    return weighted_objective(
        cfg.formulation if weights is not None else "erm",
        sample_loss=sample_loss,
        pairs=pairs,
        sample_weights=weights,
        aam_weight=loss_cfg.aam_weight,
        pair_weight=loss_cfg.pair_weight,
        weight_aam=cfg.weight_aam,
        normalize=cfg.normalize,
    )


def learner_step(
    learner: Learner,
    waveforms: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    adversary: nn.Module | None,
    clusters: ClusterIndex | None,
    cfg: AdversaryConfig,
    loss_cfg: LossConfig,
    scaler: torch.amp.GradScaler | None = None,
    clip: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[LearnerStats, Detached]:
    """One learner update on a batch; the adversary (if any) only supplies detached weights.

    Shape:
        waveforms (B, S), labels (B,)
    """
    learner.train()
    device = waveforms.device
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        embeddings, sample_loss, pairs = learner(waveforms, labels)
    emb = embeddings.detach().float()
    cluster_ids = clusters.assign(emb) if clusters is not None else torch.zeros_like(labels)
    weights = None
    if adversary is not None:
        with torch.no_grad():
            weights = arl_weights(adversary(emb, cluster_ids))
    loss = _objective(cfg, loss_cfg, sample_loss, pairs, weights)
    grad_norm = backward_and_step(
        loss, optimizer, learner.parameters(), scaler=scaler, clip=clip, what="learner"
    )
    stats = LearnerStats(
        loss=float(loss.detach()),
        aam_loss=float(sample_loss.detach().mean()),
        pair_loss=float(pairs.loss.detach().sum() / pairs.valid.sum().clamp(min=1)),
        grad_norm=grad_norm,
        weight_mean=None if weights is None else float(weights.mean()),
        weight_max=None if weights is None else float(weights.max()),
        weight_std=None if weights is None else float(weights.std()),
    )
    return stats, Detached(emb, sample_loss.detach().float(), pairs.detach(), cluster_ids)


def adversary_step(
    adversary: nn.Module,
    batch: Detached,
    optimizer: torch.optim.Optimizer,
    *,
    cfg: AdversaryConfig,
    loss_cfg: LossConfig,
    clip: float = 0.0,
) -> AdversaryStats:
    """One adversary update: gradient *ascent* on the weighted loss of the learner's
    detached losses (so no gradient can reach the learner)."""
    adversary.train()
    weights = arl_weights(adversary(batch.embeddings, batch.cluster_ids))
    objective = _objective(cfg, loss_cfg, batch.sample_loss, batch.pairs, weights)
    grad_norm = backward_and_step(
        -objective, optimizer, adversary.parameters(), clip=clip, what="adversary"
    )
    return AdversaryStats(objective=float(objective.detach()), grad_norm=grad_norm)

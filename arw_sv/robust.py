"""Stabilisers for the adversary's weights, GroupDRO over k-means cohorts, weight statistics.

Pure tensor functions and two small state holders; who calls them when lives in
``arw_sv.train.step``. Closed forms and their sources: docs/method.md, "Stabilising the
adversary".

Shape legend (the package one, :mod:`arw_sv`): B batch, C clusters.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _global_sum(values: Tensor) -> Tensor:
    """Sum over ranks (autograd-aware) under torch.distributed; the identity otherwise."""
    if not _distributed():
        return values
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(values, op=dist.ReduceOp.SUM)


def capped_arl_weights(scores: Tensor, max_weight: float) -> Tensor:
    """ARL's ``lambda_i = 1 + p_i`` with ``p_i = min(s * f_i, max_weight - 1)``, mean(p) = 1.

    ``s`` is the one scale that keeps ARL's normalisation (mean(lambda) = 2, every
    lambda_i >= 1) once the largest weights sit at the cap: water-filling, as in CVaR's
    ``min(., 1/alpha)`` cap (Levy et al. 2020). Each pass caps the samples above the bound and
    rescales the rest onto what is left of the budget; it stops when nothing new is capped
    (at most B passes; under DDP the counts are global, so every rank loops alike). Capped
    samples get no gradient; the others get it through ``s``. Without a binding cap this is
    ``arl_weights`` (up to rounding).

    Args:
        scores: adversary outputs f_i in (0, 1).
        max_weight: the cap, >= 2 (mean 2 is impossible below it).

    Shape:
        scores (B,) -> (B,).
    """
    if max_weight < 2.0:
        raise ValueError(f"max_weight must be >= 2 (the weights' mean is 2), got {max_weight}")
    bound = max_weight - 1.0
    capped = torch.zeros_like(scores, dtype=torch.bool)
    while True:
        stats = _global_sum(
            torch.stack(
                [
                    torch.where(capped, 0.0, scores).sum(),
                    capped.sum().to(scores.dtype),
                    scores.new_tensor(float(scores.shape[0])),
                ]
            )
        )
        scale = (stats[2] - bound * stats[1]) / stats[0]
        share = torch.where(capped, scores.new_tensor(bound), scale * scores)
        over = ~capped & (share > bound)
        if not bool(_global_sum(over.sum().to(scores.dtype)) > 0):
            return 1.0 + share
        capped = capped | over


def check_stabilisers(
    *,
    formulation: str,
    use_cluster: bool,
    temperature: float,
    max_weight: float,
    kl_penalty: float,
    chi2_penalty: float,
    weight_ema: float,
    dro_step_size: float,
) -> None:
    """Refuse stabiliser settings that cannot work, before any training step.

    Raises:
        ValueError: naming the ``adversary.`` field.
    """
    if temperature <= 0:
        raise ValueError(f"adversary.temperature must be > 0, got {temperature}")
    if max_weight != 0 and max_weight < 2:
        raise ValueError(f"adversary.max_weight must be 0 (off) or >= 2, got {max_weight}")
    for name, value in (("kl_penalty", kl_penalty), ("chi2_penalty", chi2_penalty)):
        if value < 0:
            raise ValueError(f"adversary.{name} must be >= 0, got {value}")
    if not 0 <= weight_ema < 1:
        raise ValueError(f"adversary.weight_ema must be in [0, 1), got {weight_ema}")
    if weight_ema > 0 and not (use_cluster or formulation in ("pl", "groupdro")):
        raise ValueError("adversary.weight_ema averages per cluster: it needs use_cluster")
    if dro_step_size < 0:
        raise ValueError(f"adversary.dro_step_size must be >= 0, got {dro_step_size}")


def divergence_from_uniform(weights: Tensor, kind: str) -> Tensor:
    """KL(p || u) = sum p_i log(B p_i) or chi2(p || u) = B sum p_i^2 - 1, p = w / sum(w).

    Both are 0 exactly at uniform weights and positive otherwise. Computed on the local
    batch (under DDP each rank penalises its own slice).

    Shape:
        weights (B,) positive -> () scalar.
    """
    p = weights / weights.sum()
    batch = weights.shape[0]
    if kind == "kl":
        return (p * torch.log(p * batch)).sum()
    if kind == "chi2":
        return batch * (p * p).sum() - 1.0
    raise ValueError(f"unknown divergence {kind!r}; expected 'kl' or 'chi2'")


def per_sample_loss(
    sample_loss: Tensor, row_pair_loss: Tensor, aam_weight: float, pair_weight: float
) -> Tensor:
    """Sample i's share of the ERM loss: ``aam * l_i + pair * sum_j beta_ij l_ij``.

    Shape:
        sample_loss (B,), row_pair_loss (B,) -> (B,).
    """
    total = torch.zeros_like(sample_loss)
    if aam_weight != 0:
        total = total + aam_weight * sample_loss
    if pair_weight != 0:
        total = total + pair_weight * row_pair_loss
    return total


def group_sums(values: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, Tensor]:
    """Per-group sums and counts (global under DDP). Shape: (B,), (B,) -> (C,), (C,)."""
    sums = torch.zeros(n_groups, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, groups, values)
    counts = torch.bincount(groups, minlength=n_groups).to(values.dtype)
    both = _global_sum(torch.stack([sums, counts]))
    return both[0], both[1]


class WeightEMA:
    """EMA of each cluster's mean weight; the learner sees ``lambda_i <- ema[c_i]``.

    ``ema_c <- decay * ema_c + (1 - decay) * mean_{i in c} lambda_i`` for each cluster in the
    batch; a cluster's first appearance sets it to its batch mean. Per-cluster smoothing
    removes the per-sample noise and slows how fast emphasis can concentrate.

    Args:
        n_clusters: C.
        decay: in (0, 1).
    """

    def __init__(self, n_clusters: int, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight_ema must be in (0, 1), got {decay}")
        self.decay = decay
        self.value = torch.zeros(n_clusters, dtype=torch.float64)
        self.seen = torch.zeros(n_clusters, dtype=torch.bool)

    @torch.no_grad()
    def __call__(self, weights: Tensor, cluster_ids: Tensor) -> Tensor:
        """Update with this batch, return the smoothed weights. Shape: (B,), (B,) -> (B,)."""
        sums, counts = group_sums(weights.double(), cluster_ids, self.value.shape[0])
        sums, counts = sums.cpu(), counts.cpu()
        present = counts > 0
        mean = sums / counts.clamp(min=1)
        blended = self.decay * self.value + (1.0 - self.decay) * mean
        update = torch.where(self.seen, blended, mean)
        self.value = torch.where(present, update, self.value)
        self.seen = self.seen | present
        return self.value.to(weights.device, weights.dtype)[cluster_ids]

    def state_dict(self) -> dict[str, Tensor]:
        """A copy of each cluster's EMA (C,) float64 and whether it was seen yet (C,) bool."""
        return {"value": self.value.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Take a :meth:`state_dict`'s EMA and seen flags (copied)."""
        self.value, self.seen = state["value"].clone(), state["seen"].clone()


def _ranks(values: Tensor) -> Tensor:
    # Average ranks (ties share the mean of their positions), as Spearman's rho needs:
    # rank_i = #{j: v_j < v_i} + (#{j: v_j = v_i} - 1) / 2, without a Python loop.
    less = (values[None, :] < values[:, None]).sum(dim=1)
    equal = (values[None, :] == values[:, None]).sum(dim=1)
    return less.to(values.dtype) + (equal.to(values.dtype) - 1) / 2


def _pearson(a: Tensor, b: Tensor) -> float | None:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return None if denom == 0 else float((a * b).sum()) / denom


def weight_statistics(weights: Tensor, losses: Tensor) -> dict[str, float | None]:
    """Collapse monitors: effective batch size, maximum weight, Spearman(weight, loss).

    ``ess = (sum w)^2 / sum w^2`` is B for uniform weights and 1 when one sample holds all
    the mass. Spearman is None when either side is constant.

    Shape:
        weights (B,), losses (B,) -> dict of floats.
    """
    w, loss = weights.detach().double().cpu(), losses.detach().double().cpu()
    return {
        "weight_ess": float(w.sum() ** 2 / (w * w).sum()),
        "weight_max": float(w.max()),
        "weight_loss_spearman": _pearson(_ranks(w), _ranks(loss)),
    }


def point_biserial(weights: Tensor, members: Tensor) -> float | None:
    """Point-biserial correlation of the weights with a group's indicator (Pearson on 0/1).

    For logging only: true groups never reach the adversary. None if either is constant.

    Shape:
        weights (B,), members (B,) bool -> float.
    """
    return _pearson(weights.detach().double().cpu(), members.double().cpu())

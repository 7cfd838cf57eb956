"""Adversarial reweighting (ARW) for metric learning: sample weights and objectives.

The k-means clusters the adversary reads are in :mod:`arw_sv.clusters`.

Pure functions over one batch; the min-max itself (who is detached when) lives in
``arw_sv.train.step``. Equations and the reasoning behind every choice: docs/method.md.

Formulations (``formulation``):
    erm  no adversary; every weight is 1.
    aps  accumulated pairwise similarity: lambda_i scales sample i's accumulated pair loss.
    pl   pseudo-labelling: as aps, with lambda_i given by the weight of i's k-means cluster.
    pw   pairwise weighting: pair (i, j) is weighted by lambda_i + lambda_j.

References:
    Lahoti et al., "Fairness without Demographics through Adversarially Reweighted
    Learning", NeurIPS 2020. Jin et al., "Adversarial Reweighting for Speaker Verification
    Fairness", Interspeech 2022 (arXiv 2207.07776).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from arw_sv.models.pair_loss import PairTerms

FORMULATIONS = ("erm", "aps", "pl", "pw")
NORMALIZATIONS = ("sum", "none")


def arl_weights(scores: Tensor, *, process_group: dist.ProcessGroup | None = None) -> Tensor:
    """ARL's normalisation ``lambda_i = 1 + B * f_i / sum_j f_j`` over the (global) batch.

    Every weight is >= 1 and the weights have mean exactly 2, so the adversary can only
    redistribute emphasis. Equivalent to ARL's code, ``1 + f / mean(f)``. Under an initialised
    ``torch.distributed``, B and the sum run over all ranks through an autograd-aware
    all-reduce: a rank's scores then get the gradient of every rank's objective through the
    shared denominator, and averaging the adversary's gradients over ranks (DDP) gives the
    exact gradient of the global objective. All ranks must call this (and, when it carries a
    gradient, backward through it) in lockstep.

    Args:
        scores: adversary outputs f_i in (0, 1).
        process_group: group to reduce over; the default group when None.

    Shape:
        scores (B,) -> (B,).
    """
    if scores.dim() != 1:
        raise ValueError(f"expected scores of shape (B,), got {tuple(scores.shape)}")
    total = scores.sum()
    count = scores.new_tensor(float(scores.shape[0]))
    if dist.is_available() and dist.is_initialized():
        from torch.distributed.nn.functional import all_reduce

        stats = all_reduce(
            torch.stack([total, count]),
            op=dist.ReduceOp.SUM,
            group=process_group if process_group is not None else dist.group.WORLD,
        )
        total, count = stats[0], stats[1]
    return 1.0 + count * scores / total


def balanced_pair_weights(pairs: PairTerms) -> Tensor:
    """Base weight beta_ij of each pair: anchor i's positives and negatives get half each.

    Each anchor (row) with both kinds of pairs gives ``0.5 / n_pos_i`` to each of its
    positives and ``0.5 / n_neg_i`` to each of its negatives; an anchor with only one kind
    gives it the whole unit. Rows sum to 1, so sum(beta) = B.

    Shape:
        PairTerms with (B, B) fields -> (B, B).
    """
    positive = pairs.positive.to(pairs.loss.dtype)
    negative = pairs.negative.to(pairs.loss.dtype)
    n_pos = positive.sum(dim=1, keepdim=True)
    n_neg = negative.sum(dim=1, keepdim=True)
    share_pos = torch.where(n_neg > 0, 0.5, 1.0) * (n_pos > 0)
    share_neg = torch.where(n_pos > 0, 0.5, 1.0) * (n_neg > 0)
    return positive * (share_pos / n_pos.clamp(min=1)) + negative * (share_neg / n_neg.clamp(min=1))


def _reduce(numerator: Tensor, weight_sum: Tensor, reference_sum: Tensor, normalize: str) -> Tensor:
    # "sum": a weighted mean (scale of ERM whatever the weights' mean). "none": divide by the
    # sum ERM's weights would have, as ARL's plain weighted mean does (scale ~2x ERM).
    return numerator / (weight_sum if normalize == "sum" else reference_sum)


def weighted_objective(
    formulation: str,
    *,
    sample_loss: Tensor | None,
    pairs: PairTerms | None,
    sample_weights: Tensor | None,
    aam_weight: float,
    pair_weight: float,
    weight_aam: bool = True,
    normalize: str = "sum",
) -> Tensor:
    """The reweighted training loss ``aam_weight * L_aam + pair_weight * L_pair``.

    With ``sample_weights`` None or all ones, every formulation returns exactly the "erm"
    value. Which side is detached is the caller's choice: the learner passes detached
    weights, the adversary passes detached losses (``pairs.detach()``).

    Args:
        formulation: one of "erm", "aps", "pl", "pw".
        sample_loss: per-sample AAM-softmax loss; may be None when ``aam_weight == 0``.
        pairs: per-pair losses and masks; may be None when ``pair_weight == 0``.
        sample_weights: lambda_i from ``arl_weights``; None means all ones. Must be None
            for "erm".
        aam_weight: factor of the classification term.
        pair_weight: factor of the pair term.
        weight_aam: scale sample i's AAM loss by lambda_i (ignored for "erm").
        normalize: "sum" divides each term by the sum of its weights; "none" by the sum
            that ERM's unit weights would give.

    Shape:
        sample_loss (B,), pairs (B, B) fields, sample_weights (B,) -> () scalar.
    """
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; expected one of {FORMULATIONS}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; expected one of {NORMALIZATIONS}")
    if formulation == "erm" and sample_weights is not None:
        raise ValueError("formulation 'erm' takes no sample_weights")
    reference = (
        sample_loss if sample_loss is not None else pairs.loss if pairs is not None else None
    )
    if reference is None:
        raise ValueError("need sample_loss or pairs")
    batch = reference.shape[0]
    if pairs is not None and pairs.loss.shape != (batch, batch):
        raise ValueError(f"pairs must be ({batch}, {batch}), got {tuple(pairs.loss.shape)}")
    weights = sample_weights if sample_weights is not None else reference.new_ones(batch)
    if weights.shape != (batch,):
        raise ValueError(f"sample_weights must have shape ({batch},), got {tuple(weights.shape)}")

    total = reference.new_zeros(())
    if aam_weight != 0:
        if sample_loss is None:
            raise ValueError("aam_weight != 0 needs sample_loss")
        aam_w = weights if (weight_aam and formulation != "erm") else torch.ones_like(weights)
        aam = _reduce((aam_w * sample_loss).sum(), aam_w.sum(), aam_w.new_tensor(batch), normalize)
        total = total + aam_weight * aam
    if pair_weight != 0:
        if pairs is None:
            raise ValueError("pair_weight != 0 needs pairs")
        if batch < 2:
            raise ValueError("the pair term needs a batch of at least 2")
        beta = balanced_pair_weights(pairs)
        if formulation == "pw":
            omega, unit = weights[:, None] + weights[None, :], 2.0
        else:  # erm, aps, pl: anchor i's weight on its accumulated (row) pair loss
            omega, unit = weights[:, None].expand_as(beta), 1.0
        weighted = beta * omega
        pair = _reduce((weighted * pairs.loss).sum(), weighted.sum(), unit * beta.sum(), normalize)
        total = total + pair_weight * pair
    return total

"""The min-max game, in two step functions that each own one optimizer.

``learner_step`` runs the extractor forward once, takes the adversary's weights *detached*,
and lowers the weighted loss. ``adversary_step`` takes the learner's losses from that same
forward pass *detached* and raises the weighted loss (as ARL's code does: one forward, each
player steps on its own variables). Both go through :func:`backward_and_step`, so mixed
precision, clipping and the non-finite checks cannot be lost for one of them. Both take the
same :class:`~arw_sv.train.objective.Objective`, built once from the config.

A batch may be cut into chunks of whole speakers (``chunks``): each chunk gets its own
BatchNorm statistics and pair terms, and the objective is the mean of the chunks'
objectives, with the adversary's weights normalised over the whole batch. This is what a
DDP rank computes on its slice, so one process with C chunks and C processes with one chunk
each optimise the same objective (see ``arw_sv.train.distributed``).

Shape legend (the package one, :mod:`arw_sv`): B batch, S samples, D embedding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from arw_sv.clusters import ClusterIndex
from arw_sv.models.adversary import GroupDROWeights, VRExWeights, batch_crowding
from arw_sv.models.pair_loss import PairTerms
from arw_sv.robust import WeightEMA, group_sums, weight_statistics
from arw_sv.train.distributed import all_ranks_true, average_gradients
from arw_sv.train.objective import Objective, adversary_weights  # noqa: F401  (re-exported)

# An fp16 loss scale below this means the gradients overflow even unscaled: the run diverged.
MIN_LOSS_SCALE = 1.0


class NonFiniteError(FloatingPointError):
    """A loss or gradient became NaN/inf; training stops instead of going on silently."""


@dataclass(frozen=True)
class Detached:
    """What the adversary sees of one batch: the learner's outputs cut from its graph."""

    embeddings: torch.Tensor  # (B, D)
    sample_loss: torch.Tensor  # (B,)
    pairs: tuple[PairTerms, ...]  # one per chunk, (B/C, B/C) fields
    cluster_ids: torch.Tensor  # (B,)
    weights: torch.Tensor | None = None  # (B,) what the learner used; None without adversary
    crowding: torch.Tensor | None = None  # (B,) batch crowding, for use_crowding adversaries


@dataclass(frozen=True)
class LearnerStats:
    """What one :func:`learner_step` reports for the logs.

    Attributes:
        loss: the objective the learner lowered (weighted when there is an adversary).
        aam_loss: mean AAM-softmax loss of the batch, unweighted.
        pair_loss: mean pair loss over the valid pairs of all chunks, unweighted.
        grad_norm: the learner's gradient norm before clipping.
        weight_mean, weight_max, weight_std: of the adversary's weights on the batch.
        weight_ess: effective sample size of the weights, ``(sum w)^2 / sum w^2``.
        weight_loss_spearman: rank correlation of the weights with the samples' losses.
        pair_grad_share: the pair term's share of the loss gradient at the embeddings,
            ``|g_pair| / (|g_aam| + |g_pair|)`` with ``loss.aam_weight`` and
            ``loss.pair_weight`` applied and no adversary weights (how much the pair term,
            and so pairwise reweighting, can still move the model; issue 20).

    The ``weight_*`` fields are None without an adversary.
    """

    loss: float
    aam_loss: float
    pair_loss: float
    grad_norm: float
    weight_mean: float | None = None
    weight_max: float | None = None
    weight_std: float | None = None
    weight_ess: float | None = None  # (sum w)^2 / sum w^2: B when uniform, 1 at collapse
    weight_loss_spearman: float | None = None  # rank correlation of w_i with sample i's loss
    pair_grad_share: float | None = None


@dataclass(frozen=True)
class AdversaryStats:
    """What one :func:`adversary_step` reports for the logs.

    Attributes:
        objective: the weighted loss before the adversary's update, without any KL or chi2
            penalty (for GroupDRO, the q-weighted loss).
        grad_norm: the adversary's gradient norm before clipping; 0 for GroupDRO, which
            takes no gradient step.
    """

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
    sync_gradients: bool = False,
) -> float:
    """Backward, unscale, clip, check and step; the one path both players use.

    Under DDP every check agrees across ranks: the loss flag is all-reduced, and the
    gradients are already averaged (by DDP, or here with ``sync_gradients``) when they are
    checked, so all ranks stop, or skip an fp16 step, together.

    Args:
        loss: the scalar to lower (the adversary passes its negated target).
        optimizer: the optimizer that owns ``parameters``.
        parameters: the parameters whose gradients are clipped and checked (those that
            require a gradient).
        scaler: fp16 loss scaler; ``None`` or disabled: plain backward and step.
        clip: the largest gradient norm kept; 0: no clipping.
        what: the player, as error messages name it.
        sync_gradients: average the gradients over ranks here (for a module that is not
            wrapped in DDP: the adversary).

    Returns:
        The gradient norm before clipping.

    Raises:
        NonFiniteError: the loss (on any rank) is not finite; without an fp16 scaler, the
            gradient is not finite; with one, the loss scale fell below ``MIN_LOSS_SCALE``
            (overflow at every step: skipping them would hide a diverged run).
    """
    if not all_ranks_true(bool(torch.isfinite(loss.detach()))):
        raise NonFiniteError(f"{what} loss is {loss.item()} (on this or another rank)")
    params = [p for p in parameters if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None and scaler.is_enabled():
        scaler.scale(loss).backward()
        if sync_gradients:
            average_gradients(params)
        scaler.unscale_(optimizer)
    else:
        loss.backward()
        if sync_gradients:
            average_gradients(params)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
    if scaler is not None and scaler.is_enabled():
        scaler.step(optimizer)  # skips the update itself when fp16 gradients overflowed
        scaler.update()
        if scaler.get_scale() < MIN_LOSS_SCALE:
            raise NonFiniteError(
                f"{what}: fp16 loss scale fell to {scaler.get_scale():g}; the gradients "
                "overflow at every step"
            )
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
        self, waveforms: torch.Tensor, labels: torch.Tensor, chunks: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[PairTerms, ...]]:
        """Embeddings, per-sample AAM losses and per-chunk pair terms.

        Shape:
            waveforms (B, S), labels (B,) -> (B, D), (B,), C x PairTerms of (B/C, B/C).
        """
        if chunks == 1:
            embeddings = self.extractor(waveforms)
        else:  # BatchNorm statistics per chunk, as on a DDP rank
            embeddings = torch.cat([self.extractor(w) for w in waveforms.chunk(chunks)])
        # Losses in float32 even under autocast: the margin maths and BCE need the range.
        emb32 = embeddings.float()
        sample_loss = self.aam(emb32, labels)
        if chunks == 1:
            pairs = (self.pair(emb32, labels),)
        else:  # pairs within each chunk only, as on a DDP rank
            pairs = tuple(
                self.pair(e, y)
                for e, y in zip(emb32.chunk(chunks), labels.chunk(chunks), strict=True)
            )
        return embeddings, sample_loss, pairs


def learner_step(
    learner: Learner,
    waveforms: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    adversary: nn.Module | None,
    clusters: ClusterIndex | None,
    objective: Objective,
    scaler: torch.amp.GradScaler | None = None,
    clip: float = 0.0,
    autocast_dtype: torch.dtype | None = None,
    chunks: int = 1,
    weight_ema: WeightEMA | None = None,
    monitor: bool = True,
) -> tuple[LearnerStats, Detached]:
    """One learner update on a batch; the adversary (if any) only supplies detached weights.

    ``learner`` may be the DDP-wrapped :class:`Learner`; ``chunks`` cuts the batch into
    that many chunks of whole speakers (see the module docstring). ``weight_ema`` (state
    kept by the caller) replaces each weight by its cluster's EMA mean weight. ``monitor``
    computes ``pair_grad_share`` (two small extra backward passes through the loss heads);
    the loop asks for it on the steps it logs only.

    Shape:
        waveforms (B, S), labels (B,)
    """
    learner.train()
    device = waveforms.device
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        embeddings, sample_loss, pairs = learner(waveforms, labels, chunks)
    emb = embeddings.detach().float()
    cluster_ids = clusters.assign(emb) if clusters is not None else torch.zeros_like(labels)
    weights = crowding = None
    if adversary is not None:
        with torch.no_grad():
            if getattr(adversary, "use_crowding", False):
                crowding = batch_crowding(emb, labels, adversary.crowding_k)
            if isinstance(adversary, VRExWeights):
                losses = objective.sample_losses(
                    sample_loss.detach(), tuple(p.detach() for p in pairs)
                )
                weights = adversary(losses, cluster_ids)
            else:
                weights = adversary_weights(adversary, emb, cluster_ids, objective, crowding)
            if weight_ema is not None:
                weights = weight_ema(weights, cluster_ids)
    loss = objective(sample_loss, pairs, weights)
    pair_share = pair_grad_share(embeddings, sample_loss, pairs, objective) if monitor else None
    grad_norm = backward_and_step(
        loss, optimizer, learner.parameters(), scaler=scaler, clip=clip, what="learner"
    )
    stats = LearnerStats(
        loss=float(loss.detach()),
        aam_loss=float(sample_loss.detach().mean()),
        pair_loss=float(
            sum(p.loss.detach().sum() for p in pairs)
            / sum(p.valid.sum() for p in pairs).clamp(min=1)
        ),
        grad_norm=grad_norm,
        pair_grad_share=pair_share,
        weight_mean=None if weights is None else float(weights.mean()),
        weight_max=None if weights is None else float(weights.max()),
        weight_std=None if weights is None else float(weights.std()),
        **({} if weights is None else _monitors(weights, objective, sample_loss, pairs)),
    )
    detached = tuple(p.detach() for p in pairs)
    return stats, Detached(
        emb, sample_loss.detach().float(), detached, cluster_ids, weights, crowding
    )


def pair_grad_share(
    embeddings: torch.Tensor, sample_loss: torch.Tensor, pairs: tuple[PairTerms, ...], objective
) -> float | None:
    """``|g_pair| / (|g_aam| + |g_pair|)``: the two unweighted terms' gradients at the
    embeddings (through the loss heads only, so cheap; the graph is kept for the update).

    Shape:
        embeddings (B, D), sample_loss (B,).
    """
    if not embeddings.requires_grad or objective.pair_weight == 0:
        return None
    n_valid = sum(p.valid.sum() for p in pairs).clamp(min=1)
    pair = objective.pair_weight * sum(p.loss.sum() for p in pairs) / n_valid
    aam = objective.aam_weight * sample_loss.mean()
    (g_aam,) = torch.autograd.grad(aam, embeddings, retain_graph=True)
    (g_pair,) = torch.autograd.grad(pair, embeddings, retain_graph=True)
    a, b = float(g_aam.float().norm()), float(g_pair.float().norm())
    return b / (a + b) if a + b > 0 else None


def _monitors(weights, objective, sample_loss, pairs) -> dict[str, float | None]:
    with torch.no_grad():
        losses = objective.sample_losses(sample_loss.detach().float(), pairs)
        found = weight_statistics(weights, losses)
    return {
        "weight_ess": found["weight_ess"],
        "weight_loss_spearman": found["weight_loss_spearman"],
    }


def adversary_step(
    adversary: nn.Module,
    batch: Detached,
    optimizer: torch.optim.Optimizer | None,
    *,
    objective: Objective,
    clip: float = 0.0,
) -> AdversaryStats:
    """One adversary update: gradient *ascent* on the weighted loss of the learner's
    detached losses (so no gradient can reach the learner). Under DDP its gradients are
    averaged over ranks, which with ``arl_weights``' all-reduce gives the exact gradient of
    the global objective.

    With ``kl_penalty`` / ``chi2_penalty`` the adversary raises
    ``L_w - penalty * D(w / sum w || uniform)`` instead. For "groupdro" (no optimizer) this
    is GroupDRO's exponentiated-gradient step on q from the batch's per-cluster mean losses;
    ``objective`` is then the q-weighted loss before the update and ``grad_norm`` 0.
    """
    adversary.train()
    if isinstance(adversary, VRExWeights):  # nothing to update: report R = mean + beta var
        with torch.no_grad():
            losses = objective.sample_losses(batch.sample_loss, batch.pairs)
            sums, counts = group_sums(losses, batch.cluster_ids, adversary.n_clusters)
            cohort = (sums / counts.clamp(min=1))[counts > 0]
            value = cohort.mean() + adversary.penalty * cohort.var(unbiased=False)
        return AdversaryStats(objective=float(value), grad_norm=0.0)
    if isinstance(adversary, GroupDROWeights):
        with torch.no_grad():
            losses = objective.sample_losses(batch.sample_loss, batch.pairs)
            sums, counts = group_sums(losses, batch.cluster_ids, adversary.n_clusters)
            group_loss = sums / counts.clamp(min=1)  # 0 for a group absent from the batch
            present = counts > 0
            q = adversary.q
            value = (q[present] * group_loss[present]).sum() / q[present].sum()
            adversary.update(group_loss)
        return AdversaryStats(objective=float(value), grad_norm=0.0)
    weights = adversary_weights(
        adversary, batch.embeddings, batch.cluster_ids, objective, batch.crowding
    )
    value = objective(batch.sample_loss, batch.pairs, weights)
    grad_norm = backward_and_step(
        -objective.adversary_target(value, weights),
        optimizer,
        adversary.parameters(),
        clip=clip,
        what="adversary",
        sync_gradients=True,
    )
    return AdversaryStats(objective=float(value.detach()), grad_norm=grad_norm)

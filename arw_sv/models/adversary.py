"""The ARW adversary: a small network scoring each training sample, f_i in (0, 1).

Its inputs are never group labels: the sample's (detached) embedding and the one-hot of its
k-means cluster. Scores become weights through ``arw_sv.arw.arl_weights``. The output layer
starts at zero, so every initial score is 0.5 and every initial weight is 2: the adversary
starts from ERM's uniform weighting and moves away only as far as its gradient takes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from arw_sv.config import AdversaryConfig


def tempered_logits(logits: Tensor, temperature: float) -> Tensor:
    """``logits / T``; exactly ``logits`` at T = 1 (so the default changes no bit)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def _global_sum(values: Tensor) -> Tensor:
    # Autograd-free sum over ranks under torch.distributed (counts only).
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
    return values


def group_dro_update(q: Tensor, group_loss: Tensor, step_size: float) -> Tensor:
    """Exponentiated gradient: ``q_g <- q_g exp(eta * loss_g) / sum_h q_h exp(eta * loss_h)``.

    As in Sagawa et al.'s code, a group absent from the batch enters with loss 0 (factor 1),
    so it loses mass only relative to the groups seen. Computed in log space.

    Shape:
        q (C,), group_loss (C,) -> (C,).
    """
    return torch.softmax(torch.log(q) + step_size * group_loss, dim=0)


def group_dro_sample_weights(q: Tensor, cluster_ids: Tensor) -> Tensor:
    """Sample weights that make the weighted mean ``sum_g q_g mean_g(loss) / sum_{g seen} q_g``.

    ``w_i = B * q[c_i] / n[c_i] / sum_{g in batch} q_g``: sum(w) = B, so both ``normalize``
    modes agree, and groups absent from the batch drop out of the sum (q renormalised over
    the groups present).

    Shape:
        q (C,), cluster_ids (B,) -> (B,).
    """
    counts = torch.bincount(cluster_ids, minlength=q.shape[0]).to(q.dtype)
    counts = _global_sum(counts)
    present_mass = q[counts > 0].sum()
    total = counts.sum()
    return total * q[cluster_ids] / counts[cluster_ids] / present_mass


def batch_crowding(embeddings: Tensor, labels: Tensor, k: int = 5) -> Tensor:
    """Each sample's crowding: mean cosine to its ``k`` most similar other-speaker samples.

    The label-free signal of a crowded region of voice space (docs/benchmark.md): a
    speaker whose neighbours are close is hard to tell apart. Computed within the batch
    (under DDP each rank's local batch, which holds whole speakers); fewer than ``k``
    other-speaker samples: the mean over those there are; none: 0. Detached.

    Shape:
        embeddings (B, D), labels (B,) -> (B,).
    """
    e = F.normalize(embeddings.detach().float(), dim=1)
    cosine = e @ e.T
    other = labels.view(-1, 1) != labels.view(1, -1)
    n_other = other.sum(dim=1)
    kk = int(min(k, int(n_other.max()))) if other.any() else 0
    if kk == 0:
        return torch.zeros(e.shape[0], device=e.device)
    top = cosine.masked_fill(~other, float("-inf")).topk(kk, dim=1).values
    # A row with fewer than kk other-speaker samples has -inf in its tail: count only the rest.
    total = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).sum(dim=1)
    return total / torch.clamp(n_other, min=1, max=kk)


class Adversary(nn.Module):
    """MLP (or linear, ``hidden=0``, as in ARL) over [embedding, cluster one-hot] -> sigmoid.

    Inputs are detached inside ``forward`` as well, so no gradient can reach the learner
    through them whatever the caller does. The embedding is L2-normalised first: the learner
    is trained on cosines, so only its direction carries meaning.

    Args:
        embedding_dim: D.
        n_clusters: C, the size of the cluster one-hot.
        hidden: width of the hidden layer (ReLU); 0 for a linear adversary.
        use_embedding: feed the embedding.
        use_cluster: feed the cluster one-hot.
        temperature: T in ``sigmoid(logit / T)``; larger T flattens the weights.
        use_crowding: also feed each sample's :func:`batch_crowding` (one more input).
        crowding_k: the ``k`` of that crowding.

    Shape:
        forward: embedding (B, D), cluster_ids (B,) long, crowding (B,) -> scores (B,) in (0, 1).
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        n_clusters: int,
        hidden: int = 64,
        use_embedding: bool = True,
        use_cluster: bool = True,
        temperature: float = 1.0,
        use_crowding: bool = False,
        crowding_k: int = 5,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        if not (use_embedding or use_cluster or use_crowding):
            raise ValueError("the adversary needs use_embedding, use_cluster or use_crowding")
        if use_cluster and n_clusters < 1:
            raise ValueError(f"use_cluster needs n_clusters >= 1, got {n_clusters}")
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {hidden}")
        self.embedding_dim = embedding_dim
        self.n_clusters = n_clusters
        self.use_embedding = use_embedding
        self.use_cluster = use_cluster
        if crowding_k < 1:
            raise ValueError(f"crowding_k must be >= 1, got {crowding_k}")
        self.use_crowding = use_crowding
        self.crowding_k = crowding_k
        in_features = embedding_dim * use_embedding + n_clusters * use_cluster + use_crowding
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_features, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(
        self, embedding: Tensor, cluster_ids: Tensor, crowding: Tensor | None = None
    ) -> Tensor:
        """Scores f_i in (0, 1). Shape: embedding (B, D), cluster_ids (B,), crowding (B,) -> (B,).

        Raises:
            ValueError: ``use_crowding`` and no ``crowding`` given.
        """
        dtype = self.net[0].weight.dtype
        features = []
        if self.use_embedding:
            features.append(F.normalize(embedding.detach().to(dtype), dim=1))
        if self.use_cluster:
            features.append(F.one_hot(cluster_ids.detach(), self.n_clusters).to(dtype))
        if self.use_crowding:
            if crowding is None:
                raise ValueError("this adversary reads the crowding (use_crowding): pass it")
            features.append(crowding.detach().to(dtype).view(-1, 1))
        logits = tempered_logits(self.net(torch.cat(features, dim=1)), self.temperature)
        return torch.sigmoid(logits).squeeze(1)


class ClusterWeights(nn.Module):
    """PL adversary: one learnable logit per k-means cluster (pseudo group).

    ``f_i = sigmoid(theta[c_i])``; the embedding is accepted for a common signature and
    ignored. C parameters in all.

    Args:
        n_clusters: C.

    Shape:
        forward: embedding (B, D) or None, cluster_ids (B,) long -> scores (B,) in (0, 1).
    """

    def __init__(self, n_clusters: int, temperature: float = 1.0) -> None:
        super().__init__()
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.n_clusters = n_clusters
        self.temperature = temperature
        self.logits = nn.Parameter(torch.zeros(n_clusters))

    def forward(
        self, embedding: Tensor | None, cluster_ids: Tensor, crowding: Tensor | None = None
    ) -> Tensor:
        """Scores of each sample's cluster. Shape: cluster_ids (B,) -> (B,)."""
        return torch.sigmoid(tempered_logits(self.logits, self.temperature)[cluster_ids.detach()])


class GroupDROWeights(nn.Module):
    """GroupDRO's group weights q over the k-means clusters (GEORGE-style pseudo groups).

    No parameters: q is a buffer (so it is in ``state_dict`` and the checkpoint), moved by
    exponentiated gradient (:func:`group_dro_update`), not by an optimizer.
    Starts uniform, ``q_g = 1 / C``.

    Args:
        n_clusters: C.
        step_size: eta of the exponentiated-gradient update.
    """

    def __init__(self, n_clusters: int, step_size: float = 0.01) -> None:
        super().__init__()
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self.n_clusters = n_clusters
        self.step_size = step_size
        self.register_buffer("q", torch.full((n_clusters,), 1.0 / n_clusters))

    def forward(
        self, embedding: Tensor | None, cluster_ids: Tensor, crowding: Tensor | None = None
    ) -> Tensor:
        """Sample weights (sum B) of :func:`group_dro_sample_weights`."""
        return group_dro_sample_weights(self.q, cluster_ids.detach())

    @torch.no_grad()
    def update(self, group_loss: Tensor) -> None:
        """One exponentiated-gradient step on this batch's per-group mean losses."""
        self.q.copy_(group_dro_update(self.q, group_loss.to(self.q), self.step_size))


def vrex_sample_weights(losses: Tensor, cluster_ids: Tensor, n_clusters: int,
                        penalty: float) -> Tensor:  # fmt: skip
    """Sample weights whose weighted mean loss has the gradient of V-REx (Krueger et al.).

    V-REx over the cohorts present, ``R = mean_c L_c + beta * var_c L_c`` (``L_c`` a
    cohort's mean loss, the variance over the ``C'`` cohorts present, population form), has
    the gradient ``sum_c (1 + 2 beta (L_c - mean L)) / C' * grad L_c``; so with the ``L_c``
    detached, ``w_i = B (1 + 2 beta (L_{c_i} - mean L)) / (C' n_{c_i})`` gives the learner
    exactly that gradient, and ``sum w = B``. A weight can be negative (V-REx raises a
    cohort's loss that is below the mean). Global under DDP.

    Shape:
        losses (B,) detached, cluster_ids (B,) -> (B,).
    """
    losses = losses.detach().float()
    sums = torch.zeros(n_clusters, device=losses.device).index_add(0, cluster_ids, losses)
    counts = torch.bincount(cluster_ids, minlength=n_clusters).to(losses.dtype)
    both = _global_sum(torch.stack([sums, counts]))
    sums, counts = both[0], both[1]
    present = counts > 0
    cohort_loss = sums / counts.clamp(min=1)
    mean = cohort_loss[present].mean()
    factor = (1 + 2 * penalty * (cohort_loss - mean)) / (present.sum() * counts.clamp(min=1))
    return counts.sum() * factor[cluster_ids]


class VRExWeights(nn.Module):
    """V-REx over the k-means clusters (proxy groups, as Fair-Gate over proxy sex groups):
    no parameters and no update, the weights follow from the batch's cohort losses
    (:func:`vrex_sample_weights`).

    Args:
        n_clusters: C.
        penalty: beta, the weight of the variance of the cohorts' losses.
    """

    def __init__(self, n_clusters: int, penalty: float = 1.0) -> None:
        super().__init__()
        if n_clusters < 1 or penalty < 0:
            raise ValueError(f"V-REx needs n_clusters >= 1 and penalty >= 0, got "
                             f"{n_clusters}, {penalty}")  # fmt: skip
        self.n_clusters, self.penalty = n_clusters, penalty

    def forward(self, losses: Tensor, cluster_ids: Tensor) -> Tensor:
        """Sample weights (sum B) from the batch's detached per-sample losses."""
        return vrex_sample_weights(losses, cluster_ids.detach(), self.n_clusters, self.penalty)


def _cluster_weights(*, n_clusters: int, temperature: float = 1.0, **_ignored) -> nn.Module:
    # hidden / use_embedding / use_cluster do not apply: PL sees the cluster only.
    return ClusterWeights(n_clusters, temperature)


def _group_dro(*, n_clusters: int, dro_step_size: float = 0.01, **_ignored) -> nn.Module:
    return GroupDROWeights(n_clusters, dro_step_size)


def _vrex(*, n_clusters: int, vrex_penalty: float = 1.0, **_ignored) -> nn.Module:
    return VRExWeights(n_clusters, vrex_penalty)


def _mlp(*, dro_step_size: float = 0.01, vrex_penalty: float = 1.0, **kwargs) -> nn.Module:
    return Adversary(**kwargs)


ADVERSARIES: dict[str, Callable[..., nn.Module] | None] = {
    "erm": None,
    "aps": _mlp,
    "pw": _mlp,
    "pl": _cluster_weights,
    "groupdro": _group_dro,
    "vrex": _vrex,
}


def build_adversary(
    formulation: str,
    *,
    embedding_dim: int,
    n_clusters: int,
    hidden: int = 64,
    use_embedding: bool = True,
    use_cluster: bool = True,
    temperature: float = 1.0,
    dro_step_size: float = 0.01,
    use_crowding: bool = False,
    crowding_k: int = 5,
    vrex_penalty: float = 1.0,
) -> nn.Module | None:
    """The adversary for a formulation; None for "erm" (adversary off).

    "aps" and "pw" get an ``Adversary`` (MLP over embedding and/or cluster one-hot); "pl"
    gets ``ClusterWeights`` (one logit per cluster; ``hidden``, ``use_embedding`` and
    ``use_cluster`` do not apply to it); "groupdro" gets ``GroupDROWeights`` (q over the
    clusters, no parameters); "vrex" gets ``VRExWeights`` (V-REx over the clusters, no
    parameters).

    Args:
        formulation: one of "erm", "aps", "pl", "pw".
        embedding_dim: D.
        n_clusters: C.
        hidden: hidden width; 0 for a linear adversary as in ARL.
        use_embedding: feed the detached, L2-normalised embedding.
        use_cluster: feed the one-hot of the k-means cluster.
        temperature: T in ``sigmoid(logit / T)`` ("aps", "pw", "pl").
        dro_step_size: eta of GroupDRO's update ("groupdro").
        vrex_penalty: beta of V-REx ("vrex").
        use_crowding: also feed the batch crowding ("aps", "pw" only).
        crowding_k: its number of neighbours.

    Raises:
        ValueError: an unknown formulation, or ``use_crowding`` for one without inputs.

    Example:
        >>> adv = build_adversary("pw", embedding_dim=192, n_clusters=32)
        >>> adv(torch.randn(4, 192), torch.tensor([0, 1, 2, 3])).shape
        torch.Size([4])
    """
    if formulation not in ADVERSARIES:
        raise ValueError(
            f"unknown formulation {formulation!r}; expected one of {list(ADVERSARIES)}"
        )
    factory = ADVERSARIES[formulation]
    if factory is None:
        return None
    if use_crowding and factory is not _mlp:
        raise ValueError(
            f"adversary.use_crowding: the {formulation!r} adversary has no inputs to add it to "
            "(only 'aps' and 'pw' do)"
        )
    extra = {"use_crowding": True, "crowding_k": crowding_k} if use_crowding else {}
    return factory(
        embedding_dim=embedding_dim,
        n_clusters=n_clusters,
        hidden=hidden,
        use_embedding=use_embedding,
        use_cluster=use_cluster,
        temperature=temperature,
        dro_step_size=dro_step_size,
        vrex_penalty=vrex_penalty,
        **extra,
    )


def build_adversary_from_config(
    adversary: AdversaryConfig, embedding_dim: int, *, seed: int | None = None
) -> nn.Module | None:
    """The adversary ``cfg.adversary`` describes (None for "erm"): the one entry training uses.

    Args:
        adversary: the config section; every field :func:`build_adversary` takes is read.
        embedding_dim: D (``cfg.model.embedding_dim``).
        seed: draw the initial weights from a generator seeded so, leaving the global torch
            RNG where it was (the trainer passes ``train.seed + 1``, so switching the
            adversary on changes nothing in the learner's random stream); None draws from
            the global RNG.
    """

    def build() -> nn.Module | None:
        return build_adversary(
            adversary.formulation,
            embedding_dim=embedding_dim,
            n_clusters=adversary.n_clusters,
            hidden=adversary.hidden,
            use_embedding=adversary.use_embedding,
            use_cluster=adversary.use_cluster,
            temperature=adversary.temperature,
            dro_step_size=adversary.dro_step_size,
            use_crowding=adversary.use_crowding,
            crowding_k=adversary.crowding_k,
            vrex_penalty=adversary.vrex_penalty,
        )

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()

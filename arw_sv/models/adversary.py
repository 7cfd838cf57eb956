"""The ARW adversary: a small network scoring each training sample, f_i in (0, 1).

Its inputs are never group labels: the sample's (detached) embedding and the one-hot of its
k-means cluster. Scores become weights through ``arw_sv.arw.arl_weights``. The output layer
starts at zero, so every initial score is 0.5 and every initial weight is 2: the adversary
starts from ERM's uniform weighting and moves away only as far as its gradient takes it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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

    Shape:
        forward: embedding (B, D), cluster_ids (B,) long -> scores (B,) in (0, 1).
    """

    def __init__(
        self,
        *,
        embedding_dim: int,
        n_clusters: int,
        hidden: int = 64,
        use_embedding: bool = True,
        use_cluster: bool = True,
    ) -> None:
        super().__init__()
        if not (use_embedding or use_cluster):
            raise ValueError("the adversary needs use_embedding or use_cluster")
        if use_cluster and n_clusters < 1:
            raise ValueError(f"use_cluster needs n_clusters >= 1, got {n_clusters}")
        if hidden < 0:
            raise ValueError(f"hidden must be >= 0, got {hidden}")
        self.embedding_dim = embedding_dim
        self.n_clusters = n_clusters
        self.use_embedding = use_embedding
        self.use_cluster = use_cluster
        in_features = embedding_dim * use_embedding + n_clusters * use_cluster
        if hidden > 0:
            self.net = nn.Sequential(
                nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_features, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, embedding: Tensor, cluster_ids: Tensor) -> Tensor:
        """Scores f_i in (0, 1). Shape: embedding (B, D), cluster_ids (B,) -> (B,)."""
        dtype = self.net[0].weight.dtype
        features = []
        if self.use_embedding:
            features.append(F.normalize(embedding.detach().to(dtype), dim=1))
        if self.use_cluster:
            features.append(F.one_hot(cluster_ids.detach(), self.n_clusters).to(dtype))
        return torch.sigmoid(self.net(torch.cat(features, dim=1))).squeeze(1)


class ClusterWeights(nn.Module):
    """PL adversary: one learnable logit per k-means cluster (pseudo group).

    ``f_i = sigmoid(theta[c_i])``; the embedding is accepted for a common signature and
    ignored. C parameters in all.

    Args:
        n_clusters: C.

    Shape:
        forward: embedding (B, D) or None, cluster_ids (B,) long -> scores (B,) in (0, 1).
    """

    def __init__(self, n_clusters: int) -> None:
        super().__init__()
        if n_clusters < 1:
            raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
        self.n_clusters = n_clusters
        self.logits = nn.Parameter(torch.zeros(n_clusters))

    def forward(self, embedding: Tensor | None, cluster_ids: Tensor) -> Tensor:
        """Scores of each sample's cluster. Shape: cluster_ids (B,) -> (B,)."""
        return torch.sigmoid(self.logits[cluster_ids.detach()])


def _cluster_weights(*, n_clusters: int, **_ignored) -> nn.Module:
    # hidden / use_embedding / use_cluster do not apply: PL sees the cluster only.
    return ClusterWeights(n_clusters)


ADVERSARIES: dict[str, Callable[..., nn.Module] | None] = {
    "erm": None,
    "aps": Adversary,
    "pw": Adversary,
    "pl": _cluster_weights,
}


def build_adversary(
    formulation: str,
    *,
    embedding_dim: int,
    n_clusters: int,
    hidden: int = 64,
    use_embedding: bool = True,
    use_cluster: bool = True,
) -> nn.Module | None:
    """The adversary for a formulation; None for "erm" (adversary off).

    "aps" and "pw" get an ``Adversary`` (MLP over embedding and/or cluster one-hot); "pl"
    gets ``ClusterWeights`` (one logit per cluster; ``hidden``, ``use_embedding`` and
    ``use_cluster`` do not apply to it).

    Args:
        formulation: one of "erm", "aps", "pl", "pw".
        embedding_dim: D.
        n_clusters: C.
        hidden: hidden width; 0 for a linear adversary as in ARL.
        use_embedding: feed the detached, L2-normalised embedding.
        use_cluster: feed the one-hot of the k-means cluster.

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
    return factory(
        embedding_dim=embedding_dim,
        n_clusters=n_clusters,
        hidden=hidden,
        use_embedding=use_embedding,
        use_cluster=use_cluster,
    )

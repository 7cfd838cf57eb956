"""Pseudo groups for the adversary: k-means clusters of recent training embeddings.

The adversary never sees a true group. It sees which k-means cluster (on the unit sphere)
a sample's embedding falls in; the centroids are refitted every
``adversary.cluster_refresh_steps`` on a ring buffer of the embeddings the learner has just
produced (:class:`EmbeddingBank`), warm-started from the previous centroids so cluster ids
stay stable.

Shape legend (the package one, :mod:`arw_sv`): B batch, N rows (of the bank), C clusters, D embedding.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from arw_sv.config import AdversaryConfig, Config

log = logging.getLogger("arw_sv.train")

MINIBATCH_KMEANS_ABOVE = 20_000


class ClusterIndex:
    """k-means centroids on the unit sphere and nearest-centroid (cosine) lookup.

    Args:
        centroids: cluster centres; rows are L2-normalised on construction.

    Shape:
        centroids (C, D).
    """

    def __init__(self, centroids: Tensor) -> None:
        if centroids.dim() != 2 or centroids.shape[0] < 1:
            raise ValueError(f"expected centroids (C, D), got {tuple(centroids.shape)}")
        self.centroids = F.normalize(centroids.detach().float(), dim=1)

    @property
    def n_clusters(self) -> int:
        """C, the number of centroids."""
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        """D, the size of the embeddings the centroids are compared with."""
        return int(self.centroids.shape[1])

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray,
        n_clusters: int,
        seed: int,
        minibatch: bool | None = None,
        *,
        init: ClusterIndex | None = None,
    ) -> ClusterIndex:
        """k-means (scikit-learn) on L2-normalised embeddings; centroids renormalised.

        Args:
            embeddings: training-data embeddings (any norm).
            n_clusters: C.
            seed: k-means random state.
            minibatch: MiniBatchKMeans if True, KMeans if False; None picks MiniBatchKMeans
                above 20,000 rows.
            init: warm start from these centroids (one k-means run), which keeps cluster
                ids stable across refreshes, so per-cluster adversary weights stay meaningful.

        Shape:
            embeddings (N, D) -> index with centroids (C, D).
        """
        data = np.asarray(embeddings, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] < n_clusters:
            raise ValueError(f"need (N, D) embeddings with N >= {n_clusters}, got {data.shape}")
        data = data / np.maximum(np.linalg.norm(data, axis=1, keepdims=True), 1e-12)
        if init is not None and init.centroids.shape != (n_clusters, data.shape[1]):
            raise ValueError(f"init has shape {tuple(init.centroids.shape)}, expected C x D")
        start = init.centroids.detach().cpu().numpy() if init is not None else "k-means++"
        n_init = 1 if init is not None else 3
        if minibatch is None:
            minibatch = data.shape[0] > MINIBATCH_KMEANS_ABOVE
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if minibatch:
            kmeans = MiniBatchKMeans(
                n_clusters, init=start, n_init=n_init, batch_size=4096, random_state=seed
            )
        else:
            kmeans = KMeans(n_clusters, init=start, n_init=n_init, random_state=seed)
        kmeans.fit(data)
        return cls(torch.from_numpy(np.asarray(kmeans.cluster_centers_, dtype=np.float32)))

    @classmethod
    def _from_unit(cls, centroids: Tensor) -> ClusterIndex:
        # Already unit rows: normalising again would move the last bits.
        index = cls.__new__(cls)
        index.centroids = centroids
        return index

    def to(self, device: torch.device | str) -> ClusterIndex:
        """A copy with the centroids on ``device``."""
        return self._from_unit(self.centroids.to(device))

    @torch.no_grad()
    def assign(self, emb: Tensor) -> Tensor:
        """Nearest centroid by cosine similarity (first one on ties).

        Shape:
            emb (B, D) -> (B,) long.
        """
        unit = F.normalize(emb.detach().float(), dim=1)
        return (unit @ self.centroids.to(unit.device).T).argmax(dim=1)

    def one_hot(self, ids: Tensor) -> Tensor:
        """One-hot cluster codes. Shape: ids (B,) -> (B, C) float."""
        return F.one_hot(ids, self.n_clusters).float()

    def state_dict(self) -> dict[str, Tensor]:
        """Plain tensors only: loads with ``torch.load(..., weights_only=True)``."""
        return {"centroids": self.centroids.detach().cpu().clone()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> ClusterIndex:
        """Inverse of ``state_dict``; the centroids come back bit for bit."""
        centroids = state["centroids"]
        if centroids.dim() != 2 or centroids.shape[0] < 1:
            raise ValueError(f"expected centroids (C, D), got {tuple(centroids.shape)}")
        return cls._from_unit(centroids.detach().float().clone())


def bank_size(n_clusters: int) -> int:
    """Rows of the embedding bank: at least 32 per cluster (k-means needs 4 per cluster to
    start, and refreshes see a few hundred steps of batches), and never under 4096.
    """
    return max(4096, 32 * n_clusters)


class EmbeddingBank:
    """Ring buffer of the most recent training embeddings, for the k-means refresh.

    Clustering embeddings the learner has just produced costs nothing extra (no separate
    extraction pass); they are at most a few hundred steps stale.

    Args:
        size: N rows; :meth:`for_clusters` sizes it for C clusters (:func:`bank_size`).
        dim: D.
    """

    def __init__(self, size: int, dim: int) -> None:
        self.data = torch.zeros(size, dim)
        self.count = 0

    @classmethod
    def for_clusters(cls, n_clusters: int, dim: int) -> EmbeddingBank:
        """The bank the trainer keeps for ``n_clusters`` clusters."""
        return cls(bank_size(n_clusters), dim)

    def add(self, embeddings: Tensor) -> None:
        """Append rows, overwriting the oldest. Shape: embeddings (B, D)."""
        n = embeddings.shape[0]
        pos = (self.count + torch.arange(n)) % self.data.shape[0]
        self.data[pos] = embeddings.detach().float().cpu()
        self.count += n

    def filled(self) -> np.ndarray:
        """The rows written so far (all N once it has wrapped), in slot order. -> (N, D)."""
        return self.data[: min(self.count, self.data.shape[0])].numpy()

    def state_dict(self) -> dict[str, Any]:
        """A copy of the rows (N, D) and ``count``, the rows ever added (the write position)."""
        return {"data": self.data.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a :meth:`state_dict`'s rows (a copy; their N, whatever this bank had) and count."""
        self.data, self.count = state["data"].clone(), int(state["count"])


def needs_clusters(adversary: AdversaryConfig) -> bool:
    """Whether the adversary reads cluster ids (so the k-means index must be kept fresh)."""
    return adversary.use_cluster or adversary.formulation in ("pl", "groupdro", "vrex")


class _Processes(Protocol):
    # What the refresh needs of arw_sv.train.distributed.DistContext (a layer above).
    @property
    def is_main(self) -> bool: ...

    @property
    def enabled(self) -> bool: ...

    def broadcast(self, tensor: Tensor, src: int = 0) -> Tensor: ...


def refresh_clusters(
    clusters: ClusterIndex | None,
    bank: EmbeddingBank,
    step: int,
    cfg: Config,
    device: torch.device | str,
    dist_ctx: _Processes,
) -> ClusterIndex | None:
    """Refit k-means on the bank every ``cluster_refresh_steps`` (and as soon as it can).

    Under DDP rank 0 fits and broadcasts: every rank must use identical centroids.

    Returns:
        The new index; ``clusters`` unchanged when no refresh is due or the bank holds
        fewer than 4 rows per cluster.
    """
    ac = cfg.adversary
    due = clusters is None or step % ac.cluster_refresh_steps == 0
    data = bank.filled()
    if not due or data.shape[0] < 4 * ac.n_clusters:
        return clusters
    if dist_ctx.is_main:
        seed = (cfg.train.seed * 1_000_003 + step) % (2**31)
        fitted = ClusterIndex.fit(
            data, ac.n_clusters, seed=seed, init=clusters.to("cpu") if clusters else None
        )
        log.info("step %d: k-means refreshed on %d embeddings", step, data.shape[0])
        if not dist_ctx.enabled:
            return fitted.to(device)
        centroids = fitted.centroids
    else:
        centroids = torch.empty(ac.n_clusters, cfg.model.embedding_dim)
    centroids = dist_ctx.broadcast(centroids)
    return ClusterIndex.from_state_dict({"centroids": centroids}).to(device)

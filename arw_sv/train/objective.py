"""The weighted loss both players of the min-max game see, built once from the config.

:class:`Objective` gathers what ``cfg.loss`` and ``cfg.adversary`` say about the loss (the
term weights, the formulation, what the weights scale and how they are normalised, the
weight cap and the adversary's divergence penalties). The two step functions in
:mod:`arw_sv.train.step` take one; the stabilisers that hold state (``weight_ema``) or live
in the adversary itself (``temperature``, ``dro_step_size``) are not part of it.

Shape legend (the package one, :mod:`arw_sv`): B batch, J chunks, D embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from arw_sv.arw import arl_weights, balanced_pair_weights, weighted_objective
from arw_sv.config import AdversaryConfig, Config, LossConfig
from arw_sv.models.adversary import GroupDROWeights
from arw_sv.models.pair_loss import PairTerms
from arw_sv.robust import capped_arl_weights, divergence_from_uniform, per_sample_loss


@dataclass(frozen=True)
class Objective:
    """``L_w``: the (weighted) AAM + pair loss, as ``arw_sv.arw.weighted_objective`` defines it.

    Attributes:
        formulation: "erm", "aps", "pl", "pw", "groupdro" or "vrex" (both weighted as "aps").
        aam_weight, pair_weight: the two loss terms' weights (``loss.*``).
        weight_aam: the adversary's weights scale the AAM term too (``adversary.*`` from here).
        normalize: "sum" or "none".
        max_weight: cap on ARL's weights; 0 is off.
        kl_penalty, chi2_penalty: the adversary maximises ``L_w - penalty * D(w || uniform)``.
    """

    # No defaults: the config's are the only ones (build it with from_config / from_sections).
    formulation: str
    aam_weight: float
    pair_weight: float
    weight_aam: bool
    normalize: str
    max_weight: float
    kl_penalty: float
    chi2_penalty: float

    @classmethod
    def from_config(cls, cfg: Config) -> Objective:
        """The objective an experiment trains (``cfg.adversary`` and ``cfg.loss``)."""
        return cls.from_sections(cfg.adversary, cfg.loss)

    @classmethod
    def from_sections(cls, adversary: AdversaryConfig, loss: LossConfig) -> Objective:
        """The same from the two config sections alone."""
        return cls(
            formulation=adversary.formulation,
            aam_weight=loss.aam_weight,
            pair_weight=loss.pair_weight,
            weight_aam=adversary.weight_aam,
            normalize=adversary.normalize,
            max_weight=adversary.max_weight,
            kl_penalty=adversary.kl_penalty,
            chi2_penalty=adversary.chi2_penalty,
        )

    def __call__(
        self,
        sample_loss: torch.Tensor,
        pairs: tuple[PairTerms, ...],
        weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """The weighted objective; with several chunks, the mean of the chunks' objectives.

        ``weights`` None is the unweighted (ERM) loss, whatever the formulation.

        Shape:
            sample_loss (B,), J x PairTerms of (B/J, B/J), weights (B,) or None -> ().
        """
        # GroupDRO's and V-REx's cluster-derived weights act on samples, as APS's do.
        formulation = "aps" if self.formulation in ("groupdro", "vrex") else self.formulation

        def one(loss: torch.Tensor, terms: PairTerms, w: torch.Tensor | None) -> torch.Tensor:
            return weighted_objective(
                formulation if w is not None else "erm",
                sample_loss=loss,
                pairs=terms,
                sample_weights=w,
                aam_weight=self.aam_weight,
                pair_weight=self.pair_weight,
                weight_aam=self.weight_aam,
                normalize=self.normalize,
            )

        n = len(pairs)
        if n == 1:
            return one(sample_loss, pairs[0], weights)
        chunked_weights = weights.chunk(n) if weights is not None else (None,) * n
        parts = [
            one(loss, terms, w)
            for loss, terms, w in zip(sample_loss.chunk(n), pairs, chunked_weights, strict=True)
        ]
        return torch.stack(parts).mean()

    def sample_losses(
        self, sample_loss: torch.Tensor, pairs: tuple[PairTerms, ...]
    ) -> torch.Tensor:
        """Each sample's share of the unweighted loss (its AAM loss and its balanced row of
        pair losses, chunks concatenated). Shape: (B,), J x PairTerms -> (B,).
        """
        if self.pair_weight != 0:
            row = torch.cat([(balanced_pair_weights(p) * p.loss).sum(dim=1) for p in pairs])
        else:
            row = torch.zeros_like(sample_loss)
        return per_sample_loss(sample_loss, row, self.aam_weight, self.pair_weight)

    def adversary_target(self, objective: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """What the adversary raises: ``L_w`` less its divergence penalties. Shape: () -> ()."""
        target = objective
        if self.kl_penalty > 0:
            target = target - self.kl_penalty * divergence_from_uniform(weights, "kl")
        if self.chi2_penalty > 0:
            target = target - self.chi2_penalty * divergence_from_uniform(weights, "chi2")
        return target


def adversary_weights(
    adversary: nn.Module,
    embeddings: torch.Tensor,
    cluster_ids: torch.Tensor,
    objective: Objective | AdversaryConfig,
    crowding: torch.Tensor | None = None,
) -> torch.Tensor:
    """lambda_i from the adversary: ARL's normalisation, capped at ``max_weight`` if set;
    GroupDRO's ``q``-derived weights for "groupdro". Carries the adversary's gradient.

    ``objective`` may be the ``adversary`` config section: only ``max_weight`` is read.
    ``crowding``: each sample's batch crowding, for an adversary with ``use_crowding``.

    Shape:
        embeddings (B, D), cluster_ids (B,), crowding (B,) -> (B,).
    """
    if isinstance(adversary, GroupDROWeights):
        return adversary(embeddings, cluster_ids)
    scores = adversary(embeddings, cluster_ids, crowding)
    if objective.max_weight > 0:
        return capped_arl_weights(scores, objective.max_weight)
    return arl_weights(scores)

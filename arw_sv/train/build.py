"""Builders: config values in, training objects out (names map to factories by dicts)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from arw_sv.config import OPTIMIZER_NAMES, Config, TrainConfig
from arw_sv.models.ecapa import EcapaTdnn, extractor_from_config  # noqa: F401  (re-exported)
from arw_sv.models.heads import AAMSoftmax
from arw_sv.models.pair_loss import PairwiseSimilarityLoss
from arw_sv.train.device import resolve_device  # noqa: F401  (re-exported)
from arw_sv.train.step import Learner

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda params, lr, wd, momentum: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, wd, momentum: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
    "sgd": lambda params, lr, wd, momentum: torch.optim.SGD(
        params, lr=lr, weight_decay=wd, momentum=momentum, nesterov=momentum > 0
    ),
    "adagrad": lambda params, lr, wd, momentum: torch.optim.Adagrad(params, lr=lr, weight_decay=wd),
}
if tuple(OPTIMIZERS) != OPTIMIZER_NAMES:  # the config's CHOICES are these names
    raise ImportError(f"OPTIMIZERS {tuple(OPTIMIZERS)} != config.OPTIMIZER_NAMES")


def build_learner(cfg: Config, n_speakers: int) -> Learner:
    """Extractor + AAM-softmax head over ``n_speakers`` classes + pairwise loss."""
    extractor = extractor_from_config(cfg.model, cfg.features)
    aam = AAMSoftmax(cfg.model.embedding_dim, n_speakers, cfg.loss.aam_margin, cfg.loss.aam_scale)
    return Learner(extractor, aam, PairwiseSimilarityLoss(margin=cfg.loss.pair_margin))


def build_optimizer(
    name: str,
    params: Iterable[nn.Parameter],
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """A torch optimizer over ``params`` by its config name (a key of ``OPTIMIZERS``).

    ``momentum`` is SGD's only (Nesterov when above 0); the other optimizers ignore it.

    Raises:
        ValueError: ``name`` is not one of ``OPTIMIZERS``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](list(params), lr, weight_decay, momentum)


def lr_factor(train: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up to ``lr``, then exponential decay to ``final_lr`` at the last step
    (WeSpeaker's warm-up + ExponentialDecrease schedule), as a multiplier of ``lr``.
    """
    ratio = train.final_lr / train.lr if train.lr > 0 else 1.0
    decay_steps = max(1, train.steps - train.warmup_steps)

    def factor(step: int) -> float:
        if step < train.warmup_steps:
            return (step + 1) / train.warmup_steps
        progress = min(1.0, (step - train.warmup_steps) / decay_steps)
        return math.exp(math.log(ratio) * progress) if ratio > 0 else 1.0 - progress

    return factor


AUTOCAST_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

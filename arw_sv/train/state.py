"""Everything a training checkpoint holds, and the one builder that makes it from a config.

:class:`TrainState` is the learner, the adversary and their optimizers, schedule and
scaler, the stabilisers' state, the k-means index and its embedding bank, the sampler's
position, the RNG and the step. ``state_dict()`` is the checkpoint dictionary (the same
keys as every checkpoint written before it existed), ``load_state_dict()`` continues a run
from one bit for bit. :func:`build_train_state` builds it as ``fit`` does, so a benchmark
can time exactly what the trainer runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from arw_sv.augment import speed_classes
from arw_sv.checkpoint import CheckpointError
from arw_sv.clusters import ClusterIndex, EmbeddingBank
from arw_sv.config import Config, config_to_dict
from arw_sv.data.adaptive import AdaptiveSpeakerSampler
from arw_sv.data.sampler import SpeakerBatchSampler
from arw_sv.models.adversary import GroupDROWeights, VRExWeights, build_adversary_from_config
from arw_sv.models.heads import MarginSchedule
from arw_sv.robust import WeightEMA, check_stabilisers
from arw_sv.train.build import build_learner, build_optimizer, lr_factor
from arw_sv.train.objective import Objective
from arw_sv.train.sample_log import SampleLog
from arw_sv.train.step import Learner


@dataclass
class TrainState:
    """One run's training state; ``step`` is the number of steps taken.

    Built by :func:`build_train_state`; the objects are the ones the step functions update
    in place, so ``state_dict()`` is always the current state.
    """

    cfg: Config
    speakers: list[str]
    device: torch.device
    learner: Learner
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    adversary: nn.Module | None
    adv_optimizer: torch.optim.Optimizer | None
    weight_ema: WeightEMA | None
    bank: EmbeddingBank
    objective: Objective
    margin: MarginSchedule
    sampler: SpeakerBatchSampler | AdaptiveSpeakerSampler | None = None
    sample_log: SampleLog | None = None
    clusters: ClusterIndex | None = None
    world_size: int = 1
    step: int = 0

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: plain tensors and containers (loads with ``weights_only=True``)."""
        return {
            "step": self.step,
            "config": config_to_dict(self.cfg),
            "speakers": list(self.speakers),
            "extractor": self.learner.extractor.state_dict(),
            "learner": self.learner.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "adversary": None if self.adversary is None else self.adversary.state_dict(),
            "adversary_optimizer": None
            if self.adv_optimizer is None
            else self.adv_optimizer.state_dict(),
            "clusters": None if self.clusters is None else self.clusters.state_dict(),
            "weight_ema": None if self.weight_ema is None else self.weight_ema.state_dict(),
            "bank": self.bank.state_dict(),
            "sampler": self._sampler_state(),
            "sample_log": None if self.sample_log is None else self.sample_log.state_dict(),
            "world_size": self.world_size,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            },
        }

    def load_state_dict(self, state: dict[str, Any], *, source: object = "checkpoint") -> None:
        """Continue from a checkpoint: weights, optimizers, schedule, clusters, bank, sampler
        position, the global torch (and CUDA) RNG, the step.

        Args:
            state: a :meth:`state_dict` (or a checkpoint file's dictionary).
            source: what to name in the error (the checkpoint's path).

        Raises:
            CheckpointError: its weights or optimizer states do not fit these objects.
        """
        try:
            self.learner.load_state_dict(state["learner"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.adversary is not None:
                self.adversary.load_state_dict(state["adversary"])
                if self.adv_optimizer is not None:
                    self.adv_optimizer.load_state_dict(state["adversary_optimizer"])
                if self.weight_ema is not None:
                    self.weight_ema.load_state_dict(state["weight_ema"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            # torch's first line is only "Error(s) in loading ..."; the next names a key.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            first = (lines[1] if len(lines) > 1 else lines[0])[:200] if lines else repr(exc)
            raise CheckpointError(
                f"{source}: its weights do not fit this config ({first})"
            ) from None
        self._load_clusters(state)
        if self.sampler is not None:
            try:
                self.sampler.load_state_dict(state["sampler"])
            except ValueError as exc:
                raise CheckpointError(f"{source}: {exc}") from None
        if self.sample_log is not None:
            self.sample_log.load_state_dict(state.get("sample_log"))
        torch.set_rng_state(state["rng"]["torch"])
        if self.device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        self.step = int(state["step"])

    def _sampler_state(self) -> dict[str, Any]:
        # The trainer's step is the sampler's position; an adaptive sampler adds its
        # statistics (running losses, cohorts, the distributions in force).
        position = {"step": self.step, "seed": self.cfg.train.seed}
        if isinstance(self.sampler, AdaptiveSpeakerSampler):
            return {**self.sampler.state_dict(), **position}
        return position

    def load_adversary_state(self, state: dict[str, Any]) -> None:
        """Start the adversary where a checkpoint's left off (fine-tuning with the same
        formulation): its weights, the k-means index and the bank; nothing else.
        """
        if self.adversary is None:
            return
        self.adversary.load_state_dict(state["adversary"])
        self._load_clusters(state)

    def _load_clusters(self, state: dict[str, Any]) -> None:
        if state.get("clusters") is not None:
            self.clusters = ClusterIndex.from_state_dict(state["clusters"]).to(self.device)
        self.bank.load_state_dict(state["bank"])


def build_train_state(
    cfg: Config,
    speakers: Sequence[str],
    *,
    device: torch.device | str = "cpu",
    world_size: int = 1,
    sampler: SpeakerBatchSampler | None = None,
) -> TrainState:
    """The state ``fit`` trains, at step 0, from a config and the training speakers.

    Draws the learner's initial weights from the global torch RNG (``fit`` seeds it with
    ``train.seed`` first), the adversary's from its own generator (``train.seed + 1``).

    Args:
        cfg: the experiment.
        speakers: the training speakers, in label order (the manifest's ``speakers``); the
            AAM head has one class per speaker and speed-perturbation class.
        device: where the models live.
        world_size: processes in the job (recorded in the checkpoint).
        sampler: the batch sampler whose position the checkpoint records, if any.

    Raises:
        ValueError: adversary stabiliser settings that cannot work.
    """
    tc, ac = cfg.train, cfg.adversary
    device = torch.device(device)
    learner = build_learner(cfg, len(speakers) * speed_classes(cfg.augment)).to(device)
    if tc.compile:
        # In place (nn.Module.compile): parameters and state_dict keys stay as they are.
        learner.extractor.ecapa.compile(mode=tc.compile_mode, dynamic=False)
    if ac.formulation != "erm":
        check_stabilisers(
            formulation=ac.formulation,
            use_cluster=ac.use_cluster,
            temperature=ac.temperature,
            max_weight=ac.max_weight,
            kl_penalty=ac.kl_penalty,
            chi2_penalty=ac.chi2_penalty,
            weight_ema=ac.weight_ema,
            dro_step_size=ac.dro_step_size,
        )
    adversary = build_adversary_from_config(ac, cfg.model.embedding_dim, seed=tc.seed + 1)
    optimizer = build_optimizer(
        tc.optimizer, learner.parameters(), tc.lr, tc.weight_decay, tc.momentum
    )
    adv_optimizer = weight_ema = None
    if adversary is not None:
        adversary = adversary.to(device)
        if not isinstance(adversary, (GroupDROWeights, VRExWeights)):  # no gradient step
            adv_optimizer = build_optimizer(ac.optimizer, adversary.parameters(), ac.lr)
        if ac.weight_ema > 0:
            weight_ema = WeightEMA(ac.n_clusters, ac.weight_ema)
    return TrainState(
        cfg=cfg,
        speakers=list(speakers),
        device=device,
        learner=learner,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(tc)),
        scaler=torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16"),
        adversary=adversary,
        adv_optimizer=adv_optimizer,
        weight_ema=weight_ema,
        bank=EmbeddingBank.for_clusters(ac.n_clusters, cfg.model.embedding_dim),
        objective=Objective.from_config(cfg),
        margin=MarginSchedule.from_config(cfg.loss),
        sampler=sampler,
        world_size=world_size,
    )

"""The Objective both step functions take, and when the adversary steps (adversary_every)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_config

from arw_sv.checkpoint import list_checkpoints, load_checkpoint
from arw_sv.config import load_config
from arw_sv.models.adversary import build_adversary_from_config
from arw_sv.train.loop import adversary_due, fit
from arw_sv.train.objective import Objective


def test_objective_reads_every_field_from_its_section():
    cfg = load_config(
        None,
        [
            "adversary.formulation=pl", "adversary.weight_aam=false", "adversary.normalize=none",
            "adversary.max_weight=3", "adversary.kl_penalty=0.5", "adversary.chi2_penalty=0.25",
            "loss.aam_weight=0.7", "loss.pair_weight=0.3",
        ],
    )  # fmt: skip
    objective = Objective.from_config(cfg)
    for name in ("formulation", "weight_aam", "normalize", "max_weight"):
        assert getattr(objective, name) == getattr(cfg.adversary, name), name
    assert (objective.kl_penalty, objective.chi2_penalty) == (0.5, 0.25)
    assert (objective.aam_weight, objective.pair_weight) == (0.7, 0.3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        objective.max_weight = 0.0


def test_with_adversary_every_two_the_adversary_changes_only_on_due_steps(tiny_manifests, tmp_path):
    warmup, every, steps = 1, 2, 6
    cfg = tiny_config(
        tmp_path, tiny_manifests[0], f"train.steps={steps}", "train.checkpoint_every=1",
        "train.keep_checkpoints=0", "adversary.formulation=pw",
        f"adversary.warmup_steps={warmup}", f"adversary.adversary_every={every}",
    )  # fmt: skip
    fit(cfg, progress=False)
    states = {int(load_checkpoint(p)["step"]): load_checkpoint(p) for p in list_checkpoints(
        tmp_path / "checkpoints"
    )}  # fmt: skip
    assert sorted(states) == list(range(1, steps + 1))
    initial = build_adversary_from_config(
        cfg.adversary, cfg.model.embedding_dim, seed=cfg.train.seed + 1
    )
    states[0] = {"adversary": initial.state_dict()}  # what the run starts from
    changed = []
    for step in range(steps):  # the step taken from checkpoint `step` to `step + 1`
        before, after = states[step]["adversary"], states[step + 1]["adversary"]
        if any(not torch.equal(before[k], after[k]) for k in before):
            changed.append(step)
    due = [s for s in range(steps) if adversary_due(s, warmup, every)]
    assert due == [1, 3, 5]
    assert changed == due

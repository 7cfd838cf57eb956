"""The Objective both step functions take, and when the adversary steps (adversary_every)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import tiny_config

from arw_sv.checkpoint import list_checkpoints, load_checkpoint
from arw_sv.config import AdversaryConfig, LossConfig, load_config
from arw_sv.models.adversary import build_adversary, build_adversary_from_config
from arw_sv.models.ecapa import build_extractor
from arw_sv.models.heads import AAMSoftmax
from arw_sv.models.pair_loss import PairwiseSimilarityLoss
from arw_sv.train.loop import adversary_due, fit
from arw_sv.train.objective import Objective
from arw_sv.train.step import Learner, adversary_step, learner_step


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


def _step_pair(formulation, **objective_args):
    """One learner and one adversary step from identical starts; -> (learner, adversary)."""
    torch.manual_seed(0)
    learner = Learner(
        build_extractor("tiny", embedding_dim=16), AAMSoftmax(16, 4), PairwiseSimilarityLoss()
    )
    adversary = build_adversary(formulation, embedding_dim=16, n_clusters=3, hidden=8)
    opt_l = torch.optim.SGD(learner.parameters(), 0.1)
    opt_a = torch.optim.SGD(adversary.parameters(), 0.5)
    gen = torch.Generator().manual_seed(1)
    wavs, labels = torch.randn(8, 8000, generator=gen), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    _, detached = learner_step(
        learner, wavs, labels, opt_l, adversary=adversary, clusters=None, **objective_args
    )
    adversary_step(adversary, detached, opt_a, **objective_args)
    return learner, adversary


@pytest.mark.parametrize("formulation", ["aps", "pw"])
def test_steps_with_an_objective_equal_steps_with_the_config_sections(formulation):
    sections = {
        "cfg": AdversaryConfig(formulation=formulation, max_weight=3.0, kl_penalty=0.1),
        "loss_cfg": LossConfig(pair_weight=0.5),
    }
    objective = Objective.from_sections(sections["cfg"], sections["loss_cfg"])
    a = _step_pair(formulation, objective=objective)
    b = _step_pair(formulation, **sections)
    for left, right in zip(a, b, strict=True):
        for (key, x), y in zip(left.state_dict().items(), right.state_dict().values(), strict=True):
            assert torch.equal(x, y), key


def test_a_step_takes_an_objective_or_both_sections_but_not_both():
    objective = Objective.from_sections(AdversaryConfig(formulation="pw"), LossConfig())
    with pytest.raises(TypeError, match="not both"):
        _step_pair("pw", objective=objective, cfg=AdversaryConfig(formulation="pw"))
    with pytest.raises(TypeError, match="objective"):
        _step_pair("pw", cfg=AdversaryConfig(formulation="pw"))


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

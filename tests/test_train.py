"""The training loop and the min-max steps: isolation, ERM equivalence, exact resume,
non-finite checks, atomic checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_config

from arw_sv.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from arw_sv.config import AdversaryConfig, LossConfig
from arw_sv.models.adversary import build_adversary
from arw_sv.models.ecapa import build_extractor
from arw_sv.models.heads import AAMSoftmax
from arw_sv.models.pair_loss import PairwiseSimilarityLoss
from arw_sv.train.loop import fit
from arw_sv.train.objective import Objective
from arw_sv.train.step import (
    Learner,
    NonFiniteError,
    adversary_step,
    backward_and_step,
    learner_step,
)


def _players(formulation="pw"):
    torch.manual_seed(0)
    learner = Learner(
        build_extractor("tiny", embedding_dim=16), AAMSoftmax(16, 4), PairwiseSimilarityLoss()
    )
    adversary = build_adversary(formulation, embedding_dim=16, n_clusters=3, hidden=8)
    return learner, adversary


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before, module):
    return [k for k, v in module.state_dict().items() if not torch.equal(before[k], v)]


@pytest.mark.parametrize("formulation", ["aps", "pl", "pw"])
def test_learner_step_leaves_adversary_and_adversary_step_leaves_learner(formulation):
    learner, adversary = _players(formulation)
    cfg = AdversaryConfig(formulation=formulation)
    opt_l = torch.optim.Adam(learner.parameters(), 1e-2)
    opt_a = torch.optim.Adam(adversary.parameters(), 1e-1)
    wavs, labels = torch.randn(8, 8000), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])

    adv_before, learner_before = _snapshot(adversary), _snapshot(learner)
    stats, detached = learner_step(
        learner,
        wavs,
        labels,
        opt_l,
        adversary=adversary,
        clusters=None,
        objective=Objective.from_sections(cfg, LossConfig()),
    )
    assert _changed(adv_before, adversary) == []
    assert _changed(learner_before, learner)  # the learner did move
    assert stats.weight_mean == pytest.approx(2.0)

    learner_before = _snapshot(learner)
    # Three clusters in the batch: with one (clusters=None) the per-cluster adversary's
    # weights are constant, its gradient is zero up to rounding, and whether Adam moves it
    # depended on the rounding (thread settings).
    from dataclasses import replace

    detached = replace(detached, cluster_ids=torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    adversary_step(adversary, detached, opt_a, objective=Objective.from_sections(cfg, LossConfig()))
    assert _changed(learner_before, learner) == []
    assert _changed(adv_before, adversary)


def test_adversary_step_sends_no_gradient_into_the_learner():
    learner, adversary = _players("pw")
    cfg = AdversaryConfig(formulation="pw")
    opt_l = torch.optim.SGD(learner.parameters(), 0.0)
    _, detached = learner_step(
        learner,
        torch.randn(4, 8000),
        torch.tensor([0, 0, 1, 1]),
        opt_l,
        adversary=adversary,
        clusters=None,
        objective=Objective.from_sections(cfg, LossConfig()),
    )
    opt_l.zero_grad(set_to_none=True)
    adversary_step(
        adversary,
        detached,
        torch.optim.SGD(adversary.parameters(), 0.1),
        objective=Objective.from_sections(cfg, LossConfig()),
    )
    assert all(p.grad is None for p in learner.parameters())


def test_backward_and_step_refuses_non_finite_loss():
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([param], 0.1)
    with pytest.raises(NonFiniteError, match="learner loss"):
        backward_and_step(param.sum() * float("nan"), opt, [param])
    assert torch.equal(param, torch.ones(2))


def _weights(path):
    return load_checkpoint(path)["learner"]


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_adversary_off_reproduces_plain_training_bit_for_bit(tiny_manifests, tmp_path):
    erm = fit(tiny_config(tmp_path / "erm", tiny_manifests[0], "train.steps=6"), progress=False)
    # PW configured but its warm-up never ends: the adversary exists but never acts.
    idle = fit(
        tiny_config(
            tmp_path / "idle",
            tiny_manifests[0],
            "train.steps=6",
            "adversary.formulation=pw",
            "adversary.warmup_steps=100",
        ),
        progress=False,
    )
    _assert_same_state(_weights(erm.checkpoint), _weights(idle.checkpoint))
    # And an active adversary does change the result.
    pw = fit(
        tiny_config(
            tmp_path / "pw",
            tiny_manifests[0],
            "train.steps=6",
            "adversary.formulation=pw",
            "adversary.warmup_steps=0",
        ),
        progress=False,
    )
    assert not torch.equal(
        _weights(erm.checkpoint)["extractor.ecapa.fc.conv.weight"],
        _weights(pw.checkpoint)["extractor.ecapa.fc.conv.weight"],
    )


def test_same_seed_same_weights_other_seed_differs(tiny_manifests, tmp_path):
    a = fit(tiny_config(tmp_path / "a", tiny_manifests[0], "train.steps=3"), progress=False)
    b = fit(tiny_config(tmp_path / "b", tiny_manifests[0], "train.steps=3"), progress=False)
    c = fit(
        tiny_config(tmp_path / "c", tiny_manifests[0], "train.steps=3", "train.seed=1"),
        progress=False,
    )
    _assert_same_state(_weights(a.checkpoint), _weights(b.checkpoint))
    assert not torch.equal(
        _weights(a.checkpoint)["aam.weight"], _weights(c.checkpoint)["aam.weight"]
    )


@pytest.mark.parametrize("formulation", ["erm", "pw"])
def test_resume_gives_the_same_final_state_as_an_uninterrupted_run(
    tiny_manifests, tmp_path, formulation
):
    # PW with a short warm-up and frequent k-means refreshes, so the resume crosses the
    # adversary's start, a refresh, and the embedding bank.
    extra = [
        "train.steps=12",
        f"adversary.formulation={formulation}",
        "adversary.warmup_steps=3",
        "adversary.cluster_refresh_steps=4",
        "train.checkpoint_every=100",
    ]
    full = fit(tiny_config(tmp_path / "full", tiny_manifests[0], *extra), progress=False)
    cfg = tiny_config(tmp_path / "cut", tiny_manifests[0], *extra)
    first = fit(cfg, progress=False, stop_after=5)
    assert first.steps == 5 and first.checkpoint.name == "step_5.pt"
    second = fit(cfg, resume=True, progress=False)
    assert second.steps == 12
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(second.checkpoint)
    for key in ("learner", "optimizer", "scheduler"):
        _assert_same_state(_flat(a[key]), _flat(b[key]))
    if formulation == "pw":
        _assert_same_state(a["adversary"], b["adversary"])
        _assert_same_state(_flat(a["adversary_optimizer"]), _flat(b["adversary_optimizer"]))
        assert torch.equal(a["clusters"]["centroids"], b["clusters"]["centroids"])
    # The history holds each logged step once.
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "history.jsonl").open()]
    assert steps == sorted(set(steps))


def _flat(state, prefix=""):
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(state, list | tuple):
        for i, v in enumerate(state):
            out.update(_flat(v, f"{prefix}{i}."))
    elif isinstance(state, torch.Tensor):
        out[prefix] = state
    elif isinstance(state, int | float | bool):
        out[prefix] = torch.tensor(float(state))
    else:
        out[prefix] = torch.tensor(hash(str(state)))
    return out


def test_existing_run_needs_resume(tiny_manifests, tmp_path):
    cfg = tiny_config(tmp_path / "r", tiny_manifests[0], "train.steps=1")
    fit(cfg, progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        fit(cfg, progress=False)


def test_nan_training_stops_with_evidence_and_no_checkpoint(tiny_manifests, tmp_path):
    cfg = tiny_config(tmp_path / "nan", tiny_manifests[0])
    object.__setattr__(cfg.loss, "aam_scale", float("nan"))  # configs refuse it (issue 27)
    with pytest.raises(NonFiniteError, match="step 0") as info:
        fit(cfg, progress=False)
    evidence = tmp_path / "nan" / "failure" / "step_0.pt"
    assert str(evidence) in str(info.value) and evidence.is_file()
    assert list_checkpoints(tmp_path / "nan" / "checkpoints") == []


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint({"extractor": {"w": torch.ones(1)}, "config": {}}, path)

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"extractor": {"w": torch.zeros(1)}, "config": {}}, path)
    assert torch.equal(load_checkpoint(path)["extractor"]["w"], torch.ones(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_training_loss_falls(tiny_manifests, tmp_path):
    cfg = tiny_config(
        tmp_path / "fall",
        tiny_manifests[0],
        "train.steps=40",
        "train.log_every=1",
        "loss.margin_warmup_steps=0",
        "loss.aam_margin=0.0",
    )
    fit(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "fall" / "history.jsonl").open()]
    assert sum(losses[-8:]) / 8 < 0.8 * sum(losses[:8]) / 8
    assert (tmp_path / "fall" / "training_curves.png").stat().st_size > 1000
    assert (tmp_path / "fall" / "config.yaml").is_file()

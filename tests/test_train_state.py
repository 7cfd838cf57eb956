"""TrainState: the checkpoint format, its round trip, and fine-tuning from a checkpoint."""

from __future__ import annotations

import json

import torch
from conftest import tiny_config

from arw_sv.checkpoint import save_checkpoint
from arw_sv.clusters import ClusterIndex
from arw_sv.config import load_config
from arw_sv.models.heads import MarginSchedule, margin_at
from arw_sv.train import loop
from arw_sv.train.build import build_learner
from arw_sv.train.state import build_train_state
from arw_sv.train.step import adversary_step, learner_step

# Every checkpoint written so far has exactly these keys, in this order.
CHECKPOINT_KEYS = [
    "step", "config", "speakers", "extractor", "learner", "optimizer", "scheduler", "scaler",
    "adversary", "adversary_optimizer", "clusters", "weight_ema", "bank", "sampler",
    "sample_log",
    "world_size", "rng",
]  # fmt: skip
SMALL = ["model.preset=tiny", "model.embedding_dim=16", "adversary.n_clusters=2"]


def _assert_equal(a, b, path="state"):
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for key in a:
            _assert_equal(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{path}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


def _trained_state(cfg, speakers):
    """A state one learner and one adversary step away from its start, with clusters."""
    state = build_train_state(cfg, speakers)
    gen = torch.Generator().manual_seed(3)
    state.bank.add(torch.randn(40, 16, generator=gen))
    state.clusters = ClusterIndex.fit(state.bank.filled(), 2, seed=0)
    wavs, labels = torch.randn(4, 8000, generator=gen), torch.tensor([0, 0, 1, 1])
    _, detached = learner_step(
        state.learner, wavs, labels, state.optimizer, adversary=state.adversary,
        clusters=state.clusters, objective=state.objective, weight_ema=state.weight_ema,
    )  # fmt: skip
    adversary_step(state.adversary, detached, state.adv_optimizer, objective=state.objective)
    state.scheduler.step()
    state.step = 1
    return state


def test_state_dict_round_trips_and_keeps_the_checkpoint_format():
    cfg = load_config(None, [*SMALL, "adversary.formulation=pw", "adversary.weight_ema=0.5"])
    speakers = ["a", "b"]
    saved = _trained_state(cfg, speakers).state_dict()
    assert list(saved) == CHECKPOINT_KEYS
    torch.manual_seed(99)  # another RNG state and other initial weights
    fresh = build_train_state(cfg, speakers)
    assert not torch.equal(fresh.learner.aam.weight, saved["learner"]["aam.weight"])
    fresh.load_state_dict(saved)
    assert fresh.step == 1 and fresh.clusters is not None
    _assert_equal(fresh.state_dict(), saved)


def test_the_erm_state_has_no_adversary_entries():
    cfg = load_config(None, SMALL)
    saved = build_train_state(cfg, ["a", "b", "c"]).state_dict()
    assert list(saved) == CHECKPOINT_KEYS
    assert saved["adversary"] is saved["adversary_optimizer"] is saved["weight_ema"] is None
    assert saved["learner"]["aam.weight"].shape == (3, 16)


def test_init_from_a_checkpoint_with_other_speakers_keeps_the_extractor_and_a_fresh_head(
    tmp_path,
):
    cfg = load_config(None, SMALL)
    state = build_train_state(cfg, ["a", "b", "c", "d"])
    source = state.learner
    with torch.no_grad():
        for param in source.parameters():
            param.add_(1.0)  # unlike any fresh initialisation
    path = tmp_path / "source.pt"
    save_checkpoint(state.state_dict(), path)
    target = build_learner(cfg, 3)
    fresh_head = target.aam.weight.detach().clone()
    start = loop._initialise_from(str(path), target, ["x", "y", "z"], cfg)
    assert start is None  # no adversary to carry over
    _assert_equal(target.extractor.state_dict(), source.extractor.state_dict())
    _assert_equal(target.pair.state_dict(), source.pair.state_dict())
    assert target.aam.weight.shape == (3, 16)
    assert torch.equal(target.aam.weight, fresh_head)


def test_margin_schedule_equals_the_inline_warmup_it_replaces():
    overrides = ["loss.aam_margin=0.3", "loss.margin_warmup_start=5", "loss.margin_warmup_steps=8"]
    loss = load_config(None, overrides).loss
    schedule = MarginSchedule.from_config(loss)
    for step in (0, 4, 5, 6, 9, 13, 14, 100):
        inline = margin_at(
            step, loss.aam_margin, loss.margin_warmup_start, loss.margin_warmup_steps
        )
        assert schedule(step) == inline, step
    assert [schedule(s) for s in (4, 5, 9, 13, 50)] == [0.0, 0.0, 0.15, 0.3, 0.3]
    jump = MarginSchedule.from_config(load_config(None, ["loss.margin_warmup_start=3"]).loss)
    assert [jump(s) for s in (2, 3)] == [0.0, load_config(None, []).loss.aam_margin]


def test_fit_trains_each_step_at_the_scheduled_margin(tiny_manifests, tmp_path):
    cfg = tiny_config(
        tmp_path, tiny_manifests[0], "train.steps=4", "train.log_every=1",
        "loss.aam_margin=0.2", "loss.margin_warmup_start=1", "loss.margin_warmup_steps=2",
    )  # fmt: skip
    loop.fit(cfg, progress=False)
    records = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    # The record after step s (logged as s + 1) carries the margin step s trained with.
    assert [r["margin"] for r in records] == [0.0, 0.0, 0.1, 0.2]

"""Compiled training (``train.compile``): the same numbers as eager, and exact resume.

Slow: each test compiles the tiny ECAPA (tens of seconds on a CPU, cold).
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from arw_sv.checkpoint import load_checkpoint
from arw_sv.models.ecapa import build_extractor
from arw_sv.models.heads import AAMSoftmax
from arw_sv.models.pair_loss import PairwiseSimilarityLoss
from arw_sv.train.loop import fit
from arw_sv.train.step import Learner

pytestmark = pytest.mark.slow

# Inductor fuses and reorders float32 reductions, so compiled and eager agree to rounding,
# not bit for bit: the stated tolerance for train.compile (docs/performance.md).
LOSS_RTOL = 1e-4
GRAD_ATOL = 1e-4


def _learner(seed: int = 0) -> Learner:
    torch.manual_seed(seed)
    return Learner(
        build_extractor("tiny", embedding_dim=16), AAMSoftmax(16, 4), PairwiseSimilarityLoss()
    )


def test_compiled_loss_and_gradients_equal_eager():
    eager, compiled = _learner(), _learner()
    compiled.extractor.ecapa.compile(dynamic=False)
    waves = torch.randn(8, 16000, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    results = []
    for learner in (eager, compiled):
        learner.train()
        emb, aam, _pairs = learner(waves, labels)
        loss = aam.mean() + emb.pow(2).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in learner.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss_e, grads_e), (loss_c, grads_c) = results
    assert torch.allclose(loss_c, loss_e, rtol=LOSS_RTOL)
    assert grads_e.keys() == grads_c.keys() and any("ecapa" in n for n in grads_e)
    for name in grads_e:
        assert torch.allclose(grads_c[name], grads_e[name], atol=GRAD_ATOL), name
    # Compiling in place keeps the state_dict keys, so checkpoints are interchangeable.
    assert eager.state_dict().keys() == compiled.state_dict().keys()


def test_compiled_resume_equals_uninterrupted_compiled_run(tiny_manifests, tmp_path):
    extra = ["train.steps=6", "train.compile=true", "train.checkpoint_every=100"]
    full = fit(tiny_config(tmp_path / "full", tiny_manifests[0], *extra), progress=False)
    cfg = tiny_config(tmp_path / "cut", tiny_manifests[0], *extra)
    fit(cfg, progress=False, stop_after=3)
    second = fit(cfg, resume=True, progress=False)
    a, b = (
        load_checkpoint(full.checkpoint)["learner"],
        load_checkpoint(second.checkpoint)["learner"],
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key

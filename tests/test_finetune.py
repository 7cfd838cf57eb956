"""Fine-tuning overrides: any shipped config becomes a fine-tune of a trained checkpoint."""

from __future__ import annotations

import pytest

from arw_sv.config import load_config
from arw_sv.demo import config_path
from arw_sv.finetune import finetune_overrides


@pytest.mark.parametrize("name", ["demo", "demo_arw_pw"])
def test_finetune_overrides_turn_a_config_into_a_finetune(name):
    cfg = load_config(config_path(name), list(finetune_overrides("erm/final.pt", 250, 1e-3)))
    assert cfg.train.init_checkpoint == "erm/final.pt"
    assert cfg.train.steps == 250
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.train.final_lr == pytest.approx(2e-4)
    assert cfg.train.warmup_steps == 25
    # the margin at its final value from step 0, the adversary playing from step 0
    assert cfg.loss.margin_warmup_start == 0 and cfg.loss.margin_warmup_steps == 0
    assert cfg.adversary.warmup_steps == 0
    # untouched: the method itself
    base = load_config(config_path(name))
    assert cfg.adversary.formulation == base.adversary.formulation
    assert cfg.loss.aam_margin == base.loss.aam_margin


def test_finetune_overrides_short_runs_still_warm_up_one_step():
    cfg = load_config(config_path("demo"), list(finetune_overrides("x.pt", 5)))
    assert cfg.train.warmup_steps == 1


@pytest.mark.parametrize("steps, lr", [(0, 1e-3), (10, 0.0), (10, float("nan"))])
def test_finetune_overrides_refuse_an_empty_or_frozen_finetune(steps, lr):
    with pytest.raises(ValueError, match="fine-tuning"):
        finetune_overrides("x.pt", steps, lr)

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


def test_train_finetune_flag_applies_the_overrides_and_the_users_win(monkeypatch, capsys):
    from types import SimpleNamespace

    from arw_sv import cli
    from arw_sv.train import loop

    seen = {}

    def fake_fit(cfg, **kwargs):
        seen["cfg"] = cfg
        return SimpleNamespace(steps=cfg.train.steps, utterances_per_second=1.0, checkpoint="c")

    monkeypatch.setattr(loop, "fit", fake_fit)
    argv = ["train", "demo_arw_pw_paironly", "--finetune", "erm.pt", "--finetune-steps", "50",
            "train.steps=40", "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    cfg = seen["cfg"]
    assert cfg.train.init_checkpoint == "erm.pt"
    assert cfg.train.steps == 40  # the user's override wins over --finetune-steps
    assert cfg.train.warmup_steps == 5  # from --finetune-steps 50
    assert cfg.train.lr == pytest.approx(0.0005) and cfg.loss.margin_warmup_steps == 0
    assert cfg.adversary.warmup_steps == 0 and not cfg.adversary.weight_aam


def test_train_finetune_with_zero_steps_is_one_line_error(capsys):
    from arw_sv import cli

    assert cli.main(["train", "demo", "--finetune", "erm.pt", "--finetune-steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fine-tuning steps must be >= 1" in err[0]

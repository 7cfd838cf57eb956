"""The learning-rate schedule: linear warm-up, then exponential (or linear) decay."""

from __future__ import annotations

import math

import pytest

from arw_sv.config import load_config
from arw_sv.train.build import lr_factor


def _train(**values):
    return load_config(None, [f"train.{k}={v}" for k, v in values.items()]).train


def test_warmup_is_linear_and_reaches_one():
    factor = lr_factor(_train(steps=100, warmup_steps=4, lr=0.01, final_lr=0.001))
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_exponential_decay_ends_at_final_lr_ratio():
    factor = lr_factor(_train(steps=104, warmup_steps=4, lr=0.01, final_lr=0.001))
    assert factor(4) == pytest.approx(1.0)
    # Half-way through the decay the factor is the geometric mean of 1 and 0.1.
    assert factor(54) == pytest.approx(math.sqrt(0.1))
    assert factor(104) == pytest.approx(0.1)
    assert factor(10_000) == pytest.approx(0.1)  # clamped after the last step


def test_final_lr_zero_switches_to_linear_decay():
    factor = lr_factor(_train(steps=104, warmup_steps=4, lr=0.01, final_lr=0.0))
    assert factor(4) == pytest.approx(1.0)
    assert factor(54) == pytest.approx(0.5)
    assert factor(79) == pytest.approx(0.25)
    assert factor(104) == pytest.approx(0.0)

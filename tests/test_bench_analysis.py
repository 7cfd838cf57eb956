"""The adversary analysis reports the weights the learner trained with (cap, GroupDRO)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arw_sv.data.manifest import read_manifest
from arw_sv.train.loop import fit
from bench.fairness.analysis import analyse_checkpoint
from tests.conftest import tiny_config


@pytest.mark.parametrize(
    "overrides, check",
    [
        # a cap at the mean (2) leaves every weight at exactly 2: ARL's uncapped weights
        # of the same adversary would spread around it
        (("adversary.formulation=pw", "adversary.hidden=0", "adversary.max_weight=2.0"),
         lambda w: w["max_weight"] == pytest.approx(2.0)
         and w["std_weight"] == pytest.approx(0.0, abs=1e-6)),
        # GroupDRO's weights are q-derived (mean 1 over a sample holding every cluster), not
        # pushed through ARL's normalisation (which would make the mean 2)
        (("adversary.formulation=groupdro", "adversary.dro_step_size=1.0"),
         lambda w: w["mean_weight"] == pytest.approx(1.0, rel=1e-4)),
    ],
)  # fmt: skip
def test_analysis_weights_are_the_trained_ones(tiny_manifests, tmp_path, overrides, check):
    train, _ = tiny_manifests
    cfg = tiny_config(tmp_path / "run", train, "train.steps=8", *overrides)
    result = fit(cfg, progress=False)
    report = analyse_checkpoint(result.checkpoint, read_manifest(train), n_utterances=24)
    weights = report["adversary"]
    assert weights is not None and check(weights), weights
    assert np.isfinite(weights["mean_weight"])


def test_training_monitors_summarise_the_history_by_hand(tmp_path):
    from types import SimpleNamespace

    from bench.fairness.runs import training_monitors

    rows = [
        {"step": 10, "loss": 3.0},  # an ERM-style row: no monitors
        {"step": 20, "weight_ess": 16.0, "weight_max": 3.0, "weight_loss_spearman": 0.2,
         "weight_pb/nationality=India": 0.1, "weight_pb/nationality=USA": -0.1},
        {"step": 30, "weight_ess": 8.0, "weight_max": 7.5, "weight_loss_spearman": 0.4,
         "weight_pb/nationality=India": 0.3, "weight_pb/nationality=USA": None},
    ]  # fmt: skip
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = SimpleNamespace(speakers_per_batch=8, utterances_per_speaker=2)  # B = 16
    got = training_monitors(history, data)
    assert got["logged_steps"] == 2
    assert got["ess_fraction_mean"] == pytest.approx((1.0 + 0.5) / 2)
    assert got["ess_fraction_min"] == pytest.approx(0.5)
    assert got["weight_max"] == 7.5
    assert got["spearman_mean"] == pytest.approx(0.3)
    assert got["point_biserial_mean"] == {
        "nationality=India": pytest.approx(0.2),
        "nationality=USA": pytest.approx(-0.1),
    }
    # an ERM run (no weights) and a missing history have no monitors
    history.write_text(json.dumps(rows[0]) + "\n")
    assert training_monitors(history, data) is None
    assert training_monitors(tmp_path / "missing.jsonl", data) is None

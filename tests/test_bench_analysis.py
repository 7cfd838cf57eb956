"""The adversary analysis reports the weights the learner trained with (cap, GroupDRO)."""

from __future__ import annotations

import numpy as np
import pytest

from arw_sv.data.manifest import read_manifest
from arw_sv.train.loop import fit
from bench.analysis import analyse_checkpoint
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

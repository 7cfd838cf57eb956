"""The benchmark's record of what label-free cohort samplers found and of the pair term."""

from __future__ import annotations

import json

import numpy as np
import pytest

from arw_sv.data.manifest import Utterance, write_manifest
from bench.fairness import runs, summary


def _manifest(path, speakers, split):
    """Two utterances per speaker; ``speakers``: (id, gender, nationality)."""
    utts = [
        Utterance(f"{s}/u{k}.wav", f"/x/{s}/u{k}.wav", s, 2.0, g, n, split, "s1")
        for s, g, n in speakers
        for k in range(2)
    ]
    write_manifest(utts, path)
    return str(path)


TRAIN = [("a", "m", "India"), ("b", "f", "India"), ("c", "m", "USA"), ("d", "f", "USA")]
HELD = [("h1", "m", "India"), ("h2", "f", "USA"), ("h3", "m", "USA"), ("h4", "f", "UK")]


def test_cohort_report_judges_held_out_discovery_with_the_labels(tmp_path):
    train = _manifest(tmp_path / "train.csv", TRAIN, "dev")
    held = _manifest(tmp_path / "held.csv", HELD, "cal")
    prepass = tmp_path / "sampling_prepass.json"
    prepass.write_text(json.dumps({
        "key": {"sampling": "cohort_heldout"},
        "cohort": [2, 0, 1, 2],  # h1 and h4 in the bottom cohort 2
        "selected": [2],
        "train_cohort": [2, 2, 0, 1],
        "oversample": [True, True, False, False],
        "bottom_eer": 0.3, "rest_eer": 0.1, "bottom_share": 0.5,
    }))  # fmt: skip
    got = runs.cohort_report(prepass, train, held)
    nat = got["groups"]["nationality"]
    assert nat["training"] == {"India": 0.5, "USA": 0.5}
    assert nat["oversampled"] == {"India": 1.0, "USA": 0.0}
    assert nat["best_cohort"] == {"India": 1.0, "USA": 1.0}
    assert nat["heldout"] == {"India": 0.25, "UK": 0.25, "USA": 0.5}
    assert nat["bottom_heldout"] == {"India": 0.5, "UK": 0.5, "USA": 0.0}
    assert got["groups"]["gender"]["oversampled"] == {"f": 0.5, "m": 0.5}
    assert (got["bottom_eer"], got["rest_eer"], got["bottom_share"]) == (0.3, 0.1, 0.5)
    # a sampler's table, rendered: India 1.00 of the oversampled against 0.50 of training
    md = "\n".join(summary._cohort_markdown([{"method": "cohort_heldout", "cohorts": got}],
                                            ["cohort_heldout"]))  # fmt: skip
    row = [x for x in md.splitlines() if x.startswith("| cohort_heldout")][0]
    assert row.split(" | ")[1:5] == ["30.00", "10.00", "0.50", "1.00 (0.50)"]
    # cohort batches: no ranking, only how the cohorts concentrate each group
    prepass.write_text(json.dumps({"key": {"sampling": "cohort_batches"}, "cohort": [0, 0, 1, 1]}))
    nat = runs.cohort_report(prepass, train)["groups"]["nationality"]
    assert "oversampled" not in nat and nat["best_cohort"] == {"India": 1.0, "USA": 1.0}
    prepass.write_text(json.dumps({"key": {"sampling": "jtt"}, "errors": [True]}))
    assert runs.cohort_report(prepass, train) is None
    assert runs.cohort_report(tmp_path / "none.json", train) is None


def test_pair_term_monitor_means_the_first_and_last_quarter_of_logged_steps(tmp_path):
    history = tmp_path / "history.jsonl"
    rows = [{"step": i, "pair_loss": 1.0 / (i + 1), "pair_grad_share": 0.5 - 0.05 * i}
            for i in range(8)]  # fmt: skip
    rows.insert(3, {"step": 99, "pair_loss": 9.0})  # a step without the share: left out
    history.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = runs.pair_term_monitor(history)
    assert got["logged_steps"] == 8
    assert got["share_first"] == pytest.approx(np.mean([0.5, 0.45]))
    assert got["share_last"] == pytest.approx(np.mean([0.5 - 0.3, 0.5 - 0.35]))
    assert got["loss_last"] == pytest.approx(np.mean([1 / 7, 1 / 8]))
    history.write_text(json.dumps({"step": 1, "pair_loss": 1.0}) + "\n")
    assert runs.pair_term_monitor(history) is None

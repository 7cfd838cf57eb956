"""bench/fairness/share_audit.py against hand-made run results."""

import json

import numpy as np

from bench.fairness.share_audit import audit


def _result(path, india_eer, windows_india, windows_f, flagged=None):
    path.mkdir(parents=True)
    shares = {
        "groups": {
            "nationality=India": {"speaker_share": 0.1, "windows": windows_india},
            "nationality=UK": {
                "speaker_share": 0.9,
                "windows": [
                    {"step": w["step"], "crop_share": 1 - w["crop_share"]} for w in windows_india
                ],
            },
            "gender=f": {"speaker_share": 0.5, "windows": windows_f},
        },
        "cohort_purity": flagged or [],
    }
    metrics = {"eer_nationality:India": india_eer}
    (path / "result.json").write_text(json.dumps({"metrics": metrics, "shares": shares}))


def test_audit_by_hand(tmp_path):
    runs = tmp_path / "representation" / "corpus3" / "runs"
    flat = [{"step": s, "crop_share": 0.1} for s in (300, 600, 900, 1200)]
    _result(runs / "erm" / "seed0", 0.20, flat, [{"step": 300, "crop_share": 0.5}])
    _result(runs / "erm_balanced" / "seed0", 0.15, flat, [{"step": 300, "crop_share": 0.5}])
    rising = [{"step": 300, "crop_share": 0.1}, {"step": 600, "crop_share": 0.2},
              {"step": 900, "crop_share": 0.3}, {"step": 1200, "crop_share": 0.3}]  # fmt: skip
    women = [{"step": s, "crop_share": 0.7} for s in (300, 600, 900, 1200)]
    flagged = [{"step": 300, "flagged_share": {"India": 0.25}}, {"step": 600, "flagged_share": {}}]
    _result(runs / "sampler" / "seed0", 0.18, rising, women, flagged)
    row = audit(tmp_path, "representation", "sampler", [3], split=600).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["3", "0", "15.0%", "30.0%"]  # mean of 0.1, 0.2; of 0.3, 0.3
    assert cells[4].startswith("nationality=India 30% / 10%, gender=f 70% / 50%")
    assert cells[5] == "25, 0"
    assert cells[6] == "-10.0%" and cells[7] == "-25.0%"


def test_correlation_over_runs_and_no_purity_for_another_attribute(tmp_path):
    runs = tmp_path / "representation" / "corpus3" / "runs"
    early, changes = [0.1, 0.2, 0.4], []
    for seed, share in enumerate(early):
        windows = [{"step": 300, "crop_share": share}, {"step": 1200, "crop_share": share}]
        women = [{"step": 300, "crop_share": 0.5}, {"step": 1200, "crop_share": 0.5}]
        erm_eer, eer = 0.2, 0.2 - 0.1 * share + 0.01 * seed**2
        changes.append(eer / erm_eer - 1)
        _result(runs / "erm" / f"seed{seed}", erm_eer, windows, women)
        # purity recorded by gender only: none to show for the India minority
        _result(runs / "sampler" / f"seed{seed}", eer, windows, women,
                [{"step": 300, "flagged_share": {"f": 0.6}}])  # fmt: skip
    text = audit(tmp_path, "representation", "sampler", [3], split=600)
    rows = [line for line in text.splitlines() if line.startswith("| 3 |")]
    assert all(row.split("|")[6].strip() == "n/a" for row in rows)
    expected = np.corrcoef(early, changes)[0, 1]
    assert text.splitlines()[-1].endswith(f"over 3 runs: {expected:+.2f}")

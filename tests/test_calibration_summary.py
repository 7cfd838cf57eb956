"""bench/calibration/summary.py's issue-28 table on made-up experiment results."""

from __future__ import annotations

import json

from bench.calibration.summary import threshold_table


def _cell(eer, dcf, nat, gen):
    cell = {"eer": eer, "min_dcf": dcf, "cllr": 0.3}
    for t, r in zip(("0.001", "0.01", "eer"), nat, strict=True):
        cell[f"nationality@{t}"] = {"fmr_ratio": r}
    for t, r in zip(("0.001", "0.01", "eer"), gen, strict=True):
        cell[f"gender@{t}"] = {"fmr_ratio": r}
    return cell


def test_parity_and_worse_than_raw_are_counted_per_model(tmp_path):
    folders = []
    for seed, method_cell in enumerate([
        _cell(0.08, 0.70, (1.2, 1.1, 1.25), (1.0, 1.1, 1.2)),  # parity everywhere
        _cell(0.08, 0.70, (1.2, 1.1, 1.3), (1.0, 1.1, 1.2)),  # 1.3 at the EER threshold
        _cell(0.08, 0.90, (1.2, 1.1, 1.2), (1.0, 1.1, 1.2)),  # minDCF worse than raw
    ]):  # fmt: skip
        folder = tmp_path / "corpus0" / "erm" / f"seed{seed}" / "calibration"
        folder.mkdir(parents=True)
        results = {"raw": _cell(0.09, 0.80, (5.0, 4.0, 3.0), (1.2, 1.15, 1.2)),
                   "default": method_cell, "broken": {"error": "refused"}}  # fmt: skip
        (folder / "results.json").write_text(json.dumps(results))
        folders.append(folder)
    lines = threshold_table(folders, ["raw", "default", "broken"], ["nationality", "gender"])
    rows = [line for line in lines if line.startswith("| corpus0/erm/seed1 | default |")]
    assert rows == ["| corpus0/erm/seed1 | default | 8.00 | 0.700 | 0.300 | 1.20 | 1.10 | "
                    "1.30 | 1.00 | 1.10 | 1.20 |"]  # fmt: skip
    tally = {line.split(" | ")[0][2:]: line for line in lines if line.count("|") == 5}
    assert tally["default"] == "| default | 3 | 2 | 1 |"  # seeds 0, 2 at parity; 2 worse
    assert tally["raw"] == "| raw | 3 | 0 | 0 |"
    assert "broken" not in tally  # refused cells are left out

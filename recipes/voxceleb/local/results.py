#!/usr/bin/env python3
"""One Markdown table of a run's evaluation reports (``<exp>/eval/*/report.json``).

Columns: EER and minDCF(0.01) overall; the gender EER gap and the population standard
deviation of the nationality EERs (the ARW paper's two fairness numbers), in points.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _points(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def table(exp: Path) -> str:
    rows = [
        f"Results of {exp} (`{exp}/eval/*/report.md` has the per-group tables)",
        "",
        "| list | scoring | trials | EER % | minDCF 0.01 | gender EER gap | nationality EER std |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in sorted((exp / "eval").glob("*/report.json")):
        r = json.loads(report.read_text())
        name = report.parent.name
        kind = "AS-norm" if name.endswith("_asnorm") else "cosine"
        groups = r.get("groups") or {}
        gap = (groups.get("gender") or {}).get("disparity", {}).get("gap")
        std = (groups.get("nationality") or {}).get("disparity", {}).get("std")
        o = r["overall"]
        rows.append(
            f"| {name.removesuffix('_asnorm')} | {kind} | {o['n_trials']} | {_points(o['eer'])} "
            f"| {o['min_dcf']['0.01']['value']:.4f} | {_points(gap)} | {_points(std)} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: results.py <exp folder>")
    sys.stdout.write(table(Path(sys.argv[1])))

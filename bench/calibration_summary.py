"""The method table over several models' ``bench.calibration`` results (paired with raw cosine).

For each calibration method and each model (a training method x seed), the change against
that model's raw cosine scores of: the nationality (or ``--grouping``) max/min FMR ratio and
GARBE at the FMR-1% threshold, overall EER (points) and minDCF; then whether the issue's
criterion holds for that model (FMR ratio at least halved, GARBE at least -30%, EER and
minDCF not worse, Cllr better than raw). Writes Markdown to stdout and ``--out``.

Usage::

    python -m bench.calibration_summary runs/h1/crowding/corpus0/runs/*/seed*/calibration \\
        --out docs/results/calibration-h1/summary.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from arw_sv.atomic import atomic_write_text


def changes(raw: dict, cell: dict, grouping: str) -> dict:
    """Relative and absolute changes of one cell against raw cosine on the same model."""
    key = f"{grouping}@0.01"
    r, c = raw[key], cell[key]

    def rel(a, b):
        return None if a in (None, 0) or b is None else (b - a) / a

    out = {
        "fmr_ratio": rel(r["fmr_ratio"], c["fmr_ratio"]),
        "garbe": rel(r["garbe"], c["garbe"]),
        "eer_points": 100 * (cell["eer"] - raw["eer"]),
        "min_dcf": cell["min_dcf"] - raw["min_dcf"],
        "cllr": cell["cllr"] - raw["cllr"],
    }
    out["criterion"] = bool(
        out["fmr_ratio"] is not None
        and out["fmr_ratio"] <= -0.5
        and out["garbe"] is not None
        and out["garbe"] <= -0.3
        and out["eer_points"] <= 0
        and out["min_dcf"] <= 0
        and out["cllr"] < 0
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("folders", nargs="+", type=Path, help="bench.calibration --out folders")
    p.add_argument("--grouping", default="nationality")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    per_method: dict[str, list[tuple[str, dict]]] = {}
    for folder in args.folders:
        results = json.loads((folder / "results.json").read_text())
        model = "/".join(folder.parts[-3:-1])
        for name, cell in results.items():
            if name == "raw" or name.startswith("curve_") or "error" in cell:
                continue
            per_method.setdefault(name, []).append(
                (model, changes(results["raw"], cell, args.grouping))
            )

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.mean(values) if values else None

    def pct(x):
        return "n/a" if x is None else f"{100 * x:+.0f}%"

    lines = [
        f"{args.grouping}: change against raw cosine on the same model, mean over "
        f"{len(args.folders)} models (min .. max)",
        "",
        "| method | FMR max/min @1% | GARBE @1% | EER (points) | minDCF | models meeting the criterion |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in per_method.items():
        fmr = [r["fmr_ratio"] for _, r in rows]
        garbe = [r["garbe"] for _, r in rows]
        eer = [r["eer_points"] for _, r in rows]
        dcf = [r["min_dcf"] for _, r in rows]
        ok = sum(r["criterion"] for _, r in rows)
        valid = [x for x in fmr if x is not None]
        lines.append(
            f"| {name} | {pct(mean(fmr))} ({pct(min(valid)) if valid else 'n/a'} .. "
            f"{pct(max(valid)) if valid else 'n/a'}) | {pct(mean(garbe))} | "
            f"{mean(eer):+.2f} | {mean(dcf):+.3f} | {ok}/{len(rows)} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()

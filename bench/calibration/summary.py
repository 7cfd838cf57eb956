"""The method table over several models' ``bench.calibration.experiment`` results (paired with raw cosine).

For each calibration method and each model (a training method x seed), the change against
that model's raw cosine scores of: the planted grouping's max/min FMR and FNMR ratios at the
FMR-1% and FMR-0.1% thresholds, GARBE and FaDR at FMR 1%, overall EER (points), minDCF and
Cllr, and the worst group's EER (points); then whether the issue's criterion holds for that
model (FMR ratio at least halved, GARBE at least -30%, EER and minDCF not worse, Cllr better
than raw). Writes Markdown to stdout and ``--out``.

With folders of several mechanisms (``.../<mechanism>/corpus<k>/runs/<method>/seed<s>/
calibration``, as ``bench/calibration/heldout.sh`` writes them), ``--overview`` prints the
method x mechanism table instead: per mechanism, the mean change of the FMR ratio and of
GARBE at FMR 1% and how many models meet the criterion; the gender mechanism is read on
gender, the others on nationality.

Usage::

    python -m bench.calibration.summary runs/h1/crowding/corpus0/runs/*/seed*/calibration \\
        --out docs/results/calibration-h1/summary.md
    python -m bench.calibration.summary runs/h*/*/corpus0/runs/*/seed*/calibration --overview
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from arw_sv.atomic import atomic_write_text

#: The attribute each mechanism plants its disparity on (the others: nationality).
PLANTED = {"gender": "gender"}


def _rel(a, b):
    return None if a in (None, 0) or b is None else (b - a) / a


def changes(raw: dict, cell: dict, grouping: str) -> dict:
    """Relative and absolute changes of one cell against raw cosine on the same model."""
    r1, c1 = raw[f"{grouping}@0.01"], cell[f"{grouping}@0.01"]
    r01, c01 = raw.get(f"{grouping}@0.001", {}), cell.get(f"{grouping}@0.001", {})
    worst_raw = max(raw.get(f"{grouping}_eer", {}).values(), default=None)
    worst = max(cell.get(f"{grouping}_eer", {}).values(), default=None)
    out = {
        "fmr_ratio": _rel(r1["fmr_ratio"], c1["fmr_ratio"]),
        "fnmr_ratio": _rel(r1.get("fnmr_ratio"), c1.get("fnmr_ratio")),
        "fmr_ratio_01": _rel(r01.get("fmr_ratio"), c01.get("fmr_ratio")),
        "fnmr_ratio_01": _rel(r01.get("fnmr_ratio"), c01.get("fnmr_ratio")),
        "garbe": _rel(r1["garbe"], c1["garbe"]),
        "fadr": None if c1.get("fadr") is None else c1["fadr"] - r1["fadr"],
        "eer_points": 100 * (cell["eer"] - raw["eer"]),
        "worst_eer_points": None if worst is None else 100 * (worst - worst_raw),
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


def _collect(folders: list[Path], grouping: str | None) -> dict[str, list[dict]]:
    """method -> one change dict per model (the grouping: given, or the planted one)."""
    per_method: dict[str, list[dict]] = {}
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        key = grouping or PLANTED.get(mechanism_of(folder), "nationality")
        for name, cell in results.items():
            if name == "raw" or name.startswith("curve_") or "error" in cell:
                continue
            per_method.setdefault(name, []).append(changes(results["raw"], cell, key))
    return per_method


def mechanism_of(folder: Path) -> str:
    """``.../<mechanism>/corpus<k>/runs/<method>/seed<s>/calibration`` -> mechanism."""
    parts = folder.parts
    return parts[-6] if len(parts) >= 6 else "?"


def _mean(values):
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _pct(x):
    return "n/a" if x is None else f"{100 * x:+.0f}%"


def _num(x, fmt):
    return "n/a" if x is None else format(x, fmt)


def method_table(per_method: dict[str, list[dict]], title: str) -> list[str]:
    lines = [
        title,
        "",
        "| method | FMR max/min @1% | FNMR max/min @1% | FMR max/min @0.1% | FNMR max/min @0.1% "
        "| GARBE @1% | FaDR @1% | EER (points) | worst group EER (points) | minDCF | Cllr "
        "| models meeting the criterion |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in per_method.items():
        fmr = [r["fmr_ratio"] for r in rows if r["fmr_ratio"] is not None]
        spread = f" ({_pct(min(fmr))} .. {_pct(max(fmr))})" if fmr else ""

        def m(key, rows=rows):
            return _mean([r[key] for r in rows])

        lines.append(
            f"| {name} | {_pct(m('fmr_ratio'))}{spread} | {_pct(m('fnmr_ratio'))} | "
            f"{_pct(m('fmr_ratio_01'))} | {_pct(m('fnmr_ratio_01'))} | {_pct(m('garbe'))} | "
            f"{_num(m('fadr'), '+.3f')} | {_num(m('eer_points'), '+.2f')} | "
            f"{_num(m('worst_eer_points'), '+.2f')} | {_num(m('min_dcf'), '+.3f')} | "
            f"{_num(m('cllr'), '+.3f')} | {sum(r['criterion'] for r in rows)}/{len(rows)} |"
        )
    return lines


def overview_table(folders: list[Path]) -> list[str]:
    by_mech: dict[str, list[Path]] = {}
    for folder in folders:
        by_mech.setdefault(mechanism_of(folder), []).append(folder)
    mechs = sorted(by_mech)
    tables = {m: _collect(by_mech[m], None) for m in mechs}
    methods = list(dict.fromkeys(n for m in mechs for n in tables[m]))
    head = " | ".join(
        f"{m} ({PLANTED.get(m, 'nationality')}, {len(by_mech[m])} models)" for m in mechs
    )
    lines = [
        "Change against raw cosine on the same model, mean over models: FMR max/min @1% / "
        "GARBE @1% / models meeting the criterion",
        "",
        f"| method | {head} |",
        "|---|" + "---|" * len(mechs),
    ]
    for name in methods:
        cells = []
        for m in mechs:
            rows = tables[m].get(name)
            if not rows:
                cells.append("n/a")
                continue
            fmr, garbe = _mean([r["fmr_ratio"] for r in rows]), _mean([r["garbe"] for r in rows])
            cells.append(
                f"{_pct(fmr)} / {_pct(garbe)} / {sum(r['criterion'] for r in rows)}/{len(rows)}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


THRESHOLDS = (("0.001", "FMR 0.1%"), ("0.01", "FMR 1%"), ("eer", "EER thr."))


def threshold_table(folders: list[Path], methods: list[str], groupings: list[str]) -> list[str]:
    """Issue 28's view: per model and method, each grouping's max/min FMR ratio at FMR
    0.1%, 1% and the EER threshold, with EER, minDCF and Cllr; then per method how many
    models keep every ratio at or below 1.25, and how many end worse than raw on minDCF or
    on any ratio (by more than 5%: the noise a reader would forgive)."""
    lines = ["| model | method | EER % | minDCF | Cllr | "
             + " | ".join(f"{g} {t}" for g in groupings for _, t in THRESHOLDS) + " |",
             "|---|---|---|---|---|" + "---|" * (len(groupings) * len(THRESHOLDS))]  # fmt: skip
    tally: dict[str, list[tuple[bool, bool]]] = {}
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        raw = results["raw"]
        model = "/".join(folder.parts[-4:-1])
        for name in methods:
            cell = results.get(name)
            if cell is None or "error" in cell:
                continue
            ratios = [cell.get(f"{g}@{t}", {}).get("fmr_ratio") for g in groupings
                      for t, _ in THRESHOLDS]  # fmt: skip
            base = [raw.get(f"{g}@{t}", {}).get("fmr_ratio") for g in groupings
                    for t, _ in THRESHOLDS]  # fmt: skip
            lines.append(f"| {model} | {name} | {100 * cell['eer']:.2f} | {cell['min_dcf']:.3f} | "
                         f"{cell['cllr']:.3f} | "
                         + " | ".join("n/a" if r is None else f"{r:.2f}" for r in ratios) + " |")  # fmt: skip
            parity = all(r is not None and r <= 1.25 for r in ratios)
            worse = cell["min_dcf"] > raw["min_dcf"] * 1.05 or any(
                r is not None and b is not None and r > b * 1.05
                for r, b in zip(ratios, base, strict=True)
            )
            tally.setdefault(name, []).append((parity, worse))
    lines += ["", "| method | models | every ratio <= 1.25 | worse than raw (minDCF or a ratio, > 5%) |",
              "|---|---|---|---|"]  # fmt: skip
    for name, rows in tally.items():
        lines.append(f"| {name} | {len(rows)} | {sum(p for p, _ in rows)} | "
                     f"{sum(w for _, w in rows)} |")  # fmt: skip
    return lines


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "folders", nargs="+", type=Path, help="bench.calibration.experiment --out folders"
    )
    p.add_argument("--grouping", default=None,
                   help="the grouping to read (default: the mechanism's planted one)")  # fmt: skip
    p.add_argument("--overview", action="store_true", help="the method x mechanism table")
    p.add_argument("--thresholds", nargs="*", metavar="METHOD",
                   help="issue 28's table: FMR ratios at FMR 0.1%%, 1%% and the EER threshold "
                   "for these methods (default: raw, default, default_quantile, oracle) on "
                   "nationality and gender")  # fmt: skip
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    if args.thresholds is not None:
        methods = args.thresholds or ["raw", "default", "default_quantile", "oracle"]
        lines = threshold_table(args.folders, methods, ["nationality", "gender"])
    elif args.overview:
        lines = overview_table(args.folders)
    else:
        per_method = _collect(args.folders, args.grouping)
        grouping = args.grouping or "the planted grouping"
        lines = method_table(
            per_method,
            f"{grouping}: change against raw cosine on the same model, mean over "
            f"{len(args.folders)} models (FMR @1%: min .. max)",
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()

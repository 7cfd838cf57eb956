"""Two tables over several models' calibration folders (``bench.calibration.experiment``
with ``--paired``): the back-ends against their label ceilings at the three thresholds, and
each ratio beside its bootstrap interval and the null floor (calibration-log Q4).

Usage::

    python -m bench.calibration.parity_tables runs/q2/representation/corpus*/erm/seed*/calibration \\
        --grouping nationality
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: the back-ends the ceiling table shows, in order
CEILING_ROWS = ("raw", "default", "asnorm_half_quantile_k16", "asnorm_half_oracle",
                "asnorm_half_oracle_quantile", "asnorm_half_oracle_quantile_within",
                "asnorm_half_quantile_within_k16")  # fmt: skip
THRESHOLDS = ("0.001", "0.01", "eer")


def _model(folder: Path) -> str:
    return f"{folder.parents[2].name} {folder.parent.name}"


def ceilings(folders: list[Path], key: str) -> str:
    lines = [f"| model | back-end | EER % | minDCF | Cllr | {key} @0.1% | @1% | @EER thr. |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for folder in folders:
        results = json.loads((folder / "results.json").read_text())
        for name in CEILING_ROWS:
            c = results.get(name)
            if not c or "error" in c:
                continue
            ratios = " | ".join(
                "n/a" if c[f"{key}@{t}"]["fmr_ratio"] is None else f"{c[f'{key}@{t}']['fmr_ratio']:.2f}"
                for t in THRESHOLDS
            )  # fmt: skip
            lines.append(f"| {_model(folder)} | {name} | {100 * c['eer']:.2f} | "
                         f"{c['min_dcf']:.3f} | {c['cllr']:.3f} | {ratios} |")  # fmt: skip
    return "\n".join(lines)


def noise(folders: list[Path], key: str) -> str:
    lines = [f"| model | raw {key} @0.1% / @1% / @EER [95% interval] | default | null floor "
             "of the default's scores: median [p90] | worse than raw beyond noise |",
             "|---|---|---|---|---|"]  # fmt: skip
    for folder in folders:
        d = json.loads((folder / "paired.json").read_text())

        def ratios(name, d=d):
            out = []
            for t in THRESHOLDS:
                r = d["ratios"][name][f"{key}@{t}"]
                out.append("n/a" if r["value"] is None or r["low"] is None
                           else f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]")  # fmt: skip
            return " / ".join(out)

        floor = d["null_floor"][key]["default"]
        floors = " / ".join("n/a" if floor[t] is None else
                            f"{floor[t]['median']:.2f} [{floor[t]['p90']:.2f}]" for t in THRESHOLDS)  # fmt: skip
        worse = sorted({f"{n}: {k}" for n, rows in d.items() if n not in ("ratios", "null_floor")
                        for k, r in rows.items() if r["worse_beyond_noise"]})  # fmt: skip
        lines.append(f"| {_model(folder)} | {ratios('raw')} | {ratios('default')} | {floors} | "
                     f"{'; '.join(worse) or 'none'} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("--grouping", default="nationality")
    args = p.parse_args()
    folders = sorted(f for f in args.folders if (f / "paired.json").is_file())
    print(ceilings(folders, args.grouping), end="\n\n")
    print(noise(folders, args.grouping))


if __name__ == "__main__":
    main()

"""Where a sampler's extra draws went, run by run (issue 29 item 3): for one method on the
scratch protocol's corpora, the minority's share of the draws early and late, every group's
late share against its share of the training speakers (the groups it over-draws), the
minority's share of each refresh's flagged set, and the minority's EER change against ERM
on the same corpus and seed (the oracle's beside it).

Usage::

    python -m bench.fairness.share_audit runs/scratch representation heldout_knn --corpora 0 1 100 101
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.fairness.shares import minority


def _mean(windows: list[dict], lo: int, hi: int) -> float:
    w = [x["crop_share"] for x in windows if lo < x["step"] <= hi]
    return sum(w) / len(w) if w else float("nan")


def audit(out: Path, mechanism: str, method: str, corpora: list[int], split: int = 900) -> str:
    lines = ["| corpus | seed | minority share of draws, to step " + str(split) + " | after | "
             "over-drawn groups after (share / speakers) | minority share of each flagged set "
             "| minority EER change | oracle's |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    pairs = []  # (early share, EER change) per run
    for c in corpora:
        runs = out / mechanism / f"corpus{c}" / "runs"
        for path in sorted((runs / method).glob("seed*/result.json")):
            seed = path.parent.name
            erm = runs / "erm" / seed / "result.json"
            if not erm.is_file():
                continue
            r, b = json.loads(path.read_text()), json.loads(erm.read_text())
            groups = r["shares"]["groups"]
            low = minority([r])
            attr, _, value = low.partition("=")
            key = f"eer_{attr}:{value}"
            change = r["metrics"][key] / b["metrics"][key] - 1
            oracle = runs / "erm_balanced" / seed / "result.json"
            och = (json.loads(oracle.read_text())["metrics"][key] / b["metrics"][key] - 1
                   if oracle.is_file() else None)  # fmt: skip
            over = sorted(
                ((g, _mean(v["windows"], split, 10**9), v["speaker_share"]) for g, v in groups.items()),
                key=lambda t: t[2] - t[1],
            )[:2]  # fmt: skip
            purity = r["shares"].get("cohort_purity") or []
            # The flagged sets' purity is recorded by one attribute (nationality): for a
            # minority of another attribute there is none to show.
            recorded = any(value in p["flagged_share"] for p in purity)
            flagged = [p["flagged_share"].get(value, 0.0) for p in purity] if recorded else []
            early = _mean(groups[low]["windows"], 0, split)
            pairs.append((early, change))
            lines.append(
                f"| {c} | {seed.removeprefix('seed')} | {100 * early:.1f}% "
                f"| {100 * _mean(groups[low]['windows'], split, 10**9):.1f}% | "
                + ", ".join(f"{g} {100 * s:.0f}% / {100 * n:.0f}%" for g, s, n in over)
                + f" | {', '.join(f'{100 * f:.0f}' for f in flagged) or 'n/a'} | {100 * change:+.1f}% | "
                + ("" if och is None else f"{100 * och:+.1f}%") + " |"
            )  # fmt: skip
    if len(pairs) >= 3:
        r_early = np.corrcoef(np.array(pairs).T)[0, 1]
        lines += ["", f"Correlation of the minority's early share with its EER change over "
                      f"{len(pairs)} runs: {r_early:+.2f}"]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("out", type=Path, help="the scratch protocol's --out folder")
    p.add_argument("mechanism")
    p.add_argument("method")
    p.add_argument("--corpora", type=int, nargs="+", default=[0, 1])
    p.add_argument("--split", type=int, default=900, help="the step between early and late")
    args = p.parse_args()
    print(audit(args.out, args.mechanism, args.method, args.corpora, args.split))


if __name__ == "__main__":
    main()

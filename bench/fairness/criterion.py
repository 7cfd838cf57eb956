"""Issue 13's success criterion, evaluated on the fine-tuning benchmark's held-out runs.

A method *works* on a held-out corpus when, on at least ``--min-seeds`` of its training seeds
(default 2), against ERM continued on the same seed (same ERM start):

- the worst group's EER is at least 10% lower (relative; the worst nationality, or for the
  ``gender`` mechanism the worse gender);
- the spread is at least 20% lower (relative; the nationality population std, or the gender
  gap);
- the overall EER is not higher.

Issue 20's criterion, where the label oracle has room: a label-free method recovers at least
half of the oracle's worst-group gain (its worst-group EER drop against ERM is at least half
the oracle's, ``erm_balanced`` on the same seed, which must have lowered it), with the
overall EER not higher (``half_oracle``, reported beside the first).

It works on a mechanism when it works on every held-out corpus of it. The runs are read
from each run's own ``result.json`` (so a benchmark still under way can be looked at).

Usage::

    .venv/bin/python -m bench.fairness.criterion --out runs/ft --mechanisms crowding acoustics
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text

BASELINE = "erm"
ORACLE = "erm_balanced"
ORACLE_SHARE = 0.5
WORST_DROP = 0.10
SPREAD_DROP = 0.20


@dataclass(frozen=True)
class SeedCheck:
    """One (corpus, training seed, method) against ERM on the same seed."""

    corpus: int
    seed: int
    method: str
    worst_change: float  # relative change of the worst group's EER (negative: better)
    spread_change: float  # relative change of the spread
    overall_change: float  # EER points, method - ERM (negative: better)
    #: The share of the oracle's worst-group gain (EER points) the method recovers on this
    #: seed; None without an oracle run or where the oracle did not lower it.
    oracle_share: float | None = None

    @property
    def half_oracle(self) -> bool:
        """Issue 20's criterion on this seed (never for the oracle itself)."""
        return (
            self.method != ORACLE
            and self.oracle_share is not None
            and self.oracle_share >= ORACLE_SHARE
            and self.overall_change <= 0.0
        )

    @property
    def met(self) -> bool:
        """All three parts of the criterion on this seed."""
        return (
            self.worst_change <= -WORST_DROP
            and self.spread_change <= -SPREAD_DROP
            and self.overall_change <= 0.0
        )


def worst_and_spread(metrics: dict, mechanism: str) -> tuple[float, float]:
    """(worst-group EER, spread) of one run's metrics, by the mechanism's attribute."""
    if mechanism == "gender":
        genders = [v for k, v in metrics.items() if k.startswith("eer_gender:") and v is not None]
        return max(genders), metrics["gender_gap"]
    return metrics["worst_nationality_eer"], metrics["nationality_std"]


def read_runs(corpus_dir: Path) -> dict[tuple[str, int], dict]:
    """(method, seed) -> metrics of every finished run under ``corpus_dir/runs``."""
    runs = {}
    for path in sorted(corpus_dir.glob("runs/*/seed*/result.json")):
        result = json.loads(path.read_text())
        runs[(result["method"], int(result["seed"]))] = result["metrics"]
    return runs


def _relative(value: float, base: float) -> float:
    """``value / base - 1``; against a zero base (a tiny test set can have a zero EER or
    spread): 0 when equal, else +-inf."""
    if value == base:
        return 0.0
    return value / base - 1.0 if base else math.copysign(math.inf, value - base)


def check_corpus(runs: dict[tuple[str, int], dict], corpus: int, mechanism: str) -> list[SeedCheck]:
    """Every method's per-seed check against ERM on the seeds both have finished."""
    checks = []
    for (method, seed), metrics in sorted(runs.items()):
        base = runs.get((BASELINE, seed))
        if method == BASELINE or base is None:
            continue
        worst, spread = worst_and_spread(metrics, mechanism)
        base_worst, base_spread = worst_and_spread(base, mechanism)
        oracle = runs.get((ORACLE, seed))
        gain = base_worst - worst_and_spread(oracle, mechanism)[0] if oracle else 0.0
        checks.append(
            SeedCheck(
                corpus=corpus,
                seed=seed,
                method=method,
                worst_change=_relative(worst, base_worst),
                spread_change=_relative(spread, base_spread),
                overall_change=metrics["eer"] - base["eer"],
                oracle_share=(base_worst - worst) / gain if gain > 0 else None,
            )
        )
    return checks


def verdicts(checks: list[SeedCheck], min_seeds: int) -> dict[str, dict]:
    """method -> {corpus: (seeds met, seeds run)} and whether it works on every corpus."""
    out: dict[str, dict] = {}
    for c in checks:
        entry = out.setdefault(c.method, {"corpora": {}})
        met, run = entry["corpora"].get(c.corpus, (0, 0))
        entry["corpora"][c.corpus] = (met + int(c.met), run + 1)
    for entry in out.values():
        entry["works"] = bool(entry["corpora"]) and all(
            met >= min_seeds for met, _ in entry["corpora"].values()
        )
    return out


def render(mechanism: str, checks: list[SeedCheck], verdict: dict, min_seeds: int) -> str:
    """One mechanism's per-seed table and verdict lines, as markdown."""
    spread = "gender gap" if mechanism == "gender" else "nationality std"
    worst = "worse gender" if mechanism == "gender" else "worst nationality"
    lines = [
        f"### {mechanism}",
        "",
        f"| corpus | seed | method | {worst} EER Δ | {spread} Δ | overall EER Δ (points) | met "
        "| share of the oracle's gain | half-oracle met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(checks, key=lambda c: (c.method, c.corpus, c.seed)):
        share = "n/a" if c.oracle_share is None else f"{100 * c.oracle_share:.0f}%"
        lines.append(
            f"| {c.corpus} | {c.seed} | {c.method} | {100 * c.worst_change:+.1f}% | "
            f"{100 * c.spread_change:+.1f}% | {100 * c.overall_change:+.2f} | "
            f"{'yes' if c.met else 'no'} | {share} | {'yes' if c.half_oracle else 'no'} |"
        )
    lines.append("")
    for method, entry in verdict.items():
        per = ", ".join(f"corpus {k}: {m} of {n} seeds" for k, (m, n) in entry["corpora"].items())
        word = "**meets**" if entry["works"] else "does not meet"
        lines.append(f"- `{method}` {word} the criterion (>= {min_seeds} seeds per corpus): {per}")
    return "\n".join(lines)


def overview(checks: dict[str, list[SeedCheck]], min_seeds: int = 2) -> dict:
    """method -> mechanism -> the means over its (corpus, seed) checks: the worst group's
    and the spread's relative change, the overall change in points, how many seeds were
    better on the worst group, how many met the criterion, and whether it works there."""
    table: dict[str, dict] = {}
    for mechanism, rows in checks.items():
        works = verdicts(rows, min_seeds)
        for method in sorted({c.method for c in rows}):
            mine = [c for c in rows if c.method == method]
            table.setdefault(method, {})[mechanism] = {
                "worst_change": float(np.mean([c.worst_change for c in mine])),
                "spread_change": float(np.mean([c.spread_change for c in mine])),
                "overall_change": float(np.mean([c.overall_change for c in mine])),
                "better": sum(c.worst_change < 0 for c in mine),
                "met": sum(c.met for c in mine),
                "half_oracle": sum(c.half_oracle for c in mine),
                "seeds": len(mine),
                "corpora": sorted({c.corpus for c in mine}),
                "works": works[method]["works"],
            }
    return table


def render_overview(table: dict, mechanisms: list[str]) -> str:
    """The method x mechanism table, as markdown."""
    lines = [
        "Mean over held-out (corpus, seed) pairs against ERM on the same start: the worst "
        "group's EER (worst nationality; the worse gender for `gender`), relative; the "
        "overall EER in points; seeds better on the worst group; seeds meeting the criterion; "
        "seeds where a label-free method recovers at least half of the oracle's worst-group "
        "gain with the overall EER not higher (issue 20).",
        "",
        "| method | " + " | ".join(mechanisms) + " |",
        "|---|" + "---|" * len(mechanisms),
    ]
    for method, row in table.items():
        cells = []
        for m in mechanisms:
            e = row.get(m)
            cells.append(
                "not run"
                if e is None
                else f"{100 * e['worst_change']:+.1f}%, {100 * e['overall_change']:+.2f} pt, "
                f"better {e['better']}/{e['seeds']}, met {e['met']}/{e['seeds']}, "
                f"half-oracle {e.get('half_oracle', 0)}/{e['seeds']}"
            )
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_overview(table: dict, mechanisms: list[str], path: Path) -> Path:
    """A heat map of the worst group's mean relative change (blue: better than ERM), each
    cell annotated with the seeds that met the criterion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(table)
    values = np.array(
        [[100 * table[r][m]["worst_change"] if m in table[r] else np.nan for m in mechanisms]
         for r in methods]
    )  # fmt: skip
    # The colour scale reaches at least the criterion's -10%, so a cell as dark as the
    # legend's end is a change the criterion would count.
    finite = values[np.isfinite(values)]
    bound = max(100 * WORST_DROP, float(np.abs(finite).max()) if finite.size else 0.0)
    fig, ax = plt.subplots(figsize=(3.5 + 1.7 * len(mechanisms), 1.4 + 0.45 * len(methods)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound, aspect="auto")
    for i, r in enumerate(methods):
        for j, m in enumerate(mechanisms):
            e = table[r].get(m)
            text = "not run" if e is None else f"{values[i, j]:+.1f}%\n{e['met']}/{e['seeds']} met"
            dark = e is not None and abs(values[i, j]) > 0.6 * bound
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(mechanisms)), mechanisms)
    ax.set_yticks(range(len(methods)), methods)
    fig.colorbar(image, ax=ax, label="worst-group EER Δ vs ERM (%)")
    ax.set_title("Held-out corpora: worst-group EER change,\nseeds meeting the criterion",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_overview(out: Path, corpora: dict[str, list[int]], min_seeds: int = 2) -> dict:
    """``overview.md``, ``overview.json`` and ``overview.png`` in ``out`` from the finished
    runs of each mechanism's held-out corpora (``out/<mechanism>/corpus<c>``); mechanisms
    with no finished run are left out."""
    checks = {}
    for mechanism, corpus_seeds in corpora.items():
        rows = []
        for corpus in corpus_seeds:
            folder = out / mechanism / f"corpus{corpus}"
            if folder.is_dir():
                rows += check_corpus(read_runs(folder), corpus, mechanism)
        if rows:
            checks[mechanism] = rows
    table = overview(checks, min_seeds)
    mechanisms = list(checks)
    atomic_write_text(out / "overview.md", render_overview(table, mechanisms))
    atomic_write_text(out / "overview.json", json.dumps(table, indent=1))
    if table:
        plot_overview(table, mechanisms, out / "overview.png")
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.fairness.criterion``."""
    p = argparse.ArgumentParser(prog="python -m bench.fairness.criterion", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--out", default="runs/ft", help="the fine-tuning benchmark's folder")
    p.add_argument("--mechanisms", nargs="+", default=["crowding", "acoustics"])
    p.add_argument("--corpora", type=int, nargs="+", default=[0, 1], help="held-out corpus seeds")
    p.add_argument("--min-seeds", type=int, default=2)
    p.add_argument("--overview", action="store_true",
                   help="also write overview.md/.json/.png: the method x mechanism table "
                   "over these corpora")  # fmt: skip
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.overview:
        write_overview(out, {m: list(args.corpora) for m in args.mechanisms}, args.min_seeds)
    sections, record = [], {}
    for mechanism in args.mechanisms:
        checks = []
        for corpus in args.corpora:
            folder = out / mechanism / f"corpus{corpus}"
            if not folder.is_dir():
                print(f"{folder}: no such benchmark folder", file=sys.stderr)
                return 2
            checks += check_corpus(read_runs(folder), corpus, mechanism)
        verdict = verdicts(checks, args.min_seeds)
        sections.append(render(mechanism, checks, verdict, args.min_seeds))
        record[mechanism] = {"checks": [asdict(c) | {"met": c.met} for c in checks],
                             "verdict": verdict}  # fmt: skip
    text = "\n\n".join(sections) + "\n"
    atomic_write_text(out / "criterion.md", text)
    atomic_write_text(out / "criterion.json", json.dumps(record, indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

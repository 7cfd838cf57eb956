"""Aggregate the fairness benchmark's runs: ``results.json``, ``results.md`` and plots.

Every number is a rate over seeds: the mean +- sample std (ddof 1) of each method, and the
paired difference of each method against ERM *on the same seed* (the seed fixes the
learner's initialisation and batch order, so pairing removes part of the seed noise),
with the number of seeds on which the method was better (lower).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text
from bench.fairness.shares import plot_shares, shares_markdown

SCHEMA = "arw-sv/bench-fairness"
BASELINE = "erm"
#: headline metrics, in table order: key -> (label, scale, digits)
HEADLINE: dict[str, tuple[str, float, int]] = {
    "eer": ("EER %", 100, 2),
    "min_dcf_0.01": ("minDCF 0.01", 1, 3),
    "min_dcf_0.05": ("minDCF 0.05", 1, 3),
    "gender_gap": ("gender gap pp", 100, 2),
    "nationality_std": ("nat. std pp", 100, 2),
    "worst_nationality_eer": ("worst nat. EER %", 100, 2),
    "worst_cell_eer": ("worst cell EER %", 100, 2),
}


def _stats(values: list[float]) -> dict:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "n": 0}
    std = float(arr.std(ddof=1)) if arr.size > 1 else None
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size)}


def group_keys(runs: list[dict]) -> list[str]:
    """Per-group EER keys in a stable order: gender, then nationality, then cells."""
    keys = {k for r in runs for k in r["metrics"] if k.startswith("eer_")}
    order = {"gender": 0, "nationality": 1, "gender_x_nationality": 2}
    return sorted(keys, key=lambda k: (order.get(k[4:].split(":")[0], 3), k))


def aggregate(runs: list[dict]) -> tuple[dict, dict]:
    """(summary, paired): method -> metric -> stats; paired differences against ERM."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    keys = [*HEADLINE, *group_keys(runs)]
    summary = {
        m: {k: _stats([r["metrics"].get(k) for r in runs if r["method"] == m]) for k in keys}
        for m in methods
    }
    base = {r["seed"]: r["metrics"] for r in runs if r["method"] == BASELINE}
    paired: dict = {}
    for m in methods:
        if m == BASELINE:
            continue
        paired[m] = {}
        for k in keys:
            diffs = [
                r["metrics"][k] - base[r["seed"]][k]
                for r in runs
                if r["method"] == m
                and r["seed"] in base
                and r["metrics"].get(k) is not None
                and base[r["seed"]].get(k) is not None
            ]
            entry = _stats(diffs)
            entry["improved"] = int(sum(d < 0 for d in diffs))
            entry["seeds"] = sorted(
                r["seed"] for r in runs if r["method"] == m and r["seed"] in base
            )
            paired[m][k] = entry
    return summary, paired


def adversary_table(runs: list[dict]) -> dict:
    """Per method, means over seeds of the adversary analysis (weights and correlations)."""
    out: dict = {}
    for m in dict.fromkeys(r["method"] for r in runs):
        mine = [r["analysis"] for r in runs if r["method"] == m]
        entry = {"loss_by_group": {}, "adversary": None}
        for attr in ("gender", "nationality"):
            groups = sorted({g for a in mine for g in a["loss_by_group"].get(attr, {})})
            entry["loss_by_group"][attr] = {
                g: _stats([a["loss_by_group"][attr].get(g) for a in mine]) for g in groups
            }
        advs = [a["adversary"] for a in mine if a.get("adversary")]
        if advs:
            adv = {
                "std_weight": _stats([a["std_weight"] for a in advs]),
                "max_weight": _stats([a["max_weight"] for a in advs]),
                "spearman_weight_vs_aam_loss": _stats(
                    [a["spearman_weight_vs_aam_loss"] for a in advs]
                ),
                "by_group": {},
            }
            for attr in ("gender", "nationality"):
                groups = sorted({g for a in advs for g in a["by_group"].get(attr, {})})
                adv["by_group"][attr] = {
                    g: {
                        "mean_weight": _stats(
                            [a["by_group"][attr][g]["mean_weight"] for a in advs]
                        ),
                        "point_biserial_r": _stats(
                            [a["by_group"][attr][g]["point_biserial_r"] for a in advs]
                        ),
                    }
                    for g in groups
                }
            entry["adversary"] = adv
        out[m] = entry
    return out


def _fmt(stats: dict, scale: float = 1.0, digits: int = 2, sign: bool = False) -> str:
    if stats["mean"] is None:
        return "n/a"
    mean = f"{stats['mean'] * scale:+.{digits}f}" if sign else f"{stats['mean'] * scale:.{digits}f}"
    return mean if stats["std"] is None else f"{mean} ± {stats['std'] * scale:.{digits}f}"


def _label(key: str) -> str:
    if key in HEADLINE:
        return HEADLINE[key][0]
    attr, group = key[4:].split(":", 1)
    return f"EER {group} %" if attr != "gender_x_nationality" else f"EER {group} %"


def render_markdown(results: dict) -> str:
    """The benchmark's tables as Markdown."""
    setup, summary, paired = results["setup"], results["summary"], results["paired"]
    runs = results["runs"]
    methods = list(summary)
    n_seeds = {m: max((s["n"] for s in summary[m].values()), default=0) for m in methods}
    gkeys = [k for k in group_keys(runs) if not k.startswith("eer_gender_x_nationality")]
    lines = ["# Fairness benchmark", ""]
    if setup.get("command"):
        lines += ["Command:", "", f"    {setup['command']}", ""]
    lines += [
        f"Seeds: {setup['seeds']}; trial-to-group rule: both speakers in the group; EER and "
        "gaps in % / percentage points; mean ± std over seeds (sample std).",
        "",
        "## Results (mean ± std over seeds)",
        "",
    ]
    tables = [list(HEADLINE), ["eer", *gkeys]]
    for cols in tables:
        lines.append("| method | seeds | " + " | ".join(_label(k) for k in cols) + " |")
        lines.append("|---|---|" + "---|" * len(cols))
        for m in methods:
            cells = [_fmt(summary[m][k], *HEADLINE.get(k, ("", 100, 2))[1:]) for k in cols]
            lines.append(f"| {m} | {n_seeds[m]} | " + " | ".join(cells) + " |")
        lines.append("")
    if paired:
        lines += [
            f"## Paired differences against {BASELINE} (same seed; negative = better)",
            "",
            "Each cell: mean ± std of (method − ERM) over seeds, and on how many seeds the "
            "method was better.",
            "",
        ]
        for cols in tables:
            lines.append("| method | " + " | ".join(_label(k) for k in cols) + " |")
            lines.append("|---|" + "---|" * len(cols))
            for m, entry in paired.items():
                cells = []
                for k in cols:
                    scale, digits = HEADLINE.get(k, ("", 100, 2))[1:]
                    e = entry[k]
                    text = _fmt(e, scale, digits, sign=True)
                    cells.append(f"{text} ({e['improved']}/{e['n']})")
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += _adversary_markdown(results["adversary"])
    lines += _monitor_markdown(runs, methods)
    lines += _pair_markdown(runs, methods)
    lines += _cohort_markdown(runs, methods)
    lines += shares_markdown(runs, methods)
    lines += _interval_markdown(runs, methods, gkeys)
    errors = [r for r in results.get("failed", [])]
    if errors:
        lines += ["", "## Failed runs", ""]
        lines += [f"- {r['method']} seed {r['seed']}: {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _adversary_markdown(table: dict) -> list[str]:
    lines = [
        "",
        "## What the adversary learned",
        "",
        "On a sample of training utterances (centre crops), with the final checkpoint: the "
        "mean ARL weight per true group (weights normalised over the sample: mean 2; the "
        "adversary never saw the groups), the point-biserial r of weight and group "
        "membership, and Spearman's ρ of weight and per-sample AAM loss. Mean ± std over "
        "seeds.",
        "",
    ]
    arw = {m: e["adversary"] for m, e in table.items() if e["adversary"]}
    if arw:
        groups = [
            (attr, g)
            for attr in ("nationality", "gender")
            for g in next(iter(arw.values()))["by_group"][attr]
        ]
        lines.append(
            "| method | weight std | ρ(weight, loss) | "
            + " | ".join(f"w̄ {g} (r)" for _, g in groups)
            + " |"
        )
        lines.append("|---|---|---|" + "---|" * len(groups))
        for m, adv in arw.items():
            cells = [
                f"{_fmt(adv['by_group'][a][g]['mean_weight'], 1, 3)} "
                f"({_fmt(adv['by_group'][a][g]['point_biserial_r'], 1, 2, sign=True)})"
                for a, g in groups
            ]
            lines.append(
                f"| {m} | {_fmt(adv['std_weight'], 1, 3)} | "
                f"{_fmt(adv['spearman_weight_vs_aam_loss'], 1, 2, sign=True)} | "
                + " | ".join(cells)
                + " |"
            )
    lines += ["", "Mean per-sample AAM loss per group on the same sample (every method):", ""]
    groups = [
        (attr, g)
        for attr in ("nationality", "gender")
        for g in next(iter(table.values()))["loss_by_group"][attr]
    ]
    lines.append("| method | " + " | ".join(g for _, g in groups) + " |")
    lines.append("|---|" + "---|" * len(groups))
    for m, e in table.items():
        lines.append(
            f"| {m} | " + " | ".join(_fmt(e["loss_by_group"][a][g], 1, 2) for a, g in groups) + " |"
        )
    return lines


def _monitor_markdown(runs: list[dict], methods: list[str]) -> list[str]:
    """The trainer's weight monitors over training (mean over seeds), where a run logged any."""
    with_monitors = [m for m in methods if any(r.get("monitors") for r in runs if r["method"] == m)]
    if not with_monitors:
        return []
    keys = sorted(
        {k for r in runs if r.get("monitors") for k in r["monitors"]["point_biserial_mean"]}
    )
    keys = [k for k in keys if k.startswith("nationality=")] or keys
    lines = [
        "",
        "## The weights over training (the trainer's monitors)",
        "",
        "From each run's history.jsonl: effective batch (sum w)^2 / sum w^2 as a fraction of "
        "the batch (mean and minimum over the logged steps; 1 = uniform), the largest weight "
        "logged, mean Spearman ρ of weight and loss, and the mean point-biserial r of weight "
        "and group. Mean over seeds.",
        "",
        "| method | ESS mean | ESS min | max weight | ρ(weight, loss) | "
        + " | ".join(f"r {k.split('=', 1)[1]}" for k in keys)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(keys),
    ]

    mean = _mean_of
    for m in with_monitors:
        mon = [r["monitors"] for r in runs if r["method"] == m and r.get("monitors")]
        cells = [
            mean([x["ess_fraction_mean"] for x in mon]),
            mean([x["ess_fraction_min"] for x in mon]),
            mean([x["weight_max"] for x in mon]),
            mean([x["spearman_mean"] for x in mon]),
        ] + [mean([x["point_biserial_mean"].get(k) for x in mon]) for k in keys]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _mean_of(values) -> str:
    values = [v for v in values if v is not None]
    return f"{np.mean(values):.2f}" if values else "n/a"


def _pair_markdown(runs: list[dict], methods: list[str]) -> list[str]:
    """The pair term's loss and gradient share, first and last quarter of the logged steps."""
    have = [m for m in methods if any(r.get("pair_term") for r in runs if r["method"] == m)]
    if not have:
        return []
    lines = [
        "",
        "## The pair term (how much pairwise weights have to act on)",
        "",
        "Its loss and its share of the loss gradient at the embeddings, mean over the first "
        "and the last quarter of the logged steps; mean over seeds.",
        "",
        "| method | pair loss, first | last | gradient share, first | last |",
        "|---|---|---|---|---|",
    ]
    for m in have:
        p = [r["pair_term"] for r in runs if r["method"] == m and r.get("pair_term")]
        keys = ("loss_first", "loss_last", "share_first", "share_last")
        lines.append(f"| {m} | " + " | ".join(_mean_of([x[k] for x in p]) for k in keys) + " |")
    return lines


def _cohort_markdown(runs: list[dict], methods: list[str]) -> list[str]:
    """What the label-free cohort samplers found, judged with the labels they never saw."""
    have = [m for m in methods if any(r.get("cohorts") for r in runs if r["method"] == m)]
    if not have:
        return []
    values = sorted({v for r in runs if r.get("cohorts")
                     for v in r["cohorts"]["groups"]["nationality"]["training"]})  # fmt: skip
    lines = [
        "",
        "## What the cohort samplers found (labels used only here)",
        "",
        "Per nationality: its share of the oversampled training speakers (of all training "
        "speakers in brackets), and the largest share it has in any one training cohort. "
        "Held-out discovery (the seed's table): EER of the held-out trials touching the "
        "bottom cohorts and of the rest, the bottom cohorts' share of the held-out speakers, "
        "and each nationality's share of them (of all held-out speakers in brackets). "
        "Mean over seeds.",
        "",
        "| method | bottom EER % | rest EER % | bottom share | "
        + " | ".join(f"{v}: oversampled | in one cohort | bottom held-out" for v in values)
        + " |",
        "|---|---|---|---|" + "---|---|---|" * len(values),
    ]
    for m in have:
        c = [r["cohorts"] for r in runs if r["method"] == m and r.get("cohorts")]
        cells = [
            _mean_of([100 * x[k] if x.get(k) is not None else None for x in c])
            for k in ("bottom_eer", "rest_eer")
        ] + [_mean_of([x.get("bottom_share") for x in c])]
        for v in values:
            cells += [
                _share(c, "oversampled", v, "training"),
                _share(c, "best_cohort", v),
                _share(c, "bottom_heldout", v, "heldout"),
            ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def _share(cohorts: list[dict], part: str, value: str, of: str = "") -> str:
    """Mean over seeds of a nationality's share in ``part``, with its share in ``of``."""
    nat = [x["groups"]["nationality"] for x in cohorts]
    got = _mean_of([g.get(part, {}).get(value) for g in nat])
    base = _mean_of([g.get(of, {}).get(value) for g in nat]) if of else "n/a"
    return got if "n/a" in (got, base) else f"{got} ({base})"


def _interval_markdown(runs: list[dict], methods: list[str], gkeys: list[str]) -> list[str]:
    first = {}
    for r in sorted(runs, key=lambda r: r["seed"]):
        if r.get("ci") and r["method"] not in first:
            first[r["method"]] = r
    if not first:
        return []
    keys = ["eer", *gkeys, "nationality_std"]
    seed = next(iter(first.values()))["seed"]
    lines = [
        "",
        f"## One seed with 95% speaker-bootstrap intervals (seed {seed})",
        "",
        "| method | " + " | ".join(_label(k) for k in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for m in methods:
        if m not in first:
            continue
        r = first[m]
        cells = []
        for k in keys:
            v, ci = r["metrics"].get(k), r["ci"].get(k)
            text = "n/a" if v is None else f"{100 * v:.2f}"
            if ci and ci[0] is not None:
                text += f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]"
            cells.append(text)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def plot_results(results: dict, out: Path) -> list[Path]:
    """``eer_by_group.png`` (EER per group and method, error bars = std over seeds, dots =
    seeds) and ``paired_differences.png`` (method − ERM per metric)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, summary, paired = results["runs"], results["summary"], results["paired"]
    methods = list(summary)
    keys = ["eer", *[k for k in group_keys(runs) if not k.startswith("eer_gender_x")]]
    written = []
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(keys)), 4))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        x = np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width
        means = [100 * (summary[m][k]["mean"] or np.nan) for k in keys]
        stds = [100 * (summary[m][k]["std"] or 0) for k in keys]
        ax.bar(x, means, width, yerr=stds, capsize=2, label=m)
        for j, k in enumerate(keys):
            seeds = [
                100 * r["metrics"][k]
                for r in runs
                if r["method"] == m and r["metrics"].get(k) is not None
            ]
            ax.plot([x[j]] * len(seeds), seeds, "k.", ms=3)
    ax.set_xticks(
        np.arange(len(keys)), [("overall" if k == "eer" else k.split(":", 1)[1]) for k in keys]
    )
    ax.set_ylabel("EER (%)")
    ax.set_title("EER per group (bars: mean over seeds, error bars: std, dots: seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out / "eer_by_group.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)

    if paired:
        keys = ["eer", "worst_nationality_eer", "worst_cell_eer", "nationality_std", "gender_gap"]
        others = list(paired)
        fig, ax = plt.subplots(figsize=(9, 4))
        width = 0.8 / len(others)
        base = {r["seed"]: r["metrics"] for r in runs if r["method"] == BASELINE}
        for i, m in enumerate(others):
            x = np.arange(len(keys)) + (i - (len(others) - 1) / 2) * width
            means = [
                100 * (paired[m][k]["mean"] if paired[m][k]["mean"] is not None else np.nan)
                for k in keys
            ]
            stds = [100 * (paired[m][k]["std"] or 0) for k in keys]
            ax.bar(x, means, width, yerr=stds, capsize=2, label=m)
            for j, k in enumerate(keys):
                d = [
                    100 * (r["metrics"][k] - base[r["seed"]][k])
                    for r in runs
                    if r["method"] == m
                    and r["seed"] in base
                    and r["metrics"].get(k) is not None
                    and base[r["seed"]].get(k) is not None
                ]
                ax.plot([x[j]] * len(d), d, "k.", ms=3)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(
            np.arange(len(keys)),
            [HEADLINE[k][0].replace(" %", "").replace(" pp", "") for k in keys],
        )
        ax.set_ylabel(f"method − {BASELINE} (percentage points)")
        ax.set_title("Paired differences against ERM (below 0 = better)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(out / "paired_differences.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    if plot_shares(runs, methods, out / "shares.png") is not None:
        written.append(out / "shares.png")
    return written


def write_results(out: str | Path, setup: dict, results: list[dict]) -> dict:
    """Aggregate finished runs and write ``results.json``, ``results.md`` and the plots."""
    out = Path(out)
    runs = sorted((r for r in results if "error" not in r), key=lambda r: (r["method"], r["seed"]))
    order = list(setup.get("methods", {})) or list(dict.fromkeys(r["method"] for r in runs))
    runs.sort(key=lambda r: (order.index(r["method"]) if r["method"] in order else 99, r["seed"]))
    summary, paired = aggregate(runs) if runs else ({}, {})
    doc = {
        "schema": SCHEMA,
        "schema_version": 1,
        "setup": setup,
        "runs": runs,
        "failed": [r for r in results if "error" in r],
        "summary": summary,
        "paired": paired,
        "adversary": adversary_table(runs) if runs else {},
    }
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1, allow_nan=False))
    if runs:
        atomic_write_text(out / "results.md", render_markdown(doc))
        plot_results(doc, out)
    return doc


def load_results(out: str | Path) -> tuple[dict, list[dict]]:
    """The setup recorded in ``results.json`` and every finished run's ``result.json``."""
    out = Path(out)
    setup = json.loads((out / "results.json").read_text())["setup"]
    runs = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/seed*/result.json"))]
    return setup, runs

"""The mechanism behind a method, from each run's ``shares`` (issue 29): the minority's share
of the crops drawn and of the learner's weight, per 100 steps, beside the oracle's; and an
adaptive cohort sampler's purity. The minority is the group with the smallest share of the
training speakers (India on ``bench_representation``, women on ``bench_gender``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def minority(runs: list[dict]) -> str | None:
    """The group (``attribute=value``) with the smallest training-speaker share."""
    for r in runs:
        groups = (r.get("shares") or {}).get("groups")
        if groups:
            return min(groups, key=lambda g: groups[g]["speaker_share"])
    return None


def curves(runs: list[dict], method: str, group: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, and the mean over seeds of ``group``'s crop and weight share per window."""
    series = [r["shares"]["groups"][group]["windows"] for r in runs
              if r["method"] == method and (r.get("shares") or {}).get("groups")]  # fmt: skip
    if not series:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    n = min(len(s) for s in series)
    steps = np.array([w["step"] for w in series[0][:n]])
    crop = np.mean([[w["crop_share"] for w in s[:n]] for s in series], axis=0)
    weight = np.mean([[w["weight_share"] for w in s[:n]] for s in series], axis=0)
    return steps, crop, weight


def shares_markdown(runs: list[dict], methods: list[str]) -> list[str]:
    """A table: the minority's crop and weight share over the first 300 steps, the middle,
    the last 300, and the whole run; and cohort purity where a run has it."""
    group = minority(runs)
    if group is None:
        return []
    share = next(r["shares"]["groups"][group]["speaker_share"] for r in runs
                 if (r.get("shares") or {}).get("groups"))  # fmt: skip
    lines = ["", f"## What each method drew: {group}'s share (judged with labels it never saw)",
             "", f"{group} is {100 * share:.1f}% of the training speakers. Share of the crops "
             "drawn (and of the learner's total weight, where it differs) over steps 1-300, "
             "301 to the last 300, the last 300, and the whole run; mean over seeds. "
             "`shares.png` plots them per 100 steps.", "",
             "| method | first 300 | middle | last 300 | whole run | weight share, whole run |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for m in methods:
        steps, crop, weight = curves(runs, m, group)
        if steps.size == 0:
            continue
        early, late = steps <= 300, steps > steps.max() - 300
        mid = ~early & ~late
        cells = [crop[p].mean() if p.any() else np.nan for p in (early, mid, late)]
        cells += [crop.mean(), weight.mean()]
        text = ["–" if np.isnan(c) else f"{100 * c:.1f}%" for c in cells]
        lines.append(f"| {m} | " + " | ".join(text) + " |")
    purity = [(r["method"], r["seed"], r["shares"]["cohort_purity"]) for r in runs
              if (r.get("shares") or {}).get("cohort_purity")]  # fmt: skip
    if purity:
        value = group.split("=", 1)[1]
        lines += ["", "Adaptive samplers at each kept checkpoint: for cohort_balanced, purity "
                  "(share of speakers in their cohort's majority nationality) / the largest "
                  f"share of {value} in one cohort; for heldout_adaptive, crowding_adaptive and "
                  "heldout_knn, the "
                  "training speakers "
                  f"it flags and {value}'s share of them.", ""]  # fmt: skip
        for method, seed, points in purity:
            if points and "flagged_share" in points[0]:  # held-out discovery: who it flags
                cells = ", ".join(f"step {p['step']}: {p['flagged']} flagged, "
                                  f"{100 * p['flagged_share'].get(value, 0):.0f}% {value}"
                                  for p in points)  # fmt: skip
                lines.append(f"- {method} seed {seed} (flagged speakers): {cells}")
                continue
            cells = ", ".join(
                f"step {p['step']}: {p['purity']:.2f} / {p['best_cohort_share'].get(value, 0):.2f}"
                for p in points
            )
            lines.append(f"- {method} seed {seed}: {cells}")
    return lines


def plot_shares(runs: list[dict], methods: list[str], path: Path) -> Path | None:
    """``shares.png``: the minority's crop share (solid) and weight share (dashed) per 100
    steps, each method's mean over seeds."""
    group = minority(runs)
    if group is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for i, m in enumerate(methods):
        steps, crop, weight = curves(runs, m, group)
        if steps.size == 0:
            continue
        colour = f"C{i % 10}"
        ax.plot(steps, 100 * crop, "-", color=colour, label=m)
        if not np.allclose(crop, weight):
            ax.plot(steps, 100 * weight, "--", color=colour)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{group}: share (%)")
    ax.set_title(f"{group}'s share of the crops drawn (solid) and of the weight (dashed)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

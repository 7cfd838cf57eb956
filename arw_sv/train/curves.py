"""Training curves as a PNG, from the run's ``history.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

from arw_sv.atomic import atomic_path


def plot_training_curves(history: str | Path, out_png: str | Path) -> Path | None:
    """Plot loss terms, learning rate, throughput and (for ARW) weight statistics.

    Returns the PNG path, or None when the history is empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(history).read_text().splitlines() if line.strip()]
    if not records:
        return None
    steps = [r["step"] for r in records]
    panels = [
        ("loss", ["loss", "aam_loss", "pair_loss"]),
        ("pair term's share of the gradient at the embeddings", ["pair_grad_share"]),
        ("learning rate / margin", ["lr", "margin"]),
        ("utterances / s", ["utt_per_s"]),
        ("adversary", ["weight_mean", "weight_max", "weight_std", "adversary_objective"]),
        ("weight collapse", ["weight_ess", "weight_loss_spearman"]),
    ]
    panels = [(t, [k for k in keys if any(k in r for r in records)]) for t, keys in panels]
    panels = [(t, keys) for t, keys in panels if keys]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.4 * len(panels)), sharex=True)
    for ax, (title, keys) in zip(axes if len(panels) > 1 else [axes], panels, strict=True):
        for key in keys:
            pts = [(s, r[key]) for s, r in zip(steps, records, strict=True) if key in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=key)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    axes_list = axes if len(panels) > 1 else [axes]
    axes_list[-1].set_xlabel("step")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(out_png)

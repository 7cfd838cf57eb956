"""Fine-tuning a trained model: the overrides that turn any training config into a fine-tune.

Reweighting and label-free re-sampling act on a model that already fits its training data
(ARL pre-trains before its adversary starts). A fine-tune starts from a trained
checkpoint's extractor and AAM head (``train.init_checkpoint``), with a fresh optimizer at a
lower learning rate, a short warm-up, the AAM margin at its final value from the first
step, and the adversary (if any) playing from the first step. ERM "continued" is the
same overrides on the ERM config, the fair reference for any fine-tuned method.

Used by ``arw-sv demo`` (ERM against the recommended fairness method) and by the
fine-tuning benchmark (``bench/``).

Example:
    >>> from arw_sv.config import load_config
    >>> cfg = load_config("cohort.yaml", [*finetune_overrides("runs/erm/final.pt", 300)])
"""

from __future__ import annotations

from pathlib import Path

#: Fine-tuning learning rate (Adam), decayed to a fifth of it at the last step.
FINETUNE_LR = 0.0005


def finetune_overrides(
    init_checkpoint: str | Path, steps: int, lr: float = FINETUNE_LR
) -> tuple[str, ...]:
    """Dotted overrides that fine-tune ``init_checkpoint`` for ``steps`` steps at ``lr``."""
    if steps < 1:
        raise ValueError(f"fine-tuning steps must be >= 1, got {steps}")
    if not lr > 0:
        raise ValueError(f"fine-tuning lr must be > 0, got {lr}")
    return (
        f"train.init_checkpoint={init_checkpoint}",
        f"train.steps={steps}",
        f"train.lr={lr}",
        f"train.final_lr={lr / 5}",
        f"train.warmup_steps={max(1, steps // 10)}",
        # The model is trained: the margin is at its final value, the adversary starts at once.
        "loss.margin_warmup_start=0",
        "loss.margin_warmup_steps=0",
        "adversary.warmup_steps=0",
    )

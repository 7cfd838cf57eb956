"""Average the weights of a run's last N checkpoints (``arw-sv average``: :mod:`arw_sv.cli.average`).

Averaging the last checkpoints of a run smooths the end of the learning-rate decay and is a
standard last step of VoxCeleb recipes (WeSpeaker averages its last 10 epochs). Every
floating-point tensor of the learner (the extractor, the AAM head, the pair loss and the
BatchNorm running statistics) is averaged in float64; integer tensors (BatchNorm's
``num_batches_tracked``) and everything else (config, speakers, adversary, k-means
centroids) come from the newest checkpoint. The result loads like any checkpoint
(``SpeakerEncoder.from_checkpoint``, ``train.init_checkpoint``) but cannot be resumed: it
holds no optimizer state, and its name is not ``step_N.pt``.

::

    arw-sv average exp/ecapa --num 10 --out exp/ecapa/avg_10.pt
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from arw_sv.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts with the same keys (integers: the last one's)."""
    if not states:
        raise ValueError("nothing to average")
    keys = states[-1].keys()
    for i, state in enumerate(states):
        if state.keys() != keys:
            raise CheckpointError(f"checkpoint {i} has other parameters than the newest one")
    out = {}
    for key in keys:
        newest = states[-1][key]
        if newest.is_floating_point():
            total = sum(s[key].to(torch.float64) for s in states)
            out[key] = (total / len(states)).to(newest.dtype)
        else:
            out[key] = newest.clone()
    return out


def average_checkpoints(paths: Sequence[str | Path]) -> dict[str, Any]:
    """One checkpoint whose learner and extractor weights are the mean of ``paths``'."""
    states = [load_checkpoint(p) for p in paths]
    newest = states[-1]
    keep = ("step", "config", "speakers", "adversary", "clusters", "bank", "world_size")
    return {
        **{k: newest[k] for k in keep if k in newest},
        "learner": average_states([s["learner"] for s in states]),
        "extractor": average_states([s["extractor"] for s in states]),
        "averaged_from": [str(p) for p in paths],
    }


def _default_num(run_dir: Path) -> int:
    config = run_dir / "config.yaml"
    if config.is_file():
        train = (yaml.safe_load(config.read_text()) or {}).get("train", {})
        if int(train.get("average_last", 0)) > 0:
            return int(train["average_last"])
    raise ValueError(f"give --num (no train.average_last > 0 in {config})")


def average_run(run_dir: str | Path, num: int | None = None, out: str | Path | None = None) -> Path:
    """Average a run's newest ``num`` checkpoints into ``out`` (default ``avg_<num>.pt``).

    Args:
        run_dir: a training run (``train.out_dir``), holding ``checkpoints/step_N.pt``.
        num: how many; default the run's ``train.average_last``.
        out: where to write.

    Raises:
        ValueError: fewer checkpoints than ``num`` (the message says how many there are).
    """
    run_dir = Path(run_dir)
    num = num if num is not None else _default_num(run_dir)
    found = list_checkpoints(run_dir / "checkpoints")
    if num < 1 or len(found) < num:
        raise ValueError(
            f"asked to average {num} checkpoints, {run_dir / 'checkpoints'} holds {len(found)} "
            "(train.keep_checkpoints and train.average_last decide how many are kept)"
        )
    out = Path(out) if out is not None else run_dir / f"avg_{num}.pt"
    save_checkpoint(average_checkpoints(found[-num:]), out)
    return out

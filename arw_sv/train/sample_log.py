"""What training drew and how it weighted it, per training speaker: ``sampling.jsonl``.

Every ``train.sample_log_every`` steps rank 0 appends one record: for each training speaker
(label order, the checkpoint's ``speakers``), the number of its crops in the global batches
of that window and the sum of the weights the learner gave them (1 per crop without an
adversary). It holds no group label: a benchmark judges it against the labels afterwards
(the minority's share of the draws and of the weight, per window). The open window's
counts are part of the checkpoint, so a resumed run writes exactly the records an
uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FILE = "sampling.jsonl"


class SampleLog:
    """Per-speaker draw counts and weight sums, one record per window.

    Args:
        path: the JSONL file (``<out_dir>/sampling.jsonl``).
        n_speakers: training speakers (speed-perturbed classes fold onto their speaker).
        every: window length in steps; 0 switches the log off.
    """

    def __init__(self, path: Path, n_speakers: int, every: int) -> None:
        self.path, self.n, self.every = Path(path), n_speakers, every
        self.crops = np.zeros(n_speakers, dtype=np.int64)
        self.weight = np.zeros(n_speakers)

    def start(self, from_step: int) -> None:
        """Drop the records past ``from_step`` (a resumed run rewrites them)."""
        if self.every > 0 and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= from_step
            ]
            self.path.write_text("".join(k + "\n" for k in kept))

    def add(self, step: int, labels: np.ndarray, weights: np.ndarray | None) -> None:
        """Count the global batch of step ``step`` (1-based: the number of steps taken).

        Shape:
            labels (B,) class index (speaker, or speed class ``speaker + j * n``), weights (B,).
        """
        if self.every <= 0:
            return
        speakers = np.asarray(labels, dtype=np.int64) % self.n
        self.crops += np.bincount(speakers, minlength=self.n)
        w = np.ones(speakers.shape[0]) if weights is None else np.asarray(weights, float)
        self.weight += np.bincount(speakers, weights=w, minlength=self.n)
        if step % self.every == 0:
            record = {"step": step, "crops": self.crops.tolist(),
                      "weight": [round(float(v), 6) for v in self.weight]}  # fmt: skip
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            self.crops[:] = 0
            self.weight[:] = 0.0

    def state_dict(self) -> dict[str, Any]:
        """The open window (plain tensors)."""
        import torch

        return {"crops": torch.from_numpy(self.crops.copy()),
                "weight": torch.from_numpy(self.weight.copy())}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Reopen the window a checkpoint left open (None: a checkpoint without a log)."""
        if state is None:
            return
        self.crops = np.asarray(state["crops"], dtype=np.int64).copy()
        self.weight = np.asarray(state["weight"], dtype=np.float64).copy()


def read_sample_log(path: Path) -> list[dict[str, Any]]:
    """The records of a ``sampling.jsonl`` (empty when absent)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def group_shares(records: list[dict[str, Any]], member: np.ndarray) -> list[dict[str, float]]:
    """Per window, ``member``'s share of the crops drawn and of the weight given.

    Args:
        records: :func:`read_sample_log`'s.
        member: bool per training speaker (the group judged, e.g. nationality = India).
    """
    member = np.asarray(member, dtype=bool)
    out = []
    for r in records:
        crops, weight = np.asarray(r["crops"], float), np.asarray(r["weight"], float)
        out.append({
            "step": r["step"],
            "crop_share": float(crops[member].sum() / max(crops.sum(), 1e-12)),
            "weight_share": float(weight[member].sum() / max(weight.sum(), 1e-12)),
        })  # fmt: skip
    return out

"""Atomic, complete training checkpoints.

A checkpoint holds everything needed to continue exactly: both players' weights and
optimizers, the LR scheduler, the fp16 scalers, the sampler position, the torch RNG state,
the k-means centroids and embedding bank, the step, and the resolved config (from which
``SpeakerEncoder.from_checkpoint`` rebuilds the extractor). It is written to a temporary
file and renamed, so a crash never leaves a half-written one, and it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from arw_sv.atomic import atomic_path

_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not an arw-sv checkpoint."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (tensors and plain values only), with a clear error if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({load_refusal(exc)})") from None
    if not isinstance(state, dict) or "extractor" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not an arw-sv checkpoint (no extractor/config)")
    return state


def load_refusal(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in one line. torch's own text advises
    re-running with ``weights_only=False``, i.e. running arbitrary pickled code from the
    file: not advice to pass on, so a weights-only refusal says what was refused and why.
    """
    text = str(exc)
    if "weights_only" in text or "Weights only" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (
            f"it holds a pickled Python object{what}, not only tensors and plain values; "
            "arw-sv refuses to unpickle objects, which could run code"
        )
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def load_extractor(path: str | Path, map_location: str | torch.device = "cpu"):
    """The embedding extractor a training checkpoint describes, with its weights loaded.

    Returns ``(extractor, config, state)``: the extractor in eval mode, the checkpoint's
    resolved :class:`~arw_sv.config.Config`, and the raw state (for the AAM head, speakers).
    The one place that rebuilds a model from a checkpoint (inference, export, analysis).
    """
    from arw_sv.config import ConfigError, config_from_dict
    from arw_sv.models.ecapa import extractor_from_config

    state = load_checkpoint(path, map_location)
    if not isinstance(state["config"], dict):
        raise CheckpointError(
            f"{path}: its config is a {type(state['config']).__name__}, not a mapping"
        )
    try:
        cfg = config_from_dict(state["config"])
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its config is invalid: {str(exc)[:300]}") from None
    extractor = extractor_from_config(cfg.model, cfg.features)
    load_weights(extractor, state["extractor"], path)
    return extractor.eval(), cfg, state


def load_weights(module: torch.nn.Module, weights: Any, source: str | Path) -> None:
    """``module.load_state_dict(weights)``; a mismatch is one line naming ``source`` and the
    first key torch names (its message has one line per key), not a traceback.

    Raises:
        CheckpointError: the weights do not fit ``module``.
    """
    try:
        module.load_state_dict(weights)
    except (RuntimeError, TypeError, AttributeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = (lines[1] if len(lines) > 1 else lines[0])[:200] if lines else repr(exc)
        more = f"; {len(lines) - 2} more" if len(lines) > 2 else ""
        raise CheckpointError(
            f"{source}: its weights do not fit the model ({first}{more})"
        ) from None


def list_checkpoints(folder: str | Path) -> list[Path]:
    """``step_<n>.pt`` files in ``folder``, oldest step first."""
    folder = Path(folder)
    found = [(int(m.group(1)), p) for p in folder.glob("step_*.pt") if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints (``keep <= 0`` keeps all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def model_fingerprint(module: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over the module's state (names, shapes, dtypes, values):
    equal for the same weights, however they were loaded.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(
            t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes()
        )
    return digest.hexdigest()[:16]

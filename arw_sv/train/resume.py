"""What may change between a run and its ``--resume``.

A resumed run continues bit for bit only under the config it was started with. Keys that
only say where or how fast to run (and ``train.steps``, to extend a run) may change; any
other difference is refused, naming the keys, unless the user passes
``allow_config_change`` (``arw-sv train --resume --allow-config-change``), when the
difference is logged instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from arw_sv.config import Config, ConfigError, config_from_dict, config_to_dict
from arw_sv.train import distributed

log = logging.getLogger(__name__)

# Changing these does not change the numbers a resumed run computes (train.steps changes the
# LR decay from the resume step on; see the README's troubleshooting section).
RESUMABLE = frozenset(
    {
        "train.out_dir",
        "train.device",
        "train.threads",
        "train.steps",
        "train.log_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.average_last",
        "train.init_checkpoint",  # only read when a run starts at step 0
        "data.num_workers",
    }
)


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple]:
    """``{dotted key: (checkpoint's value, current value)}`` for every key that differs."""
    a, b = _flatten(saved), _flatten(current)
    missing = object()
    return {
        k: (a.get(k, "<absent>"), b.get(k, "<absent>"))
        for k in sorted(set(a) | set(b))
        if a.get(k, missing) != b.get(k, missing)
    }


def check_resume(
    changes: dict[str, tuple],
    saved_speakers: Sequence[str],
    speakers: Sequence[str],
    *,
    step: int,
    allow: bool,
) -> dict[str, tuple]:
    """The changes that break exactness; refused (ConfigError naming them) unless ``allow``.

    Args:
        changes: from :func:`config_changes` (layout keys such as ``train.batch_chunks``
            already removed by the caller when the effective layout is the same).
        saved_speakers: the checkpoint's training speakers.
        speakers: this run's; any difference from ``saved_speakers`` (order included)
            breaks exactness.
        step: the checkpoint's step (``train.steps`` below it is refused always).
        allow: the user accepted a changed config.
    """
    if "train.steps" in changes and changes["train.steps"][1] < step:
        raise ConfigError(
            f"train.steps={changes['train.steps'][1]} is below the checkpoint's step {step}"
        )
    breaking = {k: v for k, v in changes.items() if k not in RESUMABLE}
    if list(saved_speakers) != list(speakers):
        breaking["speakers (of data.train_manifest)"] = (
            f"{len(saved_speakers)} speakers",
            f"{len(speakers)} speakers"
            + (", another set" if len(saved_speakers) == len(speakers) else ""),
        )
    if breaking and not allow:
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in breaking.items())
        raise ConfigError(
            f"--resume with a config that differs from the checkpoint's in {listed}. A resumed "
            "run is only exact under its own config: restore these values, or pass "
            "--allow-config-change to continue anyway"
        )
    return breaking


def check_resumed_config(
    state: dict[str, Any],
    cfg: Config,
    speakers: Sequence[str],
    world_size: int,
    *,
    allow: bool,
) -> None:
    """Refuse (or, with ``allow``, log) a resume whose config breaks exactness.

    Raises:
        ConfigError: naming each differing key with its old and new value.
    """
    saved = state.get("config", {})
    try:  # keys added since the checkpoint was written compare as their defaults
        saved = config_to_dict(config_from_dict(saved))
    except ConfigError:
        pass
    changes = config_changes(saved, config_to_dict(cfg))
    if "train.batch_chunks" in changes:
        # A change of world size may change batch_chunks with the same effective chunks.
        per_batch = cfg.data.speakers_per_batch
        old_world = int(state.get("world_size", 1))
        old = distributed.local_chunks(changes["train.batch_chunks"][0], old_world, per_batch)
        new = distributed.local_chunks(cfg.train.batch_chunks, world_size, per_batch)
        if old * old_world == new * world_size:
            del changes["train.batch_chunks"]
    breaking = check_resume(
        changes, state.get("speakers", []), speakers, step=int(state["step"]), allow=allow
    )
    for key, (old, new) in changes.items():
        if key not in breaking:
            log.info("resume: %s changed %r -> %r", key, old, new)
    for key, (old, new) in breaking.items():
        log.warning("resume with --allow-config-change: %s %r -> %r", key, old, new)


def apply_new_lrs(cfg: Config, optimizer, scheduler, adv_optimizer) -> None:
    """After loading a checkpoint: the config's base LRs, under its schedule, from here on."""
    scheduler.base_lrs = [cfg.train.lr for _ in scheduler.base_lrs]
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = cfg.train.lr
        group["lr"] = cfg.train.lr * factor(scheduler.last_epoch)
    if adv_optimizer is not None:
        for group in adv_optimizer.param_groups:
            group["lr"] = cfg.adversary.lr

"""``fit(cfg)``: build, resume, loop, checkpoint. Reads top to bottom.

The loop alternates the two players of the min-max game (``learner_step`` and
``adversary_step`` in :mod:`arw_sv.train.step`). With ``adversary.formulation: erm`` there is
no adversary, and the run is plain training on exactly the same loss. What a checkpoint
holds, and how it is built from the config, is :mod:`arw_sv.train.state`.

Under ``torchrun`` the same function trains with DistributedDataParallel; what each piece
does across processes is in :mod:`arw_sv.train.distributed`.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from arw_sv.atomic import open_no_follow
from arw_sv.augment import Augmenter, speed_classes
from arw_sv.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    load_weights,
    prune_checkpoints,
    save_checkpoint,
)
from arw_sv.clusters import needs_clusters, refresh_clusters
from arw_sv.config import Config, ConfigError, save_config
from arw_sv.data.adaptive import RULES as ADAPTIVE_RULES
from arw_sv.data.adaptive import AdaptiveSpeakerSampler
from arw_sv.data.dataset import CropDataset, collate_crops
from arw_sv.data.manifest import Manifest, read_manifest
from arw_sv.data.sampler import SpeakerBatchSampler
from arw_sv.prepass import (
    heldout_embedder,
    sampler_arguments,
    sampling_targets,
    training_embedder,
)
from arw_sv.robust import point_biserial
from arw_sv.speechbrain_folder import (
    PREFIX,
    architecture,
    head_for,
    load_extractor,
    resolve,
    split_spec,
)
from arw_sv.train import distributed
from arw_sv.train.build import AUTOCAST_DTYPES
from arw_sv.train.curves import plot_training_curves
from arw_sv.train.lock import RunLock
from arw_sv.train.resume import apply_new_lrs, check_resumed_config
from arw_sv.train.sample_log import FILE as SAMPLE_LOG
from arw_sv.train.sample_log import SampleLog
from arw_sv.train.state import TrainState, build_train_state
from arw_sv.train.step import Learner, NonFiniteError, adversary_step, learner_step

log = logging.getLogger("arw_sv.train")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        out_dir: the run folder (``train.out_dir``).
        checkpoint: the last checkpoint, ``checkpoints/step_<steps>.pt``.
        steps: the step the run stopped at (``train.steps`` unless ``stop_after`` cut it).
        utterances_per_second: global throughput of this call, P x K utterances per step
            over its wall time (0 when a resumed run had nothing left to train).
        last_loss: the learner's objective at the last step this call trained (this
            process's under DDP); NaN when it trained none.
    """

    out_dir: Path
    checkpoint: Path
    steps: int
    utterances_per_second: float
    last_loss: float


def _claim_run_folder(
    out_dir: Path, resume: bool, dist_ctx: distributed.DistContext, cleanup: ExitStack
) -> list[Path]:
    """Lock the run folder and log into it (rank 0; a second process is refused), and list
    its checkpoints, refusing them without ``resume``. ``cleanup`` releases what it took.
    """
    if dist_ctx.is_main:
        lock = RunLock(out_dir)
        cleanup.callback(lock.release)
        handler = logging.StreamHandler(open_no_follow(out_dir / "train.log", "a"))
        cleanup.callback(handler.stream.close)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("arw_sv").addHandler(handler)
        logging.getLogger("arw_sv").setLevel(logging.INFO)
        cleanup.callback(handler.close)
        cleanup.callback(logging.getLogger("arw_sv").removeHandler, handler)
        if lock.stale_owner:
            log.warning("%s: previous run (%s) did not exit cleanly", out_dir, lock.stale_owner)
    existing = list_checkpoints(out_dir / "checkpoints")
    if existing and not resume:
        raise FileExistsError(
            f"{out_dir / 'checkpoints'} already holds checkpoints: pass --resume to continue, "
            "or choose another train.out_dir"
        )
    return existing


def fit(
    cfg: Config,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    allow_config_change: bool = False,
) -> FitResult:
    """Train the extractor (and the adversary, if any) as ``cfg`` says.

    Args:
        cfg: the experiment.
        resume: continue from the newest checkpoint in ``cfg.train.out_dir/checkpoints``.
        progress: show a tqdm bar.
        stop_after: stop (with a checkpoint) after this global step, as if interrupted.
        allow_config_change: on resume, accept (and log) a config that differs from the
            checkpoint's in keys that break exactness (:mod:`arw_sv.train.resume`).

    Returns:
        Where the final checkpoint is, and the measured (global) throughput.
    """
    tc, ac = cfg.train, cfg.adversary
    dist_ctx, device = distributed.setup(tc.device)
    out_dir = Path(tc.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as cleanup:
        cleanup.push(  # a barrier first only when the run ends without an error
            lambda error, *_: distributed.teardown(dist_ctx, clean=error is None)
        )
        existing = _claim_run_folder(out_dir, resume, dist_ctx, cleanup)
        # ---- build ----------------------------------------------------------------------
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        manifest = _training_manifest(cfg)
        checkpoint = load_checkpoint(existing[-1]) if resume and existing else None
        if checkpoint is not None:
            check_resumed_config(
                checkpoint, cfg, manifest.speakers, dist_ctx.world_size, allow=allow_config_change
            )
        dataset, sampler = _training_data(cfg, manifest, out_dir, dist_ctx, device)
        state = build_train_state(
            cfg, manifest.speakers, device=device, world_size=dist_ctx.world_size, sampler=sampler
        )
        learner, adversary = state.learner, state.adversary
        rule = sampler.rule if isinstance(sampler, AdaptiveSpeakerSampler) else ""
        if rule in ("heldout_adaptive", "heldout_knn"):
            sampler.heldout_embeddings = heldout_embedder(cfg, manifest, learner, device)
        if rule in ("crowding_adaptive", "heldout_knn"):
            sampler.training_embeddings = training_embedder(cfg, manifest, learner, device)
        n_speakers = len(manifest.speakers)
        state.sample_log = SampleLog(out_dir / SAMPLE_LOG, n_speakers, tc.sample_log_every)
        # ---- resume ---------------------------------------------------------------------
        if checkpoint is not None:
            state.load_state_dict(checkpoint, source=existing[-1])
            if allow_config_change:
                apply_new_lrs(cfg, state.optimizer, state.scheduler, state.adv_optimizer)
            log.info("resumed from %s at step %d", existing[-1], state.step)
        elif resume:
            log.info("--resume given but %s has no checkpoint: starting fresh", ckpt_dir)
        if tc.init_checkpoint and state.step == 0:
            start = _initialise_from(tc.init_checkpoint, learner, manifest.speakers, cfg)
            if start is not None:
                state.load_adversary_state(start)
        model = distributed.wrap_learner(
            learner,
            dist_ctx,
            device,
            sync_batchnorm=tc.sync_batchnorm,
            find_unused=cfg.loss.aam_weight == 0 or cfg.loss.pair_weight == 0,
        )
        if dist_ctx.is_main:
            save_config(cfg, out_dir / "config.yaml")
        loader = _loader(dataset, sampler, cfg, device)
        run_log = _RunLog(out_dir, from_step=state.step) if dist_ctx.is_main else None
        if dist_ctx.is_main:
            state.sample_log.start(from_step=state.step)
        adaptive = sampler if isinstance(sampler, AdaptiveSpeakerSampler) else None
        autocast_dtype = AUTOCAST_DTYPES[tc.precision]
        chunks = distributed.local_chunks(
            tc.batch_chunks, dist_ctx.world_size, cfg.data.speakers_per_batch
        )
        group_members = _true_groups(manifest) if adversary is not None else {}

        # ---- loop -----------------------------------------------------------------------
        last = min(stop_after if stop_after is not None else tc.steps, tc.steps)
        bar = tqdm(
            total=tc.steps,
            initial=state.step,
            disable=not (progress and dist_ctx.is_main),
            desc="train",
            unit="step",
        )
        keep = max(tc.keep_checkpoints, tc.average_last) if tc.keep_checkpoints > 0 else 0
        batch_size = cfg.data.speakers_per_batch * cfg.data.utterances_per_speaker
        started, started_step = time.perf_counter(), state.step
        stats = None
        for waveforms, labels, indices in loader:
            step = state.step
            if step >= last:
                break
            waveforms = waveforms.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            learner.aam.margin = state.margin(step)
            adversary_on = adversary is not None and step >= ac.warmup_steps
            if adversary_on and needs_clusters(ac):
                state.clusters = refresh_clusters(
                    state.clusters, state.bank, step, cfg, device, dist_ctx
                )
            try:
                stats, detached = learner_step(
                    model,
                    waveforms,
                    labels,
                    state.optimizer,
                    adversary=adversary if adversary_on else None,
                    clusters=state.clusters,
                    objective=state.objective,
                    scaler=state.scaler,
                    clip=tc.grad_clip,
                    autocast_dtype=autocast_dtype,
                    chunks=chunks,
                    weight_ema=state.weight_ema,
                    monitor=(step + 1) % tc.log_every == 0 or step + 1 == last,
                )
                adv_stats = None
                if adversary_on and adversary_due(step, ac.warmup_steps, ac.adversary_every):
                    adv_stats = adversary_step(
                        adversary,
                        detached,
                        state.adv_optimizer,
                        objective=state.objective,
                        clip=tc.grad_clip,
                    )
            except NonFiniteError as exc:
                raise _with_evidence(exc, state, out_dir, dist_ctx, indices, waveforms) from None
            if adversary is not None:
                # The global batch's embeddings: every rank's bank equals one process's.
                state.bank.add(dist_ctx.gather_rows(detached.embeddings))
            _record_draws(state, detached, labels, adaptive, step, n_speakers, dist_ctx)
            state.scheduler.step()
            state.step = step = step + 1
            bar.update(1)
            if step % tc.log_every == 0 or step == last:
                elapsed = time.perf_counter() - started
                rate = (step - started_step) * batch_size / max(elapsed, 1e-9)
                record = {
                    "step": step,
                    "lr": state.scheduler.get_last_lr()[0],
                    "margin": learner.aam.margin,
                    "utt_per_s": rate,
                    **_step_values(stats, adv_stats, dist_ctx),
                }
                if detached.weights is not None:
                    record.update(_group_correlations(detached.weights, indices, group_members))
                if run_log is not None:
                    run_log.write(record)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", utt_s=f"{rate:.1f}")
            if step % tc.checkpoint_every == 0 or step == last:
                if dist_ctx.is_main:
                    save_checkpoint(state.state_dict(), ckpt_dir / f"step_{step}.pt")
                    prune_checkpoints(ckpt_dir, keep)
                dist_ctx.barrier()  # nobody reads or resumes before the file is complete
        bar.close()
        final = ckpt_dir / f"step_{state.step}.pt"
        if run_log is not None:
            run_log.close()
            if state.step == tc.steps:
                plot_training_curves(out_dir / "history.jsonl", out_dir / "training_curves.png")
        elapsed = time.perf_counter() - started
        return FitResult(
            out_dir=out_dir,
            checkpoint=final,
            steps=state.step,
            utterances_per_second=(state.step - started_step) * batch_size / max(elapsed, 1e-9),
            last_loss=stats.loss if stats is not None else float("nan"),
        )


def _record_draws(
    state: TrainState,
    detached,
    labels: torch.Tensor,
    adaptive: AdaptiveSpeakerSampler | None,
    step: int,
    n_speakers: int,
    dist_ctx: distributed.DistContext,
) -> None:
    """Feed the global batch of step ``step`` (0-based) to the sample log and to an
    adaptive sampler's statistics (every rank's sampler sees the same global batch).
    """
    logging = state.sample_log.every > 0  # the same on every rank: the gathers are collective
    if adaptive is None and not logging:
        return
    speakers = dist_ctx.gather_rows(labels.unsqueeze(1)).squeeze(1).cpu().numpy()
    if logging:
        weights = detached.weights
        if weights is not None:
            weights = dist_ctx.gather_rows(weights.unsqueeze(1)).squeeze(1).cpu().numpy()
        if dist_ctx.is_main:
            state.sample_log.add(step + 1, speakers, weights)
    if adaptive is not None:
        losses = state.objective.sample_losses(detached.sample_loss, detached.pairs)
        losses = dist_ctx.gather_rows(losses.unsqueeze(1)).squeeze(1).cpu().numpy()
        embeddings = None
        if adaptive.rule in ("cohort_balanced", "heldout_adaptive"):
            embeddings = dist_ctx.gather_rows(detached.embeddings).cpu().numpy()
        adaptive.observe(step, speakers % n_speakers, losses, embeddings)


def replay_sample_log(cfg: Config, steps: int | None = None) -> Path:
    """Write the ``sampling.jsonl`` a run of a fixed sampler (``speaker`` or
    ``group_balanced``, whose batches depend on the seed alone) drew, without training: for
    runs made before the log existed. Unit weights (no adversary). Returns the file.
    """
    if cfg.data.sampling not in ("speaker", "group_balanced") or cfg.adversary.formulation != "erm":
        raise ValueError(f"replay needs a fixed sampler and no adversary, not "
                         f"data.sampling={cfg.data.sampling}")  # fmt: skip
    manifest = _training_manifest(cfg)
    groups = None
    if cfg.data.sampling == "group_balanced":
        groups = _speaker_groups(manifest, cfg.data.balance_key)
    sampler = SpeakerBatchSampler(manifest.speaker_indices(), cfg.data.speakers_per_batch,
                                  cfg.data.utterances_per_speaker, seed=cfg.train.seed,
                                  groups=groups)  # fmt: skip
    speaker_of = manifest.speaker_indices()
    out = Path(cfg.train.out_dir) / SAMPLE_LOG
    log_ = SampleLog(out, len(manifest.speakers), cfg.train.sample_log_every or 100)
    out.unlink(missing_ok=True)
    total = steps if steps is not None else cfg.train.steps
    for step, batch in enumerate(sampler, start=1):
        if step > total:
            break
        log_.add(step, np.asarray([speaker_of[i] for i, *_ in batch]), None)
    return out


def _training_manifest(cfg: Config) -> Manifest:
    manifest = read_manifest(cfg.data.train_manifest)
    splits = {u.split for u in manifest}
    # A manifest with test or calibration speakers in it trains on its dev split only.
    if "test" in splits or ("dev" in splits and len(splits) > 1):
        manifest = manifest.subset("dev")
        log.info("train manifest: kept only the dev split (%d utterances; left out: %s)",
                 len(manifest), ", ".join(sorted(splits - {"dev"})))  # fmt: skip
    return manifest


def _training_data(
    cfg: Config,
    manifest: Manifest,
    out_dir: Path,
    dist_ctx: distributed.DistContext,
    device: torch.device,
) -> tuple[CropDataset, SpeakerBatchSampler]:
    """The crops and the batch sampler (this rank's share of each global batch)."""
    n_classes = len(manifest.speakers) * speed_classes(cfg.augment)
    speeds = cfg.augment.speeds if n_classes > len(manifest.speakers) else ()
    augmenter = Augmenter(cfg.augment, cfg.features.sample_rate)
    dataset = CropDataset(
        manifest,
        cfg.data.crop_seconds,
        cfg.features.sample_rate,
        augmenter=augmenter,
        speeds=speeds,
    )
    groups = None
    if cfg.data.sampling == "group_balanced":
        groups = _speaker_groups(manifest, cfg.data.balance_key)
    label_free: dict[str, Any] = {}
    if cfg.data.sampling in ("cohort_oversample", "jtt", "cohort_batches", "cohort_heldout"):
        # Cached in the run folder: a resumed run draws exactly the same batches.
        targets = sampling_targets(
            cfg,
            manifest,
            out_dir,
            device=device,
            is_main=dist_ctx.is_main,
            barrier=dist_ctx.barrier,
        )
        label_free = sampler_arguments(cfg, targets)
    if cfg.data.sampling in ADAPTIVE_RULES:
        return dataset, _adaptive_sampler(cfg, manifest, dist_ctx)
    sampler = SpeakerBatchSampler(
        manifest.speaker_indices(),
        cfg.data.speakers_per_batch,
        cfg.data.utterances_per_speaker,
        seed=cfg.train.seed,
        groups=groups,
        speed_prob=cfg.augment.speed_prob if speeds else 0.0,
        n_speeds=len(speeds),
        rank=dist_ctx.rank,
        world_size=dist_ctx.world_size,
        **label_free,
    )
    return dataset, sampler


#: DataLoader prefetch_factor with workers (_loader): the batches drawn ahead of training.
PREFETCH = 4


def _adaptive_sampler(
    cfg: Config, manifest: Manifest, dist_ctx: distributed.DistContext
) -> AdaptiveSpeakerSampler:
    dc = cfg.data
    if cfg.augment.speed_prob > 0:
        raise ConfigError(f"data.sampling={dc.sampling} does not support augment.speed_prob > 0")
    depth = dc.num_workers * PREFETCH
    if depth > dc.adaptive_delay:
        raise ConfigError(
            f"data.adaptive_delay={dc.adaptive_delay} is below the loader's prefetch depth "
            f"({dc.num_workers} workers x {PREFETCH} = {depth}): set it to at least {depth}"
        )
    return AdaptiveSpeakerSampler(
        manifest.speaker_indices(),
        dc.speakers_per_batch,
        dc.utterances_per_speaker,
        rule=dc.sampling,
        seed=cfg.train.seed,
        refresh_steps=dc.adaptive_refresh_steps,
        start_step=dc.adaptive_start_step,
        delay=dc.adaptive_delay,
        loss_ema=dc.loss_ema,
        temperature=dc.loss_temperature,
        floor=dc.loss_floor,
        n_cohorts=dc.n_cohorts,
        cohort_top=dc.cohort_oversample_top,
        cohort_share=dc.cohort_share,
        crowded_fraction=dc.crowded_fraction,
        neighbours=dc.cohort_neighbours,
        crowding_ema=dc.crowding_ema,
        embedding_dim=cfg.model.embedding_dim,
        rank=dist_ctx.rank,
        world_size=dist_ctx.world_size,
    )


def _loader(
    dataset: CropDataset, sampler: SpeakerBatchSampler, cfg: Config, device: torch.device
) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        # Its own generator: the loader's per-epoch seed draw must not advance the torch
        # RNG that was just restored from the checkpoint (else each resume is one ahead).
        generator=torch.Generator().manual_seed(cfg.train.seed),
        num_workers=workers,
        collate_fn=collate_crops,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=PREFETCH if workers > 0 else None,
    )


def _step_values(stats, adv_stats, dist_ctx: distributed.DistContext) -> dict[str, float]:
    """The logged numbers of one step; under DDP the losses averaged over ranks (the rest
    agree already).
    """
    values = {k: v for k, v in vars(stats).items() if v is not None}
    if dist_ctx.enabled:
        names = ("loss", "aam_loss", "pair_loss")
        values.update(zip(names, dist_ctx.mean([values[n] for n in names]), strict=True))
    if adv_stats is not None:
        values["adversary_objective"] = adv_stats.objective
        values["adversary_grad_norm"] = adv_stats.grad_norm
    return values


def _with_evidence(
    exc: NonFiniteError,
    state: TrainState,
    out_dir: Path,
    dist_ctx: distributed.DistContext,
    indices: torch.Tensor,
    waveforms: torch.Tensor,
) -> NonFiniteError:
    """Save the model and the batch that broke it; the error to raise, naming the file."""
    rank = f".rank{dist_ctx.rank}" if dist_ctx.enabled else ""
    evidence = out_dir / "failure" / f"step_{state.step}{rank}.pt"
    save_checkpoint(
        {**state.state_dict(), "batch_indices": indices, "waveforms": waveforms.cpu()}, evidence
    )
    return NonFiniteError(f"step {state.step}: {exc}; the batch and model are saved in {evidence}")


def adversary_due(step: int, warmup_steps: int, every: int) -> bool:
    """Whether the adversary steps at ``step`` (the learner steps at every step): from the
    end of the warm-up on, every ``every``-th step, the first at ``warmup_steps``.
    """
    return step >= warmup_steps and (step - warmup_steps) % every == 0


def _true_groups(manifest) -> dict[str, torch.Tensor]:
    """Per utterance, membership of every true group (``gender=f``, ``nationality=UK``) with
    more than one value in the manifest. For logging only: never given to the adversary.
    """
    members = {}
    for attribute in ("gender", "nationality"):
        values = [getattr(u, attribute) for u in manifest]
        names = sorted(set(values) - {"unknown"})
        if len(names) < 2:
            continue
        for name in names:
            key = "".join(c if c.isalnum() else "_" for c in name)
            members[f"{attribute}={key}"] = torch.tensor([v == name for v in values])
    return members


def _group_correlations(
    weights: torch.Tensor, indices: torch.Tensor, members: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Point-biserial correlation of this batch's weights with each true group present."""
    found = {}
    for name, member in members.items():
        corr = point_biserial(weights, member[indices.cpu()])
        if corr is not None:
            found[f"weight_pb/{name}"] = corr
    return found


def _speaker_groups(manifest, key: str) -> list[int]:
    """Each speaker's group for ``data.balance_key``: one attribute, or a cross ``a,b``."""
    names = ("gender", "nationality") if key == "gender_nationality" else key.split(",")
    missing = [n for n in names if n not in manifest.attribute_names]
    if missing:
        raise ValueError(
            f"data.balance_key={key}: the training manifest has no speaker attribute "
            f"{missing[0]!r} (it has {', '.join(manifest.attribute_names)})"
        )
    columns = [manifest.speaker_attribute(n) for n in names]
    values = ["/".join(cell) for cell in zip(*columns, strict=True)]
    groups = sorted(set(values))
    return [groups.index(v) for v in values]


def _initialise_from(
    path: str, learner: Learner, speakers: list[str], cfg: Config
) -> dict[str, Any] | None:
    """Load a checkpoint's weights to fine-tune from (``train.init_checkpoint``).

    Same training speakers: the whole learner, with the AAM head's speed-perturbation
    classes dropped or tiled from the plain ones when the two runs differ in
    ``augment.speed_prob``. Other speakers: the extractor and pair loss only (a fresh head).

    ``speechbrain:FOLDER`` (or a hub id) starts from a SpeechBrain pretrained ECAPA instead:
    its embedding model, and its classifier as the AAM head when every training speaker is
    in its label encoder (a fresh head otherwise). The model and features sections must
    describe its architecture (the published VoxCeleb model is ``model.preset=c1024``).

    Returns:
        The checkpoint, when its adversary (same formulation) should be loaded too.
    """
    if split_spec(path) is not None:
        _initialise_from_speechbrain(split_spec(path), learner, speakers)
        return None
    state = load_checkpoint(path)
    weights = dict(state["learner"])
    if list(state.get("speakers", [])) != list(speakers):
        log.info("init from %s: other training speakers, the AAM head starts fresh", path)
        weights = {k: v for k, v in weights.items() if not k.startswith("aam.")}
        weights.update({f"aam.{k}": v for k, v in learner.aam.state_dict().items()})
    else:
        have, want = weights["aam.weight"].shape[0], learner.aam.weight.shape[0]
        if have != want:
            n = len(speakers)
            if have % n or want % n:
                raise CheckpointError(f"{path}: AAM head of {have} classes, {want} expected")
            plain = weights["aam.weight"][:n]  # classes 0..n-1 are the unperturbed speakers
            weights["aam.weight"] = plain.repeat(want // n, 1)
    load_weights(learner, weights, path)
    log.info("initialised from %s (step %s)", path, state.get("step"))
    same = state.get("config", {}).get("adversary", {}).get("formulation")
    if state.get("adversary") is not None and same == cfg.adversary.formulation:
        return state
    return None


# How each architecture() key of a SpeechBrain folder is set in a config.
_SETTINGS_OF = {
    "channels": "model.channels",
    "attention": "model.attention_channels",
    "se": "model.se_channels",
    "scale": "model.res2net_scale",
    "dim": "model.embedding_dim",
    "n_mels": "features.n_mels",
    "sample_rate": "features.sample_rate",
    "win": "features.win_length_ms",
    "hop": "features.hop_length_ms",
}


def _matching_overrides(have: dict[str, Any], differ: dict[str, tuple]) -> str:
    """Advice a user can follow: the overrides that build the folder's model, or which of
    its settings no config can express.
    """
    fixed = [k for k in differ if k not in _SETTINGS_OF]
    if fixed:
        return f"no config setting gives its {', '.join(fixed)}: it cannot be fine-tuned here"
    overrides = []
    for key in differ:
        value = have[key]
        text = "[" + ",".join(str(v) for v in value) + "]" if isinstance(value, list) else value
        overrides.append(f"{_SETTINGS_OF[key]}={text}")
    if "attention" in differ and have["attention"] > have["channels"][-1]:
        overrides.append("model.attention_exact=true")
    if "channels" in differ:
        overrides.append("model.attention_exact=true")  # the width stays as the folder's
        overrides.append(f"model.attention_channels={have['attention']}")
    return "train with " + " ".join(dict.fromkeys(overrides))


def _initialise_from_speechbrain(name: str, learner: Learner, speakers: list[str]) -> None:
    folder = resolve(name)
    imported = load_extractor(folder)
    have, want = architecture(imported), architecture(learner.extractor)
    differ = {k: (have[k], want[k]) for k in have if have[k] != want[k]}
    if differ:
        raise ConfigError(
            f"train.init_checkpoint={PREFIX}{name}: the folder's model differs from the "
            f"config's (folder, config): {differ}; {_matching_overrides(have, differ)}"
        )
    learner.extractor.load_state_dict(imported.state_dict())
    head = head_for(folder, speakers, learner.aam.weight.shape[0], learner.extractor.embedding_dim)
    if head is None:
        log.info("init from %s: speakers not all in its classifier, the head starts fresh", name)
    else:
        with torch.no_grad():
            learner.aam.weight.copy_(head)
    log.info("initialised from SpeechBrain folder %s", folder)


class _RunLog:
    """Rank 0's record of the run: ``history.jsonl``, TensorBoard scalars, ``train.log``."""

    def __init__(self, out_dir: Path, from_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=from_step)
        self.history = _History(out_dir / "history.jsonl", from_step=from_step)

    def write(self, record: dict[str, Any]) -> None:
        self.history.write(record)
        for key, value in record.items():
            if key != "step":
                self.writer.add_scalar(f"train/{key}", value, record["step"])
        log.info("step %d %s", record["step"], json.dumps(record))

    def close(self) -> None:
        self.writer.close()


class _History:
    """Append-only JSONL of logged scalars; on resume drops records past the resume step."""

    def __init__(self, path: Path, from_step: int) -> None:
        self.path = path
        if path.exists() or path.is_symlink():
            with open_no_follow(path, "r") as handle:
                lines = handle.read().splitlines()
            kept = [k for k in lines if k.strip() and json.loads(k)["step"] <= from_step]
            with open_no_follow(path, "w") as handle:
                handle.write("".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open_no_follow(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

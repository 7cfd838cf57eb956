"""``fit(cfg)``: build, resume, loop, checkpoint. Reads top to bottom.

The loop alternates the two players of the min-max game (``learner_step`` and
``adversary_step`` in :mod:`arw_sv.train.step`). With ``adversary.formulation: erm`` there is
no adversary, and the run is plain training on exactly the same loss.

Under ``torchrun`` the same function trains with DistributedDataParallel; what each piece
does across processes is in :mod:`arw_sv.train.distributed`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from arw_sv.arw import ClusterIndex
from arw_sv.augment import Augmenter, speed_classes
from arw_sv.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from arw_sv.config import Config, ConfigError, config_to_dict, save_config
from arw_sv.data.dataset import CropDataset, collate_crops
from arw_sv.data.manifest import read_manifest
from arw_sv.data.sampler import SpeakerBatchSampler
from arw_sv.models.adversary import GroupDROWeights, build_adversary
from arw_sv.models.heads import margin_at
from arw_sv.prepass import sampler_arguments, sampling_targets
from arw_sv.robust import WeightEMA, check_stabilisers, point_biserial
from arw_sv.speechbrain_folder import (
    PREFIX,
    architecture,
    head_for,
    load_extractor,
    resolve,
    split_spec,
)
from arw_sv.train import distributed
from arw_sv.train.build import AUTOCAST_DTYPES, build_learner, build_optimizer, lr_factor
from arw_sv.train.curves import plot_training_curves
from arw_sv.train.lock import RunLock
from arw_sv.train.resume import apply_new_lrs, check_resumed_config
from arw_sv.train.step import Learner, NonFiniteError, adversary_step, learner_step

log = logging.getLogger("arw_sv.train")


@dataclass(frozen=True)
class FitResult:
    out_dir: Path
    checkpoint: Path
    steps: int
    utterances_per_second: float
    last_loss: float


class EmbeddingBank:
    """Ring buffer of the most recent training embeddings, for the k-means refresh.

    Clustering embeddings the learner has just produced costs nothing extra (no separate
    extraction pass); they are at most a few hundred steps stale.
    """

    def __init__(self, size: int, dim: int) -> None:
        self.data = torch.zeros(size, dim)
        self.count = 0

    def add(self, embeddings: torch.Tensor) -> None:
        n = embeddings.shape[0]
        pos = (self.count + torch.arange(n)) % self.data.shape[0]
        self.data[pos] = embeddings.detach().float().cpu()
        self.count += n

    def filled(self) -> np.ndarray:
        return self.data[: min(self.count, self.data.shape[0])].numpy()

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data.clone(), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data, self.count = state["data"].clone(), int(state["count"])


def _setup_logging(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("arw_sv").addHandler(handler)
    logging.getLogger("arw_sv").setLevel(logging.INFO)
    return handler


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
    lock = handler = None
    try:
        # One process per run folder (rank 0 for a DDP job); a second one is refused.
        lock = RunLock(out_dir) if dist_ctx.is_main else None
        handler = _setup_logging(out_dir) if dist_ctx.is_main else None
        if lock is not None and lock.stale_owner:
            log.warning("%s: previous run (%s) did not exit cleanly", out_dir, lock.stale_owner)
        existing = list_checkpoints(ckpt_dir)
        if existing and not resume:
            raise FileExistsError(
                f"{ckpt_dir} already holds checkpoints: pass --resume to continue, or choose "
                "another train.out_dir"
            )
        # ---- build ----------------------------------------------------------------------
        if tc.threads > 0:
            torch.set_num_threads(tc.threads)
        torch.manual_seed(tc.seed)
        manifest = read_manifest(cfg.data.train_manifest)
        if any(u.split == "test" for u in manifest):
            manifest = manifest.subset("dev")
            log.info("train manifest: kept only the dev split (%d utterances)", len(manifest))
        state = load_checkpoint(existing[-1]) if resume and existing else None
        if state is not None:
            check_resumed_config(
                state, cfg, manifest.speakers, dist_ctx.world_size, allow=allow_config_change
            )
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
        if cfg.data.sampling in ("cohort_oversample", "jtt"):
            # Cached in the run folder: a resumed run draws exactly the same batches.
            targets = sampling_targets(cfg, manifest, out_dir)
            label_free = sampler_arguments(cfg, targets)
        chunks = distributed.local_chunks(
            tc.batch_chunks, dist_ctx.world_size, cfg.data.speakers_per_batch
        )
        sampler = SpeakerBatchSampler(
            manifest.speaker_indices(),
            cfg.data.speakers_per_batch,
            cfg.data.utterances_per_speaker,
            seed=tc.seed,
            groups=groups,
            speed_prob=cfg.augment.speed_prob if speeds else 0.0,
            n_speeds=len(speeds),
            rank=dist_ctx.rank,
            world_size=dist_ctx.world_size,
            **label_free,
        )
        learner = build_learner(cfg, n_classes).to(device)
        if tc.compile:
            # In place (nn.Module.compile): parameters and state_dict keys stay as they are.
            learner.extractor.ecapa.compile(mode=tc.compile_mode, dynamic=False)
        if ac.formulation != "erm":
            check_stabilisers(
                formulation=ac.formulation,
                use_cluster=ac.use_cluster,
                temperature=ac.temperature,
                max_weight=ac.max_weight,
                kl_penalty=ac.kl_penalty,
                chi2_penalty=ac.chi2_penalty,
                weight_ema=ac.weight_ema,
                dro_step_size=ac.dro_step_size,
            )
        # The adversary draws its initial weights from its own generator, so switching it
        # on changes nothing in the learner's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed + 1)
            adversary = build_adversary(
                ac.formulation,
                embedding_dim=cfg.model.embedding_dim,
                n_clusters=ac.n_clusters,
                hidden=ac.hidden,
                use_embedding=ac.use_embedding,
                use_cluster=ac.use_cluster,
                temperature=ac.temperature,
                dro_step_size=ac.dro_step_size,
            )
        optimizer = build_optimizer(
            tc.optimizer, learner.parameters(), tc.lr, tc.weight_decay, tc.momentum
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(tc))
        scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
        adv_optimizer = None
        weight_ema = None
        if adversary is not None:
            adversary = adversary.to(device)
            if not isinstance(adversary, GroupDROWeights):  # q moves by its own rule
                adv_optimizer = build_optimizer(ac.optimizer, adversary.parameters(), ac.lr)
            if ac.weight_ema > 0:
                weight_ema = WeightEMA(ac.n_clusters, ac.weight_ema)
        bank = EmbeddingBank(bank_size(ac.n_clusters), cfg.model.embedding_dim)
        group_members = _true_groups(manifest) if adversary is not None else {}
        clusters: ClusterIndex | None = None
        step = 0
        # ---- resume ---------------------------------------------------------------------
        if state is not None:
            try:
                learner.load_state_dict(state["learner"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                scaler.load_state_dict(state["scaler"])
                if adversary is not None:
                    adversary.load_state_dict(state["adversary"])
                    if adv_optimizer is not None:
                        adv_optimizer.load_state_dict(state["adversary_optimizer"])
                    if weight_ema is not None:
                        weight_ema.load_state_dict(state["weight_ema"])
            except (RuntimeError, ValueError, KeyError, TypeError) as exc:
                # torch's first line is only "Error(s) in loading ..."; the next names a key.
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                first = (lines[1] if len(lines) > 1 else lines[0])[:200] if lines else repr(exc)
                raise CheckpointError(
                    f"{existing[-1]}: its weights do not fit this config ({first})"
                ) from None
            if allow_config_change:
                apply_new_lrs(cfg, optimizer, scheduler, adv_optimizer)
            if state.get("clusters") is not None:
                clusters = ClusterIndex.from_state_dict(state["clusters"]).to(device)
            bank.load_state_dict(state["bank"])
            sampler.load_state_dict(state["sampler"])
            torch.set_rng_state(state["rng"]["torch"])
            if device.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"])
            step = int(state["step"])
            log.info("resumed from %s at step %d", existing[-1], step)
        elif resume:
            log.info("--resume given but %s has no checkpoint: starting fresh", ckpt_dir)
        if tc.init_checkpoint and step == 0:
            start = _initialise_from(tc.init_checkpoint, learner, manifest.speakers, cfg)
            if adversary is not None and start is not None:
                adversary.load_state_dict(start["adversary"])
                if start.get("clusters") is not None:
                    clusters = ClusterIndex.from_state_dict(start["clusters"]).to(device)
                bank.load_state_dict(start["bank"])
        model = distributed.wrap_learner(
            learner,
            dist_ctx,
            device,
            sync_batchnorm=tc.sync_batchnorm,
            find_unused=cfg.loss.aam_weight == 0 or cfg.loss.pair_weight == 0,
        )
        if dist_ctx.is_main:
            save_config(cfg, out_dir / "config.yaml")
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            # Its own generator: the loader's per-epoch seed draw must not advance the torch
            # RNG that was just restored from the checkpoint (else each resume is one ahead).
            generator=torch.Generator().manual_seed(tc.seed),
            num_workers=cfg.data.num_workers,
            collate_fn=collate_crops,
            pin_memory=device.type == "cuda",
            persistent_workers=cfg.data.num_workers > 0,
            prefetch_factor=4 if cfg.data.num_workers > 0 else None,
        )
        writer = history = None
        if dist_ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=step)
            history = _History(out_dir / "history.jsonl", from_step=step)
        autocast_dtype = AUTOCAST_DTYPES[tc.precision]

        def checkpoint_state() -> dict[str, Any]:
            return {
                "step": step,
                "config": config_to_dict(cfg),
                "speakers": list(manifest.speakers),
                "extractor": learner.extractor.state_dict(),
                "learner": learner.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "adversary": None if adversary is None else adversary.state_dict(),
                "adversary_optimizer": None
                if adv_optimizer is None
                else adv_optimizer.state_dict(),
                "clusters": None if clusters is None else clusters.state_dict(),
                "weight_ema": None if weight_ema is None else weight_ema.state_dict(),
                "bank": bank.state_dict(),
                "sampler": {"step": step, "seed": tc.seed},
                "world_size": dist_ctx.world_size,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                },
            }

        # ---- loop -----------------------------------------------------------------------
        last = stop_after if stop_after is not None else tc.steps
        last = min(last, tc.steps)
        bar = tqdm(
            total=tc.steps,
            initial=step,
            disable=not (progress and dist_ctx.is_main),
            desc="train",
            unit="step",
        )
        keep = max(tc.keep_checkpoints, tc.average_last) if tc.keep_checkpoints > 0 else 0
        batch_size = cfg.data.speakers_per_batch * cfg.data.utterances_per_speaker
        started, started_step = time.perf_counter(), step
        stats = None
        for waveforms, labels, indices in loader:
            if step >= last:
                break
            waveforms = waveforms.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            learner.aam.margin = margin_at(
                step,
                cfg.loss.aam_margin,
                cfg.loss.margin_warmup_start,
                cfg.loss.margin_warmup_steps,
            )
            adversary_on = adversary is not None and step >= ac.warmup_steps
            if adversary_on and (ac.use_cluster or ac.formulation in ("pl", "groupdro")):
                clusters = _refresh_clusters(clusters, bank, step, cfg, device, dist_ctx)
            try:
                stats, detached = learner_step(
                    model,
                    waveforms,
                    labels,
                    optimizer,
                    adversary=adversary if adversary_on else None,
                    clusters=clusters,
                    cfg=ac,
                    loss_cfg=cfg.loss,
                    scaler=scaler,
                    clip=tc.grad_clip,
                    autocast_dtype=autocast_dtype,
                    chunks=chunks,
                    weight_ema=weight_ema,
                )
                adv_stats = None
                if adversary_on and adversary_due(step, ac.warmup_steps, ac.adversary_every):
                    adv_stats = adversary_step(
                        adversary,
                        detached,
                        adv_optimizer,
                        cfg=ac,
                        loss_cfg=cfg.loss,
                        clip=tc.grad_clip,
                    )
            except NonFiniteError as exc:
                rank = f".rank{dist_ctx.rank}" if dist_ctx.enabled else ""
                evidence = out_dir / "failure" / f"step_{step}{rank}.pt"
                save_checkpoint(
                    {**checkpoint_state(), "batch_indices": indices, "waveforms": waveforms.cpu()},
                    evidence,
                )
                raise NonFiniteError(
                    f"step {step}: {exc}; the batch and model are saved in {evidence}"
                ) from None
            if adversary is not None:
                # The global batch's embeddings: every rank's bank equals one process's.
                bank.add(dist_ctx.gather_rows(detached.embeddings))
            scheduler.step()
            step += 1
            bar.update(1)
            if step % tc.log_every == 0 or step == last:
                elapsed = time.perf_counter() - started
                rate = (step - started_step) * batch_size / max(elapsed, 1e-9)
                values = {k: v for k, v in vars(stats).items() if v is not None}
                if dist_ctx.enabled:  # losses averaged over ranks (the rest agree already)
                    names = ("loss", "aam_loss", "pair_loss")
                    values.update(
                        zip(names, dist_ctx.mean([values[n] for n in names]), strict=True)
                    )
                record = {
                    "step": step,
                    "lr": scheduler.get_last_lr()[0],
                    "margin": learner.aam.margin,
                    "utt_per_s": rate,
                    **values,
                }
                if adv_stats is not None:
                    record["adversary_objective"] = adv_stats.objective
                    record["adversary_grad_norm"] = adv_stats.grad_norm
                if detached.weights is not None:
                    record.update(_group_correlations(detached.weights, indices, group_members))
                if dist_ctx.is_main:
                    history.write(record)
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(f"train/{key}", value, step)
                    bar.set_postfix(loss=f"{record['loss']:.3f}", utt_s=f"{rate:.1f}")
                    log.info("step %d %s", step, json.dumps(record))
            if step % tc.checkpoint_every == 0 or step == last:
                if dist_ctx.is_main:
                    save_checkpoint(checkpoint_state(), ckpt_dir / f"step_{step}.pt")
                    prune_checkpoints(ckpt_dir, keep)
                dist_ctx.barrier()  # nobody reads or resumes before the file is complete
        bar.close()
        final = ckpt_dir / f"step_{step}.pt"
        if dist_ctx.is_main:
            writer.close()
            if step == tc.steps:
                plot_training_curves(out_dir / "history.jsonl", out_dir / "training_curves.png")
        elapsed = time.perf_counter() - started
        return FitResult(
            out_dir=out_dir,
            checkpoint=final,
            steps=step,
            utterances_per_second=(step - started_step) * batch_size / max(elapsed, 1e-9),
            last_loss=stats.loss if stats is not None else float("nan"),
        )
    finally:
        if handler is not None:
            logging.getLogger("arw_sv").removeHandler(handler)
            handler.close()
        if lock is not None:
            lock.release()
        distributed.teardown(dist_ctx)


def bank_size(n_clusters: int) -> int:
    """Rows of the embedding bank: at least 32 per cluster (k-means needs 4 per cluster to
    start, and refreshes see a few hundred steps of batches), and never under 4096."""
    return max(4096, 32 * n_clusters)


def adversary_due(step: int, warmup_steps: int, every: int) -> bool:
    """Whether the adversary steps at ``step`` (the learner steps at every step): from the
    end of the warm-up on, every ``every``-th step, the first at ``warmup_steps``."""
    return step >= warmup_steps and (step - warmup_steps) % every == 0


def _true_groups(manifest) -> dict[str, torch.Tensor]:
    """Per utterance, membership of every true group (``gender=f``, ``nationality=UK``) with
    more than one value in the manifest. For logging only: never given to the adversary."""
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
    if key == "gender_nationality":
        values = [
            f"{g}/{n}"
            for g, n in zip(
                manifest.speaker_attribute("gender"),
                manifest.speaker_attribute("nationality"),
                strict=True,
            )
        ]
    else:
        values = manifest.speaker_attribute(key)
    names = sorted(set(values))
    return [names.index(v) for v in values]


def _refresh_clusters(
    clusters: ClusterIndex | None,
    bank: EmbeddingBank,
    step: int,
    cfg: Config,
    device,
    dist_ctx: distributed.DistContext,
) -> ClusterIndex | None:
    """Refit k-means on the bank every ``cluster_refresh_steps`` (and as soon as it can).

    Under DDP rank 0 fits and broadcasts: every rank must use identical centroids.
    """
    ac = cfg.adversary
    due = clusters is None or step % ac.cluster_refresh_steps == 0
    data = bank.filled()
    if not due or data.shape[0] < 4 * ac.n_clusters:
        return clusters
    if dist_ctx.is_main:
        seed = (cfg.train.seed * 1_000_003 + step) % (2**31)
        fitted = ClusterIndex.fit(
            data, ac.n_clusters, seed=seed, init=clusters.to("cpu") if clusters else None
        )
        log.info("step %d: k-means refreshed on %d embeddings", step, data.shape[0])
        if not dist_ctx.enabled:
            return fitted.to(device)
        centroids = fitted.centroids
    else:
        centroids = torch.empty(ac.n_clusters, cfg.model.embedding_dim)
    centroids = dist_ctx.broadcast(centroids)
    return ClusterIndex.from_state_dict({"centroids": centroids}).to(device)


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
    learner.load_state_dict(weights)
    log.info("initialised from %s (step %s)", path, state.get("step"))
    same = state.get("config", {}).get("adversary", {}).get("formulation")
    if state.get("adversary") is not None and same == cfg.adversary.formulation:
        return state
    return None


def _initialise_from_speechbrain(name: str, learner: Learner, speakers: list[str]) -> None:
    folder = resolve(name)
    imported = load_extractor(folder)
    have, want = architecture(imported), architecture(learner.extractor)
    differ = {k: (have[k], want[k]) for k in have if have[k] != want[k]}
    if differ:
        raise ConfigError(
            f"train.init_checkpoint={PREFIX}{name}: the folder's model differs from the "
            f"config's (folder, config): {differ}; set model.* / features.* to match"
        )
    learner.extractor.load_state_dict(imported.state_dict())
    head = head_for(folder, speakers, learner.aam.weight.shape[0])
    if head is None:
        log.info("init from %s: speakers not all in its classifier, the head starts fresh", name)
    else:
        with torch.no_grad():
            learner.aam.weight.copy_(head)
    log.info("initialised from SpeechBrain folder %s", folder)


class _History:
    """Append-only JSONL of logged scalars; on resume drops records past the resume step."""

    def __init__(self, path: Path, from_step: int) -> None:
        self.path = path
        if path.exists():
            kept = [
                line
                for line in path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= from_step
            ]
            path.write_text("".join(k + "\n" for k in kept))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")

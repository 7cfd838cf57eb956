"""The pre-pass of the label-free samplers: embed the training set with the init model.

``data.sampling: cohort_oversample``, ``cohort_heldout``, ``cohort_batches`` and ``jtt``
need the initial (ERM) model's view of the training set before fine-tuning starts.
:func:`sampling_targets` embeds the training utterances with ``train.init_checkpoint``
(whole utterances, as at test time; for the cohorts at most ``data.cohort_utterances_per_speaker`` of each speaker, for JTT all of
them) on the training device, computes the targets (:mod:`arw_sv.data.cohort_sampling`)
and caches them in ``<train.out_dir>/sampling_prepass.json``, so a resumed run reuses
exactly the same targets (and hence the same batches) instead of recomputing them. Under
DDP rank 0 computes them and the other ranks read its cache.

Cost: one forward pass per embedded utterance. On VoxCeleb2 (5,994 speakers) the default
cap of 20 utterances per speaker embeds about 120,000 files instead of 1.09 million.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from arw_sv.atomic import atomic_write_text
from arw_sv.config import Config
from arw_sv.data.cohort_sampling import discover_cohorts, jtt_errors, jtt_repeats
from arw_sv.data.manifest import Manifest

log = logging.getLogger(__name__)

PREPASS_FILE = "sampling_prepass.json"


def _key(cfg: Config, manifest: Manifest) -> dict[str, Any]:
    d = cfg.data
    return {
        "sampling": d.sampling,
        "init_checkpoint": str(cfg.train.init_checkpoint),
        "utterances": len(manifest),
        "speakers": len(manifest.speakers),
        "n_cohorts": d.n_cohorts,
        "cohort_oversample_top": d.cohort_oversample_top,
        "cohort_neighbours": d.cohort_neighbours,
        "cohort_utterances_per_speaker": d.cohort_utterances_per_speaker,
        "seed": cfg.train.seed,
        **(
            {"heldout_manifest": d.heldout_manifest, "heldout_split": d.heldout_split}
            if d.sampling == "cohort_heldout"
            else {}
        ),
    }


def embed_training_set(
    checkpoint: str | Path, manifest: Manifest, rows: np.ndarray | None = None, device="cpu"
) -> np.ndarray:
    """Embeddings of the manifest's utterances ``rows`` (None: all) with ``checkpoint``.

    Shape:
        rows: (U,) manifest indices; output: (U, D), L2-normalised, in ``rows`` order.
    """
    from arw_sv.inference import SpeakerEncoder

    encoder = SpeakerEncoder.from_checkpoint(checkpoint, device=device)
    chosen = [manifest[i] for i in (range(len(manifest)) if rows is None else rows.tolist())]
    paths, spans = _paths_and_spans(chosen)
    return encoder.embed_files(paths, spans=spans, progress=False)


def _paths_and_spans(utts: list) -> tuple[list[str], list[tuple[float, float]]]:
    """Each utterance's file and ``(start, duration)``, read as ``arw-sv embed`` reads them
    (:meth:`arw_sv.inference.SpeakerEncoder.embed_files`): a Kaldi segment its own part, a
    whole-file row (or one of unknown duration, 0, from the start) the whole file.
    """
    return [u.path for u in utts], [(u.start, u.duration) for u in utts]


def capped_rows(speakers: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` rows of each speaker (a seeded choice, in manifest order); 0: all.

    Shape:
        speakers: (U,) speaker index per row; output: (N,) sorted row indices.
    """
    if cap <= 0:
        return np.arange(len(speakers))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(speakers))
    # rank of each row within its speaker, in the shuffled order
    by_speaker = order[np.argsort(speakers[order], kind="stable")]
    starts = np.searchsorted(speakers[by_speaker], speakers[by_speaker], side="left")
    rank = np.arange(len(by_speaker)) - starts
    return np.sort(by_speaker[rank < cap])


def sampling_targets(
    cfg: Config,
    manifest: Manifest,
    out_dir: str | Path,
    *,
    device="cpu",
    is_main: bool = True,
    barrier=None,
) -> dict[str, Any]:
    """The cached (or freshly computed) pre-pass of ``cfg.data.sampling``.

    Under DDP pass ``is_main`` (rank 0 computes and writes the cache) and the process
    group's ``barrier``: the other ranks wait for it and read the cache.

    Returns:
        The cache's dict: ``key`` (what it was computed for) and, for cohort oversampling,
        ``oversample`` (bool per speaker) plus the cohorts and their crowding; for JTT,
        ``errors`` (bool per utterance) and ``error_rate``.

    Raises:
        ValueError: without ``train.init_checkpoint``, or when the cache was made for
            another setting (delete it or use another ``train.out_dir``).
    """
    if not cfg.train.init_checkpoint:
        raise ValueError(
            f"data.sampling={cfg.data.sampling} needs train.init_checkpoint (the ERM model "
            "whose embeddings define the cohorts / errors)"
        )
    path = Path(out_dir) / PREPASS_FILE
    key = _key(cfg, manifest)
    if not is_main:
        if barrier is not None:
            barrier()  # rank 0 has written the cache
        return _read_cache(path, key)
    if path.is_file():
        result = _read_cache(path, key)
    else:
        result = _compute(cfg, manifest, key, device)
        atomic_write_text(path, json.dumps(result))
    if barrier is not None:
        barrier()
    return result


def _read_cache(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    cached = json.loads(path.read_text())
    if cached["key"] != key:
        raise ValueError(f"{path} was computed for {cached['key']}, not {key}")
    return cached


def _compute(cfg: Config, manifest: Manifest, key: dict[str, Any], device) -> dict[str, Any]:
    speakers = np.asarray(manifest.speaker_indices())
    n_speakers = len(manifest.speakers)
    rows = None
    if cfg.data.sampling in ("cohort_oversample", "cohort_batches", "cohort_heldout"):
        rows = capped_rows(speakers, cfg.data.cohort_utterances_per_speaker, cfg.train.seed)
        if len(rows) == len(speakers):
            rows = None
    embeddings = embed_training_set(cfg.train.init_checkpoint, manifest, rows, device)
    if rows is not None:
        speakers = speakers[rows]
    result: dict[str, Any] = {"key": key}
    if cfg.data.sampling == "cohort_heldout":
        result.update(_heldout(cfg, manifest, embeddings, speakers, n_speakers, device))
    elif cfg.data.sampling == "cohort_batches":  # the cohorts only, no ranking
        from arw_sv.metrics.cohorts import kmeans_cohorts, speaker_means

        means = speaker_means(embeddings, speakers, n_speakers)
        cohort = kmeans_cohorts(means, cfg.data.n_cohorts, seed=cfg.train.seed)
        result["cohort"] = cohort.tolist()
        sizes = np.bincount(cohort, minlength=cfg.data.n_cohorts).tolist()
        log.info("cohort batches: %d cohorts of %s speakers", cfg.data.n_cohorts, sizes)
    elif cfg.data.sampling == "cohort_oversample":
        result.update(
            discover_cohorts(
                embeddings,
                speakers,
                n_speakers,
                cfg.data.n_cohorts,
                cfg.data.cohort_oversample_top,
                neighbours=cfg.data.cohort_neighbours,
                seed=cfg.train.seed,
            )
        )
        log.info(
            "cohort oversampling: cohorts %s (crowding %s) hold %d of %d speakers",
            result["selected"],
            [round(result["cohort_crowding"][c], 3) for c in result["selected"]],
            sum(result["oversample"]),
            n_speakers,
        )
    elif cfg.data.sampling == "jtt":
        errors = jtt_errors(embeddings, speakers, n_speakers)
        result["errors"] = errors.tolist()
        result["error_rate"] = float(errors.mean())
        log.info("JTT: %d of %d training utterances wrong under ERM", errors.sum(), len(errors))
    else:
        raise ValueError(f"no pre-pass for data.sampling={cfg.data.sampling}")
    return result


def heldout_manifest(cfg: Config, manifest: Manifest) -> Manifest:
    """The held-out speakers' manifest (``data.heldout_manifest``, its ``heldout_split``),
    checked: not empty, no training speaker in it.
    """
    from arw_sv.data.manifest import read_manifest

    d = cfg.data
    if not d.heldout_manifest:
        raise ValueError(f"data.sampling={d.sampling} needs data.heldout_manifest")
    held = read_manifest(d.heldout_manifest)
    if d.heldout_split:
        held = held.subset(d.heldout_split)
    if not len(held):
        raise ValueError(f"{d.heldout_manifest}: no utterance in split {d.heldout_split!r}")
    overlap = sorted(set(held.speakers) & set(manifest.speakers))
    if overlap:
        raise ValueError(
            f"{d.heldout_manifest}: {len(overlap)} held-out speaker(s) are training speakers, "
            f"e.g. {', '.join(overlap[:3])}; held-out speakers must be disjoint from training"
        )
    # Held-out trials need two speakers and a same-speaker pair (after the per-speaker cap).
    counts = np.bincount(np.asarray(held.speaker_indices()))
    cap = d.cohort_utterances_per_speaker
    usable = np.minimum(counts, cap) if cap > 0 else counts
    if len(held.speakers) < 2 or usable.max() < 2:
        raise ValueError(
            f"{d.heldout_manifest}: {len(held.speakers)} held-out speaker(s), at most "
            f"{int(usable.max())} utterance(s) each (data.cohort_utterances_per_speaker="
            f"{cap}): held-out trials need two speakers and one with two utterances"
        )
    return held


def heldout_embedder(cfg: Config, manifest: Manifest, learner, device):
    """For ``heldout_adaptive`` sampling: a function that embeds the held-out speakers'
    (capped) utterances with a frozen copy of ``learner``'s extractor as it is *now*, and
    returns ``(embeddings (U', D), speaker index (U',))``. The copy leaves the training
    model and the global torch RNG untouched.
    """
    return _current_embedder(heldout_manifest(cfg, manifest), cfg, learner, device, "held-out")


def training_embedder(cfg: Config, manifest: Manifest, learner, device):
    """For ``crowding_adaptive`` and ``heldout_knn``: the same over a fixed, seeded choice of at most
    ``data.cohort_utterances_per_speaker`` utterances of every *training* speaker; the
    speaker index is the training manifest's.
    """
    return _current_embedder(manifest, cfg, learner, device, "training")


def _current_embedder(utts: Manifest, cfg: Config, learner, device, what: str):
    import copy

    import torch

    from arw_sv.inference import SpeakerEncoder

    speakers = np.asarray(utts.speaker_indices())
    rows = capped_rows(speakers, cfg.data.cohort_utterances_per_speaker, cfg.train.seed)
    chosen = [utts[i] for i in rows.tolist()]

    def embed() -> tuple[np.ndarray, np.ndarray]:
        with torch.random.fork_rng(devices=[]):
            frozen = copy.deepcopy(learner.extractor)
            encoder = SpeakerEncoder(frozen, device=device, backend="eager")
            paths, spans = _paths_and_spans(chosen)
            emb = encoder.embed_files(paths, spans=spans, progress=False)
        log.info("%s speakers embedded for the sampler: %d utterances", what, len(chosen))
        return np.asarray(emb, dtype=np.float64), speakers[rows]

    return embed


def _heldout(cfg: Config, manifest: Manifest, embeddings, speakers, n_speakers, device) -> dict:
    """Held-out cohort discovery: embed the held-out speakers, rank their cohorts by EER."""
    from arw_sv.data.cohort_sampling import heldout_cohorts

    d = cfg.data
    held = heldout_manifest(cfg, manifest)
    held_spk = np.asarray(held.speaker_indices())
    rows = capped_rows(held_spk, d.cohort_utterances_per_speaker, cfg.train.seed)
    held_emb = embed_training_set(cfg.train.init_checkpoint, held, rows, device)
    slots = int(np.ceil(d.speakers_per_batch * d.cohort_share))  # what the sampler needs
    result = heldout_cohorts(embeddings, speakers, n_speakers, held_emb, held_spk[rows],
                             d.n_cohorts, d.cohort_oversample_top, seed=cfg.train.seed,
                             min_flagged=slots)  # fmt: skip
    log.info(
        "held-out cohorts: %d held-out speakers; bottom cohorts %s: EER %.2f%% against %.2f%% "
        "for the rest, %.0f%% of the held-out speakers; %d of %d training speakers oversampled",
        len(held.speakers), result["selected"], 100 * (result["bottom_eer"] or float("nan")),
        100 * (result["rest_eer"] or float("nan")), 100 * result["bottom_share"],
        sum(result["oversample"]), n_speakers,
    )  # fmt: skip
    return result


def sampler_arguments(cfg: Config, targets: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`~arw_sv.data.sampler.SpeakerBatchSampler` for the targets."""
    if cfg.data.sampling in ("cohort_oversample", "cohort_heldout"):
        return {"oversample": targets["oversample"], "oversample_share": cfg.data.cohort_share}
    if cfg.data.sampling == "cohort_batches":
        return {"batch_cohorts": targets["cohort"], "cohorts_per_batch": cfg.data.cohorts_per_batch}
    return {"utterance_repeats": jtt_repeats(np.asarray(targets["errors"]), cfg.data.jtt_upweight)}

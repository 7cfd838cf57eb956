"""The pre-pass of the label-free samplers: embed the training set with the init model.

``data.sampling: cohort_oversample`` and ``jtt`` need the initial (ERM) model's view of the
training set before fine-tuning starts. :func:`sampling_targets` embeds every training
utterance with ``train.init_checkpoint`` (whole utterances, as at test time), computes the
targets (:mod:`arw_sv.data.cohort_sampling`) and caches them in
``<train.out_dir>/sampling_prepass.json``, so a resumed run reuses exactly the same targets
(and hence the same batches) instead of recomputing them.
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
        "seed": cfg.train.seed,
    }


def embed_training_set(checkpoint: str | Path, manifest: Manifest) -> np.ndarray:
    """Embeddings of every manifest utterance with ``checkpoint``'s extractor.

    Shape:
        output: (U, D), L2-normalised, in manifest order.
    """
    from arw_sv.inference import SpeakerEncoder

    encoder = SpeakerEncoder.from_checkpoint(checkpoint)
    return encoder.embed_files([u.path for u in manifest], progress=False)


def sampling_targets(cfg: Config, manifest: Manifest, out_dir: str | Path) -> dict[str, Any]:
    """The cached (or freshly computed) pre-pass of ``cfg.data.sampling``.

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
    if path.is_file():
        cached = json.loads(path.read_text())
        if cached["key"] != key:
            raise ValueError(f"{path} was computed for {cached['key']}, not {key}")
        return cached
    embeddings = embed_training_set(cfg.train.init_checkpoint, manifest)
    speakers = np.asarray(manifest.speaker_indices())
    n_speakers = len(manifest.speakers)
    result: dict[str, Any] = {"key": key}
    if cfg.data.sampling == "cohort_oversample":
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
    atomic_write_text(path, json.dumps(result))
    return result


def sampler_arguments(cfg: Config, targets: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of :class:`~arw_sv.data.sampler.SpeakerBatchSampler` for the targets."""
    if cfg.data.sampling == "cohort_oversample":
        return {"oversample": targets["oversample"], "oversample_share": cfg.data.cohort_share}
    return {"utterance_repeats": jtt_repeats(np.asarray(targets["errors"]), cfg.data.jtt_upweight)}

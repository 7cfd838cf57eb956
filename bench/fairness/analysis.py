"""What the adversary learned: its weights on training utterances, against the true groups.

The adversary never sees gender or nationality. After training, we run the learner and
the adversary of a checkpoint over a sample of training utterances and ask whether the
weights line up with the groups the benchmark planted (and with the learner's loss):

- mean weight per true group, the weights as the learner saw them (``adversary_weights``:
  temperature, cap and GroupDRO included) over the whole
  sample (so they average exactly 2, as in training);
- point-biserial correlation of the weight with each group indicator (Pearson's r between
  the weight and a 0/1 membership);
- Spearman correlation of the weight with the sample's AAM-softmax loss.

For every method (ERM included) it also reports the mean per-sample AAM loss per group:
the region the adversary *should* find.

Shape legend: B batch, S samples, D embedding, N analysed utterances.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from arw_sv.audio import read_audio
from arw_sv.checkpoint import load_checkpoint
from arw_sv.clusters import ClusterIndex
from arw_sv.config import config_from_dict
from arw_sv.data.manifest import Manifest
from arw_sv.models.adversary import VRExWeights, batch_crowding, build_adversary_from_config
from arw_sv.train.build import build_learner
from arw_sv.train.objective import adversary_weights


def centre_crop(path: str, seconds: float, sample_rate: int) -> np.ndarray:
    """The middle ``seconds`` of a file (tiled by repetition when it is shorter).

    Shape:
        -> (round(seconds * sample_rate),)
    """
    wav = read_audio(path, sample_rate)
    length = int(round(seconds * sample_rate))
    if wav.shape[0] < length:
        wav = np.tile(wav, -(-length // wav.shape[0]))
    start = (wav.shape[0] - length) // 2
    return wav[start : start + length]


def sample_utterances(manifest: Manifest, n: int, seed: int) -> list[int]:
    """``n`` utterance indices drawn without replacement (all of them if fewer), sorted."""
    rng = np.random.default_rng(seed)
    n = min(n, len(manifest))
    return sorted(rng.choice(len(manifest), size=n, replace=False).tolist())


def point_biserial(values: np.ndarray, member: np.ndarray) -> float | None:
    """Pearson's r between ``values`` and a 0/1 indicator; None when either is constant."""
    member = member.astype(np.float64)
    if member.min() == member.max() or np.ptp(values) == 0:
        return None
    return float(np.corrcoef(values, member)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation; None when either side is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(stats.spearmanr(a, b).statistic)


@torch.no_grad()
def analyse_checkpoint(
    checkpoint: str | Path,
    manifest: Manifest,
    *,
    n_utterances: int = 1500,
    seed: int = 0,
    batch_size: int = 64,
) -> dict:
    """Per-group weights and losses of a trained run on a sample of its training data.

    Args:
        checkpoint: a training checkpoint (``fit``'s output).
        manifest: the training manifest the run used (dev split).
        n_utterances: how many training utterances to analyse (uniform sample).
        seed: seed of the sample.
        batch_size: crops per forward pass.

    Returns:
        ``{"n_utterances", "loss_by_group", "adversary"}``; ``adversary`` is None for ERM,
        else mean/std/min/max weight, ``by_group`` (attribute -> group -> mean weight,
        count, point-biserial r), ``spearman_weight_vs_aam_loss`` and, when the adversary
        uses clusters, per-cluster counts, weights and group composition.
    """
    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    speakers = list(state["speakers"])
    learner = build_learner(cfg, len(speakers))
    learner.load_state_dict(state["learner"])
    learner.eval()
    learner.aam.margin = cfg.loss.aam_margin  # the margin training ended with
    index = {s: i for i, s in enumerate(speakers)}

    chosen = sample_utterances(manifest, n_utterances, seed)
    utts = [manifest[i] for i in chosen]
    embeddings, losses = [], []
    for start in range(0, len(utts), batch_size):
        part = utts[start : start + batch_size]
        crops = np.stack(
            [centre_crop(u.path, cfg.data.crop_seconds, cfg.features.sample_rate) for u in part]
        )
        labels = torch.tensor([index[u.speaker] for u in part])
        emb = learner.extractor(torch.from_numpy(crops)).float()
        embeddings.append(emb)
        losses.append(learner.aam(emb, labels))
    emb = torch.cat(embeddings)
    aam_loss = torch.cat(losses).numpy().astype(np.float64)
    groups = {
        "gender": [u.gender for u in utts],
        "nationality": [u.nationality for u in utts],
        "gender_x_nationality": [f"{u.gender}/{u.nationality}" for u in utts],
    }
    result = {
        "n_utterances": len(utts),
        "crop_seconds": cfg.data.crop_seconds,
        "loss_by_group": {
            attr: {g: float(aam_loss[np.asarray(v) == g].mean()) for g in sorted(set(v))}
            for attr, v in groups.items()
        },
        "mean_aam_loss": float(aam_loss.mean()),
        "adversary": None,
    }
    ac = cfg.adversary
    if ac.formulation == "erm" or state.get("adversary") is None:
        return result
    adversary = build_adversary_from_config(ac, cfg.model.embedding_dim)
    adversary.load_state_dict(state["adversary"])
    adversary.eval()
    clusters = None
    if state.get("clusters") is not None:
        clusters = ClusterIndex.from_state_dict(state["clusters"])
    cluster_ids = clusters.assign(emb) if clusters is not None else torch.zeros(len(utts)).long()
    # The weights the learner trained with: the temperature, the cap and GroupDRO's q
    # included (adversary_weights is the trainer's own function).
    crowding = None
    if getattr(adversary, "use_crowding", False):
        # Over the analysed utterances rather than one batch: more neighbours to choose
        # from, so the values run somewhat higher than in training.
        owners = torch.tensor([index[u.speaker] for u in utts])
        crowding = batch_crowding(emb, owners, adversary.crowding_k)
    with torch.no_grad():
        if isinstance(adversary, VRExWeights):  # weights from the cohorts' losses
            weights = adversary(torch.as_tensor(aam_loss, dtype=torch.float32), cluster_ids)
        else:
            weights = adversary_weights(adversary, emb, cluster_ids, ac, crowding)
        weights = weights.numpy().astype(np.float64)
    result["adversary"] = adversary_summary(
        weights, aam_loss, groups, cluster_ids.numpy() if clusters is not None else None
    )
    return result


def adversary_summary(
    weights: np.ndarray,
    aam_loss: np.ndarray,
    groups: dict[str, Sequence[str]],
    cluster_ids: np.ndarray | None = None,
) -> dict:
    """Weight statistics against true groups and per-sample loss.

    Shape:
        weights, aam_loss, cluster_ids: (N,); each groups value: length N.
    """
    by_group = {}
    for attr, values in groups.items():
        values = np.asarray(values)
        by_group[attr] = {
            g: {
                "count": int((values == g).sum()),
                "mean_weight": float(weights[values == g].mean()),
                "point_biserial_r": point_biserial(weights, values == g),
            }
            for g in sorted(set(values.tolist()))
        }
    out = {
        "mean_weight": float(weights.mean()),
        "std_weight": float(weights.std()),
        "min_weight": float(weights.min()),
        "max_weight": float(weights.max()),
        "by_group": by_group,
        "spearman_weight_vs_aam_loss": spearman(weights, aam_loss),
        "clusters": None,
    }
    if cluster_ids is not None:
        nat = np.asarray(groups["nationality"])
        out["clusters"] = [
            {
                "cluster": int(c),
                "count": int((cluster_ids == c).sum()),
                "mean_weight": float(weights[cluster_ids == c].mean()),
                "nationality_share": {
                    g: float((nat[cluster_ids == c] == g).mean()) for g in sorted(set(nat.tolist()))
                },
            }
            for c in np.unique(cluster_ids)
        ]
    return out

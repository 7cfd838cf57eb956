"""Typed, frozen experiment configuration.

YAML holds values only; :func:`load_config` turns it into nested frozen dataclasses and
applies dotted command-line overrides (``train.lr=0.001``). An unknown section or key, or a
value of the wrong type, raises :class:`ConfigError` naming it. The ERM baseline is the same
config with ``adversary.formulation=erm``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arw_sv.safe_yaml import YamlError, load_yaml, shorten

# ``data.balance_key``: an attribute name (``arw_sv.data.columns.ATTRIBUTE_NAME``) or a cross.
BALANCE_KEY = re.compile(r"[a-z][a-z0-9_]*(,[a-z][a-z0-9_]*)*")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


# PyYAML follows YAML 1.1, whose float pattern needs a dot: `3e-3` and `1e-4` load as
# strings. A float field accepts such a string when it is a plain decimal number.
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _at_least(section: str, owner: Any, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not value >= minimum:  # also catches NaN
            raise ConfigError(f"{section}.{name}: at least {minimum:g}, got {shorten(value)}")


def _positive(section: str, owner: Any, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{section}.{name}: must be a positive number, got {shorten(value)}")


# Inclusive bounds of every setting that sizes an allocation or a loss term, checked when a
# config is built so that a typo (``data.crop_seconds=1e9``) is refused by name instead of
# asking for terabytes. The published ECAPA recipes are far inside them (c1024: widths up
# to 3072, 192-dim embeddings, 6 s crops; AAM margin <= 0.5, scale 30-32).
LIMITS: dict[str, tuple[float, float]] = {
    "data.crop_seconds": (0.0, 60.0),
    "data.speakers_per_batch": (1, 4096),
    "data.utterances_per_speaker": (1, 256),
    "data.n_cohorts": (1, 4096),
    "data.num_workers": (0, 256),
    "data.adaptive_refresh_steps": (1, 10**9),
    "data.adaptive_start_step": (0, 10**9),
    "data.adaptive_delay": (0, 4096),
    "data.loss_temperature": (1e-3, 1000.0),  # p ~ loss^(1/T): beyond it, overflow or uniform
    "features.sample_rate": (1000, 384000),
    "features.n_mels": (1, 512),
    "features.win_length_ms": (1.0, 1000.0),
    "features.hop_length_ms": (1.0, 1000.0),
    "model.channels": (1, 4096),  # each width
    "model.embedding_dim": (1, 4096),
    "model.attention_channels": (1, 4096),
    "model.se_channels": (0, 4096),
    "model.res2net_scale": (0, 64),
    "loss.aam_margin": (0.0, 1.0),  # radians added to the target angle
    "loss.aam_scale": (1e-3, 1000.0),
    "loss.aam_weight": (0.0, 1000.0),
    "loss.pair_weight": (0.0, 1000.0),
    "loss.pair_margin": (0.0, 1.0),
    "loss.margin_warmup_start": (0, 10**9),
    "loss.margin_warmup_steps": (0, 10**9),
    "adversary.hidden": (0, 4096),
    "adversary.n_clusters": (1, 4096),  # the embedding bank holds 32 rows per cluster
    "adversary.crowding_k": (1, 1024),
    "adversary.vrex_penalty": (0.0, 1e4),
    "train.seed": (0, 2**32 - 1),  # numpy's and every worker's seed
    "train.threads": (0, 1024),
}


def _within_limits(section: str, owner: Any) -> None:
    """Refuse a value of ``owner`` outside :data:`LIMITS`, naming the key and the limit."""
    for key, (low, high) in LIMITS.items():
        where, _, name = key.partition(".")
        if where != section:
            continue
        value = getattr(owner, name)
        for v in value if isinstance(value, tuple) else (value,):
            if not low <= v <= high:  # also catches NaN
                raise ConfigError(
                    f"{key}: {shorten(v)} is outside [{_number(low)}, {_number(high)}] (the limit)"
                )


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class DataConfig:
    """Training data and batching (P speakers x K utterances per batch)."""

    train_manifest: str = ""
    crop_seconds: float = 2.0
    speakers_per_batch: int = 16
    utterances_per_speaker: int = 2
    num_workers: int = 0
    # "speaker": every batch holds P distinct speakers drawn uniformly from shuffled chunks.
    # "group_balanced": label-aware reference; speakers are drawn so that each value of
    # `balance_key` is equally represented: any attribute of the training manifest
    # (nationality, gender, age_band, ...) or a cross "gender,nationality" (also spelt
    # gender_nationality).
    sampling: str = "speaker"
    balance_key: str = "nationality"
    # Label-free samplers from the init (ERM) model's embeddings (train.init_checkpoint),
    # computed once before fine-tuning and cached in the run folder (arw_sv/prepass.py):
    # "cohort_oversample": k-means cohorts of speakers, the `cohort_oversample_top` most
    # crowded of `n_cohorts` fill `cohort_share` of every batch's speaker slots (crowding:
    # mean cosine to the `cohort_neighbours` nearest other speakers).
    # "jtt": utterances whose nearest speaker centroid is another speaker's are drawn
    # `jtt_upweight` times as often.
    # "cohort_heldout": held-out cohort discovery (Dheram et al.): k-means cohorts of the
    # speakers of `heldout_manifest` (its `heldout_split`, if given; speaker ids only,
    # disjoint from training and test), ranked by their EER on held-out trials; training
    # speakers nearest the `cohort_oversample_top` worst fill `cohort_share` of each batch.
    # "cohort_batches": label-free hard negatives: every batch's speakers come from
    # `cohorts_per_batch` of the `n_cohorts` k-means cohorts (more if those are too small).
    # The pre-pass embeds at most `cohort_utterances_per_speaker` utterances of each speaker
    # for the cohorts (a seeded choice; 0 = all); JTT needs every utterance.
    n_cohorts: int = 8
    cohort_oversample_top: int = 2
    cohort_share: float = 0.5
    cohort_neighbours: int = 5
    cohort_utterances_per_speaker: int = 20
    jtt_upweight: int = 5
    cohorts_per_batch: int = 2
    heldout_manifest: str = ""
    heldout_split: str = ""
    # Adaptive label-free samplers, from the first step (arw_sv/data/adaptive.py):
    # "loss_weighted": speakers drawn in proportion to a running mean of their own training
    # loss (`loss_ema`), tempered (`loss_temperature`) and mixed with uniform (`loss_floor`).
    # "cohort_balanced": every k-means cohort (`n_cohorts`) of the speakers' running mean
    # embeddings gets an equal share of the draws, re-clustered every `adaptive_refresh_steps`.
    # "heldout_adaptive": held-out cohort discovery (as cohort_heldout: `heldout_manifest`,
    # `n_cohorts`, `cohort_oversample_top`, `cohort_share`) redone with the current model at
    # every refresh, from the first step's run (no pre-trained model).
    # "crowding_adaptive" (ours): every `adaptive_refresh_steps`, a few utterances of each
    # training speaker (`cohort_utterances_per_speaker`) are embedded with the current model;
    # the `crowded_fraction` most crowded speakers (mean cosine to their `cohort_neighbours`
    # nearest others) fill `cohort_share` of the draws; with `crowding_ema` > 0, ranked by a
    # running (exponential) mean of the standardised crowding over the refreshes.
    # "heldout_knn" (ours): every `adaptive_refresh_steps`, each held-out speaker's error at
    # the held-out EER threshold, (FNMR + FMR) / 2, under the current model; a training
    # speaker's score is the mean error of its `cohort_neighbours` most similar held-out
    # speakers, and the `crowded_fraction` highest-scored fill `cohort_share` of the draws.
    # All of them are uniform before `adaptive_start_step`; a new distribution applies
    # `adaptive_delay` steps after it is computed (at least the loader's prefetch depth).
    adaptive_refresh_steps: int = 100
    adaptive_start_step: int = 100
    adaptive_delay: int = 8
    loss_ema: float = 0.9
    loss_temperature: float = 1.0
    loss_floor: float = 0.2
    crowded_fraction: float = 0.1
    crowding_ema: float = 0.0

    def __post_init__(self) -> None:
        _positive("data", self, "crop_seconds", "loss_temperature")
        _at_least("data", self, 1, "adaptive_refresh_steps")
        _at_least("data", self, 0, "adaptive_start_step", "adaptive_delay")
        for name in ("loss_ema", "loss_floor", "crowded_fraction", "crowding_ema"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name}: {getattr(self, name)} is not in [0, 1]")
        _at_least("data", self, 0, "cohort_utterances_per_speaker")
        _at_least(
            "data", self, 1, "speakers_per_batch", "utterances_per_speaker", "cohorts_per_batch"
        )
        _at_least("data", self, 0, "num_workers")
        _within_limits("data", self)
        if not BALANCE_KEY.fullmatch(self.balance_key):
            raise ConfigError(
                f"data.balance_key: {shorten(self.balance_key)} is not an attribute name or a "
                "cross 'a,b' (lower-case letters, digits and '_')"
            )


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel filterbank front end (SpeechBrain ``Fbank``) with per-utterance mean norm."""

    sample_rate: int = 16000
    n_mels: int = 80
    win_length_ms: float = 25.0
    hop_length_ms: float = 10.0

    def __post_init__(self) -> None:
        _within_limits("features", self)


@dataclass(frozen=True)
class ModelConfig:
    """ECAPA-TDNN extractor. ``preset`` picks channel widths; ``channels`` overrides them."""

    preset: str = "c512"
    channels: tuple[int, ...] = ()
    embedding_dim: int = 192
    attention_channels: int = 128  # at most channels[-1] (as configs have always built it)
    # True: attention_channels as given, even wider than channels[-1] (as some SpeechBrain
    # folders are); False keeps the cap, so that every existing config builds as before.
    attention_exact: bool = False
    se_channels: int = 0  # 0: min(128, channels[0]); a SpeechBrain folder may need 128
    res2net_scale: int = 0  # 0: 8 (4 below 64 channels)

    def __post_init__(self) -> None:
        _at_least("model", self, 1, "embedding_dim", "attention_channels")
        _at_least("model", self, 0, "se_channels", "res2net_scale")
        if any(c < 1 for c in self.channels):
            raise ConfigError(f"model.channels: positive widths, got {shorten(self.channels)}")
        if len(self.channels) > 16:
            raise ConfigError(f"model.channels: at most 16 layers, got {len(self.channels)}")
        _within_limits("model", self)


@dataclass(frozen=True)
class LossConfig:
    """AAM-softmax head plus the pairwise metric-learning term (see docs/method.md)."""

    aam_margin: float = 0.2
    aam_scale: float = 30.0
    # Margin warm-up (as WeSpeaker's MarginScheduler): 0 until `margin_warmup_start`, then
    # rises linearly to `aam_margin` over `margin_warmup_steps` steps.
    margin_warmup_start: int = 0
    margin_warmup_steps: int = 0
    aam_weight: float = 1.0
    pair_weight: float = 1.0
    # Additive cosine margin of the pair term: same-speaker pairs are scored at cos - m,
    # different-speaker pairs at cos + m (0: the plain pair loss). Keeps easy pairs in the
    # loss longer, so pairwise weights have more to weight (issue 20).
    pair_margin: float = 0.0

    def __post_init__(self) -> None:
        _within_limits("loss", self)


@dataclass(frozen=True)
class AdversaryConfig:
    """Adversarial reweighting. ``formulation: erm`` switches the adversary off."""

    formulation: str = "erm"
    hidden: int = 64
    use_embedding: bool = True
    use_cluster: bool = True
    # Feed each sample's crowding: mean cosine to its crowding_k most similar samples of
    # other speakers in the (local) batch ("aps" / "pw" adversaries only).
    use_crowding: bool = False
    crowding_k: int = 5
    n_clusters: int = 8
    lr: float = 0.01
    optimizer: str = "adam"
    adversary_every: int = 1
    warmup_steps: int = 0
    cluster_refresh_steps: int = 200
    weight_aam: bool = True
    normalize: str = "sum"
    # Stabilisers (docs/method.md, "Stabilising the adversary"); the defaults switch them off.
    temperature: float = 1.0  # scores = sigmoid(logit / T); T -> inf gives uniform weights
    max_weight: float = 0.0  # cap on lambda_i (>= 2, mean stays 2); 0 = no cap
    kl_penalty: float = 0.0  # adversary maximises L_w - kl_penalty * KL(p || uniform)
    chi2_penalty: float = 0.0  # ... - chi2_penalty * chi2(p || uniform), p = lambda / sum
    weight_ema: float = 0.0  # learner sees its cluster's EMA of the mean weight; 0 = off
    dro_step_size: float = 0.01  # groupdro: q_g <- q_g exp(eta * loss_g), normalised
    vrex_penalty: float = 1.0  # vrex: beta in mean_c L_c + beta * var_c L_c over the clusters

    def __post_init__(self) -> None:
        _at_least(
            "adversary",
            self,
            1,
            "adversary_every",
            "cluster_refresh_steps",
            "n_clusters",
            "crowding_k",
        )
        _at_least("adversary", self, 0, "warmup_steps", "hidden")  # hidden 0: linear (ARL)
        _at_least("adversary", self, 0, "vrex_penalty")
        _positive("adversary", self, "lr")
        _within_limits("adversary", self)


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation of training crops (:mod:`arw_sv.augment`); off by default.

    One draw per crop picks at most one of reverb / noise / music / babble (as the Kaldi and
    WeSpeaker VoxCeleb recipes do: each augmented copy gets one corruption), so those four
    probabilities must sum to at most 1. Speed perturbation is drawn separately, once per
    speaker slot of a batch (all K crops of that speaker share it), and a perturbed crop
    belongs to a new speaker class (as in WeSpeaker and 3D-Speaker).
    """

    musan_dir: str = ""  # the standard musan/ folder: noise/, music/, speech/
    rirs_dir: str = ""  # the standard RIRS_NOISES/ folder (simulated_rirs/ is used)
    reverb_prob: float = 0.0
    noise_prob: float = 0.0
    music_prob: float = 0.0
    babble_prob: float = 0.0
    noise_snr: tuple[float, ...] = (0.0, 15.0)
    music_snr: tuple[float, ...] = (5.0, 15.0)
    babble_snr: tuple[float, ...] = (13.0, 20.0)
    babble_speakers: tuple[int, ...] = (3, 7)
    speed_prob: float = 0.0
    speeds: tuple[float, ...] = (0.9, 1.1)

    def __post_init__(self) -> None:
        probs = ("reverb_prob", "noise_prob", "music_prob", "babble_prob", "speed_prob")
        for name in probs:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"augment.{name}: {getattr(self, name)} is not in [0, 1]")
        total = self.reverb_prob + self.noise_prob + self.music_prob + self.babble_prob
        if total > 1.0 + 1e-9:
            raise ConfigError(
                "augment.reverb_prob + noise_prob + music_prob + babble_prob must be at most 1 "
                f"(one corruption per crop), got {total:g}"
            )
        for name in ("noise_snr", "music_snr", "babble_snr", "babble_speakers"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or low_high[0] > low_high[1]:
                raise ConfigError(f"augment.{name}: expected [low, high], got {list(low_high)}")
        if self.babble_speakers[0] < 1:
            raise ConfigError("augment.babble_speakers: at least 1 speaker")
        if any(s <= 0 or s == 1.0 for s in self.speeds) or len(set(self.speeds)) != len(
            self.speeds
        ):
            raise ConfigError(
                f"augment.speeds: distinct positive factors other than 1, got {list(self.speeds)}"
            )
        if self.speed_prob > 0 and not self.speeds:
            raise ConfigError("augment.speed_prob > 0 needs augment.speeds")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, precision, logging and checkpointing."""

    out_dir: str = "runs/exp"
    steps: int = 1000
    optimizer: str = "adam"
    lr: float = 0.001
    final_lr: float = 0.0001
    warmup_steps: int = 100
    weight_decay: float = 2e-5
    momentum: float = 0.9
    grad_clip: float = 5.0
    seed: int = 0
    precision: str = "fp32"
    device: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 3
    threads: int = 0
    # Average the last N checkpoints (`python -m arw_sv.train.average`); keeps at least N.
    average_last: int = 0
    # Start from this checkpoint's weights (fine-tuning), with a fresh optimizer and step 0.
    init_checkpoint: str = ""
    # The batch is split into this many chunks of whole speakers; BatchNorm statistics and
    # the pair terms are per chunk. Under DDP each rank takes batch_chunks / world_size
    # chunks (at least one), so a fixed value makes the objective independent of the
    # number of processes (see arw_sv/train/distributed.py).
    batch_chunks: int = 1
    # DDP on CUDA only: BatchNorm statistics over all ranks (torch SyncBatchNorm).
    sync_batchnorm: bool = False
    # torch.compile the ECAPA (the frontend stays eager; state_dict keys are unchanged, so
    # checkpoints of compiled and eager runs are interchangeable). Crops have a fixed length,
    # so one graph serves the whole run; see docs/performance.md for the cold-compile cost.
    compile: bool = False
    compile_mode: str = "default"
    # Every this many steps, each training speaker's crops drawn and weight given
    # (`sampling.jsonl`, arw_sv/train/sample_log.py); 0 = off.
    sample_log_every: int = 100

    def __post_init__(self) -> None:
        _at_least("train", self, 1, "steps", "log_every", "checkpoint_every")
        _at_least(
            "train", self, 0, "warmup_steps", "keep_checkpoints", "threads", "sample_log_every"
        )
        _at_least("train", self, 0, "final_lr", "weight_decay", "momentum", "grad_clip")
        _positive("train", self, "lr")
        if self.device not in ("auto", "cpu", "mps") and not re.fullmatch(
            r"cuda(:\d+)?", self.device
        ):
            raise ConfigError(
                f"train.device: {shorten(self.device)} is not one of auto, cpu, cuda, cuda:N, mps"
            )
        if self.batch_chunks < 1:
            raise ConfigError(f"train.batch_chunks: at least 1, got {self.batch_chunks}")
        if self.average_last < 0:
            raise ConfigError(f"train.average_last: at least 0, got {self.average_last}")
        _within_limits("train", self)


@dataclass(frozen=True)
class Config:
    """A whole experiment."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    adversary: AdversaryConfig = field(default_factory=AdversaryConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


# The keys of ``arw_sv.train.build.OPTIMIZERS`` (which checks it at import): config stays
# torch-free, so the registry's names live here and both optimizer fields take all of them.
OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "adamw", "sgd", "adagrad")

CHOICES: dict[str, tuple[str, ...]] = {
    "data.sampling": (
        "speaker",
        "group_balanced",
        "cohort_oversample",
        "jtt",
        "cohort_batches",
        "cohort_heldout",
        "loss_weighted",
        "cohort_balanced",
        "heldout_adaptive",
        "crowding_adaptive",
        "heldout_knn",
    ),
    "model.preset": ("tiny", "c256", "c512", "c1024"),
    "adversary.formulation": ("erm", "aps", "pl", "pw", "groupdro", "vrex"),
    "adversary.optimizer": OPTIMIZER_NAMES,
    "adversary.normalize": ("sum", "none"),
    "train.optimizer": OPTIMIZER_NAMES,
    "train.precision": ("fp32", "bf16", "fp16"),
    "train.compile_mode": (
        "default",
        "reduce-overhead",
        "max-autotune",
        "max-autotune-no-cudagraphs",
    ),
}


def coerce_value(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field's type, converting lists to tuples and ints to floats."""
    hints = typing.get_origin(annotation)
    if hints is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {shorten(value)}")
        (inner, _ellipsis) = typing.get_args(annotation)
        return tuple(coerce_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {shorten(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {shorten(value)}")
        return value
    if annotation is float:
        if isinstance(value, str) and _NUMBER.match(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {shorten(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {shorten(value)}")
        return value
    if isinstance(annotation, types.UnionType):  # pragma: no cover - no such fields yet
        return value
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        where = f"section '{prefix}'" if prefix else "the top level"
        raise ConfigError(
            f"unknown config key '{(prefix + '.') if prefix else ''}{unknown[0]}' in {where}; "
            f"known keys: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key}: expected a section (mapping), got {shorten(value)}")
            kwargs[name] = _build(annotation, value, key)
        else:
            value = coerce_value(value, annotation, key)
            if key in CHOICES and value not in CHOICES[key]:
                raise ConfigError(
                    f"{key}: {shorten(value)} is not one of {', '.join(CHOICES[key])}"
                )
            kwargs[name] = value
    return cls(**kwargs)


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["train.lr=0.01", "model.channels=[64,64,64,64,192]"]`` into a nested dict.

    Values are parsed as YAML scalars/lists, so ``true``, ``3`` and ``[1, 2]`` get their types.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {shorten(item)} is not of the form section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"override key {shorten(key)} must be section.key (e.g. train.lr)")
        try:
            value = load_yaml(raw, f"override '{key.strip()}'", lines=False) if raw.strip() else ""
        except YamlError as exc:
            raise ConfigError(str(exc)) from None
        nested.setdefault(parts[0], {})[parts[1]] = value
    return nested


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for section, values in extra.items():
        if isinstance(values, Mapping) and isinstance(out.get(section), Mapping):
            out[section] = {**out[section], **values}
        else:
            out[section] = values
    return out


def config_from_dict(values: Mapping[str, Any], overrides: Iterable[str] = ()) -> Config:
    """Build a :class:`Config` from a nested mapping plus dotted overrides."""
    parsed = parse_overrides(overrides)
    sections = [f.name for f in dataclasses.fields(Config)]
    for section, keys in parsed.items():
        if section not in sections:
            raise ConfigError(
                f"override '{section}.{next(iter(keys))}': unknown section; one of "
                f"{', '.join(sections)}"
            )
    merged = _merge(dict(values), parsed)
    return _build(Config, merged, "")


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config and apply dotted overrides.

    Args:
        path: YAML file (sections ``data``, ``features``, ``model``, ``loss``, ``adversary``,
            ``train``, ``augment``); ``None`` starts from the defaults.
        overrides: ``section.key=value`` strings applied after the file.

    Raises:
        ConfigError: unknown key, wrong type or invalid choice, naming the key (and file).
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            loaded = load_yaml(path.read_bytes(), str(path))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except YamlError as exc:
            raise ConfigError(str(exc)) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        values = dict(loaded)
    try:
        return config_from_dict(values, overrides)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML/JSON and checkpoints."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from arw_sv.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False))

"""SpeechBrain pretrained-model folders (the ``speechbrain/spkrec-ecapa-voxceleb`` layout).

arw-sv's extractor *is* SpeechBrain's ``ECAPA_TDNN`` behind SpeechBrain's ``Fbank`` and
sentence mean normalisation, so such a folder loads into an :class:`EcapaTdnn` as it is,
and an :class:`EcapaTdnn` can be written back as one. The layout::

    hyperparams.yaml         the architecture and features (HyperPyYAML, ``!new:`` tags)
    embedding_model.ckpt     ECAPA_TDNN state dict
    classifier.ckpt          the training head (``ECAPA_TDNN.Classifier``: ``weight`` (C, D))
    label_encoder.txt        ``'<speaker>' => <row>`` lines (CategoricalEncoder)
    mean_var_norm_emb.ckpt   global embedding statistics; ``encode_batch`` uses them only
                             with ``normalize=True`` (SpeechBrain's default, and its
                             ``verify_batch``, do not), so arw-sv does not either

``hyperparams.yaml`` is *read*, never executed: its tags are parsed as plain data and only
the values the extractor needs are taken (a setting arw-sv cannot reproduce is an error).
A name that is not a local folder is fetched as a Hugging Face hub id.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from arw_sv.atomic import atomic_path, atomic_write_text
from arw_sv.models.ecapa import EcapaTdnn

log = logging.getLogger(__name__)

PREFIX = "speechbrain:"
FILES = ("hyperparams.yaml", "embedding_model.ckpt")
# Fbank arguments arw-sv's FbankFrontend reproduces, and their SpeechBrain defaults.
_FBANK_DEFAULTS: dict[str, Any] = {
    "deltas": False,
    "context": False,
    "requires_grad": False,
    "f_min": 0,
    "f_max": None,
    "filter_shape": "triangular",
    "param_change_factor": 1.0,
    "param_rand_factor": 0.0,
    "left_frames": 5,
    "right_frames": 5,
}


class SpeechBrainFolderError(ValueError):
    """A SpeechBrain folder is missing, unreadable or describes a model arw-sv cannot run."""


def split_spec(spec: str | Path) -> str | None:
    """The folder or hub id of a ``speechbrain:FOLDER`` spec, None for anything else."""
    spec = str(spec)
    return spec[len(PREFIX) :] if spec.startswith(PREFIX) else None


@dataclass(frozen=True)
class SpeechBrainHparams:
    """What ``hyperparams.yaml`` says about the extractor (SpeechBrain's names)."""

    channels: tuple[int, ...]
    kernel_sizes: tuple[int, ...]
    dilations: tuple[int, ...]
    attention_channels: int
    res2net_scale: int
    se_channels: int
    global_context: bool
    lin_neurons: int
    n_mels: int
    sample_rate: int
    win_length_ms: float
    hop_length_ms: float

    def build(self) -> EcapaTdnn:
        """An (untrained) extractor of this architecture."""
        return EcapaTdnn(
            channels=self.channels,
            embedding_dim=self.lin_neurons,
            attention_channels=self.attention_channels,
            sample_rate=self.sample_rate,
            n_mels=self.n_mels,
            win_length_ms=self.win_length_ms,
            hop_length_ms=self.hop_length_ms,
            kernel_sizes=self.kernel_sizes,
            dilations=self.dilations,
            res2net_scale=self.res2net_scale,
            se_channels=self.se_channels,
            global_context=self.global_context,
        )


def resolve(folder_or_hub_id: str | Path) -> Path:
    """A local folder as it is; anything else fetched from the hub (``huggingface_hub``)."""
    path = Path(folder_or_hub_id).expanduser()
    if path.is_dir():
        return path
    name = str(folder_or_hub_id)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        raise SpeechBrainFolderError(f"{name}: not a folder (nor a hub id like owner/model)")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=["*.yaml", "*.ckpt", "*.txt"]))
    except Exception as exc:  # offline, unknown repo, no permission: all say the same
        raise SpeechBrainFolderError(
            f"{name}: not a local folder, and fetching it from the Hugging Face hub failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}); "
            "download the folder and pass its path"
        ) from None


# ---- reading hyperparams.yaml without running it ----------------------------------------


class _Ref(str):
    """A ``!ref <key>`` value, resolved after loading."""


class _Tolerant(yaml.SafeLoader):
    """Parses HyperPyYAML tags as data: ``!new:cls {args}`` -> ``{"__tag__": ..., **args}``."""


def _tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if suffix == "ref":
        return _Ref(loader.construct_scalar(node))
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = {"__args__": loader.construct_sequence(node, deep=True)}
    else:
        value = {"__args__": loader.construct_scalar(node)}
    return {"__tag__": suffix, **value}


_Tolerant.add_multi_constructor("!", _tagged)
_REF = re.compile(r"<([^<>]+)>")


def _lookup(tree: dict[str, Any], key: str) -> Any:
    value: Any = tree
    for part in re.split(r"[.\[\]]+", key.strip()):
        if part:
            value = value[part]
    return value


def _resolve(value: Any, tree: dict[str, Any], depth: int = 0) -> Any:
    if depth > 20:
        raise SpeechBrainFolderError("hyperparams.yaml: !ref chain too deep (a cycle?)")
    if isinstance(value, _Ref):
        whole = _REF.fullmatch(value.strip())
        if whole:
            return _resolve(_lookup(tree, whole.group(1)), tree, depth + 1)
        text = _REF.sub(lambda m: str(_resolve(_lookup(tree, m.group(1)), tree, depth + 1)), value)
        try:  # HyperPyYAML allows arithmetic such as `!ref <n_mels> * 2`
            return ast.literal_eval(text) if not re.search(r"[*/+-]", text) else _arith(text)
        except (ValueError, SyntaxError):
            return text
    if isinstance(value, dict):
        return {k: _resolve(v, tree, depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, tree, depth) for v in value]
    return value


def _arith(text: str) -> Any:
    node = ast.parse(text, mode="eval").body
    ops = {ast.Add: float.__add__, ast.Sub: float.__sub__, ast.Mult: float.__mul__}
    ops[ast.Div] = float.__truediv__

    def ev(n: ast.AST) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
            return float(n.value)
        if isinstance(n, ast.BinOp) and type(n.op) in ops:
            return ops[type(n.op)](ev(n.left), ev(n.right))
        raise ValueError(text)

    result = ev(node)
    return int(result) if result.is_integer() else result


def _module(tree: dict[str, Any], key: str, cls: str, path: Path) -> dict[str, Any]:
    """The arguments of the object ``key`` (top level, or under ``modules``)."""
    entry = tree.get(key, tree.get("modules", {}).get(key))
    if not isinstance(entry, dict) or not str(entry.get("__tag__", "")).endswith(cls):
        raise SpeechBrainFolderError(f"{path}: {key!r} is not a SpeechBrain {cls}")
    return _resolve(entry, tree)


def read_hparams(folder: str | Path) -> SpeechBrainHparams:
    """The extractor settings of ``folder/hyperparams.yaml`` (read as data, not run).

    Raises:
        SpeechBrainFolderError: missing file, or a setting arw-sv cannot reproduce (named).
    """
    path = Path(folder) / "hyperparams.yaml"
    if not path.is_file():
        raise SpeechBrainFolderError(f"{folder}: no hyperparams.yaml (not a SpeechBrain folder)")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_Tolerant)
    except yaml.YAMLError as exc:
        raise SpeechBrainFolderError(f"{path}: cannot parse ({exc})") from None
    try:
        ecapa = _module(tree, "embedding_model", "ECAPA_TDNN", path)
        fbank = _module(tree, "compute_features", "Fbank", path)
        norm = _module(tree, "mean_var_norm", "InputNormalization", path)
    except (KeyError, TypeError) as exc:
        raise SpeechBrainFolderError(f"{path}: unresolved !ref ({exc})") from None
    if norm.get("norm_type", "global") != "sentence" or norm.get("std_norm", True):
        raise SpeechBrainFolderError(
            f"{path}: mean_var_norm must be sentence mean normalisation "
            f"(norm_type: sentence, std_norm: False), got {norm}"
        )
    changed = {k: fbank[k] for k, v in _FBANK_DEFAULTS.items() if k in fbank and fbank[k] != v}
    if changed:
        raise SpeechBrainFolderError(f"{path}: Fbank settings arw-sv does not support: {changed}")
    rate = int(fbank.get("sample_rate", 16000))
    win, hop = float(fbank.get("win_length", 25)), float(fbank.get("hop_length", 10))
    if int(fbank.get("n_fft", 400)) != int(round(rate * win / 1000)):
        raise SpeechBrainFolderError(f"{path}: Fbank n_fft must equal the window length")
    if ecapa.get("activation") not in (None, "torch.nn.ReLU") or ecapa.get("groups", 1) != 1:
        raise SpeechBrainFolderError(f"{path}: ECAPA_TDNN activation/groups not supported")
    channels = tuple(int(c) for c in ecapa.get("channels", [512, 512, 512, 512, 1536]))
    return SpeechBrainHparams(
        channels=channels,
        kernel_sizes=tuple(int(k) for k in ecapa.get("kernel_sizes", [5, 3, 3, 3, 1])),
        dilations=tuple(int(d) for d in ecapa.get("dilations", [1, 2, 3, 4, 1])),
        attention_channels=int(ecapa.get("attention_channels", 128)),
        res2net_scale=int(ecapa.get("res2net_scale", 8)),
        se_channels=int(ecapa.get("se_channels", 128)),
        global_context=bool(ecapa.get("global_context", True)),
        lin_neurons=int(ecapa.get("lin_neurons", 192)),
        n_mels=int(fbank.get("n_mels", 40)),  # Fbank's own default
        sample_rate=rate,
        win_length_ms=win,
        hop_length_ms=hop,
    )


# ---- weights -----------------------------------------------------------------------------


def _load(path: Path) -> Any:
    if not path.is_file():
        raise SpeechBrainFolderError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SpeechBrainFolderError(f"{path}: not a readable checkpoint ({exc})") from None


def load_extractor(folder: str | Path) -> EcapaTdnn:
    """The folder's embedding model as an :class:`EcapaTdnn` (eval mode).

    Every ECAPA weight and batch-norm statistic must be in ``embedding_model.ckpt``
    (SpeechBrain itself loads it with ``strict=False``; a missing key here is an error).
    """
    folder = Path(folder)
    extractor = read_hparams(folder).build()
    state = _load(folder / "embedding_model.ckpt")
    try:
        extractor.ecapa.load_state_dict(state)
    except RuntimeError as exc:
        raise SpeechBrainFolderError(
            f"{folder}/embedding_model.ckpt does not fit hyperparams.yaml ({exc})"
        ) from None
    return extractor.eval()


def read_labels(folder: str | Path) -> list[str] | None:
    """Speaker names by classifier row, from ``label_encoder.txt`` (None if absent)."""
    path = Path(folder) / "label_encoder.txt"
    if not path.is_file():
        return None
    rows: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("====="):
            break
        label, sep, index = line.rpartition(" => ")
        if sep:
            rows[int(index)] = str(ast.literal_eval(label))
    return [rows[i] for i in sorted(rows)]


def read_classifier(folder: str | Path) -> torch.Tensor | None:
    """The cosine classifier's class vectors (C, D), or None when absent or not plain
    (``lin_blocks > 0`` puts layers before it that an AAM head cannot take).
    """
    path = Path(folder) / "classifier.ckpt"
    if not path.is_file():
        return None
    state = _load(path)
    if set(state) != {"weight"}:
        log.info("%s: classifier has hidden blocks; not usable as an AAM head", path)
        return None
    return state["weight"].float()


# ---- writing -------------------------------------------------------------------------------

_HPARAMS = """\
# Written by arw-sv (`arw-sv export CHECKPOINT --format speechbrain`); loads with
# speechbrain.inference.speaker.EncoderClassifier.from_hparams(source=<this folder>).
n_mels: {n_mels}
sample_rate: {sample_rate}
out_n_neurons: {classes}

compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
    sample_rate: !ref <sample_rate>
    win_length: {win}
    hop_length: {hop}
    n_fft: {n_fft}

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: {kernel_sizes}
    dilations: {dilations}
    attention_channels: {attention}
    res2net_scale: {scale}
    se_channels: {se}
    global_context: {global_context}
    lin_neurons: {dim}

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {dim}
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

# No `paths`: every file is <source>/<name>.ckpt, so the folder can be moved or uploaded.
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
"""


def architecture(extractor: EcapaTdnn) -> dict[str, Any]:
    """Every setting that makes two extractors compute the same function of the same
    weights, read off the built modules (so it holds for any way they were built).
    """
    ecapa = extractor.ecapa
    stft = extractor.frontend.fbank.compute_STFT
    block = ecapa.blocks[1]
    tdnns = [ecapa.blocks[0].conv, *(b.res2net_block.blocks[0].conv for b in ecapa.blocks[1:])]
    tdnns.append(ecapa.mfa.conv)
    return {
        "n_mels": extractor.frontend.fbank.compute_fbanks.n_mels,
        "sample_rate": extractor.sample_rate,
        "win": stft.win_length * 1000 / extractor.sample_rate,
        "hop": stft.hop_length * 1000 / extractor.sample_rate,
        "n_fft": stft.n_fft,
        "channels": list(ecapa.channels),
        "kernel_sizes": [c.kernel_size for c in tdnns],
        "dilations": [c.dilation for c in tdnns],
        "attention": ecapa.asp.tdnn.conv.conv.out_channels,
        "scale": block.res2net_block.scale,
        "se": block.se_block.conv1.conv.out_channels,
        "global_context": ecapa.asp.global_context,
        "dim": extractor.embedding_dim,
    }


def head_for(folder: str | Path, speakers: list[str], n_classes: int) -> torch.Tensor | None:
    """The folder's classifier as AAM class vectors for ``speakers`` (row i: speaker i,
    tiled to ``n_classes`` for speed-perturbed copies), or None when some speaker is not
    in its label encoder (or it has no plain classifier): then the head starts fresh.

    Shape:
        -> (n_classes, D)
    """
    labels, vectors = read_labels(folder), read_classifier(folder)
    if labels is None or vectors is None or len(labels) != vectors.shape[0]:
        return None
    row = {label: i for i, label in enumerate(labels)}
    if not speakers or any(s not in row for s in speakers) or n_classes % len(speakers):
        return None
    return vectors[[row[s] for s in speakers]].repeat(n_classes // len(speakers), 1)


def write_folder(
    extractor: EcapaTdnn,
    folder: str | Path,
    *,
    speakers: list[str] | None = None,
    class_vectors: torch.Tensor | None = None,
) -> Path:
    """Write ``extractor`` as a SpeechBrain folder ``EncoderClassifier`` loads.

    ``class_vectors`` (C, D) become ``classifier.ckpt`` and ``speakers`` its labels (row i
    is speaker i; rows past ``len(speakers)``, e.g. speed-perturbed copies, are named
    ``<speaker>@<k>``). ``mean_var_norm_emb.ckpt`` holds zero statistics: arw-sv has no
    embedding normalisation, so ``encode_batch(normalize=True)`` changes nothing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dim = extractor.embedding_dim
    if class_vectors is None:
        class_vectors = torch.zeros(1, dim)
    classes = class_vectors.shape[0]
    speakers = list(speakers or [])
    labels = [
        speakers[i % len(speakers)] + (f"@{i // len(speakers)}" if i >= len(speakers) else "")
        if speakers
        else f"class{i}"
        for i in range(classes)
    ]
    settings = {**architecture(extractor), "classes": classes}
    atomic_write_text(folder / "hyperparams.yaml", _HPARAMS.format(**settings))
    _save(extractor.ecapa.state_dict(), folder / "embedding_model.ckpt")
    _save({"weight": class_vectors.detach().float().cpu().clone()}, folder / "classifier.ckpt")
    from speechbrain.processing.features import InputNormalization

    identity = InputNormalization(norm_type="global", std_norm=False)
    identity.count, identity.glob_mean, identity.glob_std = 1, torch.zeros(dim), torch.ones(dim)
    with atomic_path(folder / "mean_var_norm_emb.ckpt") as tmp:
        identity._save(tmp)  # SpeechBrain's own format, whatever its version
    text = "".join(f"{label!r} => {i}\n" for i, label in enumerate(labels))
    text += "================\n'starting_index' => 0\n"
    atomic_write_text(folder / "label_encoder.txt", text)
    # What Pretrainer fetches without `paths` (<name>.ckpt); the same text.
    atomic_write_text(folder / "label_encoder.ckpt", text)
    return folder


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)

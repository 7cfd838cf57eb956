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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from arw_sv.atomic import atomic_folder
from arw_sv.models.ecapa import EcapaTdnn
from arw_sv.speechbrain_hparams import (
    SpeechBrainFolderError,
    SpeechBrainHparams,
    parse_yaml,
    read_hparams,
    read_text,
)

__all__ = [
    "SpeechBrainFolderError",
    "SpeechBrainHparams",
    "head_for",
    "load_extractor",
    "read_classifier",
    "read_hparams",
    "read_labels",
    "resolve",
    "split_spec",
    "write_folder",
]

log = logging.getLogger(__name__)

PREFIX = "speechbrain:"
FILES = ("hyperparams.yaml", "embedding_model.ckpt")


def split_spec(spec: str | Path) -> str | None:
    """The folder or hub id of a ``speechbrain:FOLDER`` spec, None for anything else."""
    spec = str(spec)
    return spec[len(PREFIX) :] if spec.startswith(PREFIX) else None


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


# ---- weights -----------------------------------------------------------------------------


def _load(path: Path) -> Any:
    if not path.is_file():
        raise SpeechBrainFolderError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip, weights-only refusals: one line, no bad advice
        from arw_sv.checkpoint import load_refusal

        raise SpeechBrainFolderError(
            f"{path}: not a readable checkpoint ({load_refusal(exc)})"
        ) from None


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint that must hold a state dict: names to tensors."""
    state = _load(path)
    if not isinstance(state, Mapping):
        raise SpeechBrainFolderError(
            f"{path}: expected a state dict (parameter names to tensors), got "
            f"{type(state).__name__}"
        )
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise SpeechBrainFolderError(
                f"{path}: entry {str(key)[:60]!r} is a {type(value).__name__}, not a tensor"
            )
    return dict(state)


def _check_fits(state: dict[str, torch.Tensor], model: torch.nn.Module, path: Path) -> None:
    """One line on how ``state`` differs from ``model``'s own (missing, extra, shapes)."""
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    shapes = [k for k in want if k in state and state[k].shape != want[k].shape]
    if not (missing or extra or shapes):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
            f"{tuple(want[k].shape)} from hyperparams.yaml)"
        )
    raise SpeechBrainFolderError(f"{path} does not fit hyperparams.yaml: {'; '.join(parts)}")


def check_complete(folder: str | Path) -> None:
    """Refuse a folder that lacks a file its ``hyperparams.yaml``'s pretrainer loads (what
    an interrupted copy or export leaves): SpeechBrain itself would fail on it.

    A loadable is present as ``<name>.ckpt``, or as the file its ``paths`` entry names
    (``label_encoder.txt`` in the published layout).
    """
    folder = Path(folder)
    where = folder / "hyperparams.yaml"
    tree = parse_yaml(read_text(where), str(where))
    pretrainer = tree.get("pretrainer") if isinstance(tree, dict) else None
    loadables = pretrainer.get("loadables") if isinstance(pretrainer, dict) else None
    if not isinstance(loadables, dict):
        return
    paths = pretrainer.get("paths")
    paths = paths if isinstance(paths, dict) else {}
    for name in loadables:
        candidates = [folder / f"{name}.ckpt"]
        if isinstance(paths.get(name), str):
            candidates.append(folder / Path(str(paths[name])).name)
        if not any(c.is_file() for c in candidates):
            raise SpeechBrainFolderError(
                f"{folder}: incomplete SpeechBrain folder: its pretrainer loads {name} but "
                f"{candidates[-1].name} is missing"
            )


def load_extractor(folder: str | Path) -> EcapaTdnn:
    """The folder's embedding model as an :class:`EcapaTdnn` (eval mode).

    Every ECAPA weight and batch-norm statistic must be in ``embedding_model.ckpt``
    (SpeechBrain itself loads it with ``strict=False``; a missing key here is an error).

    Raises:
        SpeechBrainFolderError: one line naming the file and what is wrong with it.
    """
    folder = Path(folder)
    hparams = read_hparams(folder)
    check_complete(folder)
    path = folder / "embedding_model.ckpt"
    state = _state_dict(path)
    try:
        extractor = hparams.build()
    except (ValueError, RuntimeError) as exc:
        raise SpeechBrainFolderError(f"{folder}/hyperparams.yaml: {exc}") from None
    _check_fits(state, extractor.ecapa, path)
    extractor.ecapa.load_state_dict(state)
    return extractor.eval()


def read_labels(folder: str | Path) -> list[str] | None:
    """Speaker names by classifier row, from ``label_encoder.txt`` (None if absent).

    Raises:
        SpeechBrainFolderError: a line that is not ``'<label>' => <row>``, a row given
            twice, or rows that are not 0..C-1 (naming file and line).
    """
    path = Path(folder) / "label_encoder.txt"
    if not path.is_file():
        return None
    rows: dict[int, str] = {}
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.startswith("====="):
            break
        if not line.strip():
            continue
        label, sep, index = line.rpartition(" => ")
        where = f"{path}:{number}"
        if not sep or not index.strip().isdecimal() or len(index.strip()) > 9:
            raise SpeechBrainFolderError(f"{where}: expected '<label>' => <row>, got {line[:80]!r}")
        try:
            name = str(ast.literal_eval(label.strip()))
        except (ValueError, SyntaxError, RecursionError, MemoryError, TypeError):
            raise SpeechBrainFolderError(
                f"{where}: label {label[:60]!r} is not a quoted Python literal"
            ) from None
        row = int(index)
        if row in rows:
            raise SpeechBrainFolderError(f"{where}: row {row} is given twice")
        rows[row] = name
    if sorted(rows) != list(range(len(rows))):
        raise SpeechBrainFolderError(f"{path}: rows are not 0..{len(rows) - 1} without gaps")
    return [rows[i] for i in range(len(rows))]


def read_classifier(folder: str | Path, dim: int | None = None) -> torch.Tensor | None:
    """The cosine classifier's class vectors (C, D), or None when absent or not plain
    (``lin_blocks > 0`` puts layers before it that an AAM head cannot take).

    Raises:
        SpeechBrainFolderError: not a state dict, or ``weight`` not a (C, ``dim``) float
            tensor.
    """
    path = Path(folder) / "classifier.ckpt"
    if not path.is_file():
        return None
    state = _state_dict(path)
    weight = state.get("weight")
    if weight is None or weight.dim() != 2 or not weight.is_floating_point():
        raise SpeechBrainFolderError(
            f"{path}: weight must be a (classes, embedding dim) float tensor, got "
            f"{'none' if weight is None else f'{weight.dtype} {tuple(weight.shape)}'}"
        )
    if set(state) != {"weight"}:
        log.info("%s: classifier has hidden blocks; not usable as an AAM head", path)
        return None
    if dim is not None and weight.shape[1] != dim:
        raise SpeechBrainFolderError(
            f"{path}: weight is {tuple(weight.shape)}: {weight.shape[1]} wide, the embeddings {dim}"
        )
    return weight.float()


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


def head_for(
    folder: str | Path, speakers: list[str], n_classes: int, dim: int | None = None
) -> torch.Tensor | None:
    """The folder's classifier as AAM class vectors for ``speakers`` (row i: speaker i,
    tiled to ``n_classes`` for speed-perturbed copies), or None when some speaker is not
    in its label encoder (or it has no plain classifier): then the head starts fresh.

    Raises:
        SpeechBrainFolderError: a classifier whose rows or width do not match the label
            encoder or ``dim``.

    Shape:
        -> (n_classes, D)
    """
    labels, vectors = read_labels(folder), read_classifier(folder, dim)
    if labels is None or vectors is None:
        return None
    if len(labels) != vectors.shape[0]:
        raise SpeechBrainFolderError(
            f"{folder}: classifier.ckpt has {vectors.shape[0]} rows, label_encoder.txt "
            f"{len(labels)} labels"
        )
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
    force: bool = False,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``extractor`` as a SpeechBrain folder ``EncoderClassifier`` loads.

    ``class_vectors`` (C, D) become ``classifier.ckpt`` and ``speakers`` its labels (row i
    is speaker i; rows past ``len(speakers)``, e.g. speed-perturbed copies, are named
    ``<speaker>@<k>``). ``mean_var_norm_emb.ckpt`` holds zero statistics: arw-sv has no
    embedding normalisation, so ``encode_batch(normalize=True)`` changes nothing.

    The folder is written as a whole (:func:`~arw_sv.atomic.atomic_folder`): into a
    temporary sibling, read back by arw-sv's own loader (and ``check``, if given, e.g. a
    parity run of SpeechBrain on it), and only then moved into place. A non-empty
    ``folder`` is refused unless ``force``.

    Raises:
        FileExistsError: ``folder`` is not empty and not ``force``.
    """
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
    with atomic_folder(folder, force=force) as tmp:
        (tmp / "hyperparams.yaml").write_text(_HPARAMS.format(**settings), encoding="utf-8")
        torch.save(extractor.ecapa.state_dict(), tmp / "embedding_model.ckpt")
        weight = class_vectors.detach().float().cpu().clone()
        torch.save({"weight": weight}, tmp / "classifier.ckpt")
        from speechbrain.processing.features import InputNormalization

        identity = InputNormalization(norm_type="global", std_norm=False)
        identity.count, identity.glob_mean = 1, torch.zeros(dim)
        identity.glob_std = torch.ones(dim)
        identity._save(tmp / "mean_var_norm_emb.ckpt")  # SpeechBrain's own format
        text = "".join(f"{label!r} => {i}\n" for i, label in enumerate(labels))
        text += "================\n'starting_index' => 0\n"
        (tmp / "label_encoder.txt").write_text(text, encoding="utf-8")
        # What Pretrainer fetches without `paths` (<name>.ckpt); the same text.
        (tmp / "label_encoder.ckpt").write_text(text, encoding="utf-8")
        load_extractor(tmp)  # reads back: complete, and every tensor fits
        if read_labels(tmp) != labels or read_classifier(tmp, dim) is None:
            raise SpeechBrainFolderError(f"{folder}: the written labels or classifier differ")
        if check is not None:
            check(tmp)
    return Path(folder)

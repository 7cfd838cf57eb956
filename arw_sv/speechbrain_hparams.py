"""Reading a SpeechBrain ``hyperparams.yaml`` as data, never running it.

HyperPyYAML builds objects from ``!new:`` / ``!name:`` tags and computes ``!ref``
expressions. arw-sv parses the tags as plain data, resolves ``!ref`` itself (keys and the
four arithmetic operators only) and takes the few values the extractor needs, each checked
for type and range *before* anything is allocated. A hostile file gets one
:class:`SpeechBrainFolderError` line naming the file (and key or line), never a traceback:

- YAML aliases are counted as they would expand (a "billion laughs" file is refused by
  its size, without expanding it), and so are ``!ref`` expansions;
- every size is bounded (:data:`LIMITS`), and so is the extractor's parameter count, so
  a typo such as ``channels: [1e7, ...]`` cannot ask for tens of gigabytes.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from arw_sv.safe_yaml import MAX_NODES, BoundedLoader, YamlError, load_yaml

# Sane bounds (inclusive) for SpeechBrain's ECAPA_TDNN and Fbank arguments. The published
# models are far inside them (c1024: widths up to 3072, 80 mels, 192-dim embeddings).
LIMITS: dict[str, tuple[float, float]] = {
    "channels": (1, 4096),
    "kernel_sizes": (1, 31),
    "dilations": (1, 64),
    "attention_channels": (1, 4096),
    "res2net_scale": (1, 64),
    "se_channels": (1, 4096),
    "lin_neurons": (1, 4096),
    "n_mels": (1, 512),
    "sample_rate": (1000, 384000),
    "n_fft": (16, 65536),
    "win_length": (1.0, 1000.0),
    "hop_length": (1.0, 1000.0),
}
MAX_PARAMETERS = 200_000_000  # ~0.8 GB of float32; the public c1024 ECAPA has ~20 M


class SpeechBrainFolderError(ValueError):
    """A SpeechBrain folder is missing, unreadable or describes a model arw-sv cannot run."""


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

    def parameter_count(self) -> int:
        """An upper estimate of the ECAPA's weights (convolutions and linear layers)."""
        c, k, s = self.channels, self.kernel_sizes, self.res2net_scale
        total = self.n_mels * c[0] * k[0]
        for i in range(1, len(c) - 1):
            width = c[i] // s
            total += c[i - 1] * c[i] + 2 * c[i] * c[i]  # the two 1x1 TDNNs
            total += (s - 1) * width * width * k[i]  # the Res2Net branches
            total += 2 * c[i] * self.se_channels
        mfa_in = sum(c[1:-1])
        total += mfa_in * c[-1] * k[-1]
        total += 3 * c[-1] * self.attention_channels + self.attention_channels * c[-1]
        total += 2 * c[-1] * self.lin_neurons
        return total

    def build(self):
        """An (untrained) :class:`~arw_sv.models.ecapa.EcapaTdnn` of this architecture."""
        from arw_sv.models.ecapa import EcapaTdnn

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


# ---- parsing: tags as data, aliases counted --------------------------------------------


class _Ref(str):
    """A ``!ref <key>`` value, resolved after loading."""


class _Tolerant(BoundedLoader):
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


def parse_yaml(text: str, where: str) -> Any:
    """The document as data (tags kept as ``__tag__`` dicts), within the shared limits
    (:mod:`arw_sv.safe_yaml`: the node cap counted while parsing, aliases expanded).

    Raises:
        SpeechBrainFolderError: unparsable YAML (one line, with its line number), or more
            than :data:`MAX_NODES` nodes once aliases are expanded.
    """
    try:
        return load_yaml(text, where, _Tolerant)
    except YamlError as exc:
        raise SpeechBrainFolderError(str(exc)) from None


# ---- !ref resolution ---------------------------------------------------------------------


class _Resolver:
    """Resolves ``!ref`` values against the document, counting what it expands."""

    def __init__(self, tree: dict[str, Any], where: str) -> None:
        self.tree, self.where, self.visited = tree, where, 0

    def lookup(self, key: str) -> Any:
        value: Any = self.tree
        for part in re.split(r"[.\[\]]+", key.strip()):
            if not part:
                continue
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise SpeechBrainFolderError(f"{self.where}: unresolved !ref <{key}>")
        return value

    def __call__(self, value: Any, depth: int = 0) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise SpeechBrainFolderError(
                f"{self.where}: !ref expansions exceed {MAX_NODES} values (an alias bomb?)"
            )
        if depth > 20:
            raise SpeechBrainFolderError(f"{self.where}: !ref chain too deep (a cycle?)")
        if isinstance(value, _Ref):
            whole = _REF.fullmatch(value.strip())
            if whole:
                return self(self.lookup(whole.group(1)), depth + 1)
            text = _REF.sub(lambda m: str(self(self.lookup(m.group(1)), depth + 1)), value)
            if len(text) > 10_000:
                raise SpeechBrainFolderError(f"{self.where}: !ref {value!r} expands too far")
            if not re.search(r"[*/+-]", text):
                try:
                    return ast.literal_eval(text)
                except (ValueError, SyntaxError, RecursionError, MemoryError):
                    return text
            return _arith(text, f"{self.where}: !ref {value!r}")
        if isinstance(value, dict):
            return {k: self(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, depth) for v in value]
        return value


_OPS = {
    ast.Add: float.__add__,
    ast.Sub: float.__sub__,
    ast.Mult: float.__mul__,
    ast.Div: float.__truediv__,
}


def _arith(text: str, where: str) -> Any:
    """HyperPyYAML's ``!ref <n_mels> * 2`` arithmetic: numbers and + - * / only. Text
    that is not such an expression stays text (the type checks then name the key).
    """
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return text

    def ev(n: ast.AST) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, int | float):
            return float(n.value)
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
            inner = ev(n.operand)
            return -inner if isinstance(n.op, ast.USub) else inner
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        raise ValueError(text)

    try:
        result = ev(node)
    except ValueError:
        return text
    except ZeroDivisionError:
        raise SpeechBrainFolderError(f"{where}: division by zero") from None
    except (OverflowError, RecursionError):
        raise SpeechBrainFolderError(f"{where}: the value overflows") from None
    if not math.isfinite(result):
        raise SpeechBrainFolderError(f"{where}: the value overflows ({result})")
    return int(result) if result.is_integer() else result


# ---- typed, bounded values ---------------------------------------------------------------


def _number(value: Any, key: str, where: str, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpeechBrainFolderError(f"{where}: {key} must be a number, got {_short(value)}")
    if not math.isfinite(value):
        raise SpeechBrainFolderError(f"{where}: {key} must be finite, got {value}")
    if integer and value != int(value):
        raise SpeechBrainFolderError(f"{where}: {key} must be a whole number, got {value}")
    name = key.rsplit(".", 1)[-1]
    low, high = LIMITS[name]
    if not low <= value <= high:
        raise SpeechBrainFolderError(
            f"{where}: {key} = {value} is out of range [{low:g}, {high:g}]"
        )
    return int(value) if integer else float(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int(entry: dict[str, Any], name: str, default: int, where: str, section: str) -> int:
    return int(_number(entry.get(name, default), f"{section}.{name}", where, integer=True))


def _ints(entry: dict[str, Any], name: str, default: list[int], where: str, section: str):
    values = entry.get(name, default)
    if not isinstance(values, list) or not values:
        raise SpeechBrainFolderError(
            f"{where}: {section}.{name} must be a list of whole numbers, got {_short(values)}"
        )
    return tuple(int(_number(v, f"{section}.{name}", where, integer=True)) for v in values)


def _module(tree: dict[str, Any], key: str, cls: str, where: str) -> dict[str, Any]:
    """The arguments of the object ``key`` (top level, or under ``modules``)."""
    modules = tree.get("modules", {})
    entry = tree.get(key, modules.get(key) if isinstance(modules, dict) else None)
    if isinstance(entry, _Ref):
        entry = _Resolver(tree, where)(entry)
    if not isinstance(entry, dict) or not str(entry.get("__tag__", "")).endswith(cls):
        raise SpeechBrainFolderError(f"{where}: {key!r} is not a SpeechBrain {cls}")
    return _Resolver(tree, where)(entry)


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


def read_text(path: Path) -> str:
    """A text file of the folder, or one line naming it (missing, unreadable, not UTF-8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpeechBrainFolderError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpeechBrainFolderError(
            f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
        ) from None


def read_hparams(folder: str | Path) -> SpeechBrainHparams:
    """The extractor settings of ``folder/hyperparams.yaml`` (read as data, not run).

    Raises:
        SpeechBrainFolderError: missing or unparsable file, a value of the wrong type or out
            of :data:`LIMITS`, or a setting arw-sv cannot reproduce (named).
    """
    path = Path(folder) / "hyperparams.yaml"
    if not path.is_file():
        raise SpeechBrainFolderError(f"{folder}: no hyperparams.yaml (not a SpeechBrain folder)")
    where = str(path)
    tree = parse_yaml(read_text(path), where)
    if not isinstance(tree, dict):
        raise SpeechBrainFolderError(
            f"{where}: expected a mapping of keys (embedding_model: ..., compute_features: "
            f"...), got {type(tree).__name__ if tree is not None else 'an empty file'}"
        )
    ecapa = _module(tree, "embedding_model", "ECAPA_TDNN", where)
    fbank = _module(tree, "compute_features", "Fbank", where)
    norm = _module(tree, "mean_var_norm", "InputNormalization", where)
    if norm.get("norm_type", "global") != "sentence" or norm.get("std_norm", True) is not False:
        raise SpeechBrainFolderError(
            f"{where}: mean_var_norm must be sentence mean normalisation "
            f"(norm_type: sentence, std_norm: False), got {_short(norm)}"
        )
    changed = {k: fbank[k] for k, v in _FBANK_DEFAULTS.items() if k in fbank and fbank[k] != v}
    if changed:
        raise SpeechBrainFolderError(
            f"{where}: Fbank settings arw-sv does not support: {_short(changed)}"
        )
    rate = _int(fbank, "sample_rate", 16000, where, "compute_features")
    win = _number(fbank.get("win_length", 25), "compute_features.win_length", where, False)
    hop = _number(fbank.get("hop_length", 10), "compute_features.hop_length", where, False)
    if _int(fbank, "n_fft", 400, where, "compute_features") != int(round(rate * win / 1000)):
        raise SpeechBrainFolderError(f"{where}: Fbank n_fft must equal the window length")
    if ecapa.get("activation") not in (None, "torch.nn.ReLU") or ecapa.get("groups", 1) != 1:
        raise SpeechBrainFolderError(f"{where}: ECAPA_TDNN activation/groups not supported")
    section = "embedding_model"
    channels = _ints(ecapa, "channels", [512, 512, 512, 512, 1536], where, section)
    kernels = _ints(ecapa, "kernel_sizes", [5, 3, 3, 3, 1], where, section)
    dilations = _ints(ecapa, "dilations", [1, 2, 3, 4, 1], where, section)
    if not len(channels) == len(kernels) == len(dilations) == 5:
        raise SpeechBrainFolderError(
            f"{where}: {section}.channels, kernel_sizes and dilations need 5 entries each "
            f"(arw-sv's ECAPA), got {len(channels)}, {len(kernels)}, {len(dilations)}"
        )
    scale = _int(ecapa, "res2net_scale", 8, where, section)
    if any(c % scale for c in channels[1:-1]):
        raise SpeechBrainFolderError(
            f"{where}: {section}.channels {list(channels)} must be divisible by "
            f"res2net_scale {scale}"
        )
    global_context = ecapa.get("global_context", True)
    if not isinstance(global_context, bool):
        raise SpeechBrainFolderError(f"{where}: {section}.global_context must be True or False")
    hparams = SpeechBrainHparams(
        channels=channels,
        kernel_sizes=kernels,
        dilations=dilations,
        attention_channels=_int(ecapa, "attention_channels", 128, where, section),
        res2net_scale=scale,
        se_channels=_int(ecapa, "se_channels", 128, where, section),
        global_context=global_context,
        lin_neurons=_int(ecapa, "lin_neurons", 192, where, section),
        n_mels=_int(fbank, "n_mels", 40, where, "compute_features"),  # Fbank's own default
        sample_rate=rate,
        win_length_ms=win,
        hop_length_ms=hop,
    )
    if ecapa.get("input_size", hparams.n_mels) != hparams.n_mels:
        raise SpeechBrainFolderError(
            f"{where}: {section}.input_size {_short(ecapa['input_size'])} differs from "
            f"compute_features.n_mels {hparams.n_mels}"
        )
    if hparams.parameter_count() > MAX_PARAMETERS:
        raise SpeechBrainFolderError(
            f"{where}: the ECAPA it describes has about {hparams.parameter_count():,} weights "
            f"(at most {MAX_PARAMETERS:,})"
        )
    return hparams

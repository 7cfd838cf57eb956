"""The calibrator file's schema: every field's type, shape and range, checked before use.

A calibrator file is data a user may have edited, truncated or been handed; like a
checkpoint it is checked whole before anything reads it, so that a wrong field is one
:class:`~arw_sv.calibration.methods.CalibrationError` line naming the file and the field,
never an ``IndexError`` at scoring time or a silently skipped step. What each method
stores (C clusters or groups, D the embedding dimension, E cohort embeddings):

============== ============ ======== ======== ========= ======== =====================
method         centroids    maps     counts   fallback  groups   settings
============== ============ ======== ======== ========= ======== =====================
global         (0, D)       (0, *)   (0,)     (2,)      ()       seed
fsn            (C, D)       (C, 1)   (C,)     (2,)      ()       seed clusters target_fmr
faircal        (C, D)       (C, 3)   (C,)     (3,)      ()       seed clusters
softcal        (C, D)       (C, 3)   (C,)     (3,)      ()       ... top temperature
oracle         (0, D)       (C, 1)   (C,)     (2,)      (C,)     seed target_fmr
oracle_faircal (0, D)       (C, 3)   (C,)     (3,)      (C,)     seed
quantile       (C, D)       (C, 2O)  (C,)     (2,)      ()       seed clusters prior_speakers
                                                                 weights
oracle_quant.  (0, D)       (C, 2O)  (C,)     (2,)      (C,)     seed prior_speakers weights
============== ============ ======== ======== ========= ======== =====================

O is the number of quantile knots (``arw_sv.calibration.quantile.LEVELS``); ``weights`` are
the regions' shrinkage factors in [0, 1]. Optional settings: ``fsn`` may add
``prior_speakers`` and ``weights`` (shrinkage), ``global`` a ``fallback`` note (why a
requested back-end fell back to it), ``quantile`` and ``oracle_quantile``
``quantile_pairs: within`` (maps fitted on within-region pairs; absent: ``touching``).

With AS-norm the settings add ``score_norm: asnorm`` and ``top_n`` (2 to E), and
``cohort`` holds (E, D) finite, non-zero, not all identical float32 rows; without it,
``cohort`` is null and there is no ``score_norm``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from arw_sv.calibration.methods import QUANTILE_PAIRS, CalibrationError
from arw_sv.calibration.quantile import LEVELS
from arw_sv.safe_yaml import shorten

MAX_BYTES = 1 << 30  # a calibrator with a 4,000 x 192 cohort is about 4 MB
MAX_DIM = 65_536
MAX_CLUSTERS = 100_000
MAX_COHORT = 1_000_000
MAX_VALUE = 1e15  # beyond it float32 norms and dot products overflow

FIELDS = ("format", "version", "method", "dim", "fingerprint", "settings", "centroids",
          "maps", "counts", "fallback", "groups", "speakers", "cohort")  # fmt: skip
_KMEANS = ("fsn", "faircal", "softcal", "quantile")
_KNOTS = 2 * len(LEVELS)
_MAP_WIDTH = {"global": None, "fsn": 1, "oracle": 1, "faircal": 3, "softcal": 3,
              "oracle_faircal": 3, "quantile": _KNOTS, "oracle_quantile": _KNOTS}  # fmt: skip
_LINEAR_FALLBACK = ("global", "fsn", "oracle", "quantile", "oracle_quantile")
_SETTINGS = {
    "global": ("seed",),
    "fsn": ("seed", "clusters", "target_fmr"),
    "faircal": ("seed", "clusters"),
    "softcal": ("seed", "clusters", "top", "temperature"),
    "oracle": ("seed", "target_fmr"),
    "oracle_faircal": ("seed",),
    "quantile": ("seed", "clusters", "prior_speakers", "weights"),
    "oracle_quantile": ("seed", "prior_speakers", "weights"),
}
_OPTIONAL = {"fsn": ("prior_speakers", "weights"), "global": ("fallback",),
             "quantile": ("quantile_pairs",), "oracle_quantile": ("quantile_pairs",)}  # fmt: skip
MAX_NOTE = 1000  # characters of the fallback note


class _Field:
    """Raises one line naming the file and the field."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, name: str, problem: str) -> CalibrationError:
        return CalibrationError(f"{self.path}: malformed field '{name}': {problem}")


def read_document(path: Path) -> Any:
    """The file's JSON, refusing duplicate keys (which JSON readers resolve differently)
    and files over :data:`MAX_BYTES`.

    Raises:
        CalibrationError: missing, too large, not UTF-8 JSON, or a key given twice.
    """
    try:
        if path.stat().st_size > MAX_BYTES:
            raise CalibrationError(f"{path}: over {MAX_BYTES} bytes; not a calibration file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise CalibrationError(f"calibration file not found: {path}") from None

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                raise CalibrationError(f"{path}: key {shorten(key)} is given twice")
            seen[key] = value
        return seen

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=unique)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CalibrationError(f"{path}: not a calibration file ({str(exc)[:120]})") from None


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _integer(f: _Field, name: str, value: Any, low: int, high: float) -> int:
    if not (_is_number(value) and float(value).is_integer() and low <= value <= high):
        raise f.fail(name, f"expected an integer in [{low}, {high:g}], got {shorten(value)}")
    return int(value)


def _array(f: _Field, name: str, value: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    """A list (of lists) of finite numbers of ``shape`` (None: any length)."""
    if len(shape) == 2:
        if not isinstance(value, list) or not all(isinstance(row, list) for row in value):
            raise f.fail(name, f"expected a list of rows, got {shorten(value)}")
        flat = [x for row in value for x in row]
        lengths = {len(row) for row in value}
        got: tuple[int, ...] = (len(value), *(lengths if len(lengths) == 1 else {-1}))
        if not value:
            got = (0, shape[1] or 0)
    else:
        if not isinstance(value, list):
            raise f.fail(name, f"expected a list of numbers, got {shorten(value)}")
        flat, got = value, (len(value),)
    if not all(_is_number(x) for x in flat):
        bad = next(x for x in flat if not _is_number(x))
        raise f.fail(name, f"expected numbers, got {shorten(bad)}")
    want = tuple(g if s is None else s for s, g in zip(shape, got, strict=False))
    if got != want:
        raise f.fail(name, f"expected shape {want}, got {got if -1 not in got else 'ragged rows'}")
    array = np.asarray(flat, dtype=np.float64)
    if not np.isfinite(array).all() or (np.abs(array) > MAX_VALUE).any():
        raise f.fail(name, f"values must be finite and at most {MAX_VALUE:g} in magnitude")
    return array.reshape(got)


def _strings(f: _Field, name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
        raise f.fail(name, f"expected a list of non-empty strings, got {shorten(value)}")
    if len(set(value)) != len(value):
        raise f.fail(name, "a name is listed twice")
    return value


def _cohort(f: _Field, value: Any, dim: int) -> int:
    """Check the AS-norm cohort; returns its number of embeddings."""
    if not isinstance(value, dict) or set(value) != {"dtype", "shape", "base64"}:
        raise f.fail("cohort", "expected null or {dtype, shape, base64}")
    if value["dtype"] != "<f4":
        raise f.fail("cohort", f"dtype {shorten(value['dtype'])}, expected '<f4'")
    shape = value["shape"]
    if not (isinstance(shape, list) and len(shape) == 2):
        raise f.fail("cohort", f"shape {shorten(shape)}, expected [E, dim]")
    rows = _integer(f, "cohort.shape[0]", shape[0], 2, MAX_COHORT)
    if shape[1] != dim:
        raise f.fail("cohort", f"{shorten(shape[1])}-dim embeddings, the calibrator's are {dim}")
    text = value["base64"]
    if not isinstance(text, str) or len(text) != 4 * math.ceil(rows * dim * 4 / 3):
        raise f.fail("cohort", f"base64 text of another length than {rows} x {dim} float32")
    try:
        data = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4")
    except (binascii.Error, ValueError):
        raise f.fail("cohort", "not valid base64") from None
    if data.size != rows * dim:
        raise f.fail("cohort", f"{data.size} values for shape ({rows}, {dim})")
    matrix = data.reshape(rows, dim).astype(np.float64)
    if not np.isfinite(matrix).all() or (np.abs(matrix) > MAX_VALUE).any():
        raise f.fail("cohort", "values must be finite and at most 1e15 in magnitude")
    if (np.linalg.norm(matrix, axis=1) == 0).any():
        raise f.fail("cohort", "an all-zero embedding (AS-norm would divide by zero)")
    if (matrix == matrix[0]).all():
        raise f.fail("cohort", "every embedding is the same (AS-norm would divide by zero)")
    return rows


def _settings(f: _Field, method: str, settings: Any, clusters: int, cohort_rows: int) -> None:
    if not isinstance(settings, dict):
        raise f.fail("settings", f"expected a mapping, got {shorten(settings)}")
    want = set(_SETTINGS.get(method, settings))  # a method without a schema: as it is
    if not cohort_rows and "score_norm" in settings:
        raise f.fail("cohort", "null, but settings.score_norm says AS-norm: the cohort is missing")
    if cohort_rows:
        want |= {"score_norm", "top_n"}
    want |= set(_OPTIONAL.get(method, ())) & set(settings)
    for key in sorted(set(settings) ^ want):
        what = "missing" if key in want else f"not a setting of {method}"
        raise f.fail(f"settings.{key}", what + (" (AS-norm)" if key == "top_n" else ""))
    _integer(f, "settings.seed", settings.get("seed", 0), 0, 2**63 - 1)
    if "clusters" in want and _integer(f, "settings.clusters", settings["clusters"], 1,
                                       MAX_CLUSTERS) != clusters:  # fmt: skip
        raise f.fail("settings.clusters", f"{settings['clusters']}, but {clusters} centroids")
    if "target_fmr" in want:
        fmr = settings["target_fmr"]
        if not (_is_number(fmr) and 0 < fmr < 1):
            raise f.fail("settings.target_fmr", f"expected a rate in (0, 1), got {shorten(fmr)}")
    if "top" in want:
        _integer(f, "settings.top", settings["top"], 1, clusters)
    if "prior_speakers" in want:
        prior = settings["prior_speakers"]
        if not (_is_number(prior) and 0 <= prior <= 1e6):
            raise f.fail("settings.prior_speakers", f"expected [0, 1e6], got {shorten(prior)}")
    if "weights" in want:
        w = _array(f, "settings.weights", settings["weights"], (clusters,))
        if ((w < 0) | (w > 1)).any():
            raise f.fail("settings.weights", "shrinkage factors must lie in [0, 1]")
    if "fallback" in want:
        note = settings["fallback"]
        if not (isinstance(note, str) and 0 < len(note) <= MAX_NOTE):
            raise f.fail("settings.fallback", f"expected a note of 1-{MAX_NOTE} characters")
    if "quantile_pairs" in want and settings["quantile_pairs"] not in QUANTILE_PAIRS:
        raise f.fail("settings.quantile_pairs", f"expected one of {', '.join(QUANTILE_PAIRS)}, "
                     f"got {shorten(settings['quantile_pairs'])}")  # fmt: skip
    if "temperature" in want:
        t = settings["temperature"]
        if not (_is_number(t) and 0 < t <= 1e6):
            raise f.fail("settings.temperature", f"expected (0, 1e6], got {shorten(t)}")
    if cohort_rows:
        if settings["score_norm"] != "asnorm":
            raise f.fail(
                "settings.score_norm", f"{shorten(settings['score_norm'])}, expected 'asnorm'"
            )
        _integer(f, "settings.top_n", settings["top_n"], 2, cohort_rows)


def check_document(doc: dict[str, Any], path: str | Path) -> None:
    """Check every field of a calibrator file's JSON (``format``, ``version`` and
    ``method`` already checked) against the table above.

    Raises:
        CalibrationError: ``<path>: field '<name>': <what is wrong>``, one line.
    """
    f = _Field(Path(path))
    for key in FIELDS:
        if key not in doc:
            raise f.fail(key, "missing")
    for key in doc:
        if key not in FIELDS:
            raise f.fail(str(key)[:60], "not a field of a calibration file")
    method = doc["method"]
    dim = _integer(f, "dim", doc["dim"], 1, MAX_DIM)
    fingerprint = doc["fingerprint"]
    if fingerprint is not None and not (
        isinstance(fingerprint, str) and re.fullmatch(r"[0-9A-Za-z]{1,64}", fingerprint)
    ):
        raise f.fail("fingerprint", f"expected null or a hex string, got {shorten(fingerprint)}")
    _strings(f, "speakers", doc["speakers"])
    groups = _strings(f, "groups", doc["groups"])
    counts = _array(f, "counts", doc["counts"], (None,))
    clusters = len(counts)
    if clusters > MAX_CLUSTERS:
        raise f.fail("counts", f"{clusters} clusters (at most {MAX_CLUSTERS})")
    if (counts < 1).any() or not all(float(c).is_integer() for c in counts):
        raise f.fail("counts", "pair counts must be whole numbers of at least 1")
    kmeans = method in _KMEANS
    _array(f, "centroids", doc["centroids"], (clusters if kmeans else 0, dim))
    if kmeans and clusters == 0:
        raise f.fail("counts", f"{method} needs at least one cluster")
    width = _MAP_WIDTH.get(method)
    if method == "global":
        if doc["maps"] not in ([], [[]]) or clusters:
            raise f.fail("maps", "global has no per-cluster maps")
    elif method in _MAP_WIDTH:
        _array(f, "maps", doc["maps"], (clusters, width))
    if method in _MAP_WIDTH:
        _array(f, "fallback", doc["fallback"], (2 if method in _LINEAR_FALLBACK else 3,))
    if method.startswith("oracle") and len(groups) != clusters:
        raise f.fail("groups", f"{len(groups)} groups for {clusters} maps")
    if not method.startswith("oracle") and groups:
        raise f.fail("groups", f"{method} has no groups")
    cohort_rows = 0 if doc["cohort"] is None else _cohort(f, doc["cohort"], dim)
    _settings(f, method, doc["settings"], clusters, cohort_rows)

"""Saving and loading calibrators as JSON (never pickle), exactly.

Floats are written with ``repr`` (Python's JSON does), so a reloaded calibrator gives the
same outputs bit for bit. The file names what it is (``format``), the embedding dimension
and the model fingerprint it was fitted for, and the calibration speakers, so that
``arw-sv score --calibration`` can refuse embeddings of another model or test speakers
that were used for calibration. An AS-norm cohort is stored as little-endian float32
bytes in base64 (exact, and a fifth of the size of a list of decimals).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text
from arw_sv.calibration.methods import METHODS, CalibrationError, Calibrator
from arw_sv.calibration.schema import check_document, read_document
from arw_sv.safe_yaml import shorten

FORMAT = "arw-sv/calibration"
VERSION = 1


def save_calibrator(calibrator: Calibrator, path: str | Path) -> None:
    """Write ``calibrator`` to ``path`` (JSON, atomically)."""
    c = calibrator
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "method": c.method,
        "dim": c.dim,
        "fingerprint": c.fingerprint,
        "settings": c.settings,
        "centroids": c.centroids.tolist(),
        "maps": c.maps.tolist(),
        "counts": c.counts.tolist(),
        "fallback": c.fallback.tolist(),
        "groups": list(c.groups),
        "speakers": list(c.speakers),
        "cohort": None if c.cohort is None else _encode(c.cohort),
    }
    atomic_write_text(path, json.dumps(doc, allow_nan=False) + "\n")


def _encode(matrix: np.ndarray) -> dict:
    data = np.ascontiguousarray(matrix, dtype="<f4")
    return {"dtype": "<f4", "shape": list(data.shape), "base64": base64.b64encode(data).decode()}


def _decode(doc: dict) -> np.ndarray:
    if doc.get("dtype") != "<f4":
        raise ValueError(f"cohort dtype {doc.get('dtype')!r}, expected '<f4'")
    rows, cols = (int(n) for n in doc["shape"])
    data = np.frombuffer(base64.b64decode(doc["base64"], validate=True), dtype="<f4")
    return data.reshape(rows, cols).astype(np.float32)


def load_calibrator(path: str | Path) -> Calibrator:
    """Read a calibrator written by :func:`save_calibrator`.

    Raises:
        CalibrationError: not such a file, or a field missing or malformed (named).
    """
    path = Path(path)
    doc = read_document(path)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CalibrationError(f"{path}: not an arw-sv calibration file (no format {FORMAT!r})")
    if doc.get("version") != VERSION or doc.get("method") not in METHODS:
        raise CalibrationError(
            f"{path}: version {shorten(doc.get('version'))}, method {shorten(doc.get('method'))} "
            "not supported"
        )
    check_document(doc, path)  # every field's type, shape and range, named
    try:
        dim = int(doc["dim"])
        centroids = np.asarray(doc["centroids"], dtype=np.float64).reshape(-1, dim)
        maps = np.asarray(doc["maps"], dtype=np.float64)
        counts = np.asarray(doc["counts"], dtype=np.float64)
        fallback = np.asarray(doc["fallback"], dtype=np.float64)
        cohort = None if doc.get("cohort") is None else _decode(doc["cohort"])
        if cohort is not None and (cohort.shape[1] != dim or "top_n" not in doc["settings"]):
            raise ValueError("the AS-norm cohort does not match dim, or top_n is missing")
        calibrator = Calibrator(
            method=doc["method"],
            dim=dim,
            centroids=centroids,
            maps=maps.reshape(len(counts), -1) if len(counts) else maps.reshape(0, 3),
            counts=counts,
            fallback=fallback,
            groups=tuple(str(g) for g in doc["groups"]),
            settings=dict(doc["settings"]),
            speakers=tuple(str(s) for s in doc["speakers"]),
            fingerprint=doc["fingerprint"],
            cohort=cohort,
        )
    except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise CalibrationError(f"{path}: malformed calibration file ({exc})") from None
    arrays = (centroids, maps, counts, fallback) + (() if cohort is None else (cohort,))
    finite = all(np.isfinite(a).all() for a in arrays)
    if not finite or dim < 1:
        raise CalibrationError(f"{path}: malformed calibration file (non-finite values)")
    return calibrator


def check_compatible(
    calibrator: Calibrator,
    source: str | Path,
    dim: int,
    fingerprint: str | None,
    test_speakers: set[str],
) -> None:
    """Refuse embeddings of another model and test speakers used for calibration.

    Raises:
        CalibrationError: naming ``source`` and what differs.
    """
    if dim != calibrator.dim:
        raise CalibrationError(
            f"{source}: fitted on {calibrator.dim}-dim embeddings, these are {dim}-dim: "
            "embeddings of another model"
        )
    if fingerprint and calibrator.fingerprint and fingerprint != calibrator.fingerprint:
        raise CalibrationError(
            f"{source}: fitted on embeddings of model {calibrator.fingerprint}, these come "
            f"from model {fingerprint}; refit it on this model's calibration embeddings"
        )
    overlap = sorted(test_speakers & set(calibrator.speakers))
    if overlap:
        raise CalibrationError(
            f"{source}: {len(overlap)} test speaker(s) were calibration speakers, e.g. "
            f"{', '.join(overlap[:3])}; calibration and test speakers must be disjoint"
        )


def require_model(embeddings_path: str | Path, model: dict) -> None:
    """Refuse embeddings whose model is unknown (no readable ``<npz>.model.json`` with a
    fingerprint): a calibrator must not be tied to, or applied to, an unknown model.

    Raises:
        CalibrationError: naming the missing or broken sidecar and ``--no-model-check``.
    """
    from arw_sv.data.trials import model_sidecar

    if not isinstance(model.get("fingerprint"), str) or not model["fingerprint"]:
        raise CalibrationError(
            f"{embeddings_path}: no readable model fingerprint in {model_sidecar(embeddings_path)} "
            "(written by `arw-sv embed` beside the embeddings), so the model check cannot be "
            "made; re-embed with `arw-sv embed`, or pass --no-model-check"
        )


def calibrate_trials(
    calibration: str | Path,
    embeddings_path: str | Path,
    trials,
    scores: np.ndarray,
    embeddings: tuple[list[str], np.ndarray],
    calibrator: Calibrator | None = None,
    model_check: bool = True,
    cache: bool = True,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """LLRs of scored trials under the calibrator in file ``calibration``, after checking
    it fits these embeddings (dimension, model fingerprint) and test speakers (disjoint).
    ``calibrator``: the file's calibrator when the caller has it loaded already.
    ``model_check``: refuse when the calibrator or the embeddings name no model (the
    fingerprint check could not be made); False only applies it anyway. With ``cache``,
    AS-norm's per-utterance cohort statistics are kept across runs
    (:mod:`arw_sv.calibration.stats_cache`; the same numbers bit for bit). ``rows``: the
    trials' :func:`~arw_sv.data.trials.trial_rows` in these embeddings, when the caller has
    them (scoring computed them already).

    Shape:
        scores: (N,); embeddings matrix: (U, D) -> (N,).
    """
    from arw_sv.data.trials import read_embedding_model, speaker_of, trial_rows

    calibrator = calibrator or load_calibrator(calibration)
    ids, matrix = embeddings
    model = read_embedding_model(embeddings_path) or {}
    if model_check:
        if not calibrator.fingerprint:
            raise CalibrationError(
                f"{calibration}: names no model (fitted on embeddings without a model "
                f"sidecar), so it cannot be checked against {embeddings_path}; refit it, or "
                "pass --no-model-check to apply it anyway"
            )
        require_model(embeddings_path, model)
    sides = trial_rows(trials, ids) if rows is None else rows
    rows = np.concatenate([np.asarray(r, dtype=np.int64).reshape(-1) for r in sides])
    if rows.size != 2 * len(trials):
        raise ValueError(f"rows for {rows.size} trial sides; expected {2 * len(trials)}")
    if len(rows) and rows.min() < 0:
        raise CalibrationError(
            f"{embeddings_path}: {int((rows < 0).sum())} trial sides name utterances "
            "without an embedding"
        )
    used = np.zeros(len(ids), dtype=bool)
    used[rows] = True  # each utterance once: 145,000 ids, not 1.1 million trial sides
    test_speakers = {speaker_of(ids[i]) for i in np.flatnonzero(used)}
    check_compatible(
        calibrator, calibration, int(np.shape(matrix)[1]), model.get("fingerprint"), test_speakers
    )
    stats = None
    if calibrator.cohort is not None and len(rows) and cache:
        from arw_sv.calibration.stats_cache import cached_cohort_stats

        top_n = int(calibrator.settings["top_n"])
        stats = cached_cohort_stats(np.asarray(matrix), rows, calibrator.cohort, top_n)
    return calibrator.transform_indexed(
        scores, rows[: len(trials)], rows[len(trials) :], matrix, stats=stats
    )

"""Saving and loading calibrators as JSON (never pickle), exactly.

Floats are written with ``repr`` (Python's JSON does), so a reloaded calibrator gives the
same outputs bit for bit. The file names what it is (``format``), the embedding dimension
and the model fingerprint it was fitted for, and the calibration speakers, so that
``arw-sv score --calibration`` can refuse embeddings of another model or test speakers
that were used for calibration.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text
from arw_sv.calibration.methods import METHODS, CalibrationError, Calibrator

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
    }
    atomic_write_text(path, json.dumps(doc, allow_nan=False) + "\n")


def load_calibrator(path: str | Path) -> Calibrator:
    """Read a calibrator written by :func:`save_calibrator`.

    Raises:
        CalibrationError: not such a file, or a field missing or malformed (named).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise CalibrationError(f"calibration file not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CalibrationError(f"{path}: not a calibration file ({str(exc)[:120]})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CalibrationError(f"{path}: not an arw-sv calibration file (no format {FORMAT!r})")
    if doc.get("version") != VERSION or doc.get("method") not in METHODS:
        raise CalibrationError(
            f"{path}: version {doc.get('version')!r}, method {doc.get('method')!r} not supported"
        )
    try:
        dim = int(doc["dim"])
        centroids = np.asarray(doc["centroids"], dtype=np.float64).reshape(-1, dim)
        maps = np.asarray(doc["maps"], dtype=np.float64)
        counts = np.asarray(doc["counts"], dtype=np.float64)
        fallback = np.asarray(doc["fallback"], dtype=np.float64)
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
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: malformed calibration file ({exc})") from None
    finite = all(np.isfinite(a).all() for a in (centroids, maps, counts, fallback))
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


def calibrate_trials(
    calibration: str | Path,
    embeddings_path: str | Path,
    trials,
    scores: np.ndarray,
    embeddings: tuple[list[str], np.ndarray],
) -> np.ndarray:
    """LLRs of scored trials under the calibrator in file ``calibration``, after checking
    it fits these embeddings (dimension, model fingerprint) and test speakers (disjoint).

    Shape:
        scores: (N,); embeddings matrix: (U, D) -> (N,).
    """
    from arw_sv.data.trials import read_embedding_model, speaker_of, utterance_rows

    calibrator = load_calibrator(calibration)
    ids, matrix = embeddings
    model = read_embedding_model(embeddings_path) or {}
    test_speakers = {speaker_of(u) for u in set(trials.enroll).union(trials.test)}
    check_compatible(
        calibrator, calibration, int(np.shape(matrix)[1]), model.get("fingerprint"), test_speakers
    )
    enroll, test = utterance_rows(trials.enroll, ids), utterance_rows(trials.test, ids)
    return calibrator.transform_indexed(scores, enroll, test, matrix)

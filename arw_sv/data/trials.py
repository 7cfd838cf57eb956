"""Trial lists, score files and cosine scoring of trials.

Formats (whitespace-separated; a byte-order mark, CRLF line ends, a missing final newline,
blank lines and repeated spaces are all accepted):

- trial list (cleaned VoxCeleb1): ``<1|0> <enroll utt> <test utt>``, or a Kaldi key
  ``<enroll utt> <test utt> <target|nontarget>``;
- score files, in three formats (``SCORE_FORMATS``, detected from the first line):
  ``arw`` (written by ``arw-sv score``) ``<1|0> <enroll> <test> <score>``; ``wespeaker``
  ``<enroll> <test> <score> <target|nontarget>``; ``kaldi`` ``<enroll> <test> <score>``,
  whose labels come from a separate key (read as label -1, "unknown", until aligned).
  Scores are written with ``repr`` so that reading them back gives the same float64 bits.

An utterance id is the path below the ``wav/`` folder (``id10270/x6uYqmx31kE/00001.wav``);
its speaker is the first path component (the whole id if it has no ``/``).

Embeddings (``.npz``) come in one of two layouts: one array per utterance, keyed by the
utterance id (``np.savez(path, **{utt: vector})``, ids may contain ``/``), or two arrays
``ids`` (U strings) and ``embeddings`` (U x D), which loads much faster for large sets.

Shape legend (the package one, :mod:`arw_sv`): N trials, U utterances, D embedding dimension.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from arw_sv.atomic import atomic_write_text

log = logging.getLogger(__name__)

_SCORE_BLOCK = 16_384  # trials per block when scoring: bounds memory to a few MB
SCORE_FORMATS = ("arw", "wespeaker", "kaldi")
_KALDI_LABELS = {"target": 1, "nontarget": 0}


class TrialsError(ValueError):
    """A trial or score file is malformed; the message names file and line."""


@dataclass(frozen=True)
class Trials:
    """A list of verification trials.

    Attributes:
        labels: 1 target (same speaker), 0 non-target (-1 unknown: a Kaldi score file
            before its key is applied). Shape: (N,) int8.
        enroll: enrolment utterance ids, length N.
        test: test utterance ids, length N.
        duplicates: how many trials of the file they were read from repeat an earlier one
            exactly (same enrolment, test and label); they are kept, and counted as often as
            they appear.
    """

    labels: np.ndarray
    enroll: list[str]
    test: list[str]
    duplicates: int = 0

    def __len__(self) -> int:
        return int(self.labels.size)

    def subset(self, keep: np.ndarray) -> Trials:
        """The trials where ``keep`` is true (``duplicates`` as read). Shape: keep (N,) bool."""
        idx = np.flatnonzero(keep)
        return Trials(
            self.labels[idx],
            [self.enroll[i] for i in idx],
            [self.test[i] for i in idx],
            self.duplicates,
        )


def speaker_of(utt_id: str) -> str:
    """Speaker id of an utterance id: its first path component."""
    return utt_id.split("/", 1)[0]


def _read_lines(path: Path, data: bytes) -> list[str]:
    try:
        return data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise TrialsError(f"{path}: not UTF-8 text ({err})") from err


def _regular_columns(data: bytes, n_fields: int) -> list[list[str]] | None:
    r"""The columns of a file in the form ``write_scores`` writes, or None if it is not.

    That form: ASCII, lines of exactly ``n_fields`` non-empty fields joined by single
    spaces, ``\n`` line ends, no other whitespace or control bytes, no blank lines. The
    checks are a few vectorised passes over the bytes and one ``str.split`` makes every
    field at once, which is several times faster than splitting 550k lines one by one;
    anything else is left to the line-by-line parser, so results and errors are unchanged.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data or not data.isascii():
        return None
    codes = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(codes == 10)
    n_newlines = ends.size
    if not data.endswith(b"\n"):
        ends = np.append(ends, len(data))
    spaces = np.flatnonzero(codes == 32)
    if (
        spaces.size != (n_fields - 1) * ends.size
        or np.count_nonzero(codes <= 32) != spaces.size + n_newlines
    ):
        return None
    # Separators are sorted, so gaps of at least 2 between line start, spaces and line end,
    # row by row, mean exactly n_fields non-empty fields on every line.
    starts = np.concatenate(([-1], ends[:-1]))
    bounds = np.column_stack([starts, spaces.reshape(ends.size, n_fields - 1), ends])
    if not (np.diff(bounds, axis=1) >= 2).all():
        return None
    fields = data.decode("ascii").split()
    return [fields[k::n_fields] for k in range(n_fields)]


def _parse(path: Path, n_fields: int, expected: str) -> tuple[Sequence[int], list[list[str]]]:
    """Split lines into fields; returns (1-based line numbers, columns) of non-blank lines."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TrialsError(f"cannot read {path}: {err}") from err
    columns = _regular_columns(data, n_fields)
    if columns is not None:
        return range(1, len(columns[0]) + 1), columns
    lines = _read_lines(path, data)
    rows = [line.split() for line in lines]
    if all(len(r) == n_fields for r in rows):  # the common case, checked at C speed
        numbers = list(range(1, len(rows) + 1))
    else:
        numbers = [i for i, r in enumerate(rows, start=1) if r]
        rows = [r for r in rows if r]
        for number, fields in zip(numbers, rows, strict=True):
            if len(fields) != n_fields:
                got = lines[number - 1].strip()
                raise TrialsError(f"{path}:{number}: expected '{expected}', got {got!r}")
    if not rows:
        raise TrialsError(f"{path}: no trials")
    return numbers, [[r[k] for r in rows] for k in range(n_fields)]


def _labels(path: Path, numbers: Sequence[int], column: list[str]) -> np.ndarray:
    joined = "".join(column)
    if len(joined) == len(column) and joined.isascii():  # one character each: vectorised
        raw = np.frombuffer(joined.encode("ascii"), dtype="S1")
    else:
        raw = np.array(column)
    is_target = raw == raw.dtype.type("1")
    bad = np.flatnonzero(~is_target & (raw != raw.dtype.type("0")))
    if bad.size:
        i = int(bad[0])
        raise TrialsError(
            f"{path}:{numbers[i]}: label must be 1 (target) or 0 (non-target), got {column[i]!r}"
            + (f" ({bad.size} such lines)" if bad.size > 1 else "")
        )
    return is_target.astype(np.int8)


def _kaldi_labels(path: Path, numbers: list[int], values: list[str]) -> np.ndarray:
    labels = np.fromiter((_KALDI_LABELS.get(v.lower(), -1) for v in values), np.int8, len(values))
    bad = np.flatnonzero(labels < 0)
    if bad.size:
        i = int(bad[0])
        raise TrialsError(
            f"{path}:{numbers[i]}: label must be target or nontarget, got {values[i]!r}"
        )
    return labels


def _checked_pairs(path: Path, numbers: Sequence[int], trials: Trials) -> Trials:
    """``trials`` with its exact-duplicate count, once no pair is labelled both ways.

    A pair and its reverse are the same comparison (cosine is symmetric), so they must not
    disagree; but VoxCeleb1-O itself lists 337 pairs both ways round with one label, so
    only same-order repeats count as duplicates. Python's string hashes find the candidate
    pairs at numpy speed; only those are compared as strings.

    Raises:
        TrialsError: a pair labelled target on one line and non-target on another (both
            lines named).
    """
    n = len(trials)
    if n < 2:
        return trials
    enroll = np.fromiter(map(hash, trials.enroll), np.int64, n)
    test = np.fromiter(map(hash, trials.test), np.int64, n)
    with np.errstate(over="ignore"):
        key = np.minimum(enroll, test) * np.int64(1_000_003) ^ np.maximum(enroll, test)
    order = np.argsort(key)
    same = key[order][1:] == key[order][:-1]
    if not same.any():
        return trials
    candidate = np.zeros(n, dtype=bool)
    candidate[1:] |= same
    candidate[:-1] |= same
    first: dict[tuple[str, str], int] = {}
    exact: set[tuple[str, str, int]] = set()
    duplicates = 0
    for i in np.sort(order[candidate]).tolist():
        a, b, label = trials.enroll[i], trials.test[i], int(trials.labels[i])
        pair = (a, b) if a <= b else (b, a)
        j = first.setdefault(pair, i)
        if label >= 0 and int(trials.labels[j]) >= 0 and label != int(trials.labels[j]):
            raise TrialsError(
                f"{path}:{numbers[i]}: trial {a} {b} is labelled "
                f"{'target' if label else 'non-target'} here and "
                f"{'target' if trials.labels[j] else 'non-target'} on line {numbers[j]}"
            )
        if (a, b, label) in exact:
            duplicates += 1
        exact.add((a, b, label))
    return Trials(trials.labels, trials.enroll, trials.test, duplicates)


def read_trials(path: str | Path) -> Trials:
    """Read a trial list ``<1|0> <enroll> <test>`` or a Kaldi key ``<enroll> <test> <target|nontarget>``.

    Raises:
        TrialsError: a line without exactly three fields or with a bad label, or a pair
            labelled both target and non-target, naming ``file:line``.
    """
    path = Path(path)
    numbers, (first, second, third) = _parse(path, 3, "<1|0> <enroll> <test>")
    if third[0] in _KALDI_LABELS and first[0] not in ("0", "1"):
        trials = Trials(_kaldi_labels(path, numbers, third), first, second)
    else:
        trials = Trials(_labels(path, numbers, first), second, third)
    return _checked_pairs(path, numbers, trials)


_SCORE_LAYOUTS = {  # format -> (fields, expected line, enroll/test/score columns)
    "arw": (4, "<1|0> <enroll> <test> <score>", (1, 2, 3)),
    "wespeaker": (4, "<enroll> <test> <score> <target|nontarget>", (0, 1, 2)),
    "kaldi": (3, "<enroll> <test> <score>", (0, 1, 2)),
}


def _is_number(text: str) -> bool:
    if "_" in text:  # Python's float() reads 1_000; no score writer does
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def detect_score_format(path: str | Path) -> str:
    """``arw``, ``wespeaker`` or ``kaldi``, from the first non-blank line of a score file.

    Raises:
        TrialsError: the line fits none of them, naming ``file:line``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:  # only up to the first non-blank line
            for number, raw in enumerate(handle, start=1):  # noqa: B007 (used below)
                if raw.strip():
                    break
            else:
                raise TrialsError(f"{path}: no trials")
    except OSError as err:
        raise TrialsError(f"cannot read {path}: {err}") from err
    try:
        line = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TrialsError(f"{path}:{number}: not UTF-8 text ({err})") from err
    fields = line.split()
    if fields:
        if len(fields) == 4:
            return "wespeaker" if fields[3].lower() in _KALDI_LABELS else "arw"
        if len(fields) == 3 and _is_number(fields[2]):
            return "kaldi"
    raise TrialsError(
        f"{path}:{number}: expected "
        + ", ".join(f"'{v[1]}' ({k})" for k, v in _SCORE_LAYOUTS.items())
        + f"; got {line.strip()!r}"
    )


def read_scores(path: str | Path, fmt: str | None = None) -> tuple[Trials, np.ndarray]:
    """Read a score file in any of ``SCORE_FORMATS`` (``fmt=None``: detected).

    Returns:
        ``(trials, scores)``; scores as float64; labels -1 for ``kaldi`` (no labels).
        Shape: scores (N,).

    Raises:
        TrialsError: malformed line, bad label, unparsable, NaN or infinite score,
            naming ``file:line``.
    """
    path = Path(path)
    fmt = fmt or detect_score_format(path)
    if fmt not in _SCORE_LAYOUTS:
        raise ValueError(f"unknown score format {fmt!r}; one of {', '.join(SCORE_FORMATS)}")
    n_fields, expected, (ce, ct, cs) = _SCORE_LAYOUTS[fmt]
    numbers, columns = _parse(path, n_fields, expected)
    values = columns[cs]
    if fmt == "arw":
        labels = _labels(path, numbers, columns[0])
    elif fmt == "wespeaker":
        labels = _kaldi_labels(path, numbers, columns[3])
    else:
        labels = np.full(len(values), -1, dtype=np.int8)
    try:
        if any("_" in v for v in values):
            raise ValueError("a digit separator")
        scores = np.fromiter(map(float, values), dtype=np.float64, count=len(values))
    except ValueError:
        for number, value in zip(numbers, values, strict=True):
            if not _is_number(value):
                raise TrialsError(
                    f"{path}:{number}: score {value!r} is not a number ({fmt} format: '{expected}')"
                ) from None
        raise
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        i = int(bad[0])
        raise TrialsError(
            f"{path}:{numbers[i]}: score is {values[i]!r}; scores must be finite"
            + (f" ({bad.size} such lines)" if bad.size > 1 else "")
        )
    return _checked_pairs(path, numbers, Trials(labels, columns[ce], columns[ct])), scores


def write_scores(path: str | Path, trials: Trials, scores: np.ndarray, fmt: str = "arw") -> None:
    """Write a score file in one of ``SCORE_FORMATS``, atomically (temp file + rename).

    Shape:
        scores: (N,), N = len(trials).
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if fmt not in _SCORE_LAYOUTS:
        raise ValueError(f"unknown score format {fmt!r}; one of {', '.join(SCORE_FORMATS)}")
    if scores.size != len(trials):
        raise ValueError(f"{scores.size} scores for {len(trials)} trials")
    if not np.isfinite(scores).all():
        raise ValueError("refusing to write NaN or infinite scores")
    labels = trials.labels.tolist()
    if fmt != "kaldi" and min(labels, default=0) < 0:
        raise ValueError(f"the {fmt} format needs labels; these trials have none (apply a key)")
    # str.join over map/zip: the loop runs in C (about 2x an f-string generator on 551k rows).
    values = map(repr, scores.tolist())
    if fmt == "arw":
        columns = (map(str, labels), trials.enroll, trials.test, values)
    elif fmt == "wespeaker":
        names = ("nontarget", "target")
        columns = (trials.enroll, trials.test, values, map(names.__getitem__, labels))
    else:
        columns = (trials.enroll, trials.test, values)
    lines = map(" ".join, zip(*columns, strict=True))
    atomic_write_text(path, "\n".join(lines) + ("\n" if len(trials) else ""))


def model_sidecar(embeddings: str | Path) -> Path:
    """``<embeddings>.model.json``: what ``arw-sv embed`` records about the model."""
    embeddings = Path(embeddings)
    return embeddings.with_name(embeddings.name + ".model.json")


def read_embedding_model(path: str | Path) -> dict | None:
    """The sidecar of an ``.npz`` written by ``arw-sv embed`` (``fingerprint``, ``dim``,
    ``source``), or None when there is none or it is unreadable.
    """
    import json

    try:
        info = json.loads(model_sidecar(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def utterance_rows(names: Sequence[str], ids: Sequence[str]) -> np.ndarray:
    """Row of each name in ``ids`` (-1 where absent). Shape: (N,)."""
    return _rows(names, dict(zip(ids, range(len(ids)), strict=True)))


def _rows(names: Sequence[str], index: dict[str, int]) -> np.ndarray:
    try:  # C-speed lookups while every name is there
        return np.fromiter(map(index.__getitem__, names), dtype=np.int64, count=len(names))
    except KeyError:
        return np.fromiter((index.get(u, -1) for u in names), dtype=np.int64, count=len(names))


def trial_rows(trials: Trials, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows in ``ids`` of each trial's enrolment and test utterance (-1 where absent), from
    one index of the ids. Computed once, they serve both the scoring and the calibration of
    the same trials (``rows=`` of :func:`score_trial_list` and ``calibrate_trials``): the
    lookups of 1.1M trial sides are most of what scoring costs beyond parsing.

    Shape: (N,), (N,).
    """
    index = dict(zip(ids, range(len(ids)), strict=True))
    return _rows(trials.enroll, index), _rows(trials.test, index)


def read_embeddings(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read utterance embeddings from ``.npz`` (either layout, see module docstring).

    Returns:
        ``(ids, matrix)``. Shape: matrix (U, D).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if {"ids", "embeddings"} <= names:
                ids = [str(x) for x in npz["ids"]]
                matrix = np.asarray(npz["embeddings"])
            else:
                ids = list(npz.files)
                vectors = [np.asarray(npz[k]).reshape(-1) for k in ids]
                matrix = np.stack(vectors) if ids else np.empty((0, 0))
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        first = next(iter(str(exc).splitlines()), type(exc).__name__)
        raise TrialsError(f"{path}: not a readable embeddings .npz ({first[:200]})") from None
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise ValueError(f"{path}: expected one embedding vector per id, got shape {matrix.shape}")
    from arw_sv.data.embedding_checks import check_embeddings

    return check_embeddings(path, ids, matrix, TrialsError)


class ScoredTrials(NamedTuple):
    """What ``score_trial_list`` returns: the trials scored, their scores, how many skipped."""

    trials: Trials
    scores: np.ndarray
    n_skipped: int


def score_trial_list(
    trials: Trials,
    embeddings: Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray],
    allow_missing: bool = False,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScoredTrials:
    """Cosine scores of trials from utterance embeddings (vectorised), with the kept trials.

    Args:
        trials: the trial list.
        embeddings: utterance id -> vector, or ``(ids, matrix)``.
        allow_missing: skip trials naming an utterance without an embedding (their
            number is returned) instead of failing.
        rows: :func:`trial_rows` of these trials and ids, when the caller has them.

    Returns:
        ``ScoredTrials(trials, scores, n_skipped)``; ``trials`` is the input, or the kept
        subset when trials were skipped, in the same order as ``scores``.

    Raises:
        KeyError: utterances are missing and ``allow_missing`` is false; the message gives
            how many trials and utterances, and the first few ids.

    Shape:
        matrix: (U, D); scores: (N,) float64.
    """
    if isinstance(embeddings, Mapping):
        ids = list(embeddings)
        matrix = np.stack([np.asarray(embeddings[k]).reshape(-1) for k in ids])
    else:
        ids, matrix = list(embeddings[0]), np.asarray(embeddings[1])
    if rows is None:
        e, t = trial_rows(trials, ids)
    else:
        e, t = (np.asarray(r, dtype=np.int64) for r in rows)
        if e.shape != (len(trials),) or t.shape != (len(trials),):
            raise ValueError(f"rows for {e.shape} and {t.shape} trials; expected {len(trials)}")
    missing = (e < 0) | (t < 0)
    n_missing = int(missing.sum())
    if n_missing:
        absent = sorted(
            {u for u, i in zip(trials.enroll, e.tolist(), strict=True) if i < 0}
            | {u for u, i in zip(trials.test, t.tolist(), strict=True) if i < 0}
        )
        if not allow_missing:
            raise KeyError(
                f"{n_missing} of {len(trials)} trials name utterances without an embedding "
                f"({len(absent)} utterances, first: {', '.join(absent[:5])}); "
                "pass allow_missing=True (--allow-missing) to skip them"
            )
        log.warning(
            "skipped %d of %d trials naming %d utterances without an embedding",
            n_missing,
            len(trials),
            len(absent),
        )
        trials = trials.subset(~missing)
        e, t = e[~missing], t[~missing]
    # Squares summed in float64 without a float64 copy of the whole matrix (223 MB at
    # 145,000 x 192): the same norms to an ulp.
    norms = np.sqrt(np.einsum("ud,ud->u", matrix, matrix, dtype=np.float64))
    scores = np.empty(e.size, dtype=np.float64)
    for start in range(0, e.size, _SCORE_BLOCK):
        ea, ta = e[start : start + _SCORE_BLOCK], t[start : start + _SCORE_BLOCK]
        dots = np.einsum("nd,nd->n", matrix[ea].astype(np.float64), matrix[ta].astype(np.float64))
        scores[start : start + ea.size] = dots / np.maximum(norms[ea] * norms[ta], 1e-12)
    return ScoredTrials(trials, scores, n_missing)


def score_trials(
    trials: Trials,
    embeddings: Mapping[str, np.ndarray] | tuple[Sequence[str], np.ndarray],
    allow_missing: bool = False,
) -> np.ndarray:
    """Cosine scores of trials from utterance embeddings (vectorised).

    With ``allow_missing`` the scores of skipped trials are left out (a warning gives
    their number); use ``score_trial_list`` to get the kept trials alongside.

    Raises:
        KeyError: utterances are missing and ``allow_missing`` is false (count and the
            first few ids in the message).

    Shape:
        output: (N,) float64, N = len(trials) unless trials were skipped.
    """
    return score_trial_list(trials, embeddings, allow_missing).scores

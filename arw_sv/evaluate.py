"""The evaluation's library wiring: EER, minDCF and fairness report of trial scores.

Reads and checks the inputs (score files aligned with a trial list, AS-norm over the
trials' embeddings), builds the report (``report.json``, schema in ``docs/evaluation.md``)
and writes it with ``report.md`` and PNG plots. The maths lives in ``arw_sv.metrics``;
the command line is ``arw-sv eval`` (:mod:`arw_sv.cli.eval`).

Library use (e.g. from the demo)::

    report = evaluate_scores(scores, labels, enroll_ids, test_ids, read_speaker_meta(path))
    write_report(report, "runs/demo/eval")
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from arw_sv.atomic import atomic_write_bytes
from arw_sv.data.meta import SpeakerInfo
from arw_sv.data.trials import Trials, read_scores, read_trials, speaker_of

if TYPE_CHECKING:
    from arw_sv.metrics.groups import Grouping

# The metrics (scipy) are imported by the functions that use them, so that reading and
# checking the inputs costs numpy only.


def speaker_indices(
    enroll_ids: Sequence[str], test_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Speaker index of every trial side, and the speaker ids in order of first appearance.

    Speaker = first path component (``speaker_of``). ASCII ids whose speakers have at most
    8 bytes (VoxCeleb's ``id10270``, CN-Celeb's, LibriSpeech's) take a vectorised path, the
    speaker packed into one ``uint64``; any other ids the dict-based one. Both give the
    same result (``tests/test_trials_reader.py``).

    Shape:
        outputs: (N,), (N,).
    """
    packed = _packed_speakers([enroll_ids, test_ids])
    if packed is None:
        return _speaker_indices_by_dict(enroll_ids, test_ids)
    keys, names = packed
    codes, distinct = _first_seen_codes(keys)
    n = len(enroll_ids)
    return codes[:n], codes[n:], names(distinct)


def _speaker_indices_by_dict(
    enroll_ids: Sequence[str], test_ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`speaker_indices` for any ids (hashing the speaker prefix of each)."""
    enroll_spk = [u.partition("/")[0] for u in enroll_ids]
    test_spk = [u.partition("/")[0] for u in test_ids]
    index: dict[str, int] = dict.fromkeys(enroll_spk)  # C-speed passes, first-seen order
    index.update(dict.fromkeys(test_spk))
    for i, speaker in enumerate(index):
        index[speaker] = i

    def column(speakers: list[str]) -> np.ndarray:
        return np.fromiter(map(index.__getitem__, speakers), dtype=np.int64, count=len(speakers))

    return column(enroll_spk), column(test_spk), list(index)


# uint64 masks keeping the first k bytes of a little-endian 8-byte word, k = 0..8.
_BYTE_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)


def _packed_speakers(columns: Sequence[Sequence[str]]):
    """Each id's speaker as one uint64 (its bytes, zero-padded), or None if that can't be.

    One join of all ids; the newlines found by numpy; each id's first 8 bytes read as one
    unaligned little-endian word, and the speaker cut at the first '/' or newline in it. Needs ASCII ids without a newline or
    NUL (so that distinct speakers get distinct words) and speakers of at most 8 bytes.

    Returns:
        ``(keys, names)``: keys of shape (N,) over all columns in order, and a function
        giving the speaker name of each key in an array of keys.
    """
    n = sum(len(c) for c in columns)
    if n == 0:
        return None
    # The NUL padding is for the last 8-byte read; a NUL inside an id would alias.
    text = "\n".join("\n".join(c) for c in columns if len(c)) + "\n"
    if not text.isascii() or "\0" in text:
        return None
    raw = (text + "\0" * 8).encode("ascii")
    del text
    codes = np.frombuffer(raw, dtype=np.uint8)[:-8]
    ends = np.flatnonzero(codes == 10)
    if ends.size != n:
        return None
    starts = np.empty(n, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    # The speaker ends at the first '/' or newline among the 9 bytes from each start.
    words = np.ndarray((codes.size,), dtype="<u8", buffer=raw, strides=(1,))
    heads = words[starts]
    lengths = np.full(n, 9, dtype=np.int64)
    for k in range(8, -1, -1):  # downwards: the first separator wins
        byte = (
            codes[np.minimum(starts + 8, codes.size - 1)]
            if k == 8
            else (heads >> np.uint64(8 * k)) & np.uint64(0xFF)
        )
        lengths[(byte == 47) | (byte == 10)] = k
    if lengths.max() > 8:
        return None
    keys = heads & _BYTE_MASKS[lengths]

    def names(distinct: np.ndarray) -> list[str]:
        return [b.decode("ascii") for b in distinct.astype("<u8").view("S8").tolist()]

    return keys, names


def _first_seen_codes(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of each key among the distinct keys ordered by first appearance.

    Returns:
        ``(codes, distinct)``: codes (N,) int64; distinct (U,) the keys in first-seen order.
    """
    distinct, inverse = np.unique(keys, return_inverse=True)
    first = np.full(distinct.size, keys.size, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(keys.size))
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[inverse], distinct[order]


def speaker_groupings(
    speakers: Sequence[str],
    meta: Mapping[str, SpeakerInfo] | None,
    min_speakers: int = 5,
    nationality_map: Mapping[str, str] | None = None,
    group_by: Sequence[Sequence[str]] | None = None,
    bins: Mapping[str, Sequence[float]] | None = None,
    source: str = "speaker metadata",
) -> list[Grouping]:
    """The groupings of ``speakers`` (``arw_sv.data.attributes.speaker_groups``): by
    default gender, pooled nationality and gender x nationality.
    """
    from arw_sv.data.attributes import speaker_groups
    from arw_sv.metrics.groups import Grouping

    if not meta:
        if group_by:
            raise ValueError(f"--group-by {','.join(group_by[0])} needs speaker metadata (--meta)")
        return []
    found = speaker_groups(
        speakers, meta, group_by, bins, min_speakers, nationality_map, source=source
    )
    return [Grouping.from_values(g.name, g.values, g.notes, g.order) for g in found]


def evaluate_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    enroll_ids: Sequence[str],
    test_ids: Sequence[str],
    speaker_meta: Mapping[str, SpeakerInfo] | None = None,
    *,
    min_speakers: int = 5,
    group_rule: str = "both",
    nationality_map: Mapping[str, str] | None = None,
    bootstrap: int = 0,
    confidence: float = 0.95,
    embeddings: tuple[Sequence[str], np.ndarray] | None = None,
    cohorts: int = 0,
    seed: int = 0,
    det_points: int = 100,
    group_by: Sequence[Sequence[str]] | None = None,
    bins: Mapping[str, Sequence[float]] | None = None,
    meta_source: str = "speaker metadata",
) -> dict:
    """The full evaluation report of scored trials, as a dict (``report.json``).

    Args:
        scores: trial scores.
        labels: 1 target, 0 non-target.
        enroll_ids: enrolment utterance ids (speaker = first path component).
        test_ids: test utterance ids.
        speaker_meta: from ``read_speaker_meta``; ``None`` reports overall numbers only.
        min_speakers: nationalities with fewer speakers (in these trials) are pooled into
            "others"; any group with fewer speakers is left out of disparity measures.
        group_rule: ``"both"`` or ``"enroll"`` (see ``arw_sv.metrics.groups``).
        nationality_map: relabelling applied before pooling (``{"Norway": "France"}``).
        bootstrap: number of speaker resamples for confidence intervals (0 = none).
        confidence: level of the intervals.
        embeddings: utterance ``(ids, matrix)``, needed for cohort discovery.
        cohorts: number of k-means cohorts (0 = no cohort discovery).
        seed: seed for resampling and k-means.
        det_points: points kept per DET curve in the report.
        group_by: attribute specs to group by (``[("age_band",), ("gender", "age_band")]``,
            ``arw_sv.data.attributes``); None: gender, nationality and their cross.
        bins: numeric attribute -> band edges (``{"age": (0, 18, 60, 200)}`` makes
            ``age_band``).
        meta_source: the metadata's file, named in errors.

    Raises:
        ValueError: a group-by attribute none of the trials' speakers has, or a value
            that its bins cannot place.

    Shape:
        scores, labels: (N,); embeddings matrix: (U, D).
    """
    from arw_sv.metrics import fairness_report, kmeans_cohorts, speaker_means

    enroll_spk, test_spk, speakers = speaker_indices(enroll_ids, test_ids)
    index = {s: i for i, s in enumerate(speakers)}
    groupings = speaker_groupings(
        speakers, speaker_meta, min_speakers, nationality_map, group_by, bins, meta_source
    )
    cohort_labels = None
    if cohorts:
        if embeddings is None:
            raise ValueError("cohort discovery needs embeddings")
        ids, matrix = embeddings
        rows = [i for i, u in enumerate(ids) if speaker_of(u) in index]
        owner = np.array([index[speaker_of(ids[i])] for i in rows], dtype=np.int64)
        means = speaker_means(np.asarray(matrix)[rows], owner, len(speakers))
        cohort_labels = kmeans_cohorts(means, cohorts, seed)
    report = fairness_report(
        scores,
        labels,
        enroll_spk,
        test_spk,
        groupings,
        group_rule=group_rule,
        min_speakers=min_speakers,
        bootstrap=bootstrap,
        confidence=confidence,
        cohort_labels=cohort_labels,
        seed=seed,
        det_points=det_points,
    )
    unknown = [s for s in speakers if speaker_meta is not None and s not in speaker_meta]
    report["inputs"] = {
        "n_trials": int(np.size(scores)),
        "n_speakers": len(speakers),
        "speakers_without_metadata": {"count": len(unknown), "first": unknown[:5]},
        "metadata": speaker_meta is not None,
    }
    return report


def calibrated_section(
    llr: np.ndarray,
    labels: np.ndarray,
    enroll_ids: Sequence[str],
    test_ids: Sequence[str],
    speaker_meta: Mapping[str, SpeakerInfo] | None,
    *,
    file: str | Path,
    method: str,
    **kwargs,
) -> dict:
    """``report["calibrated"]``: the report of calibrated scores (``kwargs`` as
    :func:`evaluate_scores`'s, without its ``inputs``), the calibrator's file and method.

    Shape:
        llr, labels: (N,).
    """
    report = evaluate_scores(llr, labels, enroll_ids, test_ids, speaker_meta, **kwargs)
    report.pop("inputs", None)
    return {"file": str(file), "method": method, "report": report}


def write_report(report: dict, out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``report.json``, ``report.md`` and (optionally) PNG plots, each atomically.

    Returns:
        The paths written.
    """
    from arw_sv.metrics.render import render_markdown, render_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # allow_nan=False: an undefined value must be None, never a NaN that JSON can't hold.
    text = json.dumps(report, indent=1, allow_nan=False)
    atomic_write_bytes(out / "report.json", (text + "\n").encode())
    atomic_write_bytes(out / "report.md", render_markdown(report).encode())
    written = [out / "report.json", out / "report.md"]
    if plots:
        for name, png in render_plots(report).items():
            atomic_write_bytes(out / name, png)
            written.append(out / name)
    return written


def align_scores(
    scores_path: Path, trials_path: Path, allow_missing: bool, fmt: str | None = None
) -> tuple[Trials, np.ndarray, int]:
    """Scores of the trial list's trials, looked up in a score file by (enroll, test).

    Returns:
        The trials found (all of them unless ``allow_missing``), their scores and the
        number skipped.

    Raises:
        KeyError: a trial is not in the score file (without ``allow_missing``).
        ValueError: a trial's label differs between the two files.
    """
    scored, values = read_scores(scores_path, fmt)
    lookup = {(e, t): i for i, (e, t) in enumerate(zip(scored.enroll, scored.test, strict=True))}
    trials = read_trials(trials_path)
    idx = np.fromiter(
        (lookup.get(k, -1) for k in zip(trials.enroll, trials.test, strict=True)),
        dtype=np.int64,
        count=len(trials),
    )
    missing = idx < 0
    if missing.any():
        first = [f"{trials.enroll[i]} {trials.test[i]}" for i in np.flatnonzero(missing)[:3]]
        if not allow_missing:
            raise KeyError(
                f"{int(missing.sum())} of {len(trials)} trials of {trials_path} are not in "
                f"{scores_path} (first: {'; '.join(first)}); --allow-missing skips them"
            )
        trials, idx = trials.subset(~missing), idx[~missing]
    # A Kaldi score file has no labels (-1): the key's are the only ones.
    wrong = np.flatnonzero((scored.labels[idx] >= 0) & (scored.labels[idx] != trials.labels))
    if wrong.size:
        raise ValueError(
            f"{wrong.size} trials have different labels in {scores_path} and {trials_path}"
        )
    return trials, values[idx], int(missing.sum())


def as_norm_trials(
    trials: Trials,
    scores: np.ndarray,
    embeddings: tuple[Sequence[str], np.ndarray],
    cohort: np.ndarray,
    top_n: int = 300,
) -> np.ndarray:
    """AS-norm (``arw_sv.metrics.as_norm``) of scored trials whose utterances are embedded.

    Shape:
        scores: (N,); embeddings matrix: (U, D); cohort: (C, D); output: (N,).
    """
    from arw_sv.metrics import as_norm

    ids, matrix = embeddings
    row = {u: i for i, u in enumerate(ids)}
    enroll = [row[u] for u in trials.enroll]
    test = [row[u] for u in trials.test]
    return as_norm(scores, enroll, test, matrix, cohort, top_n)

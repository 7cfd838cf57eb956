"""Utterance manifests: one CSV row per utterance with its speaker and groups.

Columns: ``utt_id, path, speaker, duration, gender, nationality, split``, then the
optional ``session`` (the recording session where known: VoxCeleb's YouTube id, a
LibriSpeech chapter) and ``start`` (seconds into ``path`` where the utterance begins, for
Kaldi ``segments``; written only when some utterance has one). ``utt_id`` is the path below
the ``wav/`` folder (``id10001/1zcIwhmdeo4/00001.wav``), as trial lists name it; its first
``/`` component is the speaker. A relative ``path`` is resolved against the manifest's own
folder, so a corpus and its manifest can be moved together.

Other corpus layouts (Kaldi, LibriSpeech, a plain CSV) become manifests in
``arw_sv.data.corpora``.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from arw_sv.atomic import atomic_open

log = logging.getLogger(__name__)

COLUMNS = ("utt_id", "path", "speaker", "duration", "gender", "nationality", "split")
OPTIONAL_COLUMNS = ("session", "start")
AUDIO_SUFFIXES = (".wav", ".flac")


class ManifestError(ValueError):
    """A manifest (or the folder it is built from) is invalid; names the file and line."""


@dataclass(frozen=True)
class Utterance:
    """One manifest row."""

    utt_id: str
    path: str
    speaker: str
    duration: float
    gender: str
    nationality: str
    split: str
    session: str = ""  # "" where the corpus does not say
    start: float = 0.0  # seconds into ``path`` (a Kaldi segment); 0 for a whole file


class Manifest(Sequence[Utterance]):
    """An ordered, immutable list of utterances with speaker indexing helpers."""

    def __init__(self, utterances: Iterable[Utterance]) -> None:
        self._utts = tuple(utterances)
        self.speakers = sorted({u.speaker for u in self._utts})
        self._speaker_index = {s: i for i, s in enumerate(self.speakers)}

    def __len__(self) -> int:
        return len(self._utts)

    def __getitem__(self, index):  # type: ignore[override]
        return self._utts[index]

    def speaker_indices(self) -> list[int]:
        """Class index (position in the sorted speaker list) of every utterance."""
        return [self._speaker_index[u.speaker] for u in self._utts]

    def speaker_attribute(self, name: str) -> list[str]:
        """Per speaker (in ``self.speakers`` order) the value of ``gender``/``nationality``."""
        values: dict[str, str] = {}
        for u in self._utts:
            values.setdefault(u.speaker, getattr(u, name))
        return [values[s] for s in self.speakers]

    def subset(self, split: str) -> Manifest:
        """Only the utterances of one split (``dev`` or ``test``)."""
        return Manifest(u for u in self._utts if u.split == split)


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest CSV, checking columns and values.

    Raises:
        ManifestError: missing file or column, or a malformed row, naming file and line.
    """
    path = Path(path)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ManifestError(
                f"{path}: missing column(s) {', '.join(missing)}; a manifest needs "
                f"{', '.join(COLUMNS)}"
            )
        reader.fieldnames = header
        rows = []
        first_line: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            try:
                duration = float(row["duration"])
            except (TypeError, ValueError):
                raise ManifestError(
                    f"{path}:{line}: duration {row['duration']!r} is not a number"
                ) from None
            if not (math.isfinite(duration) and duration >= 0):
                raise ManifestError(
                    f"{path}:{line}: duration {row['duration']!r} must be a finite number >= 0"
                )
            if any(row[c] in (None, "") for c in ("utt_id", "path", "speaker")):
                raise ManifestError(f"{path}:{line}: empty utt_id, path or speaker")
            if row["utt_id"] in first_line:
                raise ManifestError(
                    f"{path}:{line}: duplicate utt_id {row['utt_id']!r} "
                    f"(first on line {first_line[row['utt_id']]})"
                )
            first_line[row["utt_id"]] = line
            try:
                start = float(row.get("start") or 0.0)
            except ValueError:
                raise ManifestError(
                    f"{path}:{line}: start {row['start']!r} is not a number"
                ) from None
            audio = Path(row["path"])
            if not audio.is_absolute():
                audio = path.parent / audio
            rows.append(
                Utterance(
                    utt_id=row["utt_id"],
                    path=str(audio),
                    speaker=row["speaker"],
                    duration=duration,
                    gender=row["gender"] or "unknown",
                    nationality=row["nationality"] or "unknown",
                    split=row["split"] or "unknown",
                    session=row.get("session") or "",
                    start=start,
                )
            )
    if not rows:
        raise ManifestError(f"{path}: no utterances")
    return Manifest(rows)


def write_manifest(manifest: Iterable[Utterance], path: str | Path) -> None:
    """Write a manifest CSV atomically (``start`` only when some utterance is a segment)."""
    manifest = list(manifest)
    segments = any(u.start for u in manifest)
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS + (OPTIONAL_COLUMNS if segments else OPTIONAL_COLUMNS[:1]))
        for u in manifest:
            row = [u.utt_id, u.path, u.speaker, f"{u.duration:.3f}", u.gender, u.nationality]
            row += [u.split, u.session] + ([f"{u.start:.3f}"] if segments else [])
            writer.writerow(row)


def build_manifest(
    corpus: str | Path,
    meta_path: str | Path,
    splits: Sequence[str] = ("dev", "test"),
) -> Manifest:
    """Scan a VoxCeleb-layout folder and attach gender, nationality and split from metadata.

    Args:
        corpus: a folder holding ``wav/<speaker>/<session>/<utt>.wav`` (or the ``wav`` folder
            itself).
        meta_path: ``vox1_meta.csv`` / ``vox2_meta.csv`` format metadata (or a manifest).
        splits: the metadata ``Set`` values to keep.

    Raises:
        ManifestError: no audio found, or speakers missing from the metadata (with a count).
    """
    from arw_sv.data.meta import read_speaker_meta

    corpus = Path(corpus)
    wav_root = corpus / "wav" if (corpus / "wav").is_dir() else corpus
    files = sorted(p for p in wav_root.glob("*/*/*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ManifestError(f"{wav_root}: no audio found as <speaker>/<session>/<utt>.wav")
    meta = read_speaker_meta(meta_path)
    unknown = sorted({f.parts[-3] for f in files} - set(meta))
    if unknown:
        raise ManifestError(
            f"{meta_path}: {len(unknown)} speaker(s) under {wav_root} are not in the metadata, "
            f"e.g. {', '.join(unknown[:5])}"
        )
    from arw_sv.audio import audio_info  # here: arw_sv.audio imports torch, the CLI need not

    utts = []
    for f in files:
        info = meta[f.parts[-3]]
        if info.set not in splits:
            continue
        frames, rate, _channels = audio_info(f)
        utts.append(
            Utterance(
                utt_id="/".join(f.parts[-3:]),
                path=str(f.resolve()),
                speaker=f.parts[-3],
                duration=frames / rate,
                gender=info.gender or "unknown",
                nationality=info.nationality or "unknown",
                split=info.set,
                session=f.parts[-2],
            )
        )
    log.info("manifest: %d utterances of %d files under %s", len(utts), len(files), wav_root)
    return Manifest(utts)

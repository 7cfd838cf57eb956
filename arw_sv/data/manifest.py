"""Utterance manifests: one CSV row per utterance with its speaker and groups.

Columns: ``utt_id, path, speaker, duration, gender, nationality, split``, then the
optional ``session`` (the recording session where known: VoxCeleb's YouTube id, a
LibriSpeech chapter) and ``start`` (seconds into ``path`` where the utterance begins, for
Kaldi ``segments``; written only when some utterance has one), then any further per-speaker
attribute (``age``, ``accent``, ...; :data:`ATTRIBUTE_NAME`), one column each, in name
order. ``utt_id`` is the path below
the ``wav/`` folder (``id10001/1zcIwhmdeo4/00001.wav``), as trial lists name it; its first
``/`` component is the speaker. A relative ``path`` is resolved against the manifest's own
folder, so a corpus and its manifest can be moved together.

Other corpus layouts (Kaldi, LibriSpeech, a plain CSV) become manifests in
``arw_sv.data.corpora``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from arw_sv.atomic import atomic_open
from arw_sv.data import tables
from arw_sv.data.columns import ATTRIBUTE_NAME, MISSING, NOT_ATTRIBUTES

log = logging.getLogger(__name__)

COLUMNS = ("utt_id", "path", "speaker", "duration", "gender", "nationality", "split")
OPTIONAL_COLUMNS = ("session", "start")
MAX_SECONDS = 1_000_000  # an utterance's duration and start at most (11.6 days)
AUDIO_SUFFIXES = (".wav", ".flac")


class ManifestError(ValueError):
    """A manifest (or the folder it is built from) is invalid; names the file and line."""


def _bad_id(value: str) -> str | None:
    """Why ``value`` cannot be a speaker id, or None."""
    if not value:
        return "is empty"
    if any(c in value for c in "/\\"):
        return "contains a path separator"
    if any(c.isspace() for c in value):
        return "contains white space"
    return None


def check_attribute_name(name: str, where: str | Path) -> str:
    """``name`` if it can be a further attribute (``ATTRIBUTE_NAME``, not a core column).

    Raises:
        ManifestError: naming ``where`` and the name.
    """
    if not ATTRIBUTE_NAME.fullmatch(name) or name in NOT_ATTRIBUTES:
        raise ManifestError(
            f"{where}: {name!r} cannot be an attribute name (lower-case letters, digits and "
            f"'_', starting with a letter; not one of {', '.join(sorted(NOT_ATTRIBUTES))})"
        )
    return name


def _place(utts: Sequence[Utterance], lines: Sequence[int] | None, i: int) -> str:
    return f"line {lines[i]}" if lines is not None else f"utterance {utts[i].utt_id!r}"


def validate_utterances(
    utts: Sequence[Utterance], source: str | Path, lines: Sequence[int] | None = None
) -> None:
    """Check what every manifest must satisfy, whatever reader produced it.

    Each utterance: a speaker id without path separators or white space; an ``utt_id``
    without white space whose first ``/`` component is its speaker (trial lists and
    ``arw-sv eval`` take the speaker from it); a finite duration and start >= 0; ids
    unique. Each speaker: one gender, one nationality and one value of every further
    attribute over all its utterances (:data:`MISSING` where an utterance lacks it).

    Args:
        utts: the utterances.
        source: the file (or folder) they come from, for the message.
        lines: each utterance's line in ``source``, when known.

    Raises:
        ManifestError: the first violation, naming ``source`` and the line or utterance.
    """
    first: dict[str, int] = {}
    attributes: dict[str, tuple[int, str, str]] = {}
    names = sorted({name for u in utts for name, _ in u.attributes})
    for name in names:
        check_attribute_name(name, source)
    extras: dict[str, tuple[int, dict[str, str]]] = {}

    def where(i: int) -> str:
        return f"{source}:{lines[i]}" if lines is not None else f"{source}: {utts[i].utt_id!r}"

    for i, u in enumerate(utts):
        fields = (u.utt_id, u.path, u.speaker, u.gender, u.nationality, u.split, u.session)
        if any("\0" in str(v) for v in fields):
            raise ManifestError(f"{where(i)}: contains a NUL byte")
        why = _bad_id(u.speaker)
        if why:
            raise ManifestError(f"{where(i)}: speaker id {u.speaker!r} {why}")
        if not u.utt_id or any(c.isspace() for c in u.utt_id):
            raise ManifestError(
                f"{where(i)}: utterance id {u.utt_id!r} is empty or contains white space "
                "(trial lists are space-separated)"
            )
        if u.utt_id.split("/", 1)[0] != u.speaker:
            raise ManifestError(
                f"{where(i)}: utterance id {u.utt_id!r} must start with its speaker "
                f"{u.speaker!r} and a '/'"
            )
        if not 0 <= u.duration <= MAX_SECONDS:  # also NaN; 1e300 s overflows samplers
            raise ManifestError(
                f"{where(i)}: duration {u.duration} must be in [0, {MAX_SECONDS}] s"
            )
        if not 0 <= u.start <= MAX_SECONDS:
            raise ManifestError(f"{where(i)}: start {u.start} must be in [0, {MAX_SECONDS}] s")
        if u.utt_id in first:
            j = first[u.utt_id]
            raise ManifestError(
                f"{where(i)}: duplicate utt_id {u.utt_id!r} (first on {_place(utts, lines, j)})"
            )
        first[u.utt_id] = i
        seen = attributes.setdefault(u.speaker, (i, u.gender, u.nationality))
        if seen[1:] != (u.gender, u.nationality):
            raise ManifestError(
                f"{where(i)}: speaker {u.speaker!r} is {u.gender}/{u.nationality} here but "
                f"{seen[1]}/{seen[2]} at {_place(utts, lines, seen[0])}"
            )
        if names:
            mine = dict(u.attributes)
            j, theirs = extras.setdefault(u.speaker, (i, mine))
            for name in names:
                a, b = mine.get(name, MISSING), theirs.get(name, MISSING)
                if a != b:
                    raise ManifestError(
                        f"{where(i)}: speaker {u.speaker!r} has {name} {a!r} here but {b!r} "
                        f"at {_place(utts, lines, j)}"
                    )


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
    # Further per-speaker attributes as sorted (name, value) pairs: ``(("age", "34"),)``;
    # an attribute the utterance lacks is "unknown" (MISSING).
    attributes: tuple[tuple[str, str], ...] = ()

    def attribute(self, name: str) -> str:
        """The value of ``gender``, ``nationality`` or a further attribute (or "unknown")."""
        if name in ("gender", "nationality"):
            return getattr(self, name)
        return dict(self.attributes).get(name, MISSING)


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

    @property
    def attribute_names(self) -> list[str]:
        """``gender``, ``nationality`` and the further attributes, in name order."""
        extra = {name for u in self._utts for name, _ in u.attributes}
        return ["gender", "nationality", *sorted(extra)]

    def speaker_attribute(self, name: str) -> list[str]:
        """Per speaker (in ``self.speakers`` order) the value of an attribute.

        Raises:
            KeyError: no utterance has the attribute, naming those there are.
        """
        if name not in self.attribute_names:
            raise KeyError(
                f"no speaker attribute {name!r} (the manifest has {', '.join(self.attribute_names)})"
            )
        values: dict[str, str] = {}
        for u in self._utts:
            values.setdefault(u.speaker, u.attribute(name))
        return [values[s] for s in self.speakers]

    def subset(self, split: str) -> Manifest:
        """Only the utterances of one split (``dev`` or ``test``)."""
        return Manifest(u for u in self._utts if u.split == split)


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest CSV, checking columns and values (:func:`validate_utterances`).

    Raises:
        ManifestError: missing file or column, or a malformed row, naming file and line.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = tables.csv_header(reader, path, ManifestError)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)}; a manifest needs {', '.join(COLUMNS)}"
        )
    reader.fieldnames = header
    extra = [c for c in header if c not in COLUMNS + OPTIONAL_COLUMNS]
    for name in extra:
        check_attribute_name(name, f"{path}:1")
    rows, lines = [], []
    for line, row in enumerate(tables.csv_rows(reader, path, ManifestError), start=2):
        if None in row or any(row[c] is None for c in COLUMNS):
            raise ManifestError(f"{path}:{line}: expected {len(header)} fields")
        duration = _number(row["duration"], "duration", f"{path}:{line}")
        start = _number(row.get("start") or "0", "start", f"{path}:{line}")
        if any(row[c] in (None, "") for c in ("utt_id", "path", "speaker")):
            raise ManifestError(f"{path}:{line}: empty utt_id, path or speaker")
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
                attributes=tuple((c, row[c]) for c in sorted(extra) if row[c] not in ("", MISSING)),
            )
        )
        lines.append(line)
    if not rows:
        raise ManifestError(f"{path}: no utterances")
    validate_utterances(rows, path, lines)
    return Manifest(rows)


def _number(text: str | None, name: str, where: str) -> float:
    try:
        value = float(text or "")
    except ValueError:
        raise ManifestError(f"{where}: {name} {text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise ManifestError(f"{where}: {name} {text!r} must be a finite number >= 0")
    return value


def write_manifest(manifest: Iterable[Utterance], path: str | Path) -> None:
    """Write a manifest CSV atomically (``start`` only when some utterance is a segment)."""
    manifest = list(manifest)
    validate_utterances(manifest, f"refusing to write {path}")
    segments = any(u.start for u in manifest)
    extra = Manifest(manifest).attribute_names[2:]
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        header = COLUMNS + (OPTIONAL_COLUMNS if segments else OPTIONAL_COLUMNS[:1])
        writer.writerow(header + tuple(extra))
        for u in manifest:
            row = [u.utt_id, u.path, u.speaker, f"{u.duration:.3f}", u.gender, u.nationality]
            row += [u.split, u.session] + ([f"{u.start:.3f}"] if segments else [])
            writer.writerow(row + [u.attribute(name) for name in extra])


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
    validate_utterances(utts, wav_root)
    return Manifest(utts)

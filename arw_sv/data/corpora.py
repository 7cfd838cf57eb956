"""Manifests from corpora as users keep them: Kaldi/WeSpeaker data dirs, LibriSpeech, CSV.

Every reader returns the same :class:`~arw_sv.data.manifest.Manifest` as the VoxCeleb
scanner (``build_manifest``), so training, trials and evaluation never see the layout.
An ``utt_id`` always starts with ``<speaker>/`` (trial lists and ``arw-sv eval`` take the
speaker from the first path component): LibriSpeech ids are the path below the corpus
folder (``103/1240/103-1240-0000.flac``); Kaldi and CSV ids are prefixed with the speaker
unless they already start with it (``spk1/spk1-utt1``).

- **kaldi**: ``wav.scp`` (``<recording> <path>``; a pipe command ``... |`` is refused unless
  ``allow_pipes``), ``utt2spk``, and optionally ``segments`` (``<utt> <recording> <start>
  <end>``; the recording becomes the session), ``utt2dur``, ``spk2gender`` (``m``/``f``),
  ``spk2nationality`` and ``utt2session`` (arw-sv's additions, same two-column form).
  Relative paths in ``wav.scp`` are taken from the working directory (as Kaldi recipes
  write them), else from the data directory.
- **librispeech** (and LibriTTS): ``<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
  (``_`` separators and ``.wav`` for LibriTTS); gender and subset from ``SPEAKERS.TXT``
  (in the folder or its parent); the chapter is the session; a ``train-*`` subset is split
  ``dev`` (VoxCeleb's name for the training split, which ``fit`` keeps) and ``dev-*`` /
  ``test-*`` subsets are split ``test``.
- **csv**: a header with ``path`` and ``speaker``, optional ``utt_id``, ``duration``,
  ``gender``, ``nationality``, ``split``, ``session``; relative paths from the CSV's folder.

Any format takes a speaker-attribute table (``speakers``: CSV with ``speaker`` and any of
``gender``, ``nationality``, ``split`` and further attributes such as ``age``) whose values
override the corpus's own; an empty cell keeps the corpus's value.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from arw_sv.atomic import atomic_path
from arw_sv.data.manifest import (
    AUDIO_SUFFIXES,
    Manifest,
    ManifestError,
    Utterance,
    check_attribute_name,
    validate_utterances,
)
from arw_sv.data.tables import csv_header, csv_rows

# hf: arw_sv.data.hf; lhotse: arw_sv.data.lhotse_manifests (optional extras).
FORMATS = ("voxceleb", "kaldi", "librispeech", "csv", "hf", "lhotse")
# Kaldi segment ends may overshoot their file by rounding; beyond this much it is an error.
_SEGMENT_SLACK = 0.05
_GENDERS = {"m": "m", "male": "m", "f": "f", "female": "f"}
_GENDERS |= {"male_masculine": "m", "female_feminine": "f"}  # Common Voice's spelling


def gender_value(value: str, where: str) -> str:
    """``m``, ``f`` or ``unknown`` from a corpus's spelling (``male``, ``F``, ...).

    Raises:
        ManifestError: any other value, naming ``where``.
    """
    value = value.strip().lower()
    if value in ("", "unknown", "u", "n/a"):
        return "unknown"
    if value not in _GENDERS:
        raise ManifestError(f"{where}: gender {value!r} is not m/f (or male/female)")
    return _GENDERS[value]


def _seconds(value: str, where: str, what: str = "duration") -> float:
    """A finite number of seconds >= 0 (a duration, a segment's start or end)."""
    try:
        seconds = float(value)
    except ValueError:
        raise ManifestError(f"{where}: {what} {value!r} is not a number") from None
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ManifestError(f"{where}: {what} {value!r} must be a finite number >= 0")
    return seconds


def _decode(path: Path, what: str = "") -> str:
    """A text file's content; a missing, unreadable or non-UTF-8 file is one line naming it."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(f"cannot read {what}{path}: {err.strerror or err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _checked(utts: list[Utterance], source: Path | str, lines: Sequence[int] | None = None):
    """``utts`` as a Manifest once :func:`validate_utterances` accepts them."""
    validate_utterances(utts, source, lines)
    return Manifest(utts)


def _utt_id(speaker: str, name: str) -> str:
    return name if name.startswith(speaker + "/") else f"{speaker}/{name}"


def _duration(path: str, start: float = 0.0) -> float:
    from arw_sv.audio import audio_info  # here: arw_sv.audio imports torch, the CLI need not

    frames, rate, _ = audio_info(path)
    return frames / rate - start


def read_table(path: Path, n_fields: int | None = 2) -> list[tuple[int, list[str]]]:
    """Kaldi-style table lines as ``(line number, [key, rest...])``, blank lines skipped.

    With ``n_fields`` = 2 the value is the rest of the line (so it may hold spaces).

    Raises:
        ManifestError: unreadable file, or a line with the wrong number of fields.
    """
    lines = _decode(path).splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if "\0" in line:
            raise ManifestError(f"{path}:{number}: contains a NUL byte")
        fields = line.split(None, 1) if n_fields == 2 else line.split()
        if n_fields is not None and len(fields) != n_fields:
            raise ManifestError(
                f"{path}:{number}: expected {n_fields} fields, got {line.strip()!r}"
            )
        rows.append((number, [f.strip() for f in fields]))
    return rows


def _mapping(path: Path, parse: Callable[[str, str], object] = lambda v, w: v) -> dict:
    out = {}
    for number, (key, value) in read_table(path):
        if key in out:
            raise ManifestError(f"{path}:{number}: {key} appears twice")
        out[key] = parse(value, f"{path}:{number}")
    return out


def _csv_rows(path: Path, required: tuple[str, ...], what: str = "") -> csv.DictReader:
    """Rows of a CSV (BOM allowed) keyed by lower-cased column names; refuses a file that
    lacks a ``required`` column, naming it.
    """
    text = _decode(path, what)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.lower() for h in csv_header(reader, path, ManifestError)]
    missing = [c for c in required if c not in header]
    if missing:
        raise ManifestError(f"{path}:1: missing column(s) {', '.join(missing)}; header {header}")
    reader.fieldnames = header
    return reader


def _numbered(reader: csv.DictReader, path: Path):
    """``(line, row)`` of a CSV's rows (``line`` where the row starts)."""
    line = 2
    for row in csv_rows(reader, path, ManifestError):
        yield line, row
        line = reader.line_num + 1


def read_speaker_table(path: str | Path) -> dict[str, dict[str, str]]:
    """A speaker-attribute CSV: ``speaker`` plus any of ``gender``, ``nationality``, ``split``
    and further attributes (any other column, named as
    :data:`arw_sv.data.columns.ATTRIBUTE_NAME` allows).

    Returns:
        Speaker -> {column: value} for the non-empty cells.
    """
    path = Path(path)
    reader = _csv_rows(path, ("speaker",), "speaker table ")
    columns = [c for c in reader.fieldnames if c != "speaker"]
    for column in columns:
        if column not in ("gender", "nationality", "split"):
            check_attribute_name(column, f"{path}:1")
    table: dict[str, dict[str, str]] = {}
    first: dict[str, int] = {}
    for number, row in _numbered(reader, path):
        if None in row or any(v is None for v in row.values()):
            raise ManifestError(f"{path}:{number}: expected {len(reader.fieldnames)} fields")
        speaker = row["speaker"].strip()
        if not speaker:
            raise ManifestError(f"{path}:{number}: empty speaker")
        if speaker in first:
            raise ManifestError(
                f"{path}:{number}: speaker {speaker} is listed twice (first on line "
                f"{first[speaker]})"
            )
        first[speaker] = number
        values = {}
        for column in columns:
            if row.get(column, "").strip():
                value = row[column].strip()
                values[column] = (
                    gender_value(value, f"{path}:{number}") if column == "gender" else value
                )
        table[speaker] = values
    return table


def apply_speaker_table(utts: list[Utterance], path: str | Path | None) -> Manifest:
    """``utts`` with the speaker table's values (``read_speaker_table``) replacing theirs."""
    if path is None:
        return Manifest(utts)  # each reader has validated its own
    from dataclasses import replace

    table = read_speaker_table(path)
    core = ("gender", "nationality", "split")

    def updated(u: Utterance) -> Utterance:
        values = table.get(u.speaker, {})
        extra = dict(u.attributes) | {k: v for k, v in values.items() if k not in core}
        fields = {k: v for k, v in values.items() if k in core}
        return replace(u, **fields, attributes=tuple(sorted(extra.items())))

    return _checked([updated(u) for u in utts], path)


def _pipe_target(pipe_root: Path, rec: str, where: str) -> Path:
    """Where recording ``rec``'s piped audio goes: ``<pipe_root>/<rec>.wav`` (a long id
    shortened and made unique with a digest), refusing an id that would put it anywhere
    else (a separator, ``..``, an absolute path).
    """
    if not rec or any(c in rec for c in "/\\\0") or rec in (".", "..") or rec.startswith("-"):
        raise ManifestError(
            f"{where}: recording id {rec!r} cannot name a file in the pipe folder (no path "
            "separators, '..' or leading '-'); rename the recording"
        )
    name = rec
    if len(rec.encode("utf-8", "surrogatepass")) > 100:  # file names stop at 255 bytes
        digest = hashlib.sha1(rec.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        name = f"{rec[:40]}-{digest}"
    target = pipe_root / f"{name}.wav"
    if target.resolve().parent != pipe_root.resolve():
        raise ManifestError(f"{where}: recording id {rec!r} leaves the pipe folder {pipe_root}")
    return target


def _run_pipe(command: str, out: Path, where: str) -> str:
    """Run a ``wav.scp`` pipe into ``out``, atomically: a failing command leaves nothing."""
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        done = subprocess.run(command, shell=True, stdout=handle, stderr=subprocess.PIPE)
        if done.returncode:
            message = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ManifestError(f"{where}: command failed ({done.returncode}): {message[0]}")
    return str(out.resolve())


def read_kaldi(
    data_dir: str | Path,
    *,
    split: str = "dev",
    speakers: str | Path | None = None,
    allow_pipes: bool = False,
    pipe_dir: str | Path | None = None,
) -> Manifest:
    """A Kaldi / WeSpeaker data directory as a manifest (see module docstring).

    Args:
        data_dir: the folder with ``wav.scp`` and ``utt2spk``.
        split: the ``split`` of every utterance (a speaker table may override it).
        speakers: an optional speaker-attribute CSV.
        allow_pipes: run ``wav.scp`` pipe commands, writing their output (a wav) into
            ``pipe_dir``; refused otherwise.
        pipe_dir: where piped recordings go (default ``<data_dir>/wav_from_pipes``).

    Raises:
        ManifestError: a missing or malformed file, unknown ids, a missing audio file or a
            refused pipe, naming file and line.
    """
    root = Path(data_dir)
    for name in ("wav.scp", "utt2spk"):
        if not (root / name).is_file():
            raise ManifestError(f"{root}: no {name}; a Kaldi data directory needs wav.scp, utt2spk")
    pipe_root = Path(pipe_dir) if pipe_dir else root / "wav_from_pipes"
    recordings: dict[str, tuple[str, str]] = {}  # id -> (path, "file:line")
    for number, (rec, target) in read_table(root / "wav.scp"):
        where = f"{root / 'wav.scp'}:{number}"
        if rec in recordings:
            raise ManifestError(f"{where}: recording {rec} appears twice")
        if target.endswith("|"):
            if not allow_pipes:
                raise ManifestError(
                    f"{where}: {rec} is a pipe command ({target!r}); arw-sv reads audio files "
                    "only: convert the recordings to wav/flac, or pass --allow-pipes to run "
                    "the commands"
                )
            path = _run_pipe(target[:-1], _pipe_target(pipe_root, rec, where), where)
        else:
            # Kaldi recipes write paths relative to the recipe folder (the working
            # directory); fall back to the data directory for self-contained copies.
            path = Path(target)
            try:  # a name the file system refuses (too long, ...) is a bad line, too
                if not path.is_absolute():
                    path = path if path.is_file() else root / path
                path = str(path.resolve())
                found = Path(path).is_file()
            except (OSError, ValueError) as exc:
                raise ManifestError(
                    f"{where}: unusable audio path ({getattr(exc, 'strerror', None) or exc})"
                ) from None
            if not found:
                raise ManifestError(f"{where}: audio file not found: {target}")
        recordings[rec] = (path, where)
    _mapping(root / "utt2spk")  # rejects an utterance listed twice, naming the line
    gender = _mapping(root / "spk2gender", gender_value) if (root / "spk2gender").is_file() else {}
    nationality = _mapping(root / "spk2nationality") if (root / "spk2nationality").is_file() else {}
    session = _mapping(root / "utt2session") if (root / "utt2session").is_file() else {}
    durations = _mapping(root / "utt2dur", _seconds) if (root / "utt2dur").is_file() else {}
    segments: dict[str, tuple[str, float, float, str]] = {}
    if (root / "segments").is_file():
        lengths: dict[str, float] = {}  # recording -> seconds, read once each
        for number, fields in read_table(root / "segments", n_fields=4):
            where = f"{root / 'segments'}:{number}"
            utt, rec = fields[0], fields[1]
            if utt in segments:
                raise ManifestError(
                    f"{where}: utterance {utt} appears twice (first at {segments[utt][3]})"
                )
            if rec not in recordings:
                raise ManifestError(f"{where}: recording {rec} is not in wav.scp")
            begin = _seconds(fields[2], where, "segment start")
            try:
                to_the_end = float(fields[3]) == -1.0  # Kaldi's "until the end of the file"
            except ValueError:
                to_the_end = False
            end = -1.0 if to_the_end else _seconds(fields[3], where, "segment end")
            if end != -1.0 and end <= begin:
                raise ManifestError(f"{where}: segment {begin}..{end} is empty or negative")
            if rec not in lengths:
                lengths[rec] = _duration(recordings[rec][0])
            length = lengths[rec]
            if begin >= length or end > length + _SEGMENT_SLACK:
                raise ManifestError(
                    f"{where}: segment {fields[2]}..{fields[3]} lies outside recording {rec} "
                    f"({length:.3f} s)"
                )
            end = length if end == -1.0 else min(end, length)
            segments[utt] = (rec, begin, end, where)
    utts, lines = [], []
    for number, (utt, speaker) in read_table(root / "utt2spk"):
        where = f"{root / 'utt2spk'}:{number}"
        if len(speaker.split()) != 1:
            raise ManifestError(f"{where}: expected '<utt> <speaker>', got {utt} {speaker}")
        if segments:
            if utt not in segments:
                raise ManifestError(f"{where}: utterance {utt} is not in segments")
            rec, begin, end, _ = segments[utt]
        elif utt in recordings:
            rec, begin, end = utt, 0.0, -1.0
        else:
            raise ManifestError(f"{where}: utterance {utt} is not in wav.scp")
        path = recordings[rec][0]
        if utt in durations:
            duration = durations[utt]
        elif segments:
            duration = end - begin
        else:
            duration = _duration(path, begin)
        utts.append(
            Utterance(
                utt_id=_utt_id(speaker, utt),
                path=path,
                speaker=speaker,
                duration=duration,
                gender=gender.get(speaker, "unknown"),
                nationality=nationality.get(speaker, "unknown"),
                split=split,
                session=session.get(utt, rec if segments else ""),
                start=begin,
            )
        )
        lines.append(number)
    if not utts:
        raise ManifestError(f"{root / 'utt2spk'}: no utterances")
    _checked(utts, root / "utt2spk", lines)
    return apply_speaker_table(utts, speakers)


def _speakers_txt(root: Path) -> Path | None:
    for folder in (root, root.parent):
        for name in ("SPEAKERS.TXT", "SPEAKERS.txt", "speakers.txt"):
            if (folder / name).is_file():
                return folder / name
    return None


def read_librispeech_speakers(path: Path) -> dict[str, tuple[str, str]]:
    """``SPEAKERS.TXT``: speaker -> (gender, subset); ``;`` lines are comments."""
    out: dict[str, tuple[str, str]] = {}
    first: dict[str, int] = {}
    for number, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 3 or not fields[0]:
            raise ManifestError(
                f"{path}:{number}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line[:80]!r}"
            )
        entry = (gender_value(fields[1], f"{path}:{number}"), fields[2])
        if fields[0] in out and out[fields[0]] != entry:
            raise ManifestError(
                f"{path}:{number}: speaker {fields[0]} is {'/'.join(entry)} here but "
                f"{'/'.join(out[fields[0]])} on line {first[fields[0]]}"
            )
        out[fields[0]], first[fields[0]] = entry, number
    return out


def _libri_file(f: Path) -> bool:
    if f.suffix.lower() not in AUDIO_SUFFIXES or len(f.parts) < 3:
        return False
    speaker, chapter = f.parts[-3], f.parts[-2]
    return any(f.stem.startswith(f"{speaker}{s}{chapter}{s}") for s in "-_")


def read_librispeech(
    corpus: str | Path, *, speakers: str | Path | None = None, meta: str | Path | None = None
) -> Manifest:
    """A LibriSpeech / LibriTTS folder as a manifest (see module docstring).

    Args:
        corpus: the corpus folder (``LibriSpeech``) or one subset (``train-clean-100``).
        speakers: an optional speaker-attribute CSV (e.g. with nationality).
        meta: ``SPEAKERS.TXT`` when it is not in ``corpus`` or its parent.

    Raises:
        ManifestError: no audio in the layout, no ``SPEAKERS.TXT``, or speakers missing from it.
    """
    root = Path(corpus)
    files = sorted(f for f in root.rglob("*") if _libri_file(f))
    if not files:
        raise ManifestError(
            f"{root}: no audio found as <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac"
        )
    table = Path(meta) if meta else _speakers_txt(root)
    if table is None:
        raise ManifestError(f"{root}: no SPEAKERS.TXT here or in the parent folder (--meta)")
    info = read_librispeech_speakers(table)
    unknown = sorted({f.parts[-3] for f in files} - set(info))
    if unknown:
        raise ManifestError(
            f"{table}: {len(unknown)} speaker(s) under {root} are not listed, "
            f"e.g. {', '.join(unknown[:5])}"
        )
    utts = []
    for f in files:
        speaker, chapter = f.parts[-3], f.parts[-2]
        gender, subset = info[speaker]
        split = "dev" if subset.startswith("train") else "test"
        utts.append(
            Utterance(
                utt_id="/".join(f.parts[-3:]),
                path=str(f.resolve()),
                speaker=speaker,
                duration=_duration(str(f)),
                gender=gender,
                nationality="unknown",
                split=split,
                session=chapter,
            )
        )
    _checked(utts, root)
    return apply_speaker_table(utts, speakers)


def read_corpus_csv(
    path: str | Path, *, split: str = "dev", speakers: str | Path | None = None
) -> Manifest:
    """A plain CSV (``path``, ``speaker``, optional attributes) as a manifest; a ``start``
    column (a manifest's segments) is kept, so two segments of one file stay two.

    Raises:
        ManifestError: missing columns, an empty value, a missing audio file, a bad
            duration or a repeated ``utt_id``, naming file and line.
    """
    path = Path(path)
    reader = _csv_rows(path, ("path", "speaker"))
    utts, seen, lines = [], {}, []
    for number, row in _numbered(reader, path):
        where = f"{path}:{number}"
        if None in row or any(v is None for v in row.values()):
            raise ManifestError(f"{where}: expected {len(reader.fieldnames)} fields")
        row = {k: v.strip() for k, v in row.items()}
        if not row["path"] or not row["speaker"]:
            raise ManifestError(f"{where}: empty path or speaker")
        audio = Path(row["path"])
        audio = audio if audio.is_absolute() else path.parent / audio
        if not audio.is_file():
            raise ManifestError(f"{where}: audio file not found: {row['path']}")
        speaker = row["speaker"]
        name = row.get("utt_id") or (
            Path(row["path"]).as_posix() if not Path(row["path"]).is_absolute() else audio.name
        )
        utt_id = _utt_id(speaker, name)
        if utt_id in seen:
            raise ManifestError(
                f"{where}: utterance id {utt_id} repeats line {seen[utt_id]}; add a utt_id column"
            )
        seen[utt_id] = number
        duration = _seconds(row["duration"], where) if row.get("duration") else None
        start = _seconds(row["start"], where, "start") if row.get("start") else 0.0  # a segment
        utts.append(
            Utterance(
                utt_id=utt_id,
                path=str(audio.resolve()),
                speaker=speaker,
                duration=_duration(str(audio), start) if duration is None else duration,
                start=start,
                gender=gender_value(row.get("gender", ""), where),
                nationality=row.get("nationality") or "unknown",
                split=row.get("split") or split,
                session=row.get("session", ""),
            )
        )
        lines.append(number)
    if not utts:
        raise ManifestError(f"{path}: no utterances")
    _checked(utts, path, lines)
    return apply_speaker_table(utts, speakers)


def detect_format(source: str | Path) -> str:
    """The corpus format of ``source`` when only one fits.

    Raises:
        ManifestError: none or several formats fit (pass ``--format``).
    """
    source = Path(source)
    if not source.exists():
        raise ManifestError(f"corpus not found: {source}")
    if source.is_file():
        if source.suffix.lower() in (".csv", ".parquet"):
            return {".csv": "csv", ".parquet": "hf"}[source.suffix.lower()]
        if "cuts" in source.name and source.name.endswith((".jsonl.gz", ".jsonl")):
            return "lhotse"
        raise ManifestError(
            f"{source}: a file corpus must be a .csv (path, speaker, ...), a .parquet dataset "
            "or a Lhotse cuts manifest"
        )
    fits = []
    if (source / "state.json").is_file() or any(source.glob("*.parquet")):
        fits.append("hf")
    if any(source.glob("*cuts*.jsonl*")) or any(source.glob("*supervisions*.jsonl*")):
        fits.append("lhotse")
    if (source / "wav.scp").is_file():
        fits.append("kaldi")
    if _speakers_txt(source) is not None:
        fits.append("librispeech")
    wav = source / "wav"
    if wav.is_dir() or any(f.suffix.lower() == ".wav" for f in source.glob("id*/*/*")):
        fits.append("voxceleb")
    if len(fits) != 1:
        what = "none" if not fits else " and ".join(fits)
        raise ManifestError(
            f"{source}: cannot tell the corpus format ({what} fit); pass --format "
            f"{'|'.join(FORMATS)}"
        )
    return fits[0]

"""Lhotse manifests as a manifest: recordings + supervisions, or cuts.

The k2/icefall convention: ``RecordingSet`` / ``SupervisionSet`` / ``CutSet`` files
(``.jsonl.gz``, ``.jsonl``, ``.json``), read with ``lhotse`` (the ``lhotse`` extra:
``pip install 'arw-sv[lhotse]'``). ``source`` is a folder holding one
``*recordings*`` and one ``*supervisions*`` file, or one ``*cuts*`` file, or that cuts file.

- Every supervision is an utterance ``<speaker>/<supervision id>``: its offset and duration
  become the segment (``start``, ``duration``) in its recording's file; in a cut, the
  supervision's offset is added to the cut's and the segment kept within the cut. The
  recording id is the session.
- ``speaker`` is required; ``gender`` fills gender, ``custom["nationality"]`` nationality;
  ``language`` and every other ``custom`` key become further speaker attributes (a speaker
  with two values of one is refused by the validator, as always).
- A recording must be one local file (``type: file``; a relative path is taken from the
  working directory, as Lhotse writes them, else from the manifest's folder). A URL, an
  in-memory or Shar source is refused; a command is refused unless ``allow_pipes`` (the
  Kaldi ``wav.scp`` pipe rule: its output is written into ``pipe_dir``).
- Supervisions of two speakers that overlap in one recording (or cut) are refused unless
  ``allow_overlap``: the segment would hold both voices.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from arw_sv.data.corpora import (
    _SEGMENT_SLACK,
    _pipe_target,
    _run_pipe,
    _utt_id,
    apply_speaker_table,
    gender_value,
)
from arw_sv.data.manifest import (
    MISSING,
    Manifest,
    ManifestError,
    Utterance,
    check_attribute_name,
    validate_utterances,
)

_SUFFIXES = (".jsonl.gz", ".jsonl", ".json")


def _lhotse():
    try:
        import lhotse
    except ImportError:
        raise ManifestError(
            "reading Lhotse manifests needs lhotse: pip install 'arw-sv[lhotse]'"
        ) from None
    return lhotse


def _find(root: Path, kind: str) -> list[Path]:
    return sorted(p for p in root.iterdir() if kind in p.name and p.name.endswith(_SUFFIXES))


def _load(path: Path):
    try:
        return _lhotse().load_manifest(path)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ManifestError(f"{path}: not a Lhotse manifest ({exc})") from None


class _Recordings:
    """Each recording's local file, resolved once (and a pipe run once)."""

    def __init__(self, manifest: Path, allow_pipes: bool, pipe_dir: str | Path | None) -> None:
        self.manifest = manifest
        self.allow_pipes = allow_pipes
        self.pipe_root = Path(pipe_dir) if pipe_dir else manifest.parent / "wav_from_pipes"
        self.files: dict[str, str] = {}

    def file(self, recording) -> str:
        if recording.id not in self.files:
            self.files[recording.id] = self._resolve(recording)
        return self.files[recording.id]

    def _resolve(self, recording) -> str:
        where = f"{self.manifest}: recording {recording.id}"
        if len(recording.sources) != 1:
            raise ManifestError(
                f"{where}: {len(recording.sources)} sources (one file per channel); arw-sv "
                "reads recordings of one file"
            )
        if recording.transforms:
            raise ManifestError(
                f"{where}: has transforms (speed, volume, ...); arw-sv reads the file as is"
            )
        source = recording.sources[0]
        if source.type == "command":
            if not self.allow_pipes:
                raise ManifestError(
                    f"{where}: source is a command ({source.source!r}); arw-sv reads audio "
                    "files only: convert the recordings, or pass --allow-pipes to run it"
                )
            target = _pipe_target(self.pipe_root, recording.id, where)
            return _run_pipe(source.source, target, where)
        if source.type != "file":
            what = {"url": "a URL", "memory": "audio held in memory"}.get(source.type, source.type)
            raise ManifestError(
                f"{where}: source is {what} ({str(source.source)[:80]!r}); arw-sv reads local "
                "audio files: download or save them first"
            )
        path = Path(source.source)
        if not path.is_absolute() and not path.is_file():
            path = self.manifest.parent / path
        if not path.is_file():
            raise ManifestError(f"{where}: audio file not found: {source.source}")
        return str(path.resolve())


def _attributes(sup, where: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """``(gender, nationality, further attributes)`` of one supervision."""
    values: dict[str, str] = {}
    if sup.language:
        values["language"] = str(sup.language)
    for key, value in (sup.custom or {}).items():
        if value is None or value == "":
            continue
        if isinstance(value, dict | list):
            raise ManifestError(f"{where}: custom {key!r} is not a single value ({value!r})")
        name = check_attribute_name(str(key).lower(), f"{where}: custom key")
        values[name] = f"{value:g}" if isinstance(value, float) else str(value)
    gender = gender_value(values.pop("gender", sup.gender or ""), f"{where}: gender")
    nationality = values.pop("nationality", MISSING)
    return gender, nationality, tuple(sorted(values.items()))


def _overlaps(segments: list[tuple[float, float, str, str]], where: str) -> None:
    """Refuse two speakers' segments ``(start, end, speaker, id)`` that overlap."""
    active: list[tuple[float, float, str, str]] = []
    for seg in sorted(segments):
        active = [a for a in active if a[1] > seg[0]]
        other = next((a for a in active if a[2] != seg[2]), None)
        if other is not None:
            raise ManifestError(
                f"{where}: supervisions {other[3]} ({other[2]}, {other[0]:.2f}-{other[1]:.2f} s) "
                f"and {seg[3]} ({seg[2]}, {seg[0]:.2f}-{seg[1]:.2f} s) overlap; "
                "--allow-overlap keeps both"
            )
        active.append(seg)


def _utterance(sup, recording, path: str, start: float, end: float, where: str, split: str):
    if not sup.speaker:
        raise ManifestError(f"{where}: supervision {sup.id} has no speaker")
    if end > recording.duration + _SEGMENT_SLACK or end <= start:
        raise ManifestError(
            f"{where}: supervision {sup.id} ({start:.3f}-{end:.3f} s) lies outside recording "
            f"{recording.id} ({recording.duration:.3f} s)"
        )
    gender, nationality, extra = _attributes(sup, f"{where}: supervision {sup.id}")
    return Utterance(
        utt_id=_utt_id(str(sup.speaker), sup.id),
        path=path,
        speaker=str(sup.speaker),
        duration=min(end, recording.duration) - start,
        gender=gender,
        nationality=nationality,
        split=split,
        session=recording.id,
        start=start,
        attributes=extra,
    )


def _from_cuts(cuts: Iterable, path: Path, files: _Recordings, split: str, allow_overlap: bool):
    utts = []
    for cut in cuts:
        where = f"{path}: cut {cut.id}"
        if not hasattr(cut, "recording") or cut.recording is None:
            raise ManifestError(f"{where}: not a mono cut of one recording (mixed or padding)")
        if not cut.supervisions:
            raise ManifestError(f"{where}: has no supervision, so no speaker")
        segments = []
        for sup in cut.supervisions:
            start = cut.start + max(sup.start, 0.0)
            end = cut.start + min(sup.end, cut.duration)
            utt = _utterance(
                sup, cut.recording, files.file(cut.recording), start, end, where, split
            )
            utts.append(utt)
            segments.append((start, end, utt.speaker, sup.id))
        if not allow_overlap:
            _overlaps(segments, where)
    return utts


def _from_supervisions(
    recordings, supervisions, path: Path, files: _Recordings, split: str, allow_overlap: bool
):
    utts, by_recording = [], {}
    for sup in supervisions:
        where = str(path)
        if sup.recording_id not in recordings:
            raise ManifestError(f"{where}: supervision {sup.id}: no recording {sup.recording_id}")
        recording = recordings[sup.recording_id]
        start, end = max(sup.start, 0.0), sup.end
        utt = _utterance(sup, recording, files.file(recording), start, end, where, split)
        utts.append(utt)
        by_recording.setdefault(recording.id, []).append((start, end, utt.speaker, sup.id))
    if not allow_overlap:
        for rec, segments in by_recording.items():
            _overlaps(segments, f"{path}: recording {rec}")
    return utts


def read_lhotse(
    source: str | Path,
    *,
    split: str = "dev",
    speakers: str | Path | None = None,
    allow_overlap: bool = False,
    allow_pipes: bool = False,
    pipe_dir: str | Path | None = None,
) -> Manifest:
    """Lhotse recordings + supervisions, or cuts, as a manifest (see module docstring).

    Args:
        source: a folder with ``*recordings*`` and ``*supervisions*`` files or one
            ``*cuts*`` file; or a cuts file.
        split: the ``split`` of every utterance.
        speakers: an optional speaker-attribute CSV.
        allow_overlap: keep supervisions of two speakers that overlap.
        allow_pipes: run ``command`` recording sources (into ``pipe_dir``).
        pipe_dir: where piped recordings go (default ``wav_from_pipes`` by the manifest).

    Raises:
        ManifestError: a missing manifest, a supervision without a speaker, overlapping
            speakers, a URL or command source, a segment outside its recording, naming the
            file and the cut, recording or supervision.
    """
    root = Path(source)
    if root.is_dir():
        cuts, recs, sups = (
            _find(root, "cuts"),
            _find(root, "recordings"),
            _find(root, "supervisions"),
        )
        if len(recs) == 1 and len(sups) == 1:
            recordings, supervisions = _load(recs[0]), _load(sups[0])
            files = _Recordings(recs[0], allow_pipes, pipe_dir)
            utts = _from_supervisions(
                recordings, supervisions, sups[0], files, split, allow_overlap
            )
            return _checked(utts, sups[0], speakers)
        if len(cuts) != 1:
            raise ManifestError(
                f"{root}: expected one *recordings* and one *supervisions* manifest, or one "
                f"*cuts* manifest (.jsonl.gz); found {len(recs)}, {len(sups)} and {len(cuts)}"
            )
        root = cuts[0]
    if not root.is_file():
        raise ManifestError(f"Lhotse manifest not found: {root}")
    cuts = _load(root)
    if not isinstance(cuts, _lhotse().CutSet):
        raise ManifestError(
            f"{root}: a {type(cuts).__name__} alone has no speakers; give a cuts manifest, or "
            "a folder with recordings and supervisions"
        )
    utts = _from_cuts(cuts, root, _Recordings(root, allow_pipes, pipe_dir), split, allow_overlap)
    return _checked(utts, root, speakers)


def _checked(utts: list[Utterance], source: Path, speakers) -> Manifest:
    if not utts:
        raise ManifestError(f"{source}: no supervisions")
    validate_utterances(utts, source)
    return apply_speaker_table(utts, speakers)

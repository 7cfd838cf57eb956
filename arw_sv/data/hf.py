"""Hugging Face ``datasets`` as a manifest: a folder saved with ``save_to_disk``, or parquet.

Common Voice, VoxPopuli, FLEURS and most new corpora arrive as a dataset with an ``Audio``
column and speaker / gender / age / accent columns. The tables are read with ``pyarrow``
(the ``hf`` extra: ``pip install 'arw-sv[hf]'``), never through ``datasets``' own decoding,
which needs ``torchcodec`` and an FFmpeg a fresh machine lacks. An ``Audio`` column is
stored as ``{bytes, path}``:

- **bytes** (audio embedded in the dataset) are decoded with soundfile (a rate under
  :data:`MIN_RATE` is refused) and written as a file into ``audio_dir``, one per row,
  the original bytes when they are already 16 kHz mono WAV
  or FLAC, else the samples down-mixed and resampled to 16 kHz
  (:func:`arw_sv.audio.resample`, the resampler ``read_audio`` uses) as a float WAV; the
  file is ``<thousands>/<row>.<suffix>`` (``0001/0001234.wav``), whatever the speaker id.
  The folder is written whole or not at all.
- a **path** alone names a local audio file (relative: to the dataset's folder), used in
  place, as the CSV reader does (``read_audio`` resamples it when read). A URL is refused.

Each row becomes an utterance ``<speaker>/<row>`` (``row``: the dataset's index, 0-based, as
``ds[row]``). A ``gender`` / ``nationality`` column fills those fields; any other column
named in ``attributes`` becomes a further speaker attribute.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from arw_sv.atomic import atomic_folder
from arw_sv.data.corpora import apply_speaker_table, gender_value
from arw_sv.data.manifest import (
    MISSING,
    Manifest,
    ManifestError,
    Utterance,
    check_attribute_name,
    validate_utterances,
)

SAMPLE_RATE = 16000
# Below telephone band a 16 kHz model hears nothing of the voice above 4 kHz.
MIN_RATE = 8000
_KEEP_AS_IS = ("WAV", "FLAC")  # formats written back byte for byte when 16 kHz mono


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ManifestError(
            "reading a Hugging Face dataset needs pyarrow: pip install 'arw-sv[hf]'"
        ) from None
    return pyarrow


def dataset_files(source: str | Path) -> list[Path]:
    """The Arrow files of a ``save_to_disk`` folder, or the parquet files under ``source``.

    Raises:
        ManifestError: a ``DatasetDict`` folder (name one split), or no dataset there.
    """
    root = Path(source)
    if root.is_file() and root.suffix == ".parquet":
        return [root]
    if (root / "dataset_dict.json").is_file():
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        raise ManifestError(
            f"{root}: a DatasetDict ({', '.join(splits)}); pass one split's folder, "
            f"e.g. {root / (splits[0] if splits else 'train')}"
        )
    if (root / "state.json").is_file():
        try:
            state = json.loads((root / "state.json").read_text())
            return [root / f["filename"] for f in state["_data_files"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(
                f"{root / 'state.json'}: not a datasets state file ({exc})"
            ) from None
    files = sorted(root.rglob("*.parquet")) if root.is_dir() else []
    if not files:
        raise ManifestError(
            f"{root}: no Hugging Face dataset (a save_to_disk folder with state.json, or "
            ".parquet files)"
        )
    return files


def _batches(path: Path, columns: list[str], audio: str) -> Iterator[dict[str, list]]:
    """Each record batch of one file as ``{column: values}``, after checking the columns."""
    pa = _pyarrow()
    try:
        if path.suffix == ".parquet":
            handle = pa.parquet.ParquetFile(path)
            schema = handle.schema_arrow
            batches = handle.iter_batches(columns=columns, batch_size=256)
        else:
            table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
            schema = table.schema
            batches = None
    except (OSError, pa.ArrowException) as exc:
        raise ManifestError(f"{path}: not a readable Arrow/parquet file ({exc})") from None
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise ManifestError(
            f"{path}: no column {missing[0]!r} (columns: {', '.join(schema.names)}); name "
            "them with --audio-column, --speaker-column, --attributes"
        )
    kind = schema.field(audio).type
    fields = (
        {kind.field(i).name for i in range(kind.num_fields)} if pa.types.is_struct(kind) else ()
    )
    if not {"bytes", "path"} & set(fields):
        raise ManifestError(
            f"{path}: column {audio!r} is not audio ({kind}); an Audio column holds "
            "{bytes, path} (--audio-column)"
        )
    if batches is None:
        batches = table.select(columns).to_batches(max_chunksize=256)
    for batch in batches:
        yield {c: batch.column(c).to_pylist() for c in columns}


def _check_rate(rate: int, where: str) -> None:
    if rate < MIN_RATE:
        raise ManifestError(
            f"{where}: sample rate {rate} Hz cannot be read as speech (at least {MIN_RATE} Hz)"
        )


def _embedded(data: bytes, where: str, target: Path) -> tuple[Path, float]:
    """Write embedded audio bytes to ``target`` (suffix chosen here) at 16 kHz.

    Returns:
        The file written and its seconds.
    """
    try:
        info = sf.info(io.BytesIO(data))
        wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError variants
        raise ManifestError(f"{where}: cannot decode the audio bytes ({exc})") from None
    _check_rate(rate, where)
    if wav.shape[0] == 0:
        raise ManifestError(f"{where}: no samples")
    target.parent.mkdir(parents=True, exist_ok=True)
    if rate == SAMPLE_RATE and wav.shape[1] == 1 and info.format in _KEEP_AS_IS:
        target = target.with_suffix("." + info.format.lower())
        target.write_bytes(data)
        return target, wav.shape[0] / rate
    from arw_sv.audio import resample  # here: arw_sv.audio imports torch

    mono = resample(wav.mean(axis=1), rate, SAMPLE_RATE).astype(np.float32)
    target = target.with_suffix(".wav")
    # Encoded in memory: soundfile's close() of a file fsyncs it, 5 ms a clip; the folder
    # appears whole, by one rename, or not at all.
    encoded = io.BytesIO()
    sf.write(encoded, mono, SAMPLE_RATE, subtype="FLOAT", format="WAV")
    target.write_bytes(encoded.getvalue())
    return target, mono.shape[0] / SAMPLE_RATE


def _linked(path: str, root: Path, where: str) -> tuple[str, float]:
    """A path-only Audio entry: the local file it names, and its seconds."""
    from arw_sv.audio import AudioError, audio_info

    if "://" in path:
        raise ManifestError(f"{where}: audio path {path!r} is a URL; download the audio first")
    audio = Path(path) if Path(path).is_absolute() else root / path
    try:
        frames, rate, _ = audio_info(audio)
    except AudioError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    _check_rate(rate, where)
    return str(audio.resolve()), frames / rate


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).strip()


def read_hf(
    source: str | Path,
    *,
    audio_dir: str | Path,
    audio_column: str = "audio",
    speaker_column: str = "speaker_id",
    attributes: Sequence[str] = (),
    split: str = "dev",
    speakers: str | Path | None = None,
) -> Manifest:
    """A Hugging Face dataset (``save_to_disk`` folder or parquet) as a manifest.

    Args:
        source: the dataset's folder (or one ``.parquet`` file).
        audio_dir: where embedded audio is written (must not hold files yet).
        audio_column: the ``Audio`` column.
        speaker_column: the speaker id column.
        attributes: further columns to keep (``gender``, ``nationality``, ``age``, ...).
        split: the ``split`` of every utterance.
        speakers: an optional speaker-attribute CSV.

    Raises:
        ManifestError: a missing column, an audio column that is not audio, audio that
            cannot be decoded or has too low a rate, an empty speaker, naming file, row and
            column; ``audio_dir`` is then left as it was.
    """
    root = Path(source)
    files = dataset_files(root)
    names = {c: check_attribute_name(c.lower(), f"--attributes {c}") for c in attributes}
    columns = list(dict.fromkeys([audio_column, speaker_column, *attributes]))
    base = root if root.is_dir() else root.parent
    final = Path(audio_dir)
    utts = []
    with atomic_folder(final) as tmp:
        row = 0
        for path in files:
            for batch in _batches(path, columns, audio_column):
                for i, entry in enumerate(batch[audio_column]):
                    where = f"{path}: row {row}"
                    speaker = _text(batch[speaker_column][i])
                    if not speaker:
                        raise ManifestError(f"{where}: empty {speaker_column!r}")
                    name = f"{row:07d}"
                    entry = entry or {}
                    where = f"{where}, column {audio_column!r}"
                    if entry.get("bytes"):
                        place = Path(f"{row // 1000:04d}", name)
                        written, seconds = _embedded(entry["bytes"], where, tmp / place)
                        file = str(final.resolve() / written.relative_to(tmp))
                    elif entry.get("path"):
                        file, seconds = _linked(entry["path"], base, where)
                    else:
                        raise ManifestError(f"{where}: neither audio bytes nor a path")
                    values = {names[c]: _text(batch[c][i]) for c in attributes}
                    gender = values.pop("gender", "")
                    utts.append(
                        Utterance(
                            utt_id=f"{speaker}/{name}",
                            path=file,
                            speaker=speaker,
                            duration=seconds,
                            gender=gender_value(gender, f"{path}: row {row}, column 'gender'"),
                            nationality=values.pop("nationality", "") or MISSING,
                            split=split,
                            attributes=tuple(sorted((k, v) for k, v in values.items() if v)),
                        )
                    )
                    row += 1
        if not utts:
            raise ManifestError(f"{root}: no rows")
        validate_utterances(utts, root)
        manifest = apply_speaker_table(utts, speakers)
    if not any(final.iterdir()):
        final.rmdir()  # every row linked a file: nothing was written
    return manifest

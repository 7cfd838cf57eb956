"""Speaker metadata: gender, nationality, set and further attributes of every speaker.

Reads, detecting the format from the header:

- VoxCeleb1 ``vox1_meta.csv``: tab-separated ``VoxCeleb1 ID, VGGFace1 ID, Gender,
  Nationality, Set``;
- VoxCeleb2 ``vox2_meta.csv``: comma-separated with a byte-order mark, CRLF line ends and
  spaces around the separators; it has no nationality (read as ``None``);
- a manifest CSV or a speaker table with a ``speaker`` column and at least one attribute
  (``gender``, ``nationality``, or any further column named as
  :data:`arw_sv.data.columns.ATTRIBUTE_NAME` allows, such as ``age``; ``split`` optional),
  one row per utterance or per speaker: values are deduplicated per speaker and a speaker
  whose rows disagree is an error naming both lines. A manifest's utterance columns
  (``utt_id``, ``path``, ``duration``, ``session``, ``start``) are not attributes.

Gender is normalised to ``"m"``/``"f"`` (``male``/``female`` accepted); empty values and
``unknown``/``n/a`` become ``None``. Nationalities keep the file's spelling (``USA``,
``UK``). Note that vox1_meta.csv labels about 20 French celebrities as ``Norway``; see
``VOX1_NATIONALITY_FIXES`` and ``pool_nationalities``.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from arw_sv.data.columns import ATTRIBUTE_NAME, NOT_ATTRIBUTES
from arw_sv.data.tables import csv_rows

SPEAKER_COLUMNS = ("voxceleb1 id", "voxceleb2 id", "speaker", "speaker_id")
MISSING_VALUES = {"", "unknown", "n/a", "na", "none", "?"}
OTHERS = "others"
# vox1_meta.csv files its French celebrities (Alain Delon, Jean Reno, ...) under
# "Norway"; opt in to relabel them (they are pooled into "others" on the test set anyway).
VOX1_NATIONALITY_FIXES = {"Norway": "France"}


class MetadataError(ValueError):
    """A metadata file is unreadable or malformed; the message names file and line."""


@dataclass(frozen=True)
class SpeakerInfo:
    """What the metadata says about one speaker (``None`` where it says nothing)."""

    speaker: str
    gender: str | None
    nationality: str | None
    set: str | None
    # Further attributes as sorted (name, value) pairs, value None where unknown.
    attributes: tuple[tuple[str, str | None], ...] = ()

    def attribute(self, name: str) -> str | None:
        """The value of ``gender``, ``nationality`` or a further attribute (None: unknown)."""
        if name in ("gender", "nationality"):
            return getattr(self, name)
        return dict(self.attributes).get(name)


def attribute_names(meta: Mapping[str, SpeakerInfo]) -> list[str]:
    """The attributes some speaker of ``meta`` has a value of: gender, nationality, the rest."""
    names = {n for i in meta.values() for n, v in i.attributes if v is not None}
    core = [n for n in ("gender", "nationality") if any(i.attribute(n) for i in meta.values())]
    return core + sorted(names)


def _clean(value: str) -> str | None:
    value = value.strip()
    return None if value.lower() in MISSING_VALUES else value


def _gender(value: str) -> str | None:
    value = _clean(value)
    if value is None:
        return None
    return {"male": "m", "female": "f"}.get(value.lower(), value.lower())


def read_speaker_meta(path: str | Path) -> dict[str, SpeakerInfo]:
    """Read speaker metadata in any of the supported formats (see module docstring).

    Returns:
        Speaker id -> ``SpeakerInfo``, in file order.

    Raises:
        MetadataError: missing file, unknown header, missing column, a row with the wrong
            number of fields, or conflicting rows for one speaker (naming file and line).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise MetadataError(f"cannot read speaker metadata {path}: {err}") from err
    except UnicodeDecodeError as err:
        raise MetadataError(f"{path}: not UTF-8 text ({err})") from err
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise MetadataError(f"{path}: empty file")
    delimiter = "\t" if "\t" in lines[first] else ","
    rows = csv_rows(csv.reader(lines[first:], delimiter=delimiter), path, MetadataError)
    header = [h.strip().lower() for h in next(rows)]
    speaker_col = next((header.index(c) for c in SPEAKER_COLUMNS if c in header), None)
    if speaker_col is None:
        raise MetadataError(
            f"{path}:{first + 1}: no speaker column (expected one of {SPEAKER_COLUMNS}); "
            f"header is {header}"
        )
    gender_col = header.index("gender") if "gender" in header else None
    nat_col = header.index("nationality") if "nationality" in header else None
    set_col = next((header.index(c) for c in ("set", "split") if c in header), None)
    # VoxCeleb's own tables name their columns with spaces ("VGGFace1 ID"): not attributes.
    skip = NOT_ATTRIBUTES | {"set", "speaker_id", header[speaker_col]}
    extra = [(i, c) for i, c in enumerate(header) if c not in skip and ATTRIBUTE_NAME.fullmatch(c)]
    extra = [(i, c) for i, c in extra if c not in ("gender", "nationality")]
    if gender_col is None and nat_col is None and not extra:
        raise MetadataError(
            f"{path}:{first + 1}: no attribute column (gender, nationality, age, ...); "
            f"header is {header}"
        )

    meta: dict[str, SpeakerInfo] = {}
    seen_at: dict[str, int] = {}
    for offset, row in enumerate(rows, start=first + 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise MetadataError(
                f"{path}:{offset}: expected {len(header)} fields, found {len(row)}: {row!r}"
            )
        speaker = row[speaker_col].strip()
        if not speaker:
            raise MetadataError(f"{path}:{offset}: empty speaker id")
        info = SpeakerInfo(
            speaker=speaker,
            gender=None if gender_col is None else _gender(row[gender_col]),
            nationality=None if nat_col is None else _clean(row[nat_col]),
            set=None if set_col is None else _clean(row[set_col]),
            attributes=tuple(sorted((c, _clean(row[i])) for i, c in extra)),
        )
        if speaker in meta:
            if meta[speaker] != info:
                raise MetadataError(
                    f"{path}:{offset}: speaker {speaker} conflicts with line "
                    f"{seen_at[speaker]}: {info} vs {meta[speaker]}"
                )
            continue
        meta[speaker] = info
        seen_at[speaker] = offset
    if not meta:
        raise MetadataError(f"{path}: no speakers")
    return meta


def pool_values(
    values: Mapping, min_speakers: int, mapping: Mapping[str, str] | None = None
) -> tuple[dict, dict]:
    """One attribute's values with those of fewer than ``min_speakers`` speakers pooled
    into ``"others"``.

    Args:
        values: speaker -> value (``None`` if unknown).
        min_speakers: a value with fewer speakers joins ``"others"``.
        mapping: relabelling applied first, e.g. ``VOX1_NATIONALITY_FIXES``.

    Returns:
        ``(groups, notes)``: speaker -> pooled value (``None`` if unknown), and a dict
        recording the mapping and which values were kept or pooled, with counts.
    """
    mapping = dict(mapping or {})
    mapped = {s: None if v is None else mapping.get(v, v) for s, v in values.items()}
    counts = Counter(n for n in mapped.values() if n is not None)
    kept = {n: c for n, c in counts.items() if c >= min_speakers}
    pooled = {n: c for n, c in counts.items() if c < min_speakers}
    groups = {s: (n if n is None or n in kept else OTHERS) for s, n in mapped.items()}
    notes = {
        "min_speakers": min_speakers,
        "mapping": mapping,
        "kept": dict(sorted(kept.items())),
        "pooled_into_others": dict(sorted(pooled.items())),
    }
    return groups, notes


def pool_nationalities(
    meta: Mapping[str, SpeakerInfo],
    min_speakers: int,
    mapping: Mapping[str, str] | None = None,
    speakers: Iterable[str] | None = None,
) -> tuple[dict[str, str | None], dict]:
    """Nationality groups with small ones pooled into ``"others"`` (:func:`pool_values`).

    Args:
        meta: speaker metadata.
        min_speakers: a nationality with fewer speakers (counted among ``speakers``)
            joins ``"others"``.
        mapping: applied first, e.g. ``VOX1_NATIONALITY_FIXES``.
        speakers: the speakers to count (those in the trial list); default all of ``meta``.
    """
    chosen = list(meta) if speakers is None else [s for s in speakers if s in meta]
    return pool_values({s: meta[s].nationality for s in chosen}, min_speakers, mapping)

"""Speaker groups by any attribute: ``--group-by`` specs, numeric bins and pooling.

A *group-by spec* names one attribute (``age_band``) or a cross of several
(``gender,age_band``); :func:`speaker_groups` turns each into one value per speaker from
the speaker metadata (``arw_sv.data.meta``), which ``arw_sv.evaluate`` makes a grouping:

- ``--bins age=0,13,18,60,200`` makes ``age_band`` from the numeric ``age``: the bands
  ``0-13``, ``13-18``, ``18-60``, ``60-200``, each ``[low, high)`` but the last, which keeps
  its upper edge. A value outside the edges, or one that is not a number, is an error
  naming the speaker.
- Every attribute but gender is *pooled*: a value with fewer than ``min_speakers``
  speakers (among the trials') joins ``others`` (as nationality always was).
- A cross ``a,b`` is named ``a_x_b``; its cells are ``<a>/<b>`` of the pooled values.

The default specs are today's: gender, nationality and their cross, each where some speaker
has it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arw_sv.data.columns import ATTRIBUTE_NAME
from arw_sv.data.meta import SpeakerInfo, attribute_names, pool_values

DEFAULT_GROUP_BY: tuple[tuple[str, ...], ...] = (
    ("gender",),
    ("nationality",),
    ("gender", "nationality"),
)
BAND = "_band"  # ``--bins age=...`` makes ``age_band``
NOT_POOLED = ("gender",)


@dataclass(frozen=True)
class SpeakerGroups:
    """One grouping's group of every speaker.

    Attributes:
        name: ``age_band``, or ``gender_x_age_band`` for a cross.
        values: each speaker's group (None: the speaker has no value).
        order: the groups in reporting order (bands by their edges, ``others`` last).
        notes: how the groups were formed (pooling, mapping, bins), for the report.
    """

    name: str
    values: list[str | None]
    order: list[str]
    notes: dict | None


def parse_group_by(specs: Sequence[str]) -> list[tuple[str, ...]]:
    """``["age_band", "gender,age_band"]`` -> ``[("age_band",), ("gender", "age_band")]``.

    Raises:
        ValueError: an empty or malformed name, or a name repeated within one cross.
    """
    out = []
    for spec in specs:
        names = tuple(n.strip() for n in spec.split(","))
        for name in names:
            if not ATTRIBUTE_NAME.fullmatch(name):
                raise ValueError(
                    f"--group-by {spec!r}: {name!r} is not an attribute name (lower-case "
                    "letters, digits and '_'; a cross is 'a,b')"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"--group-by {spec!r}: an attribute crossed with itself")
        out.append(names)
    return out


def parse_bins(specs: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """``["age=0,13,18,60,200"]`` -> ``{"age": (0, 13, 18, 60, 200)}``.

    Raises:
        ValueError: not ``NAME=E1,E2,...``, fewer than two edges, an edge that is not a
            finite number, or edges that do not increase.
    """
    bins = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not ATTRIBUTE_NAME.fullmatch(name):
            raise ValueError(f"--bins {spec!r}: expected NAME=E1,E2,... (e.g. age=0,18,60,200)")
        try:
            edges = tuple(float(e) for e in text.split(","))
        except ValueError:
            raise ValueError(f"--bins {spec!r}: an edge is not a number") from None
        if len(edges) < 2 or not all(math.isfinite(e) for e in edges):
            raise ValueError(f"--bins {spec!r}: needs at least two finite edges")
        if any(b <= a for a, b in zip(edges[:-1], edges[1:], strict=True)):
            raise ValueError(f"--bins {spec!r}: the edges must increase")
        if name in bins:
            raise ValueError(f"--bins {spec!r}: {name} is binned twice")
        bins[name] = edges
    return bins


def band_labels(edges: Sequence[float]) -> list[str]:
    """``(0, 13, 18)`` -> ``["0-13", "13-18"]``."""
    return [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _band(value: str, edges: Sequence[float], where: str) -> str:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{where} is not a number") from None
    labels = band_labels(edges)
    if not (math.isfinite(x) and edges[0] <= x <= edges[-1]):
        raise ValueError(f"{where} lies outside the edges {edges[0]:g}..{edges[-1]:g}")
    for label, high in zip(labels, edges[1:], strict=True):
        if x < high:
            return label
    return labels[-1]  # the top edge itself


def speaker_groups(
    speakers: Sequence[str],
    meta: Mapping[str, SpeakerInfo],
    group_by: Sequence[Sequence[str]] | None = None,
    bins: Mapping[str, Sequence[float]] | None = None,
    min_speakers: int = 5,
    nationality_map: Mapping[str, str] | None = None,
    source: str | Path = "speaker metadata",
) -> list[SpeakerGroups]:
    """The groups of ``speakers`` for each group-by spec.

    Args:
        speakers: the trials' speakers, in the order the groupings index them.
        meta: speaker metadata.
        group_by: specs (:func:`parse_group_by`); None: :data:`DEFAULT_GROUP_BY` plus
            each binned attribute's band, those no speaker has left out.
        bins: numeric attribute -> edges (:func:`parse_bins`).
        min_speakers: values with fewer speakers join ``others`` (not for gender).
        nationality_map: relabelling applied to nationalities before pooling.
        source: the metadata's file, for messages.

    Raises:
        ValueError: a binned attribute no speaker has, a value not a number or outside
            its edges, or a named group-by attribute none of ``speakers`` has a value of
            (each naming the file, the attribute and the speaker).
    """
    bins = dict(bins or {})
    known = attribute_names(meta)
    for name in bins:
        if name not in known:
            raise ValueError(
                f"{source}: --bins {name}: no speaker has {name!r} (there: {', '.join(known)})"
            )
    explicit = group_by is not None
    if group_by is None:
        group_by = list(DEFAULT_GROUP_BY) + [(name + BAND,) for name in bins]
    raw: dict[str, list[str | None]] = {}

    def values(name: str) -> list[str | None]:
        if name in raw:
            return raw[name]
        base = name[: -len(BAND)] if name.endswith(BAND) else None
        if base in bins:
            out = []
            for s in speakers:
                v = meta[s].attribute(base) if s in meta else None
                where = f"{source}: speaker {s}: {base} {v!r}"
                out.append(None if v is None else _band(v, bins[base], where))
        else:
            out = [meta[s].attribute(name) if s in meta else None for s in speakers]
        raw[name] = out
        return out

    pooled: dict[str, tuple[list[str | None], list[str], dict | None]] = {}

    def pooled_values(name: str):
        if name not in pooled:
            found = values(name)
            base = name[: -len(BAND)] if name.endswith(BAND) else None
            order = band_labels(bins[base]) if base in bins else sorted({v for v in found if v})
            if name in NOT_POOLED:
                pooled[name] = (found, order, None)
            else:
                mapping = nationality_map if name == "nationality" else None
                by_speaker, notes = pool_values(dict(enumerate(found)), min_speakers, mapping)
                kept = [by_speaker[i] for i in range(len(found))]
                order = [v for v in order if v in notes["kept"]] + sorted(
                    {v for v in kept if v} - set(order)
                )
                if base in bins:
                    notes["bins"] = {"attribute": base, "edges": list(bins[base])}
                pooled[name] = (kept, order, notes)
        return pooled[name]

    out = []
    for spec in group_by:
        absent = [n for n in spec if not any(v is not None for v in values(n))]
        if absent:
            if not explicit:
                continue
            raise ValueError(
                f"{source}: --group-by {','.join(spec)}: none of the trials' "
                f"{len(speakers)} speakers has a value of {absent[0]!r} (attributes there: "
                f"{', '.join(known) or 'none'}; binned: {', '.join(n + BAND for n in bins)})"
            )
        parts = [pooled_values(n) for n in spec]
        if len(parts) == 1:
            found, order, notes = parts[0]
            out.append(SpeakerGroups(spec[0], found, order, notes))
            continue
        cells = ["/".join(c) if all(c) else None for c in zip(*(p[0] for p in parts), strict=True)]
        order = [c for c in _cross_order([p[1] for p in parts]) if c in set(cells)]
        out.append(SpeakerGroups("_x_".join(spec), cells, order, _cross_notes(spec, parts)))
    return out


def _cross_order(orders: Sequence[Sequence[str]]) -> list[str]:
    cells = [""]
    for order in orders:
        cells = [f"{c}/{v}" if c else v for c in cells for v in order]
    return cells


def _cross_notes(spec: Sequence[str], parts) -> dict | None:
    """One component's notes as they are (gender x nationality: nationality's), several
    merged with each value prefixed by its attribute.
    """
    noted = [(n, p[2]) for n, p in zip(spec, parts, strict=True) if p[2]]
    if len(noted) <= 1:
        return noted[0][1] if noted else None
    merged: dict = {"min_speakers": noted[0][1]["min_speakers"], "mapping": {}}
    for key in ("kept", "pooled_into_others"):
        merged[key] = {f"{n} {k}": v for n, notes in noted for k, v in notes[key].items()}
    for _, notes in noted:
        merged["mapping"].update(notes["mapping"])
    return merged

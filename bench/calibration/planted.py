"""Embeddings with planted calibration disparities, cheap to produce (no model, no audio).

A probe for the calibration back-ends when no trained model is at hand (issue 28): unit
speaker vectors around a centre per gender x nationality cell, where a *crowded* group's
speakers are drawn closer to their centre (so its impostors score higher and pass a
shared threshold more often: the crowding mechanism of the synthetic corpora), and
utterances around their speaker with a per-speaker noise level. Writes ``test.npz`` and
``cal.npz`` (matrix layout), ``trials.txt`` (every target pair, a sample of non-targets)
and ``vox1_meta.csv`` for :mod:`bench.calibration.experiment`. These are not a model's
embeddings: a result here says a method can undo a planted per-region shift and spread,
not that it helps on speech.

Usage::

    python -m bench.calibration.planted --out runs/planted [--seed 100]
    python -m bench.calibration --test runs/planted/test.npz --cal runs/planted/cal.npz \\
        --trials runs/planted/trials.txt --meta runs/planted/vox1_meta.csv --out runs/planted/cal \\
        --clusters 16 --curve 30 60 120 240 --plot-fmr asnorm_half_fsn_k16 asnorm_half_quantile_k16
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

NATIONALITIES = ("India", "UK", "USA")
GENDERS = ("f", "m")
SPREAD = {"India": 0.55, "UK": 0.8, "USA": 0.8}  # speaker spread about the cell centre
GENDER_SPREAD = {"f": 0.6, "m": 0.8}


def draw(rng, n_speakers: int, prefix: str, dim: int, per_speaker: int, centres: dict):
    """Speakers (ids, gender, nationality), utterance ids and their embeddings."""
    speakers, meta, ids, rows = [], [], [], []
    for k in range(n_speakers):
        g, n = GENDERS[k % 2], NATIONALITIES[(k // 2) % 3]
        spread = SPREAD[n] * GENDER_SPREAD[g]
        vec = centres[g, n] + spread * rng.normal(size=dim) / np.sqrt(dim)
        vec /= np.linalg.norm(vec)
        noise = rng.uniform(0.5, 0.9)
        utts = vec + noise * rng.normal(size=(per_speaker, dim)) / np.sqrt(dim)
        name = f"{prefix}{k:05d}"
        speakers.append(name)
        meta.append((name, g, n))
        ids += [f"{name}/v0/{j:05d}.wav" for j in range(per_speaker)]
        rows.append(utts)
    return speakers, meta, ids, np.vstack(rows).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--test-speakers", type=int, default=120)
    p.add_argument("--cal-speakers", type=int, default=240)
    p.add_argument("--per-speaker", type=int, default=10)
    p.add_argument("--nontargets", type=int, default=400_000)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    base = rng.normal(size=args.dim) / np.sqrt(args.dim)
    centres = {
        (g, n): base + 0.5 * rng.normal(size=args.dim) / np.sqrt(args.dim)
        for g in GENDERS
        for n in NATIONALITIES
    }
    test_spk, test_meta, test_ids, test = draw(
        rng, args.test_speakers, "id1", args.dim, args.per_speaker, centres
    )
    _, cal_meta, cal_ids, cal = draw(
        rng, args.cal_speakers, "id2", args.dim, args.per_speaker, centres
    )
    np.savez(args.out / "test.npz", ids=np.array(test_ids), embeddings=test)
    np.savez(args.out / "cal.npz", ids=np.array(cal_ids), embeddings=cal)
    rows = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    rows += [f"{s}\t{s}\t{g}\t{n}\ttest" for s, g, n in test_meta + cal_meta]
    (args.out / "vox1_meta.csv").write_text("\n".join(rows) + "\n")
    owner = np.repeat(np.arange(len(test_spk)), args.per_speaker)
    a, b = np.triu_indices(len(test_ids), 1)
    same = owner[a] == owner[b]
    non = np.flatnonzero(~same)
    non = rng.choice(non, min(args.nontargets, non.size), replace=False)
    keep = np.sort(np.r_[np.flatnonzero(same), non])
    lines = [f"{int(same[i])} {test_ids[a[i]]} {test_ids[b[i]]}" for i in keep]
    (args.out / "trials.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(test_ids)} test and {len(cal_ids)} calibration utterances, {len(keep)} trials "
          f"({int(same.sum())} targets) -> {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Embed utterances of a manifest with a trained checkpoint (stage 4 of run.sh).

Whole utterances, one forward pass each, on the GPU when there is one. Under ``torchrun``
each process embeds every W-th utterance and rank 0 merges the parts, so extraction scales
with the GPUs the training used::

    python local/extract.py --checkpoint exp/x/avg.pt --manifest data/vox1.csv \\
        --trials veri_test2.txt --out exp/x/embeddings/vox1.npz \\
        [--cohort-manifest data/train.csv --cohort-per-speaker 3 \\
         --cohort-out exp/x/embeddings/cohort.npz]

The optional cohort (for AS-norm) is the mean embedding of each training speaker over
``--cohort-per-speaker`` of its utterances, drawn with a fixed seed. The optional
calibration set (``--cal-manifest``, ``--cal-out``) keeps ``--cal-per-speaker`` utterance
embeddings of each calibration speaker, for ``arw-sv calibrate``. Beside every ``.npz``,
``<out>.model.json`` records the model's fingerprint, which calibration checks.

The output ``.npz`` holds ``ids`` (U strings) and ``embeddings`` (U x D, L2-normalised), the
layout ``arw_sv.data.trials.read_embeddings`` loads fastest.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_path, atomic_write_text
from arw_sv.checkpoint import model_fingerprint
from arw_sv.data.manifest import read_manifest
from arw_sv.data.trials import model_sidecar, read_trials
from arw_sv.inference import SpeakerEncoder
from arw_sv.train import distributed


def select(
    manifest, trials: Sequence[str], per_speaker: int, seed: int
) -> tuple[list[str], list[str]]:
    """Ids and paths to embed: those the trial lists name, or ``per_speaker`` per speaker."""
    utts = list(manifest)
    if trials:
        named: set[str] = set()
        for path in trials:
            t = read_trials(path)
            named.update(t.enroll)
            named.update(t.test)
        utts = [u for u in utts if u.utt_id in named]
        missing = len(named) - len(utts)
        if missing:
            print(
                f"extract: warning: {missing} utterances named in the trial lists are not in "
                "the manifest",
                file=sys.stderr,
            )
    if per_speaker > 0:
        rng = np.random.default_rng(seed)
        by_speaker: dict[str, list] = {}
        for u in utts:
            by_speaker.setdefault(u.speaker, []).append(u)
        utts = []
        for speaker in sorted(by_speaker):
            own = by_speaker[speaker]
            keep = sorted(rng.choice(len(own), size=min(per_speaker, len(own)), replace=False))
            utts += [own[i] for i in keep]
    return [u.utt_id for u in utts], [u.path for u in utts]


def speaker_means(ids: list[str], embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Mean of each speaker's unit embeddings, renormalised (WeSpeaker's AS-norm cohort)."""
    speakers = sorted({u.split("/", 1)[0] for u in ids})
    index = {s: i for i, s in enumerate(speakers)}
    sums = np.zeros((len(speakers), embeddings.shape[1]))
    for u, e in zip(ids, embeddings, strict=True):
        sums[index[u.split("/", 1)[0]]] += e
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return speakers, sums.astype(np.float32)


def save(path: Path, ids: Sequence[str], embeddings: np.ndarray, model: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, ids=np.asarray(ids, dtype=str), embeddings=embeddings)
    atomic_write_text(model_sidecar(path), json.dumps(model) + "\n")


def embed_set(
    encoder, ctx, ids, paths, out: Path, speaker_mean: bool = False, source: str = ""
) -> None:
    """Embed ``paths`` (every W-th on each rank) and write ``out`` from rank 0."""
    mine = range(ctx.rank, len(ids), ctx.world_size)
    vectors = encoder.embed_files([paths[i] for i in mine], progress=ctx.is_main)
    out.parent.mkdir(parents=True, exist_ok=True)
    if ctx.enabled:
        np.save(out.with_name(f"{out.stem}.part{ctx.rank}.npy"), vectors)
    ctx.barrier()
    if ctx.is_main:
        if ctx.enabled:  # interleave the parts back into manifest order
            matrix = np.empty((len(ids), encoder.dim), dtype=np.float32)
            for r in range(ctx.world_size):
                shard = out.with_name(f"{out.stem}.part{r}.npy")
                matrix[r :: ctx.world_size] = np.load(shard)
                shard.unlink()
        else:
            matrix = vectors
        out_ids: Sequence[str] = ids
        if speaker_mean:
            out_ids, matrix = speaker_means(ids, matrix)
        model = {
            "fingerprint": model_fingerprint(encoder._extractor),
            "dim": int(encoder.dim),
            "source": source,
        }
        save(out, out_ids, matrix, model)
        print(f"extract: {len(out_ids)} embeddings of {len(ids)} utterances -> {out}")
    ctx.barrier()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--trials", nargs="*", default=[], help="embed only what these lists name")
    p.add_argument("--cohort-manifest", help="also embed an AS-norm cohort from this manifest")
    p.add_argument("--cohort-per-speaker", type=int, default=3)
    p.add_argument("--cohort-out", type=Path)
    p.add_argument("--cal-manifest", help="also embed these calibration speakers' utterances")
    p.add_argument("--cal-per-speaker", type=int, default=20)
    p.add_argument("--cal-out", type=Path)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if bool(args.cohort_manifest) != bool(args.cohort_out):
        p.error("--cohort-manifest and --cohort-out go together")
    if bool(args.cal_manifest) != bool(args.cal_out):
        p.error("--cal-manifest and --cal-out go together")

    ctx, device = distributed.setup(args.device)
    clean = False
    try:
        encoder = SpeakerEncoder.from_checkpoint(args.checkpoint, device=device)
        ids, paths = select(read_manifest(args.manifest), args.trials, 0, args.seed)
        if not ids:
            raise SystemExit("extract: error: nothing to embed")
        embed_set(encoder, ctx, ids, paths, args.out, source=args.checkpoint)
        if args.cohort_manifest:
            cohort = read_manifest(args.cohort_manifest)
            ids, paths = select(cohort, [], args.cohort_per_speaker, args.seed)
            embed_set(encoder, ctx, ids, paths, args.cohort_out, True, args.checkpoint)
        if args.cal_manifest:
            ids, paths = select(
                read_manifest(args.cal_manifest), [], args.cal_per_speaker, args.seed
            )
            embed_set(encoder, ctx, ids, paths, args.cal_out, source=args.checkpoint)
        clean = True
    finally:
        distributed.teardown(ctx, clean=clean)
    return 0


if __name__ == "__main__":
    sys.exit(main())

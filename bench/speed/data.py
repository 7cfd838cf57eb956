"""Data pipeline: what each stage of loading a training crop costs, how many utterances per
second the DataLoader delivers with N workers, and whether it keeps up with the trainer.

The corpus is synthetic but VoxCeleb-shaped (``bench.common.make_corpus``: 16-bit wav files
of 4-12 s, 48 speakers x 8 utterances, in the page cache after the first pass, so disk
speed is not measured). The loader is the one ``arw-sv train`` builds: ``CropDataset`` (reads
only the crop's window from the file) + ``SpeakerBatchSampler`` (P x K = 16 x 2) +
``collate_crops``, prefetch 4, persistent workers; optionally with on-the-fly augmentation
(``arw_sv.augment``: RIR reverberation, MUSAN noise / music / babble, speed perturbation),
here from synthetic MUSAN- and RIRS_NOISES-layout folders made next to the corpus.

The decisive test is the last table: the same ERM training step fed from memory and fed by
the loader with 0 and 2 workers, in one process, on the same 2 cores (the workers compete
with the trainer's threads).

Usage::

    .venv/bin/python -m bench.speed.data --threads 2        # ~2 min
    .venv/bin/python -m bench.speed.data --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from arw_sv.audio import audio_info, crop_or_repeat, read_audio
from arw_sv.augment import Augmenter, speed_perturb
from arw_sv.config import AugmentConfig, load_config
from arw_sv.data.dataset import CropDataset, collate_crops
from arw_sv.data.manifest import read_manifest
from bench import common as sc
from bench.speed import train as ts

AUGMENT = {
    "reverb_prob": 0.2,
    "noise_prob": 0.2,
    "music_prob": 0.2,
    "babble_prob": 0.2,
    "speed_prob": 0.33,
}


def make_noise_sources(folder: Path) -> tuple[Path, Path]:
    """Synthetic ``musan/`` and ``RIRS_NOISES/`` folders in their standard layouts."""
    import soundfile as sf

    musan, rirs = folder / "musan", folder / "RIRS_NOISES"
    if (rirs / "simulated_rirs").is_dir():
        return musan, rirs
    rng = np.random.default_rng(7)
    for kind, sub, count, seconds in (
        ("noise", "free-sound", 12, 20.0),
        ("music", "fma", 6, 60.0),
        ("speech", "librivox", 12, 30.0),
    ):
        for i in range(count):
            path = musan / kind / sub / f"{kind}-{sub}-{i:04d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            n = int(seconds * 16000)
            wav = sc.speechlike(n, rng) if kind != "noise" else 0.05 * rng.standard_normal(n)
            sf.write(path, wav.astype(np.float32), 16000, subtype="PCM_16")
    for i in range(24):
        path = rirs / "simulated_rirs" / "smallroom" / f"Room{i:03d}" / f"Room{i:03d}-00001.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        n = 16000  # 1 s impulse responses, as in RIRS_NOISES
        decay = np.exp(-np.arange(n) / rng.uniform(800, 4000))
        rir = rng.standard_normal(n) * decay
        rir[: int(rng.integers(20, 200))] = 0
        sf.write(path, (0.5 * rir / np.abs(rir).max()).astype(np.float32), 16000, subtype="FLOAT")
    return musan, rirs


def augment_overrides(musan: Path, rirs: Path) -> list[str]:
    return [f"augment.musan_dir={musan}", f"augment.rirs_dir={rirs}"] + [
        f"augment.{k}={v}" for k, v in AUGMENT.items()
    ]


def per_item(manifest_path: Path, crop: float, items: int, musan: Path, rirs: Path) -> str:
    manifest = read_manifest(manifest_path)
    dataset = CropDataset(manifest, crop, 16000)
    utts = [manifest[i] for i in range(min(items, len(manifest)))]
    rng = np.random.default_rng(0)
    samples = int(crop * 16000)
    whole = [read_audio(u.path) for u in utts]  # warm the page cache

    def each(fn) -> float:
        start = time.perf_counter()
        for i in range(len(utts)):
            fn(i)
        return (time.perf_counter() - start) / len(utts)

    stages = {
        "read header (soundfile.info)": lambda i: audio_info(utts[i].path),
        f"decode the {crop:g} s window only (what CropDataset does)": lambda i: read_audio(
            utts[i].path, start=16000, frames=samples
        ),
        "decode the whole file (mean 8 s)": lambda i: read_audio(utts[i].path),
        f"random {crop:g} s crop of a decoded file": lambda i: crop_or_repeat(
            whole[i], samples, rng
        ),
        "CropDataset item, no augmentation": lambda i: dataset[(i, i)],
    }
    crops = [crop_or_repeat(w, samples, rng) for w in whole]
    labels = {
        "reverb": "augmentation: reverberation (read a 1 s RIR, FFT convolution)",
        "noise": "augmentation: noise (read a MUSAN window, mix at an SNR)",
        "music": "augmentation: music",
        "babble": "augmentation: babble (3-7 speech windows)",
    }
    for kind, label in labels.items():
        cfg = AugmentConfig(musan_dir=str(musan), rirs_dir=str(rirs), **{f"{kind}_prob": 1.0})
        augmenter = Augmenter(cfg, 16000)
        stages[label] = lambda i, a=augmenter: a(crops[i], rng)
    stages["augmentation: speed perturbation (resample, 1.1x)"] = lambda i: speed_perturb(
        crops[i], 1.1, 16000
    )
    rows = []
    for name, fn in stages.items():
        each(fn)
        t = min(each(fn) for _ in range(3))
        rows.append([name, f"{t * 1e6:.0f}", f"{1 / t:,.0f}"])
    batch = [dataset[(i % len(utts), i)] for i in range(32)]
    start = time.perf_counter()
    for _ in range(20):
        collate_crops(batch)
    t = (time.perf_counter() - start) / 20 / 32
    rows.append(["collate (stack 32 crops)", f"{t * 1e6:.0f}", f"{1 / t:,.0f}"])
    return "\n".join(
        [
            "### Cost of each loading stage (one process, one core)",
            "",
            f"Mean over {len(utts)} files, best of 3 passes.",
            "",
            sc.table(["stage", "us per utterance", "utterances/s on one core"], rows),
        ]
    )


def loader_alone(cfg, aug_cfg, manifest_path: Path, batches: int, out: dict) -> str:
    rows = []
    for workers, augmented in ((0, False), (1, False), (2, False), (2, True)):
        loader = ts.make_loader(aug_cfg if augmented else cfg, manifest_path, workers)
        start = time.perf_counter()
        it = iter(loader)
        next(it)
        first = time.perf_counter() - start
        for _ in range(4 * workers):  # drain what the workers prefetched meanwhile
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            wavs, _, _ = next(it)
        elapsed = time.perf_counter() - start
        rate = batches * wavs.shape[0] / elapsed
        name = f"{workers} + augmentation" if augmented else str(workers)
        out[f"loader_{name}"] = {"first_s": first, "utt_per_s": rate}
        rows.append([name, f"{first:.2f}", f"{rate:,.0f}"])
        del it, loader
    return "\n".join(
        [
            "### DataLoader throughput alone (nothing else running)",
            "",
            f"Batches of {cfg.data.speakers_per_batch * 2} x {cfg.data.crop_seconds:g} s crops; "
            f"{batches} batches after the first (and after draining the prefetch queue). Augmentation: {AUGMENT} (reverb / noise / "
            "music / babble probabilities per crop, speed-perturbation probability per speaker "
            "slot).",
            "",
            sc.table(["workers", "first batch (s, incl. worker start)", "utterances/s"], rows),
        ]
    )


def loader_vs_trainer(cfg, aug_cfg, manifest_path: Path, steps: int, out: dict) -> str:
    trainer = ts.ArwTrainer(cfg)
    wavs, labels = ts.batch_of(cfg.data.speakers_per_batch * 2, cfg.data.crop_seconds)
    batch = wavs.shape[0]
    trainer.step(wavs, labels)

    def from_memory(n):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            trainer.step(wavs, labels)
            times.append(time.perf_counter() - start)
        return times, [0.0] * n

    def from_loader(workers, n, config=cfg):
        it = iter(ts.make_loader(config, manifest_path, workers))
        for _ in range(2):  # fill the prefetch queue, warm the workers
            w, y, _ = next(it)
            trainer.step(w, y % sc.N_SPEAKERS)
        times, waits = [], []
        for _ in range(n):
            start = time.perf_counter()
            w, y, _ = next(it)
            waited = time.perf_counter() - start
            trainer.step(w, y % sc.N_SPEAKERS)
            times.append(time.perf_counter() - start)
            waits.append(waited)
        del it
        return times, waits

    runs = {}
    half = max(1, steps // 2)
    first = from_memory(half)
    runs["2 workers"] = from_loader(2, steps)
    runs["2 workers + augmentation"] = from_loader(2, steps, aug_cfg)
    runs["1 worker"] = from_loader(1, steps)
    runs["0 workers (loading in the training process)"] = from_loader(0, steps)
    last = from_memory(half)
    runs = {"in memory (no loader)": (first[0] + last[0], first[1] + last[1]), **runs}
    base = sc.med(runs["in memory (no loader)"][0])
    rows = []
    for name, (times, waits) in runs.items():
        t = sc.med(times)
        rows.append(
            [
                name,
                sc.spread(times),
                f"{1e3 * float(np.mean(waits)):.1f}",
                f"{batch / t:.1f}",
                f"{t / base:.3f}",
            ]
        )
    out["loader_vs_trainer"] = runs
    return "\n".join(
        [
            "### Loader vs trainer: the ERM step fed from memory and by the loader",
            "",
            f"{cfg.model.preset}, batch {batch} x {cfg.data.crop_seconds:g} s, {steps} steps per "
            "loader after 2 warm-up steps (the in-memory row: half before, half after). "
            "`wait` is the time the step spent in `next(loader)`.",
            "",
            sc.table(["fed by", "s/step", "wait (ms/step)", "utt/s trained", "vs in memory"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="c512")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=float, default=2.0)
    p.add_argument("--corpus", default="/tmp/arw_perf/corpus")
    p.add_argument("--items", type=int, default=64)
    p.add_argument("--batches", type=int, default=30)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.batch, args.crop = "tiny", 8, 1.0
        args.items, args.batches, args.steps = 8, 4, 2
    sc.setup_threads(args.threads)
    print(f"<!-- python -m bench.speed.data {' '.join(argv or sys.argv[1:])} -->")
    print(f"Machine: {sc.machine_line()}\n")
    manifest = sc.make_corpus(Path(args.corpus))
    musan, rirs = make_noise_sources(Path(args.corpus))
    cfg, _ = ts.configs(args.preset, args.batch, args.crop)
    aug_cfg = load_config(
        ts.config_path("demo"),
        [
            f"model.preset={args.preset}",
            "model.channels=[]",
            f"data.crop_seconds={args.crop}",
            f"data.speakers_per_batch={args.batch // 2}",
            *augment_overrides(musan, rirs),
        ],
    )
    out: dict = {"machine": sc.machine_line(), "args": vars(args)}
    for name, fn in (
        ("stages", lambda: per_item(manifest, args.crop, args.items, musan, rirs)),
        ("loader", lambda: loader_alone(cfg, aug_cfg, manifest, args.batches, out)),
        ("trainer", lambda: loader_vs_trainer(cfg, aug_cfg, manifest, args.steps, out)),
    ):
        start = time.perf_counter()
        print(fn())
        print(f"\n({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

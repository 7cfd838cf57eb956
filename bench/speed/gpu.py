"""The GPU path, measured in one prepared run (about 8 minutes on one H100/H200-class GPU).

Sections, each printed as a markdown table with the GPU's name:

- training throughput of c512 and c1024 (batch ``--batch`` x 2 s): SpeechBrain's plain loop
  and arw-sv ERM in fp32, bf16 and fp16 AMP, arw-sv ERM with ``train.compile``, and ARW-PW,
  interleaved, with peak GPU memory per variant;
- extraction real-time factor of ``SpeakerEncoder`` on the GPU;
- the ``gpu``-marked tests (CUDA AMP parity with fp32, the encoder on CUDA equal to CPU,
  one-process NCCL DDP with SyncBatchNorm resuming exactly).

Without CUDA it prints one line and exits 0, so it can sit in any script.

Usage::

    .venv/bin/python -m bench.speed.gpu                 # everything
    .venv/bin/python -m bench.speed.gpu --quick         # tiny model, seconds
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench import common as sc
from bench.speed import train as ts

VARIANTS = [  # (name, kind, precision, compiled)
    ("SpeechBrain fp32", "speechbrain", "fp32", False),
    ("SpeechBrain bf16", "speechbrain", "bf16", False),
    ("arw-sv ERM fp32", "erm", "fp32", False),
    ("arw-sv ERM bf16", "erm", "bf16", False),
    ("arw-sv ERM fp16", "erm", "fp16", False),
    ("arw-sv ERM bf16, train.compile", "erm", "bf16", True),
    ("arw-sv ARW-PW bf16", "arw_pw", "bf16", False),
]


def timed(fn, steps: int) -> float:
    """Seconds per call, synchronised, after two warm-up calls."""
    fn()
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def section_training(args) -> str:
    rows = []
    for preset in args.presets:
        erm_cfg, pw_cfg = ts.configs(preset, args.batch, args.crop)
        wavs, labels = ts.batch_of(args.batch, args.crop)
        wavs, labels = wavs.cuda(), labels.cuda()
        init = ts.ArwTrainer(erm_cfg).learner.extractor.state_dict()
        base = None
        for name, kind, precision, compiled in VARIANTS:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            if kind == "speechbrain":
                extractor = ts.ArwTrainer(erm_cfg, init).learner.extractor
                trainer = sc.SpeechBrainTrainer(
                    extractor, device="cuda", autocast_dtype=ts.AUTOCAST_DTYPES[precision]
                )
            else:
                cfg = erm_cfg if kind == "erm" else pw_cfg
                trainer = ts.ArwTrainer(cfg, init, device="cuda", precision=precision)
                if compiled:
                    trainer.learner.extractor.ecapa.compile(dynamic=False)
            start = time.perf_counter()
            trainer.step(wavs, labels)  # includes the compile, if any
            first = time.perf_counter() - start
            seconds = timed(lambda t=trainer, w=wavs, y=labels: t.step(w, y), args.steps)
            peak = torch.cuda.max_memory_allocated() / 2**30
            base = base or seconds
            rows.append(
                [
                    preset,
                    name,
                    f"{seconds * 1000:.0f}",
                    f"{args.batch / seconds:.0f}",
                    f"{base / seconds:.2f}x",
                    f"{peak:.1f}",
                    f"{first:.1f}",
                ]
            )
            print(f"  {preset} {name}: {seconds * 1000:.0f} ms/step", file=sys.stderr, flush=True)
            del trainer
    header = ["model", "variant", "ms/step", "utt/s", "speed vs SB fp32", "peak GiB", "first s"]
    return "\n".join(
        [
            f"### Training step on {torch.cuda.get_device_name()}",
            "",
            f"Batch {args.batch} x {args.crop:g} s crops, AAM over {sc.N_SPEAKERS} speakers, "
            f"mean of {args.steps} steps after 2 warm-up steps; `first s` includes compilation.",
            "",
            sc.table(header, rows),
        ]
    )


def section_extraction(args) -> str:
    from arw_sv.inference import SpeakerEncoder
    from arw_sv.models.ecapa import build_extractor

    rows = []
    for preset in args.presets:
        encoder = SpeakerEncoder(build_extractor(preset), device="cuda")
        waves = torch.randn(args.extract_batch, 16000 * 8)
        seconds = timed(lambda e=encoder, w=waves: e(w), max(3, args.steps // 2))
        audio = args.extract_batch * 8
        rows.append(
            [preset, f"{args.extract_batch} x 8 s", f"{seconds:.3f}", f"{audio / seconds:.0f}x"]
        )
    return "\n".join(
        [
            f"### Extraction on {torch.cuda.get_device_name()}",
            "",
            sc.table(["model", "batch", "s / call", "x real time"], rows),
        ]
    )


def section_tests() -> str:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "tests/test_gpu.py"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    tail = "\n".join(run.stdout.strip().splitlines()[-15:])
    return f"### gpu-marked tests (exit {run.returncode})\n\n```\n{tail}\n```"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["c512", "c1024"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--crop", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--extract-batch", type=int, default=32)
    p.add_argument("--sections", nargs="+", default=["training", "extraction", "tests"])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/speed/gpu.py: no CUDA device here; every GPU measurement skipped.")
        return 0
    if args.quick:
        args.presets, args.batch, args.steps, args.extract_batch = ["tiny"], 16, 3, 4
    print(f"<!-- python -m bench.speed.gpu {' '.join(argv or sys.argv[1:])} -->")
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}\n")
    sections = {
        "training": lambda: section_training(args),
        "extraction": lambda: section_extraction(args),
        "tests": section_tests,
    }
    for name in args.sections:
        start = time.perf_counter()
        print(sections[name](), flush=True)
        print(f"\n({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time `arw-sv manifest --format hf` against `--format csv` on the same audio.

Writes N short 16 kHz WAV clips (a few speakers, made-up ages), a corpus CSV naming
them, and a Hugging Face dataset (``save_to_disk``) embedding the same bytes; then runs
both readers through the CLI in this process and prints each one's seconds and the ratio.
The HF reader decodes every clip with soundfile and writes it out (the dataset holds the
audio itself); the CSV reader reads each file's header only.

Usage::

    python -m bench.speed.manifest --n 10000 --seconds 0.25 --work /tmp/manifest_speed
    python -m bench.speed.manifest --rate 22050 --work /tmp/manifest_speed   # resampled
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from arw_sv.cli import main as arw_sv


def build(
    work: Path, n: int, seconds: float, rate: int = 16000, speakers: int = 100
) -> tuple[Path, Path]:
    """The corpus CSV and the dataset folder, over the same N clips."""
    import datasets

    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    wav = work / "wav"
    wav.mkdir(parents=True)
    rows, blobs, owners = [], [], []
    for i in range(n):
        speaker = f"spk{i % speakers:03d}"
        buffer = io.BytesIO()
        sf.write(buffer, 0.1 * rng.standard_normal(int(rate * seconds)), rate, format="WAV")
        (wav / f"{i:06d}.wav").write_bytes(buffer.getvalue())
        rows.append(f"wav/{i:06d}.wav,{speaker}")
        blobs.append({"bytes": buffer.getvalue(), "path": f"{i:06d}.wav"})
        owners.append(speaker)
    (work / "corpus.csv").write_text("path,speaker\n" + "\n".join(rows) + "\n")
    ages = {
        s: int(a) for s, a in zip(sorted(set(owners)), rng.integers(6, 90, speakers), strict=True)
    }
    ds = datasets.Dataset.from_dict(
        {"audio": blobs, "speaker_id": owners, "age": [ages[s] for s in owners]}
    )
    ds.cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(work / "hf"))
    return work / "corpus.csv", work / "hf"


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    if arw_sv(["manifest", *args]) != 0:
        raise SystemExit(f"arw-sv manifest {' '.join(args)} failed")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=10_000, help="utterances")
    p.add_argument("--seconds", type=float, default=0.25, help="length of each clip")
    p.add_argument("--rate", type=int, default=16000,
                   help="the clips' sample rate (not 16000: the HF reader resamples each)")  # fmt: skip
    p.add_argument("--work", type=Path, required=True, help="scratch folder (replaced)")
    args = p.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    corpus, dataset = build(args.work, args.n, args.seconds, args.rate)
    csv_s = timed(["--format", "csv", str(corpus), "--out", str(args.work / "csv.csv")])
    hf_s = timed(["--format", "hf", str(dataset), "--attributes", "age",
                  "--out", str(args.work / "hf.csv")])  # fmt: skip
    print(f"{args.n} utterances of {args.seconds:g} s at {args.rate} Hz: csv {csv_s:.2f} s, hf {hf_s:.2f} s, "
          f"hf/csv {hf_s / csv_s:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

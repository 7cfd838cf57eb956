#!/usr/bin/env python3
"""A VoxCeleb-layout mini corpus for smoke-testing the recipe end to end (no real audio).

Built from arw-sv's synthetic generator, laid out and formatted like the real downloads::

    <out>/vox1/wav/idXXXXX/<video>/<nnnnn>.wav      VoxCeleb1 (synthetic speakers id10001...)
    <out>/vox1/vox1_meta.csv                        tab-separated, LF, as the real file
    <out>/vox2/dev/aac/id0XXXX/<video>/<nnnnn>.m4a  VoxCeleb2-dev as AAC (PyAV or ffmpeg)
    <out>/vox2/test/aac/id0XXXX/<video>/<nnnnn>.m4a VoxCeleb2-test (48 speakers: calibration)
    <out>/vox2/vox2_meta.csv                        BOM, CRLF, " ," separators, no final newline
    <out>/trials/vox1_O.txt, vox1_E.txt, vox1_H.txt  "<1|0> <enroll> <test>"; O has no final
                                                    newline and E has CRLF, as real copies do
    <out>/musan/{noise,music,speech}/.../*.wav      small fake MUSAN
    <out>/RIRS_NOISES/simulated_rirs/.../*.wav      small fake simulated RIRs

O holds the VoxCeleb1 test speakers only; E and H (like the real ones) also VoxCeleb1-dev
speakers, H pairing speakers of the same gender and nationality. Without PyAV or
ffmpeg the VoxCeleb2 part is left out (and said so): train on ``vox1_dev`` and evaluate on O then.

::

    python recipes/voxceleb/local/make_mini_corpus.py --out data/mini
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from arw_sv.synth import generate_corpus, preset
from arw_sv.synth.config import apply_overrides

SR = 16000


def _m4a(ffmpeg: str | None, wav: Path, m4a: Path) -> None:
    """AAC at 64 kb/s, as VoxCeleb2: with PyAV (``ffmpeg=None``) or a system ffmpeg."""
    m4a.parent.mkdir(parents=True, exist_ok=True)
    if ffmpeg is None:
        import av
        import soundfile as sf

        audio, rate = sf.read(str(wav), dtype="float32")
        with av.open(str(m4a), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=rate, layout="mono")
            stream.bit_rate = 64000
            frame = av.AudioFrame.from_ndarray(audio[None], format="fltp", layout="mono")
            frame.sample_rate = rate
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        return
    cmd = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(wav),
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        str(m4a),
    ]
    subprocess.run(cmd, check=True, capture_output=True)


def make_vox2(root: Path, seed: int, ffmpeg: str | None) -> dict:
    """A second synthetic corpus as VoxCeleb2: renamed speakers, m4a audio, vox2_meta.csv."""
    with tempfile.TemporaryDirectory() as tmp:
        # 12 test speakers per cell: VoxCeleb2-test, the recipe's calibration speakers.
        cfg = apply_overrides(preset("tiny"), [f"seed={seed}", "test_speakers_per_cell=12"])
        corpus = generate_corpus(Path(tmp) / "c", cfg, progress=False)
        meta = [line.split("\t") for line in corpus.meta_path.read_text().splitlines()[1:]]
        rows = []
        for n, (spk, _name, gender, _nat, split) in enumerate(meta):
            new = f"id{n + 12:05d}"  # id00012, ... as VoxCeleb2 (no clash with id1xxxx)
            part = "dev" if split == "dev" else "test"
            for wav in sorted((corpus.wav_dir / spk).glob("*/*.wav")):
                _m4a(ffmpeg, wav, root / part / "aac" / new / wav.parent.name / f"{wav.stem}.m4a")
            rows.append(f"{new} ,n{n + 12:06d} ,{gender} ,{split} ")
    header = "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set "
    (root / "vox2_meta.csv").write_bytes(("\ufeff" + "\r\n".join([header, *rows])).encode())
    return {"speakers": len(rows)}


def _fake_noise(root: Path, rng: np.random.Generator) -> None:
    t = np.arange(3 * SR) / SR
    for kind, sub in (("noise", "free-sound"), ("music", "fma"), ("speech", "librivox")):
        folder = root / "musan" / kind / sub
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            if kind == "music":
                audio = 0.1 * np.sin(2 * np.pi * 220 * (i + 1) * t)
            else:
                audio = rng.normal(0, 0.1, t.size) * (1 if kind == "noise" else np.sin(8 * t) > 0)
            sf.write(folder / f"{kind}-{sub}-{i:04d}.wav", audio.astype(np.float32), SR)
    for room in ("smallroom/Room001", "mediumroom/Room001"):
        folder = root / "RIRS_NOISES" / "simulated_rirs" / room
        folder.mkdir(parents=True, exist_ok=True)
        n = int(0.25 * SR)
        rir = rng.normal(0, 1, n) * np.exp(-np.arange(n) / (0.04 * SR))
        rir[20] = 4.0
        sf.write(folder / "Room001-00001.wav", rir.astype(np.float32), SR)


def _trial_lists(vox1: Path, out: Path, rng: np.random.Generator) -> dict:
    meta = [line.split("\t") for line in (vox1 / "vox1_meta.csv").read_text().splitlines()[1:]]
    info = {m[0]: m for m in meta}
    utts: dict[str, list[str]] = {}
    for wav in sorted((vox1 / "wav").glob("*/*/*.wav")):
        utts.setdefault(wav.parts[-3], []).append("/".join(wav.parts[-3:]))
    out.mkdir(parents=True, exist_ok=True)
    # O: the generator's own list over the test speakers, written without a final newline.
    o_text = (vox1 / "trials.txt").read_text().rstrip("\n")
    (out / "vox1_O.txt").write_text(o_text)
    speakers = sorted(utts)

    def pairs(candidates) -> list[str]:
        lines = []
        for spk in speakers:
            mine = utts[spk]
            lines.append(f"1 {mine[0]} {mine[-1]}")
            others = [s for s in speakers if s != spk and candidates(spk, s)]
            for other in rng.choice(others, size=min(2, len(others)), replace=False):
                lines.append(f"0 {mine[0]} {utts[str(other)][1]}")
        return lines

    every = pairs(lambda a, b: True)
    hard = pairs(lambda a, b: info[a][2] == info[b][2] and info[a][3] == info[b][3])
    (out / "vox1_E.txt").write_bytes(("\r\n".join(every) + "\r\n").encode())
    (out / "vox1_H.txt").write_text("\n".join(hard) + "\n")
    return {"O": o_text.count("\n") + 1, "E": len(every), "H": len(hard)}


def make_mini_corpus(out: str | Path, seed: int = 0, with_vox2: bool | None = None) -> dict:
    """Build the mini corpus in ``out`` (new or empty); returns what was made."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty")
    rng = np.random.default_rng(seed)
    have_pyav = importlib.util.find_spec("av") is not None
    ffmpeg = None if have_pyav else shutil.which("ffmpeg")  # None: PyAV writes the m4a
    if with_vox2 is None:
        with_vox2 = have_pyav or ffmpeg is not None
    if with_vox2 and not have_pyav and ffmpeg is None:
        raise RuntimeError("the VoxCeleb2 part needs PyAV (`pip install av`) or ffmpeg")
    summary: dict = {"vox2": None}
    vox1 = generate_corpus(out / "vox1", preset("tiny"), progress=False)
    summary["vox1"] = {"speakers": vox1.num_dev_speakers + vox1.num_test_speakers}
    if with_vox2:
        summary["vox2"] = make_vox2(out / "vox2", seed + 1, ffmpeg)
    else:
        print("mini corpus: no PyAV nor ffmpeg, no VoxCeleb2 part", file=sys.stderr)
    _fake_noise(out, rng)
    summary["trials"] = _trial_lists(out / "vox1", out / "trials", rng)
    (out / "mini_corpus.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-vox2", action="store_true", help="leave out the VoxCeleb2 part")
    args = parser.parse_args(argv)
    summary = make_mini_corpus(args.out, args.seed, False if args.no_vox2 else None)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Prepare VoxCeleb for training and evaluation (stage 1 of run.sh).

Inputs, as downloaded::

    VoxCeleb1/wav/idXXXXX/<video>/<nnnnn>.wav          (16 kHz wav)
    VoxCeleb2/dev/aac/idXXXXX/<video>/<nnnnn>.m4a      (AAC; converted here to 16 kHz wav,
                                                        by PyAV or a system ffmpeg)
    VoxCeleb2/test/aac/idXXXXX/<video>/<nnnnn>.m4a     (optional: calibration speakers)
    vox1_meta.csv, vox2_meta.csv                       (gender, nationality, set)
    trial lists: veri_test2.txt (VoxCeleb1-O), list_test_all2.txt (-E), list_test_hard2.txt (-H)

Outputs in ``--out``::

    train.csv      training manifest (utt_id, path, speaker, duration, gender, nationality, split)
    vox1.csv       every VoxCeleb1 utterance (the evaluation side: extraction reads it)
    cal.csv        calibration speakers (split ``cal``): VoxCeleb2-test (``test/aac`` beside
                   ``dev/aac``, converted like dev) and the VoxCeleb1 speakers that are neither
                   trained on nor named by a trial list; absent when there are none
    prepare.json   counts, what was converted or skipped and why, the leak check
    skipped.txt    one line per skipped file: <path> TAB <reason>

What it guarantees:

- **Resumable and idempotent.** A VoxCeleb2 wav is converted only when it is missing or
  broken (no readable header, not 16 kHz mono, or empty); each conversion writes a temporary
  file and renames it, so an interrupted run never leaves a half-written wav under the
  final name. The same inputs give byte-identical manifests.
- **No system ffmpeg needed.** m4a files are decoded with PyAV (``av`` on PyPI, which ships
  FFmpeg's own libraries), or with an ``ffmpeg`` on PATH (``--decoder ffmpeg``); both resample
  with FFmpeg's libswresample to 16 kHz mono 16-bit wav.
- **Corrupt files are reported, not dropped silently.** An m4a that cannot be decoded or
  a wav that cannot be read is skipped, listed in skipped.txt with the reason, and counted
  in the summary; more than ``--max-skipped-fraction`` of the files stops the run (a broken
  download or a missing codec should not go unnoticed).
- **Test speakers never reach training.** Only speakers whose metadata ``Set`` is ``dev``
  are trained on, and every speaker named in a trial list passed with ``--trials`` must be
  absent from the training set, or preparation fails. VoxCeleb1-E and -H are drawn from
  VoxCeleb1-dev, so they require ``--train-set vox2_dev``.
- Metadata files are read as they are published (tab- or comma-separated, byte-order mark,
  CRLF, spaces around separators) by ``arw_sv.data.meta.read_speaker_meta``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import soundfile as sf

from arw_sv.atomic import atomic_write_text
from arw_sv.data.manifest import Utterance, write_manifest
from arw_sv.data.meta import MetadataError, SpeakerInfo, read_speaker_meta
from arw_sv.data.trials import TrialsError, read_trials, speaker_of

SAMPLE_RATE = 16000
TRAIN_SETS = {
    "vox2_dev": ("vox2",),
    "vox1_dev+vox2_dev": ("vox1", "vox2"),
    "vox1_dev": ("vox1",),  # small; for smoke tests
}
DECODERS = ("auto", "pyav", "ffmpeg")
PYAV_MISSING = (
    "--decoder pyav: PyAV is needed to decode VoxCeleb2's m4a files and is not installed; "
    "`pip install av` (it ships FFmpeg's libraries), or pass --decoder ffmpeg"
)
FFMPEG_MISSING = (
    "ffmpeg is needed to convert VoxCeleb2's m4a files to wav, and it is not on PATH.\n"
    "`pip install av` (PyAV, FFmpeg's libraries; used by --decoder auto), or install "
    "ffmpeg (Debian/Ubuntu: `sudo apt-get install ffmpeg`; conda: "
    "`conda install -c conda-forge ffmpeg`; macOS: `brew install ffmpeg`), or convert the "
    "files yourself to <vox2-wav>/<speaker>/<video>/<nnnnn>.wav (16 kHz mono) and rerun."
)


class PrepareError(RuntimeError):
    """Preparation cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class AudioFile:
    """A usable wav: where it is, its id below the corpus root, and its length."""

    path: Path
    utt_id: str  # <speaker>/<video>/<nnnnn>.wav, as trial lists name it
    frames: int
    sample_rate: int


@dataclass(frozen=True)
class Skip:
    path: Path
    reason: str


def wav_header(path: Path) -> tuple[int, int, int, str | None]:
    """``(frames, rate, channels, None)`` for a readable, non-empty wav, else a reason last."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several error types
        return 0, 0, 0, f"unreadable audio ({str(exc).splitlines()[0][:200]})"
    if info.frames <= 0:
        return 0, 0, 0, "no samples"
    return int(info.frames), int(info.samplerate), int(info.channels), None


def _converted_ok(path: Path) -> bool:
    _frames, rate, channels, problem = wav_header(path)
    return problem is None and rate == SAMPLE_RATE and channels == 1


def find_ffmpeg() -> str:
    """Path of ffmpeg, or a clear error saying how to install it."""
    found = shutil.which("ffmpeg")
    if found is None:
        raise PrepareError(FFMPEG_MISSING)
    return found


def find_decoder(name: str = "auto") -> str:
    """``"pyav"`` or the path of a system ffmpeg; ``auto`` prefers PyAV, then ffmpeg."""
    import importlib.util

    have_pyav = importlib.util.find_spec("av") is not None
    if name == "pyav" and not have_pyav:
        raise PrepareError(PYAV_MISSING)
    if name == "pyav" or (name == "auto" and have_pyav):
        return "pyav"
    return find_ffmpeg()


def decode_pyav(m4a: Path, wav: Path) -> None:
    """Decode ``m4a``'s first audio stream to a 16 kHz mono 16-bit ``wav`` with PyAV.

    Resampling and down-mixing go through FFmpeg's libswresample, as ``ffmpeg -ac 1 -ar``
    does. Raises on any decoding error, or when no sample was decoded.
    """
    import av
    import numpy as np

    chunks = []
    with av.open(str(m4a)) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(stream):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    if samples.size == 0:
        raise ValueError("no audio decoded")
    sf.write(str(wav), samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def convert_one(decoder: str, m4a: Path, wav: Path, timeout: float = 600.0) -> str:
    """Convert one m4a unless its wav is already good; returns kept / converted / an error.

    ``decoder`` is ``"pyav"`` or the path of an ffmpeg executable (:func:`find_decoder`).
    """
    if wav.exists() and _converted_ok(wav):
        return "kept"
    wav.parent.mkdir(parents=True, exist_ok=True)
    partial = wav.with_name(f".{wav.name}.partial")
    partial.unlink(missing_ok=True)
    if decoder == "pyav":
        try:
            decode_pyav(m4a, partial)
        except Exception as exc:  # noqa: BLE001 - PyAV raises FFmpegError subclasses and more
            partial.unlink(missing_ok=True)
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
            return f"error: PyAV (FFmpeg) could not decode it ({message})"
        if not _converted_ok(partial):
            partial.unlink(missing_ok=True)
            return "error: PyAV (FFmpeg) could not decode it (no usable wav written)"
        os.replace(partial, wav)
        return "converted"
    ffmpeg = decoder
    cmd = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(m4a),
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-c:a",
        "pcm_s16le",
        "-f",
        "wav",
        str(partial),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        return f"error: ffmpeg timed out after {timeout:.0f} s"
    if done.returncode != 0 or not _converted_ok(partial):
        partial.unlink(missing_ok=True)
        message = (done.stderr.strip().splitlines() or ["no audio decoded"])[-1][:200]
        return f"error: ffmpeg could not decode it ({message})"
    os.replace(partial, wav)
    return "converted"


def vox2_audio_root(vox2: Path) -> Path:
    """The folder holding VoxCeleb2-dev's speaker folders (``dev/aac`` as downloaded)."""
    for candidate in (vox2 / "dev" / "aac", vox2 / "aac", vox2):
        if candidate.is_dir() and any(candidate.glob("id*/*/*.m4a")):
            return candidate
    raise PrepareError(f"--vox2 {vox2}: no idXXXXX/<video>/<nnnnn>.m4a under dev/aac/")


def vox2_test_root(vox2: Path) -> Path | None:
    """VoxCeleb2-test's speaker folders (``test/aac`` beside ``dev/aac``), if downloaded."""
    candidate = vox2 / "test" / "aac"
    return candidate if candidate.is_dir() and any(candidate.glob("id*/*/*.m4a")) else None


def vox1_audio_root(vox1: Path) -> Path:
    """The folder holding VoxCeleb1's speaker folders (``wav`` as downloaded)."""
    for candidate in (vox1 / "wav", vox1):
        if candidate.is_dir() and any(candidate.glob("id*/*/*.wav")):
            return candidate
    raise PrepareError(f"--vox1 {vox1}: no wav/idXXXXX/<video>/<nnnnn>.wav")


def convert_vox2(
    aac_root: Path, wav_root: Path, jobs: int, progress: bool = True, decoder: str = "auto"
) -> tuple[Counter, list[Skip]]:
    """Convert every m4a below ``aac_root`` that has no good wav below ``wav_root`` yet."""
    ffmpeg = find_decoder(decoder)
    sources = sorted(aac_root.glob("*/*/*.m4a"))
    outcome: Counter = Counter()
    skipped: list[Skip] = []
    started = last = time.perf_counter()

    def task(m4a: Path) -> tuple[Path, str]:
        rel = m4a.relative_to(aac_root).with_suffix(".wav")
        return m4a, convert_one(ffmpeg, m4a, wav_root / rel)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for done, (m4a, result) in enumerate(pool.map(task, sources), 1):
            if result.startswith("error"):
                outcome["failed"] += 1
                skipped.append(Skip(m4a, result.removeprefix("error: ")))
            else:
                outcome[result] += 1
            now = time.perf_counter()
            if progress and (now - last > 30 or done == len(sources)):
                print(
                    f"prepare: vox2 m4a -> wav {done}/{len(sources)} "
                    f"({dict(outcome)}), {now - started:.0f} s",
                    file=sys.stderr,
                )
                last = now
    return outcome, skipped


def scan_wavs(root: Path, jobs: int) -> tuple[list[AudioFile], list[Skip]]:
    """Header of every ``<speaker>/<video>/<nnnnn>.wav`` below ``root``; bad ones skipped."""
    paths = sorted(root.glob("*/*/*.wav"))

    def task(path: Path) -> tuple[Path, tuple[int, int, int, str | None]]:
        return path, wav_header(path)

    found, skipped = [], []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for path, (frames, rate, _channels, problem) in pool.map(task, paths):
            if problem is None:
                utt_id = "/".join(path.relative_to(root).parts)
                found.append(AudioFile(path, utt_id, frames, rate))
            else:
                skipped.append(Skip(path, problem))
    return found, skipped


def utterances(
    files: Iterable[AudioFile], meta: dict[str, SpeakerInfo], corpus: str
) -> tuple[list[Utterance], Counter]:
    """Manifest rows with gender, nationality and set; speakers without metadata left out."""
    rows, unknown = [], Counter()
    for f in files:
        speaker = f.utt_id.split("/", 1)[0]
        info = meta.get(speaker)
        if info is None:
            unknown[speaker] += 1
            continue
        rows.append(
            Utterance(
                utt_id=f.utt_id,
                path=str(f.path.resolve()),
                speaker=speaker,
                duration=f.frames / f.sample_rate,
                gender=info.gender or "unknown",
                nationality=info.nationality or "unknown",
                split=info.set or "unknown",
            )
        )
    if unknown:
        print(
            f"prepare: {corpus}: {len(unknown)} speaker(s) with audio but no metadata left "
            f"out ({sum(unknown.values())} files), e.g. {', '.join(sorted(unknown)[:5])}",
            file=sys.stderr,
        )
    return rows, unknown


def _vox2_part(aac_root: Path, wav_root: Path, meta, args, name: str = "vox2"):
    """Convert one VoxCeleb2 part's m4a files and read its wavs back as manifest rows.

    Only wavs whose m4a is still there count: a wav left from an earlier, larger download
    must not come back. Returns ``(rows, speakers without metadata, outcome, skipped)``.
    """
    outcome, skipped = convert_vox2(
        aac_root, wav_root, args.jobs, progress=not args.quiet, decoder=args.decoder
    )
    files, bad = scan_wavs(wav_root, args.jobs)
    sources = {
        p.relative_to(aac_root).with_suffix(".wav").as_posix() for p in aac_root.glob("*/*/*.m4a")
    }
    rows, unknown = utterances([f for f in files if f.utt_id in sources], meta, name)
    return rows, unknown, outcome, skipped + bad


def trial_speakers(trials: Sequence[Path]) -> tuple[set[str], set[str]]:
    """Speakers and utterances named by the trial lists."""
    speakers, utts = set(), set()
    for path in trials:
        t = read_trials(path)
        utts.update(t.enroll)
        utts.update(t.test)
    speakers = {speaker_of(u) for u in utts}
    return speakers, utts


def prepare(args: argparse.Namespace) -> dict:
    """Run the preparation described by parsed arguments; returns the report."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("train.csv", "vox1.csv", "cal.csv"):  # a failed run must leave no older one
        (out / stale).unlink(missing_ok=True)
    corpora = TRAIN_SETS[args.train_set]
    if "vox2" in corpora and (args.vox2 is None or args.vox2_meta is None):
        raise PrepareError(f"--train-set {args.train_set} needs --vox2 and --vox2-meta")
    report: dict = {"train_set": args.train_set, "inputs": {}, "skipped": {}, "counts": {}}
    skipped: list[Skip] = []
    try:
        vox1_meta = read_speaker_meta(args.vox1_meta)
        vox2_meta = read_speaker_meta(args.vox2_meta) if "vox2" in corpora else {}
    except MetadataError as exc:
        raise PrepareError(str(exc)) from None

    # VoxCeleb1: always (the evaluation side), and training data if selected.
    vox1_files, bad = scan_wavs(vox1_audio_root(Path(args.vox1)), args.jobs)
    skipped += bad
    vox1_rows, vox1_unknown = utterances(vox1_files, vox1_meta, "vox1")
    report["inputs"]["vox1"] = {
        "files": len(vox1_files) + len(bad),
        "unreadable": len(bad),
        "speakers_without_metadata": len(vox1_unknown),
    }

    vox2_rows: list[Utterance] = []
    vox2_test_rows: list[Utterance] = []
    total_files = len(vox1_files) + len(bad)
    if "vox2" in corpora:
        aac_root = vox2_audio_root(Path(args.vox2))
        wav_root = Path(args.vox2_wav) if args.vox2_wav else out / "vox2_wav"
        vox2_rows, vox2_unknown, outcome, bad2 = _vox2_part(aac_root, wav_root, vox2_meta, args)
        skipped += bad2
        total_files += sum(outcome.values())
        report["inputs"]["vox2"] = {
            "m4a": sum(outcome.values()),
            **dict(outcome),
            "wav_root": str(wav_root),
            "speakers_without_metadata": len(vox2_unknown),
        }
        test_root = vox2_test_root(Path(args.vox2))
        if test_root is not None:  # VoxCeleb2-test: calibration speakers
            test_wav = wav_root.with_name(wav_root.name + "_test")
            rows, _, outcome, bad2 = _vox2_part(test_root, test_wav, vox2_meta, args, "vox2 test")
            skipped += bad2
            vox2_test_rows = [u for u in rows if u.split == "test"]
            total_files += sum(outcome.values())
            report["inputs"]["vox2_test"] = {"m4a": sum(outcome.values()), **dict(outcome)}

    # Training rows: the dev speakers of the selected corpora.
    train = [u for u in vox1_rows if "vox1" in corpora and u.split == "dev"]
    train += [u for u in vox2_rows if u.split == "dev"]
    not_dev = Counter(u.split for u in vox2_rows if u.split != "dev")
    if not_dev:
        report["counts"]["vox2_non_dev_utterances_left_out"] = dict(not_dev)
    if not train:
        raise PrepareError(f"no training utterances for --train-set {args.train_set}")

    # Leak check against every evaluation list.
    try:
        named_speakers, named_utts = trial_speakers([Path(t) for t in args.trials])
    except TrialsError as exc:
        raise PrepareError(str(exc)) from None
    train_speakers = {u.speaker for u in train}
    leaked = sorted(train_speakers & named_speakers)
    report["leak_check"] = {
        "trial_lists": [str(t) for t in args.trials],
        "trial_speakers": len(named_speakers),
        "train_speakers": len(train_speakers),
        "overlap": len(leaked),
    }
    available = {u.utt_id for u in vox1_rows}
    missing = sorted(named_utts - available)
    report["trial_utterances_missing"] = {"count": len(missing), "first": missing[:5]}
    if missing:
        print(
            f"prepare: warning: {len(missing)} utterances named in the trial lists are not in "
            f"the VoxCeleb1 audio, e.g. {missing[0]}",
            file=sys.stderr,
        )

    # Calibration speakers: in neither training nor any trial list (speaker ids only).
    excluded = train_speakers | named_speakers
    cal = [replace(u, split="cal") for u in vox2_test_rows if u.speaker not in excluded]
    cal += [replace(u, split="cal") for u in vox1_rows if u.speaker not in excluded]
    report["counts"]["calibration_speakers"] = len({u.speaker for u in cal})
    report["counts"]["calibration_utterances"] = len(cal)

    reasons = Counter(s.reason.split(" (")[0] for s in skipped)
    report["skipped"] = {"count": len(skipped), "by_reason": dict(reasons)}
    report["counts"].update(
        train_utterances=len(train),
        train_speakers=len(train_speakers),
        train_hours=round(sum(u.duration for u in train) / 3600, 3),
        vox1_utterances=len(vox1_rows),
        vox1_speakers=len({u.speaker for u in vox1_rows}),
    )
    atomic_write_text(out / "skipped.txt", "".join(f"{s.path}\t{s.reason}\n" for s in skipped))
    atomic_write_text(out / "prepare.json", json.dumps(report, indent=1) + "\n")
    if leaked:
        raise PrepareError(
            f"{len(leaked)} training speaker(s) appear in the trial lists (e.g. "
            f"{', '.join(leaked[:5])}): test speakers must never be trained on. VoxCeleb1-E and "
            "-H are drawn from VoxCeleb1-dev: evaluate on them with --train-set vox2_dev."
        )
    if total_files and len(skipped) / total_files > args.max_skipped_fraction:
        raise PrepareError(
            f"{len(skipped)} of {total_files} audio files were skipped (see {out / 'skipped.txt'}), "
            f"more than --max-skipped-fraction {args.max_skipped_fraction}: check the download "
            "(or raise the limit)"
        )
    write_manifest(train, out / "train.csv")
    write_manifest(vox1_rows, out / "vox1.csv")
    if cal:
        write_manifest(cal, out / "cal.csv")
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", required=True, help="output folder (manifests, report)")
    p.add_argument("--vox1", required=True, help="VoxCeleb1 folder holding wav/")
    p.add_argument("--vox1-meta", required=True, help="vox1_meta.csv")
    p.add_argument("--vox2", help="VoxCeleb2 folder holding dev/aac/")
    p.add_argument("--vox2-meta", help="vox2_meta.csv")
    p.add_argument("--vox2-wav", help="where converted VoxCeleb2 wavs go (default <out>/vox2_wav)")
    p.add_argument("--train-set", choices=sorted(TRAIN_SETS), default="vox2_dev")
    p.add_argument(
        "--trials",
        action="append",
        default=[],
        help="a trial list to evaluate on (repeatable); its speakers must not be trained on",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="parallel m4a conversions and header reads",
    )
    p.add_argument(
        "--decoder",
        choices=DECODERS,
        default="auto",
        help="m4a decoder: pyav (FFmpeg's libraries from PyPI), ffmpeg (the system one on "
        "PATH), auto (PyAV if installed, else ffmpeg)",
    )
    p.add_argument(
        "--max-skipped-fraction",
        type=float,
        default=0.01,
        help="fail when more than this share of the audio files is unusable (default 0.01)",
    )
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = prepare(args)
    except PrepareError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
    c = report["counts"]
    print(
        f"prepare: train ({args.train_set}): {c['train_utterances']} utterances, "
        f"{c['train_speakers']} speakers, {c['train_hours']} h; VoxCeleb1: "
        f"{c['vox1_utterances']} utterances of {c['vox1_speakers']} speakers; calibration: "
        f"{c['calibration_utterances']} utterances of {c['calibration_speakers']} speakers"
    )
    if "vox2" in report["inputs"]:
        v = report["inputs"]["vox2"]
        print(
            f"prepare: VoxCeleb2 m4a: {v.get('converted', 0)} converted, {v.get('kept', 0)} "
            f"already done, {v.get('failed', 0)} failed"
        )
    s = report["skipped"]
    print(
        f"prepare: skipped {s['count']} file(s)"
        + (f": {s['by_reason']} (list in {Path(args.out) / 'skipped.txt'})" if s["count"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

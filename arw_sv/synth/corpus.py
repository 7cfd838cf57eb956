"""A synthetic speaker corpus laid out exactly like VoxCeleb1.

::

    <out>/wav/id10001/<11-char session id>/00001.wav   16 kHz mono int16 PCM
    <out>/vox1_meta.csv   VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set (tab-separated)
    <out>/trials.txt      "<1|0> spk/sess/utt.wav spk/sess/utt.wav" over the test speakers
    <out>/corpus.json     the generation config, counts, and "complete": true once done

Dev speakers come first (id10001...), then the test speakers as one contiguous block, as
in VoxCeleb1. Every random draw comes from a ``numpy.random.SeedSequence`` keyed by
(seed, stream, speaker, session, utterance), so the corpus does not depend on the number
of workers or on the order in which they finish.

Output is crash-safe: ``corpus.json`` (complete=false) is written first, each file is
written to a temporary name and moved into place, and ``corpus.json`` is rewritten with
complete=true last. A re-run over a complete corpus with the same config does nothing;
a re-run over an interrupted one skips the wav files already in place.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from arw_sv.atomic import atomic_write_bytes, atomic_write_text
from arw_sv.synth.accent import make_accent
from arw_sv.synth.channel import apply_channel, draw_channel
from arw_sv.synth.config import SynthConfig, config_dict
from arw_sv.synth.trials import build_trials
from arw_sv.synth.voice import (
    SAMPLE_RATE,
    VoiceParams,
    draw_notches,
    draw_voice,
    session_voice,
    synthesize,
)

GENERATOR_VERSION = 1
META_HEADER = "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"
FIRST_SPEAKER_ID = 10001
_SESSION_ALPHABET = np.array(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
)
# Independent random streams, one per kind of decision.
_LAYOUT, _VOICE, _SESSION, _UTTERANCE = 1, 2, 3, 4  # and 5: TRIALS_STREAM
_SIGNATURE = 6


@dataclass(frozen=True)
class Speaker:
    """One speaker of the corpus and everything needed to render it."""

    index: int  # 0-based position; the id is id{10001 + index}
    speaker_id: str
    name: str
    gender: str
    nationality: str
    split: str  # "dev" or "test"
    spread: float
    sessions: tuple[str, ...]
    durations: tuple[tuple[float, ...], ...]  # seconds, per session, per utterance

    def utterances(self) -> list[str]:
        """Paths of the speaker's utterances relative to ``wav/``."""
        return [
            f"{self.speaker_id}/{sess}/{u + 1:05d}.wav"
            for sess, durs in zip(self.sessions, self.durations, strict=True)
            for u in range(len(durs))
        ]


@dataclass(frozen=True)
class CorpusInfo:
    """Where a generated corpus lives and what it holds.

    Attributes:
        root: the corpus folder.
        wav_dir: ``root/wav``; utterance paths in meta and trials are relative to it.
        meta_path: ``root/vox1_meta.csv``.
        trials_path: ``root/trials.txt``.
        manifest_path: ``root/corpus.json``.
        config: the config it was generated with.
        num_dev_speakers, num_test_speakers, num_utterances, num_trials: counts.
        total_duration_s: seconds of audio.
        generated: False when the call found the corpus complete and did nothing.
    """

    root: Path
    wav_dir: Path
    meta_path: Path
    trials_path: Path
    manifest_path: Path
    config: SynthConfig
    num_dev_speakers: int
    num_test_speakers: int
    num_utterances: int
    num_trials: int
    total_duration_s: float
    generated: bool


def _rng(cfg: SynthConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, *key]))


def _apportion(total: int, shares: tuple[float, ...]) -> list[int]:
    """Largest-remainder split of ``total`` by ``shares`` (sums exactly to ``total``)."""
    raw = np.asarray(shares, dtype=np.float64) / sum(shares) * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def plan_speakers(cfg: SynthConfig) -> list[Speaker]:
    """Decide every speaker's group, sessions and utterance durations (no audio)."""
    dev_cells: list[tuple[str, str]] = []
    for nat, count in zip(
        cfg.nationalities, _apportion(cfg.num_dev_speakers, cfg.dev_nationality_share), strict=True
    ):
        n_f = _apportion(count, (1 - cfg.dev_female_share, cfg.dev_female_share))[1]
        dev_cells += [(nat, "f")] * n_f + [(nat, "m")] * (count - n_f)
    test_cells = [
        (nat, g)
        for nat in cfg.nationalities
        for g in ("m", "f")
        for _ in range(cfg.test_speakers_per_cell)
    ]
    layout = _rng(cfg, _LAYOUT)
    dev_cells = [dev_cells[i] for i in layout.permutation(len(dev_cells))]
    test_cells = [test_cells[i] for i in layout.permutation(len(test_cells))]
    cal_cells = [
        (nat, g)
        for nat in cfg.nationalities
        for g in ("m", "f")
        for _ in range(cfg.calibration_speakers_per_cell)
    ]  # after all others, from a stream of their own: no other speaker changes
    cal_cells = [cal_cells[i] for i in _rng(cfg, _LAYOUT, 1).permutation(len(cal_cells))]

    speakers = []
    n_dev, n_test = len(dev_cells), len(test_cells)
    for index, (nat, gender) in enumerate(dev_cells + test_cells + cal_cells):
        split = "dev" if index < n_dev else ("test" if index < n_dev + n_test else "cal")
        n_sess = cfg.dev_sessions if split == "dev" else cfg.test_sessions
        n_utt = (
            cfg.dev_utterances_per_session if split == "dev" else cfg.test_utterances_per_session
        )
        sessions: list[str] = []
        durations = []
        for s in range(n_sess):
            rng = _rng(cfg, _SESSION, index, s)
            sess = "".join(rng.choice(_SESSION_ALPHABET, 11))
            while sess in sessions:  # astronomically rare, but ids must be unique
                sess = "".join(rng.choice(_SESSION_ALPHABET, 11))
            sessions.append(sess)
            durations.append(
                tuple(
                    round(float(d), 3)
                    for d in rng.uniform(cfg.min_duration_s, cfg.max_duration_s, n_utt)
                )
            )
        nat_i = cfg.nationalities.index(nat)
        speakers.append(
            Speaker(
                index=index,
                speaker_id=f"id{FIRST_SPEAKER_ID + index}",
                name=f"Synth_Speaker_{index + 1:04d}",
                gender=gender,
                nationality=nat,
                split=split,
                spread=cfg.identity_spread
                * cfg.nationality_spread[nat_i]
                * cfg.gender_spread[0 if gender == "m" else 1],
                sessions=tuple(sessions),
                durations=tuple(durations),
            )
        )
    return speakers


def _write_wav(path: Path, audio: np.ndarray) -> None:
    # Encode in memory: soundfile's close() on a real file fsyncs, which costs more than
    # synthesising the utterance; the temp-file-then-rename keeps the write atomic anyway.
    buffer = io.BytesIO()
    pcm = np.round(audio * 32767.0).astype(np.int16)
    sf.write(buffer, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buffer.getvalue())


def _write_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def speaker_voice(cfg: SynthConfig, speaker: Speaker, accent=None) -> VoiceParams:
    """A speaker's identity: drawn from its group's prior, plus its signature notches when
    its nationality has them (from a stream of their own: no other draw changes).
    """
    accent = accent or make_accent(speaker.nationality, cfg.accent_strength)
    voice = draw_voice(_rng(cfg, _VOICE, speaker.index), speaker.gender, accent, speaker.spread)
    depth = cfg.signature_db(speaker.nationality)
    if depth > 0:
        rng = _rng(cfg, _SIGNATURE, speaker.index)
        voice = replace(
            voice, notches=draw_notches(rng, cfg.signature_notches, depth, cfg.signature_grid)
        )
    return voice


def render_speaker(cfg: SynthConfig, speaker: Speaker, wav_dir: Path) -> int:
    """Render all of a speaker's utterances that are not on disk yet; return how many."""
    accent = make_accent(speaker.nationality, cfg.accent_strength)
    voice = speaker_voice(cfg, speaker, accent)
    written = 0
    for s, (sess, durs) in enumerate(zip(speaker.sessions, speaker.durations, strict=True)):
        folder = wav_dir / speaker.speaker_id / sess
        paths = [folder / f"{u + 1:05d}.wav" for u in range(len(durs))]
        if all(p.exists() for p in paths):
            continue
        folder.mkdir(parents=True, exist_ok=True)
        srng = _rng(cfg, _SESSION, speaker.index, s, 1)
        sess_voice = session_voice(voice, srng, drift=cfg.session_drift(speaker.nationality))
        snr_db, rt60_s, reverb_prob = cfg.channel_ranges(speaker.nationality)
        channel = draw_channel(srng, snr_db, rt60_s, reverb_prob, cfg.eq_db)
        for u, (path, dur) in enumerate(zip(paths, durs, strict=True)):
            if path.exists():
                continue
            urng = _rng(cfg, _UTTERANCE, speaker.index, s, u)
            clean = synthesize(sess_voice, accent, dur, urng)
            _write_wav(path, apply_channel(clean, channel, urng))
            written += 1
    return written


def _render_task(task: tuple[SynthConfig, Speaker, Path]) -> int:
    return render_speaker(*task)


def _manifest(cfg: SynthConfig, speakers: list[Speaker], n_trials: int, complete: bool) -> dict:
    return {
        "generator": "arw-sv synth",
        "generator_version": GENERATOR_VERSION,
        "sample_rate": SAMPLE_RATE,
        "config": config_dict(cfg),
        "num_dev_speakers": sum(s.split == "dev" for s in speakers),
        "num_test_speakers": sum(s.split == "test" for s in speakers),
        "num_calibration_speakers": sum(s.split == "cal" for s in speakers),
        "num_utterances": sum(len(s.utterances()) for s in speakers),
        "num_trials": n_trials,
        "total_duration_s": round(sum(sum(sum(d) for d in s.durations) for s in speakers), 3),
        "complete": complete,
    }


def _info(root: Path, cfg: SynthConfig, manifest: dict, generated: bool) -> CorpusInfo:
    return CorpusInfo(
        root=root,
        wav_dir=root / "wav",
        meta_path=root / "vox1_meta.csv",
        trials_path=root / "trials.txt",
        manifest_path=root / "corpus.json",
        config=cfg,
        num_dev_speakers=manifest["num_dev_speakers"],
        num_test_speakers=manifest["num_test_speakers"],
        num_utterances=manifest["num_utterances"],
        num_trials=manifest["num_trials"],
        total_duration_s=manifest["total_duration_s"],
        generated=generated,
    )


def load_corpus(out_dir: str | Path) -> CorpusInfo:
    """Open a complete generated corpus; raise if it is missing or unfinished."""
    root = Path(out_dir)
    path = root / "corpus.json"
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic corpus at {root} (missing {path.name})")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not manifest.get("complete"):
        raise RuntimeError(
            f"synthetic corpus at {root} is incomplete; re-run `arw-sv synth` to finish it"
        )
    return _info(root, SynthConfig.from_dict(manifest["config"]), manifest, generated=False)


def _check_out_dir(root: Path, cfg: SynthConfig) -> dict | None:
    """Return the existing manifest for this config, or None for a fresh folder."""
    manifest_path = root / "corpus.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        # A key missing from an older corpus.json had its default (e.g. the acoustic knobs).
        new = config_dict(cfg)
        defaults = config_dict(SynthConfig())
        old = {k: manifest.get("config", {}).get(k, defaults.get(k)) for k in new}
        old.update(manifest.get("config", {}))
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff or manifest.get("generator_version") != GENERATOR_VERSION:
            what = (
                ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
                or "generator version"
            )
            raise FileExistsError(
                f"{root} holds a synthetic corpus made with a different config ({what}); "
                "use another --out or delete it"
            )
        return manifest
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file, not a corpus folder")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(
            f"{root} is not empty and holds no corpus.json; use a new or empty --out"
        )
    return None


def generate_corpus(
    out_dir: str | Path, cfg: SynthConfig, progress: bool = True, workers: int = 1
) -> CorpusInfo:
    """Generate (or finish, or confirm) a synthetic VoxCeleb1-style corpus.

    Args:
        out_dir: the corpus folder; new, empty, or a corpus made with the same config.
        cfg: what to generate.
        progress: print progress lines to stderr.
        workers: processes to render with; the result is identical for any value.

    Returns:
        The corpus's paths and counts.

    Raises:
        FileExistsError: ``out_dir`` holds something else, or a corpus with another config.
        ValueError: ``workers`` is not positive.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out_dir)
    existing = _check_out_dir(root, cfg)
    speakers = plan_speakers(cfg)
    if existing is not None and existing.get("complete"):
        return _info(root, cfg, existing, generated=False)

    start = time.perf_counter()
    trials = build_trials(cfg, speakers)
    root.mkdir(parents=True, exist_ok=True)
    wav_dir = root / "wav"
    wav_dir.mkdir(exist_ok=True)
    for stale in root.rglob(".*.tmp"):  # left by an interrupted run
        stale.unlink()
    _write_text(
        root / "corpus.json", json.dumps(_manifest(cfg, speakers, len(trials), False), indent=2)
    )

    tasks = [(cfg, s, wav_dir) for s in speakers]
    if workers == 1:
        results = map(_render_task, tasks)
        pool = None
    else:
        # spawn, not fork: the caller may hold torch threads that must not be forked.
        pool = multiprocessing.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(_render_task, tasks)
    written, last = 0, start
    try:
        for done, count in enumerate(results, 1):
            written += count
            now = time.perf_counter()
            if progress and (now - last > 2.0 or done == len(tasks)):
                print(
                    f"synth: {done}/{len(tasks)} speakers, {written} files written, {now - start:.0f} s",
                    file=sys.stderr,
                )
                last = now
    except BaseException:
        if pool is not None:
            pool.terminate()  # don't let an interrupt wait for the remaining speakers
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    meta = [META_HEADER] + [
        f"{s.speaker_id}\t{s.name}\t{s.gender}\t{s.nationality}\t{s.split}" for s in speakers
    ]
    _write_text(root / "vox1_meta.csv", "\n".join(meta) + "\n")
    _write_text(root / "trials.txt", "".join(f"{label} {a} {b}\n" for label, a, b in trials))
    manifest = _manifest(cfg, speakers, len(trials), True)
    _write_text(root / "corpus.json", json.dumps(manifest, indent=2))  # the completion marker
    if progress:
        audio = manifest["total_duration_s"]
        took = time.perf_counter() - start
        print(
            f"synth: {root}: {manifest['num_utterances']} utterances, {audio / 3600:.2f} h of audio, "
            f"{len(trials)} trials in {took:.1f} s",
            file=sys.stderr,
        )
    return _info(root, cfg, manifest, generated=True)


__all__ = [
    "CorpusInfo",
    "Speaker",
    "SynthConfig",
    "build_trials",
    "generate_corpus",
    "load_corpus",
    "plan_speakers",
    "render_speaker",
]

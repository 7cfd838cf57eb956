"""On-the-fly augmentation of training crops: MUSAN noise, music and babble, RIR reverberation,
speed perturbation.

Every random choice comes from a ``numpy.random.Generator`` the caller passes in, seeded from
the crop seed the sampler attached to the item: an augmented crop is the same in every loader
worker, on every rank and after a resume. That is why this module does not use SpeechBrain's
``AddNoise`` / ``AddReverb``: they draw from torch's global RNG inside their own CSV data
loaders, batch-wise, which would break the trainer's exact resume.

Conventions (with the recipes they follow):

- one corruption per crop, picked by one draw: reverb, noise, music or babble (Kaldi's
  VoxCeleb v2 recipe and WeSpeaker both give each augmented copy one corruption);
- SNR ranges: noise 0-15 dB, music 5-15 dB, babble 13-20 dB with 3-7 MUSAN speech files,
  each at its own SNR (Kaldi's ``steps/data/augment_data_dir.py`` settings for VoxCeleb);
- reverberation: a simulated room impulse response from ``RIRS_NOISES/simulated_rirs``
  (OpenSLR 28), scaled to unit energy (as WeSpeaker), aligned on its direct path so the crop
  does not shift, truncated to the crop length;
- speed perturbation by resampling (tempo and pitch change together, as sox ``speed``), with
  the perturbed crop a new speaker class (WeSpeaker, 3D-Speaker); the speed is chosen by the
  sampler (:class:`arw_sv.data.sampler.SpeakerBatchSampler`), one per speaker slot.

Folder layouts expected (as downloaded)::

    musan/noise/{free-sound,sound-bible}/*.wav
    musan/music/{fma,fma-western-art,hd-classical,jamendo,rfm}/*.wav
    musan/speech/{librivox,us-gov}/*.wav
    RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/Room*/Room*-*.wav

Shape legend (the package one, :mod:`arw_sv`): S samples.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from arw_sv.audio import AudioError, read_audio
from arw_sv.config import AugmentConfig

log = logging.getLogger(__name__)

ADDITIVE = ("noise", "music", "babble")
MUSAN_FOLDER = {"noise": "noise", "music": "music", "babble": "speech"}


class AugmentError(ValueError):
    """An augmentation folder is missing or holds no usable audio; the message says which."""


@dataclass(frozen=True)
class NoiseFile:
    """One MUSAN recording: where it is and how long (in its own samples)."""

    path: str
    frames: int
    sample_rate: int


def scan_musan(
    musan_dir: str | Path, kinds: tuple[str, ...] = ADDITIVE
) -> dict[str, list[NoiseFile]]:
    """Index the MUSAN recordings that ``kinds`` need (``babble`` uses ``speech/``).

    Reads only the headers. Unreadable files are skipped and counted in the log.

    Raises:
        AugmentError: the folder or a needed sub-folder is missing or has no audio.
    """
    root = Path(musan_dir)
    if not root.is_dir():
        raise AugmentError(
            f"augment.musan_dir: {root} is not a folder (expected musan/ as downloaded)"
        )
    found: dict[str, list[NoiseFile]] = {}
    for kind in kinds:
        folder = root / MUSAN_FOLDER[kind]
        files = sorted(folder.rglob("*.wav")) if folder.is_dir() else []
        entries, bad = [], 0
        for f in files:
            try:
                info = sf.info(str(f))
            except Exception:  # noqa: BLE001 - soundfile raises several error types
                bad += 1
                continue
            if info.frames > 0:
                entries.append(NoiseFile(str(f), int(info.frames), int(info.samplerate)))
            else:
                bad += 1
        if bad:
            log.warning("%s: %d unreadable or empty wav files skipped", folder, bad)
        if not entries:
            raise AugmentError(
                f"augment: no usable .wav under {folder} (needed for {kind}); "
                "expected the standard musan/{noise,music,speech}/ layout"
            )
        found[kind] = entries
    return found


def scan_rirs(rirs_dir: str | Path) -> list[str]:
    """Paths of the simulated room impulse responses under ``RIRS_NOISES/simulated_rirs``.

    Raises:
        AugmentError: the folder is missing or holds no impulse responses.
    """
    root = Path(rirs_dir)
    folder = root / "simulated_rirs"
    if not folder.is_dir():
        raise AugmentError(
            f"augment.rirs_dir: {folder} not found (expected RIRS_NOISES/ as downloaded from "
            "OpenSLR 28, holding simulated_rirs/)"
        )
    paths = sorted(str(p) for p in folder.rglob("*.wav"))
    if not paths:
        raise AugmentError(f"augment: no .wav impulse responses under {folder}")
    return paths


def read_segment(
    noise: NoiseFile, length: int, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """A random window of ``length`` samples of a recording, tiled if it is shorter.

    Shape:
        -> (length,)
    """
    if noise.sample_rate == sample_rate and noise.frames > length:
        start = int(rng.integers(0, noise.frames - length))
        wav = read_audio(noise.path, sample_rate, start=start, frames=length)
        if wav.shape[0] == length:
            return wav
    wav = read_audio(noise.path, sample_rate)
    if wav.shape[0] < length:
        wav = np.tile(wav, math.ceil(length / wav.shape[0]))
    start = int(rng.integers(0, wav.shape[0] - length + 1))
    return wav[start : start + length]


def noise_gain(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
    """The factor that puts ``noise`` at ``snr_db`` below ``wav`` (mean power); 0 if either
    is silent.

    Shape:
        wav (S,), noise (S,) -> scalar
    """
    signal_power = float(np.mean(np.square(wav, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if signal_power <= 0 or noise_power <= 0:
        return 0.0
    return math.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))


def add_noise(wav: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``wav`` plus ``noise`` scaled to the given signal-to-noise ratio (mean power, dB).

    A silent signal or silent noise leaves ``wav`` unchanged.

    Shape:
        wav (S,), noise (S,) -> (S,)
    """
    gain = noise_gain(wav, noise, snr_db)
    return wav if gain == 0.0 else (wav + gain * noise).astype(np.float32)


def reverberate(wav: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with a unit-energy impulse response aligned on its direct path (its peak).

    Shape:
        wav (S,), rir (R,) -> (S,)
    """
    from scipy.signal import fftconvolve

    energy = math.sqrt(float(np.sum(np.square(rir, dtype=np.float64))))
    if energy <= 0:
        return wav
    rir = rir / energy
    delay = int(np.argmax(np.abs(rir)))
    out = fftconvolve(wav, rir, mode="full")[delay : delay + wav.shape[0]]
    return out.astype(np.float32)


def speed_perturb(wav: np.ndarray, speed: float, sample_rate: int) -> np.ndarray:
    """Play ``wav`` ``speed`` times faster (tempo and pitch together) by resampling.

    The output has about ``len(wav) / speed`` samples; the caller crops it.

    Shape:
        wav (S,) -> (ceil(S / speed),)
    """
    import torch
    import torchaudio.functional as taf

    if speed == 1.0:
        return wav
    # A signal sampled at sample_rate * speed, resampled to sample_rate (sox speed + rate).
    source_rate = int(round(sample_rate * speed))
    out = taf.resample(torch.from_numpy(np.ascontiguousarray(wav)), source_rate, sample_rate)
    return out.numpy()


def speed_classes(cfg: AugmentConfig) -> int:
    """Speaker classes per speaker: 1, or 1 + the number of perturbed speeds."""
    return 1 + len(cfg.speeds) if cfg.speed_prob > 0 else 1


class Augmenter:
    """Applies at most one of reverb / noise / music / babble to a crop, as ``cfg`` says.

    Folders are indexed once at construction (headers only); the object is picklable, so
    DataLoader workers get a copy.

    Args:
        cfg: the ``augment`` config section.
        sample_rate: the crops' rate; noise and RIRs at other rates are resampled.

    Raises:
        AugmentError: a probability is set but its folder is missing or empty.

    Example:
        >>> aug = Augmenter(AugmentConfig(), 16000)   # everything off
        >>> aug.enabled
        False
    """

    def __init__(self, cfg: AugmentConfig, sample_rate: int = 16000) -> None:
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.probs = {
            "reverb": cfg.reverb_prob,
            "noise": cfg.noise_prob,
            "music": cfg.music_prob,
            "babble": cfg.babble_prob,
        }
        kinds = tuple(k for k in ADDITIVE if self.probs[k] > 0)
        if kinds and not cfg.musan_dir:
            raise AugmentError(
                f"augment: {', '.join(kinds)} probability > 0 needs augment.musan_dir "
                "(recipes/voxceleb/run.sh: --musan), or set those probabilities to 0"
            )
        if cfg.reverb_prob > 0 and not cfg.rirs_dir:
            raise AugmentError(
                "augment.reverb_prob > 0 needs augment.rirs_dir (recipes/voxceleb/run.sh: "
                "--rirs), or set it to 0"
            )
        self.musan = scan_musan(cfg.musan_dir, kinds) if kinds else {}
        self.rirs = scan_rirs(cfg.rirs_dir) if cfg.reverb_prob > 0 else []
        if self.enabled:
            sizes = {k: len(v) for k, v in self.musan.items()} | {"rirs": len(self.rirs)}
            log.info("augmentation sources: %s", sizes)

    @property
    def enabled(self) -> bool:
        """Whether any corruption has a probability above 0 (else crops stay clean)."""
        return any(p > 0 for p in self.probs.values())

    def choose(self, rng: np.random.Generator) -> str | None:
        """The corruption for one crop (None: keep it clean), from one uniform draw."""
        u = float(rng.random())
        edge = 0.0
        for kind, prob in self.probs.items():
            edge += prob
            if u < edge:
                return kind
        return None

    def __call__(self, wav: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one crop.

        Shape:
            wav (S,) -> (S,) float32
        """
        kind = self.choose(rng)
        if kind is None:
            return wav
        try:
            if kind == "reverb":
                rir = read_audio(self.rirs[int(rng.integers(len(self.rirs)))], self.sample_rate)
                return reverberate(wav, rir)
            if kind == "babble":
                low, high = self.cfg.babble_speakers
                out = wav
                for _ in range(int(rng.integers(low, high + 1))):
                    out = self._mix(out, wav, "babble", self.cfg.babble_snr, rng)
                return out
            snr = self.cfg.noise_snr if kind == "noise" else self.cfg.music_snr
            return self._mix(wav, wav, kind, snr, rng)
        except AudioError as exc:
            # One bad noise file must not stop a week-long run: keep the crop clean.
            log.warning("augmentation skipped: %s", exc)
            return wav

    def _mix(
        self,
        out: np.ndarray,
        reference: np.ndarray,
        kind: str,
        snr_range: tuple[float, ...],
        rng: np.random.Generator,
    ) -> np.ndarray:
        files = self.musan[kind]
        noise = read_segment(
            files[int(rng.integers(len(files)))], reference.shape[0], self.sample_rate, rng
        )
        snr = float(rng.uniform(snr_range[0], snr_range[1]))
        # Relative to the clean crop, so babble speakers add up, each at its own SNR (Kaldi).
        return (out + noise_gain(reference, noise, snr) * noise).astype(np.float32)

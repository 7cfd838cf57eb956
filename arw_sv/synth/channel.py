"""The recording channel of a session: microphone/codec EQ, room reverberation, noise.

Every session of a speaker is recorded through its own :class:`Channel`, drawn once per
session and shared by the session's utterances (as a YouTube video has one microphone and
one room), so that same-session pairs share a channel fingerprint and cross-session pairs
do not. Only the noise waveform and a little of the SNR change from utterance to
utterance.

Shape legend (the package one, :mod:`arw_sv`): S samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from arw_sv.synth.voice import SAMPLE_RATE


@dataclass(frozen=True, eq=False)
class Channel:
    """One session's recording chain.

    Attributes:
        low_cut_hz: high-pass corner of the band limit (microphone / codec).
        high_cut_hz: low-pass corner of the band limit.
        eq_peaks: (K, 3) peaking bands: centre Hz, gain dB, width in octaves.
        eq_tilt_db: spectral tilt in dB per octave around 1 kHz.
        rt60_s: reverberation time; 0 means a dry (close-talk) recording.
        drr_db: direct-to-reverberant ratio.
        snr_db: mean signal-to-noise ratio of the session.
        noise_slope_db: noise spectrum slope in dB per octave (0 white, -6 brown-ish).
        noise_modulation: depth of the slow amplitude modulation of the noise (babble-like).
        hum_hz: mains hum fundamental (50 or 60), or 0 for none.
        hum_db: hum level relative to the broadband noise.
        level_dbfs: RMS level of the recording.
    """

    low_cut_hz: float
    high_cut_hz: float
    eq_peaks: np.ndarray
    eq_tilt_db: float
    rt60_s: float
    drr_db: float
    snr_db: float
    noise_slope_db: float
    noise_modulation: float
    hum_hz: float
    hum_db: float
    level_dbfs: float


def draw_channel(
    rng: np.random.Generator,
    snr_db: tuple[float, float],
    rt60_s: tuple[float, float],
    reverb_prob: float,
    eq_db: float,
) -> Channel:
    """Draw a session's channel.

    Args:
        rng: the session's own generator.
        snr_db: SNR range (uniform).
        rt60_s: reverberation time range (uniform) of reverberant sessions.
        reverb_prob: probability that a session is reverberant at all.
        eq_db: scale of the EQ peaks (their gains are normal with this sd, in dB).
    """
    n_peaks = int(rng.integers(1, 4))
    peaks = np.stack(
        [
            np.exp(rng.uniform(np.log(200.0), np.log(6000.0), n_peaks)),
            rng.normal(0.0, eq_db, n_peaks),
            rng.uniform(0.3, 1.5, n_peaks),
        ],
        axis=1,
    )
    telephone = rng.random() < 0.15
    reverberant = rng.random() < reverb_prob
    return Channel(
        low_cut_hz=float(rng.uniform(250, 400) if telephone else np.exp(rng.uniform(3.9, 5.5))),
        high_cut_hz=float(rng.uniform(3300, 3800) if telephone else rng.uniform(4500, 7800)),
        eq_peaks=peaks,
        eq_tilt_db=float(rng.normal(0.0, 1.5)),
        rt60_s=float(rng.uniform(*rt60_s)) if reverberant else 0.0,
        drr_db=float(rng.uniform(-2.0, 12.0)),
        snr_db=float(rng.uniform(*snr_db)),
        noise_slope_db=float(rng.uniform(-6.0, 0.0)),
        noise_modulation=float(rng.uniform(0.0, 0.8)),
        hum_hz=float(rng.choice([0.0, 50.0, 60.0], p=[0.7, 0.15, 0.15])),
        hum_db=float(rng.uniform(-10.0, 6.0)),
        level_dbfs=float(rng.uniform(-32.0, -20.0)),
    )


def _eq_gain(channel: Channel, freqs: np.ndarray) -> np.ndarray:
    """Zero-phase magnitude response of the EQ at ``freqs`` (Hz)."""
    octaves = np.log2(np.maximum(freqs, 1.0) / 1000.0)
    db = channel.eq_tilt_db * octaves
    for centre, gain, width in channel.eq_peaks:
        db = db + gain * np.exp(-0.5 * (np.log2(np.maximum(freqs, 1.0) / centre) / width) ** 2)
    low = 1.0 / np.sqrt(1 + (channel.low_cut_hz / np.maximum(freqs, 1.0)) ** 4)
    high = 1.0 / np.sqrt(1 + (freqs / channel.high_cut_hz) ** 8)
    return 10 ** (db / 20) * low * high


def _room_impulse_response(channel: Channel, rng: np.random.Generator) -> np.ndarray:
    """Direct path plus an exponentially decaying, darkening noise tail. Shape: (S,)."""
    n = int(channel.rt60_s * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / channel.rt60_s)  # -60 dB at rt60
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0  # first reflections arrive after ~2 ms
    tail = np.convolve(tail, [0.5, 0.5], "same")  # air and walls absorb the highs
    tail *= 10 ** (-channel.drr_db / 20) / (np.sqrt(np.sum(tail**2)) + 1e-9)
    tail[0] = 1.0
    return tail


def apply_channel(clean: np.ndarray, channel: Channel, rng: np.random.Generator) -> np.ndarray:
    """Record ``clean`` through ``channel``: EQ, reverb, noise, level.

    Args:
        clean: the utterance at 16 kHz. Shape: (S,).
        channel: the session's channel.
        rng: the utterance's generator (noise waveform, SNR jitter of +-2 dB).

    Returns:
        float64 waveform in [-1, 1]. Shape: (S,).
    """
    length = len(clean)
    rir = _room_impulse_response(channel, rng) if channel.rt60_s > 0 else np.ones(1)
    n = next_fast_len(length + len(rir) + 512, real=True)
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE).astype(np.float32)
    eq = _eq_gain(channel, freqs)
    response = rfft(rir.astype(np.float32), n) * eq if len(rir) > 1 else eq
    speech = irfft(rfft(clean.astype(np.float32), n) * response, n)[:length]

    # Noise: coloured, slowly modulated, optionally with mains hum; seen through the same
    # microphone EQ as the speech, so the session's EQ also shapes the noise floor.
    slope = (np.maximum(freqs, 20.0) / 1000.0) ** (channel.noise_slope_db / 20 / np.log10(2))
    parts = rng.standard_normal((2, len(freqs)), dtype=np.float32)
    noise = irfft((parts[0] + 1j * parts[1]) * (slope * eq), n)[:length]
    noise /= np.std(noise) + 1e-12
    if channel.noise_modulation > 0:
        wobble = np.convolve(rng.standard_normal(length // 400 + 2), np.hanning(9), "same")
        envelope = np.interp(np.arange(length) / 400.0, np.arange(len(wobble)), wobble)
        noise *= (1 + channel.noise_modulation * np.tanh(envelope)).astype(np.float32)
    if channel.hum_hz > 0:
        # 0.1 s holds a whole number of 50 Hz and 60 Hz cycles: compute it once and tile.
        t = np.arange(SAMPLE_RATE // 10) / SAMPLE_RATE
        block = sum(np.sin(2 * np.pi * k * channel.hum_hz * t + k) / k for k in (1, 2, 3, 5))
        hum = np.tile(block / np.std(block), length // len(block) + 1)[:length]
        noise += (10 ** (channel.hum_db / 20) * hum).astype(np.float32)
    snr = channel.snr_db + rng.uniform(-2.0, 2.0)
    speech_rms = np.sqrt(np.mean(speech**2)) + 1e-12
    noisy = speech + noise * speech_rms / (np.std(noise) + 1e-12) * 10 ** (-snr / 20)
    noisy *= 10 ** (channel.level_dbfs / 20) / (np.sqrt(np.mean(noisy**2)) + 1e-12)
    return np.clip(noisy, -1.0, 1.0).astype(np.float64)

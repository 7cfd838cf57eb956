"""Source-filter synthesis of speech-like audio with a speaker identity and an accent.

A voice is a glottal source (Rosenberg pulses with jitter and shimmer, plus aspiration
noise for breathiness, through a one-pole spectral tilt) filtered by a cascade of five
formant resonators. Who is speaking lives in :class:`VoiceParams` (pitch level and range,
vocal-tract length, idiosyncratic formant offsets, bandwidths, voice quality, rate); how
the language sounds lives in :class:`Accent` (vowel targets, vowel and consonant usage,
rhythm, intonation). Utterances are random syllable strings (C)V(C) grouped in words and
phrases, rendered frame by frame: control tracks every 8 ms, filtering by STFT
multiplication, so a 4 s utterance costs a few milliseconds.

Shape legend (the package one, :mod:`arw_sv`): S samples, T frames (hop 128), F frequency bins (257).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.fft
from scipy.signal import lfilter

from arw_sv.synth.accent import (
    CONSONANTS,
    F2_LOCUS,
    FRICATION_BAND,
    SCHWA,
    UPPER_FORMANTS,
    VOWEL_FORMANTS,
    VOWELS,
    Accent,
)

SAMPLE_RATE = 16000
HOP = 128
N_FFT = 512
N_FORMANTS = 5

BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0, 280.0])


@dataclass(frozen=True, eq=False)
class VoiceParams:
    """The identity of one speaker (one session: see :func:`session_voice`).

    Attributes:
        f0_hz: median fundamental frequency.
        f0_range_st: intonation range in semitones (size of pitch accents).
        formant_scale: all formants are multiplied by it (inverse vocal-tract length).
        formant_offsets: (5,) idiosyncratic multipliers of F1-F5.
        bandwidth_scale: multiplier of the formant bandwidths.
        open_quotient: fraction of the glottal cycle the glottis is open.
        tilt: one-pole low-pass coefficient on the source (0 flat, 0.95 very dull).
        breathiness: aspiration noise level relative to the voicing.
        jitter: cycle-to-cycle period perturbation (fraction).
        shimmer: cycle-to-cycle amplitude perturbation (fraction).
        rate: speaking rate in syllables per second.
        notches: (K, 2) spectral notches of the speaker's own (centre Hz, depth dB),
            applied to the whole utterance; empty for most speakers (see
            :func:`draw_notches`).
    """

    f0_hz: float
    f0_range_st: float
    formant_scale: float
    formant_offsets: np.ndarray
    bandwidth_scale: float
    open_quotient: float
    tilt: float
    breathiness: float
    jitter: float
    shimmer: float
    rate: float
    notches: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


# Per-gender (mean, between-speaker sd) of each identity parameter; sds are scaled by
# the speaker's group spread. Log-normal parameters give the sd in natural-log units.
GENDER_PRIORS: dict[str, dict[str, tuple[float, float]]] = {
    "m": {
        "f0_hz": (118.0, 0.16),
        "f0_range_st": (2.2, 0.6),
        "formant_scale": (1.0, 0.055),
        "bandwidth_scale": (1.0, 0.2),
        "open_quotient": (0.55, 0.06),
        "tilt": (0.62, 0.12),
        "breathiness": (0.05, 0.5),
        "jitter": (0.01, 0.4),
        "shimmer": (0.04, 0.4),
        "rate": (1.0, 0.12),
    },
    "f": {
        "f0_hz": (205.0, 0.14),
        "f0_range_st": (2.8, 0.7),
        "formant_scale": (1.16, 0.055),
        "bandwidth_scale": (1.1, 0.2),
        "open_quotient": (0.65, 0.06),
        "tilt": (0.7, 0.12),
        "breathiness": (0.09, 0.5),
        "jitter": (0.008, 0.4),
        "shimmer": (0.035, 0.4),
        "rate": (1.0, 0.12),
    },
}
FORMANT_OFFSET_SD = np.array([0.06, 0.05, 0.045, 0.05, 0.06])


def draw_voice(rng: np.random.Generator, gender: str, accent: Accent, spread: float) -> VoiceParams:
    """Draw a speaker's identity from the prior of its gender and accent.

    Args:
        rng: the speaker's own generator.
        gender: ``"m"`` or ``"f"``.
        accent: the speaker's accent (shifts F0 and sets the mean rate).
        spread: multiplier of every between-speaker sd; below 1 the group's speakers
            crowd together and are harder to tell apart.
    """
    prior = GENDER_PRIORS[gender]
    z = rng.standard_normal(10) * spread

    def lognormal(key: str, i: int) -> float:
        mean, sd = prior[key]
        return float(mean * np.exp(sd * z[i]))

    def normal(key: str, i: int, lo: float, hi: float) -> float:
        mean, sd = prior[key]
        return float(np.clip(mean + sd * z[i], lo, hi))

    return VoiceParams(
        f0_hz=lognormal("f0_hz", 0) * accent.f0_shift,
        f0_range_st=normal("f0_range_st", 1, 0.6, 6.0) * accent.pitch_range,
        formant_scale=lognormal("formant_scale", 2),
        formant_offsets=np.exp(FORMANT_OFFSET_SD * rng.standard_normal(N_FORMANTS) * spread),
        bandwidth_scale=lognormal("bandwidth_scale", 3),
        open_quotient=normal("open_quotient", 4, 0.3, 0.85),
        tilt=normal("tilt", 5, 0.05, 0.95),
        breathiness=lognormal("breathiness", 6),
        jitter=lognormal("jitter", 7),
        shimmer=lognormal("shimmer", 8),
        rate=lognormal("rate", 9) * accent.rate,
    )


NOTCH_BAND_HZ = (1200.0, 6500.0)
NOTCH_WIDTH_HZ = 180.0


def notch_grid(positions: int) -> np.ndarray:
    """``positions`` log-spaced notch centres spanning :data:`NOTCH_BAND_HZ` (Hz)."""
    return np.exp(np.linspace(np.log(NOTCH_BAND_HZ[0]), np.log(NOTCH_BAND_HZ[1]), positions))


def draw_notches(
    rng: np.random.Generator, count: int, depth_db: float, grid: int = 0
) -> np.ndarray:
    """A speaker's signature: ``count`` notches of ``depth_db`` at log-uniform frequencies
    in :data:`NOTCH_BAND_HZ` (anti-resonances of the speaker's own anatomy, fixed across
    sessions), or, with ``grid`` > 0, at ``count`` distinct positions of
    :func:`notch_grid`. Shape: -> (count, 2) (centre Hz, depth dB), sorted by frequency.
    """
    if grid:
        centres = np.sort(rng.choice(notch_grid(grid), size=count, replace=False))
    else:
        lo, hi = np.log(NOTCH_BAND_HZ[0]), np.log(NOTCH_BAND_HZ[1])
        centres = np.sort(np.exp(rng.uniform(lo, hi, count)))
    return np.stack([centres, np.full(count, float(depth_db))], axis=1)


def notch_gain(notches: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Magnitude response of a speaker's notches at ``freqs`` (1 away from them).

    Shape: notches (K, 2), freqs (F,) -> (F,).
    """
    gain = np.ones_like(freqs, dtype=np.float64)
    for centre, depth in notches:
        dip = 1.0 - 10.0 ** (-depth / 20.0)
        gain *= 1.0 - dip * np.exp(-0.5 * ((freqs - centre) / NOTCH_WIDTH_HZ) ** 2)
    return gain


def session_voice(voice: VoiceParams, rng: np.random.Generator, drift: float = 1.0) -> VoiceParams:
    """The same speaker on another day: small drifts of pitch, rate and voice quality.

    ``drift`` multiplies every drift's sd (within-speaker variability; 1 = nominal).
    """
    z = rng.standard_normal(5) * drift
    return replace(
        voice,
        f0_hz=voice.f0_hz * float(np.exp(0.05 * z[0])),
        rate=voice.rate * float(np.exp(0.06 * z[1])),
        tilt=float(np.clip(voice.tilt + 0.04 * z[2], 0.05, 0.95)),
        breathiness=voice.breathiness * float(np.exp(0.25 * z[3])),
        f0_range_st=voice.f0_range_st * float(np.exp(0.15 * z[4])),
    )


def _phone_plan(
    voice: VoiceParams, accent: Accent, n_frames: int, rng: np.random.Generator
) -> tuple[np.ndarray, ...]:
    """Lay out syllables, words and pauses over the frames; return the control tracks.

    Shape: each track (T,), formants (T, 5): f0, av, ah, af, fc, fb, formants, nasal.
    """
    frame_s = HOP / SAMPLE_RATE
    t = np.arange(n_frames) * frame_s
    total = n_frames * frame_s
    upper = UPPER_FORMANTS
    vowel_table = np.concatenate(
        [VOWEL_FORMANTS * accent.vowel_shift, np.tile(upper, (len(VOWELS), 1))], axis=1
    )
    speaker_scale = voice.formant_scale * voice.formant_offsets
    schwa = np.concatenate([SCHWA, upper])

    anchors_t: list[float] = []
    anchors_f: list[np.ndarray] = []
    av = np.zeros(n_frames)  # voicing amplitude
    ah = np.zeros(n_frames)  # aspiration through the vocal tract (/h/, plosive release)
    af = np.zeros(n_frames)  # frication amplitude
    fc = np.full(n_frames, 4000.0)  # frication band centre
    fb = np.full(n_frames, 2000.0)  # frication band width
    nasal = np.zeros(n_frames)
    accents_t: list[tuple[float, float]] = []  # (time, size in st) of pitch accents
    phrase_ends: list[float] = []

    def span(a: float, b: float) -> slice:
        return slice(int(np.ceil(a / frame_s)), int(np.ceil(b / frame_s)))

    def consonant(c: str, now: float, dur: float, next_f: np.ndarray) -> None:
        s = span(now, now + dur)
        if c in F2_LOCUS:
            locus = next_f.copy()
            locus[1] = F2_LOCUS[c] * speaker_scale[1]
            anchors_t.append(now + dur / 2)
            anchors_f.append(locus)
        if c in ("m", "n"):
            av[s], nasal[s] = 0.35, 1.0
        elif c == "h":
            ah[s] = 0.5
        elif c in ("p", "t", "k"):  # closure, burst, aspiration
            burst = span(now + 0.6 * dur, now + 0.75 * dur)
            af[burst] = 1.2
            fc[burst], fb[burst] = FRICATION_BAND[c]
            ah[span(now + 0.75 * dur, now + dur)] = 0.4
        else:
            af[s] = 0.6
            fc[s], fb[s] = FRICATION_BAND[c]

    now = rng.uniform(0.08, 0.3)
    rate = voice.rate
    while now < total - 0.25:
        phrase_syllables = rng.integers(4, 12)
        for k in range(phrase_syllables):
            stressed = rng.random() < 0.4
            contrast = accent.stress_contrast
            length = (1 + 0.5 * contrast) if stressed else (1 - 0.35 * contrast)
            syl = length * rng.uniform(0.8, 1.2) / rate
            v = rng.choice(len(VOWELS), p=accent.vowel_weights)
            target = vowel_table[v] * rng.normal(1.0, 0.03, size=N_FORMANTS)
            if not stressed:  # unstressed vowels drift towards schwa
                target = target ** (1 - 0.5 * contrast) * schwa ** (0.5 * contrast)
            target = target * speaker_scale
            if rng.random() < 0.7:
                c = CONSONANTS[rng.choice(len(CONSONANTS), p=accent.consonant_weights)]
                consonant(c, now, 0.3 * syl, target)
                now += 0.3 * syl
            vdur = 0.5 * syl
            s = span(now, now + vdur)
            av[s] = 1.3 if stressed else 0.9
            anchors_t.extend([now + 0.2 * vdur, now + 0.8 * vdur])
            anchors_f.extend([target, target])
            if stressed:
                accents_t.append((now + 0.4 * vdur, rng.normal(1.0, 0.3)))
            now += vdur
            if rng.random() < accent.coda_prob:
                c = CONSONANTS[rng.choice(len(CONSONANTS), p=accent.consonant_weights)]
                consonant(c, now, 0.2 * syl, target)
                now += 0.2 * syl
            if k < phrase_syllables - 1 and rng.random() < 0.25:
                now += rng.uniform(0.02, 0.08)  # word boundary
            if now >= total - 0.25:
                break
        phrase_ends.append(now)
        now += rng.uniform(0.15, 0.5)

    if not anchors_t:
        anchors_t, anchors_f = [0.0], [schwa * speaker_scale]
    at, afm = np.asarray(anchors_t), np.log(np.stack(anchors_f))
    formants = np.exp(np.stack([np.interp(t, at, afm[:, k]) for k in range(N_FORMANTS)], 1))
    formants[:, 0] = formants[:, 0] * (1 - 0.4 * nasal)  # nasal murmur: low F1

    # Intonation in semitones: declination per phrase, pitch accents, final rise/fall.
    st = np.zeros(n_frames)
    start = 0.0
    for end in phrase_ends:
        s = span(start, end)
        st[s] += np.linspace(1.0, -1.0, len(st[s]))
        tail = span(end - 0.15, end)
        rise = rng.random() < accent.final_rise
        st[tail] += np.linspace(0, 3.0 if rise else -2.0, len(st[tail]))
        start = end
    for when, size in accents_t:
        st += voice.f0_range_st * size * np.exp(-0.5 * ((t - when) / 0.06) ** 2)
    wander = np.convolve(rng.standard_normal(n_frames), np.hanning(25), "same")
    st += 0.25 * wander
    f0 = voice.f0_hz * 2 ** (st / 12)

    smooth = np.hanning(5) / np.hanning(5).sum()  # ~20 ms coarticulation / ramps
    av, ah, af = (np.convolve(x, smooth, "same") for x in (av, ah, af))
    return f0, av, ah, af, fc, fb, formants, nasal


def _rosenberg_table(open_quotient: float, size: int = 2048) -> np.ndarray:
    """One cycle of Rosenberg glottal flow, tabulated over the phase [0, 1)."""
    frac = np.arange(size) / size
    tp, tn = 0.65 * open_quotient, 0.35 * open_quotient
    rising = 0.5 * (1 - np.cos(np.pi * frac / tp))
    falling = np.cos(0.5 * np.pi * np.clip((frac - tp) / tn, 0.0, 1.0))
    return np.where(frac < tp, rising, np.where(frac < open_quotient, falling, 0.0)).astype(
        np.float32
    )


def _glottal_source(
    f0: np.ndarray, voice: VoiceParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rosenberg glottal flow and its derivative, with jitter and shimmer.

    Shape: (S,) F0 in Hz per sample -> derivative (S,), flow (S,), float32.
    """
    phase = np.cumsum(f0) / SAMPLE_RATE
    n_cycles = int(phase[-1]) + 2
    jitter = 1 + voice.jitter * rng.standard_normal(n_cycles)
    phase = np.cumsum(f0 * jitter[phase.astype(np.int64)]) / SAMPLE_RATE
    cycle = phase.astype(np.int64)
    table = _rosenberg_table(voice.open_quotient)
    pulse = table[((phase - cycle) * len(table)).astype(np.int64)]  # a lookup, not 2 cosines
    shimmer = (1 + voice.shimmer * rng.standard_normal(n_cycles + 1)).astype(np.float32)
    pulse *= shimmer[np.minimum(cycle, n_cycles)]
    return np.diff(pulse, prepend=np.float32(0.0)), pulse


_WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float32)


def _stft(x: np.ndarray) -> np.ndarray:
    """Hann-windowed STFT of (B, S) with zero padding. Shape: -> (B, T, F) complex64."""
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT, axis=-1)[..., ::HOP, :]
    return scipy.fft.rfft(frames * _WINDOW, axis=-1)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of :func:`_stft` for a (T, F) spectrogram."""
    frames = scipy.fft.irfft(spec, n=N_FFT, axis=-1) * _WINDOW
    n_frames = frames.shape[0]
    out = np.zeros((n_frames + N_FFT // HOP) * HOP, dtype=np.float32)
    norm = np.zeros_like(out)
    blocks = frames.reshape(n_frames, N_FFT // HOP, HOP)
    for j in range(N_FFT // HOP):  # 4 shifted adds instead of a per-frame loop
        out[j * HOP : (j + n_frames) * HOP] += blocks[:, j, :].reshape(-1)
        norm[j * HOP : (j + n_frames) * HOP] += np.tile(
            (_WINDOW**2)[j * HOP : (j + 1) * HOP], n_frames
        )
    return (out / np.maximum(norm, 1e-3))[:length]


def _tract_response(formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of unity-DC-gain resonators per frame. Shape: (T, 5) -> (T, F) complex64.

    Evaluated every second frame (16 ms) and held: the formant tracks are smoothed over
    ~20 ms anyway, and this is the most expensive step of the synthesis.
    """
    n_frames = formants.shape[0]
    formants, bandwidths = formants[::2], bandwidths[::2]
    omega = np.linspace(0, np.pi, N_FFT // 2 + 1, dtype=np.float32)
    cos1, sin1, cos2, sin2 = np.cos(omega), np.sin(omega), np.cos(2 * omega), np.sin(2 * omega)
    r = np.exp(-np.pi * bandwidths / SAMPLE_RATE).astype(np.float32)
    c = 2 * r * np.cos(2 * np.pi * np.minimum(formants, 7600.0) / SAMPLE_RATE).astype(np.float32)
    r2 = r * r
    # Real arithmetic on the denominators, one complex division at the end.
    den = np.ones((len(formants), len(omega)), dtype=np.complex64)
    for k in range(formants.shape[1]):
        ck, r2k = c[:, k : k + 1], r2[:, k : k + 1]
        den *= (1 - ck * cos1 + r2k * cos2) + 1j * (ck * sin1 - r2k * sin2)
    gain = np.prod(1 - c + r2, axis=1, keepdims=True)
    return np.repeat(gain / den, 2, axis=0)[:n_frames]


def synthesize(
    voice: VoiceParams, accent: Accent, duration_s: float, rng: np.random.Generator
) -> np.ndarray:
    """Render one clean utterance (no channel) at an RMS of 0.1.

    Args:
        voice: the speaker (after :func:`session_voice` for a given session).
        accent: the speaker's accent.
        duration_s: length of the result in seconds.
        rng: the utterance's own generator; same generator state, same samples.

    Returns:
        float64 waveform at 16 kHz with RMS 0.1. Shape: (S,).
    """
    length = max(int(round(duration_s * SAMPLE_RATE)), 1)
    padded = length + N_FFT
    n_frames = (padded - N_FFT) // HOP + 1
    f0, av, ah, af, fc, fb, formants, nasal = _phone_plan(voice, accent, n_frames, rng)

    frame_t = (np.arange(n_frames) * HOP + N_FFT // 2).astype(np.float64)
    n = np.arange(padded, dtype=np.float64)
    dpulse, pulse = _glottal_source(np.interp(n, frame_t, f0), voice, rng)
    av_s, ah_s, af_s = (np.interp(n, frame_t, x).astype(np.float32) for x in (av, ah, af))

    noise = rng.standard_normal((2, padded), dtype=np.float32)
    voicing = dpulse / (np.std(dpulse) + 1e-9)
    aspiration = np.diff(noise[0], prepend=np.float32(0.0)) * 0.5
    breath = voice.breathiness * (0.3 + pulse) * aspiration
    a = voice.tilt
    tilt_b, tilt_a = np.array([1 - a], np.float32), np.array([1, -a], np.float32)
    source = lfilter(tilt_b, tilt_a, voicing * av_s) * 3.0 + breath * av_s + aspiration * ah_s
    frication = noise[1] * af_s * 0.3

    spec = _stft(np.stack([source, frication]))
    bandwidths = BANDWIDTHS * voice.bandwidth_scale * (1 + 1.5 * nasal[:, None] * [1, 0, 0, 0, 0])
    spec[0] *= _tract_response(formants, bandwidths)
    freqs = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    centre = (fc * voice.formant_scale)[:, None]
    spec[1] *= (np.exp(-0.5 * ((freqs - centre) / fb[:, None]) ** 2) + 0.03).astype(np.float32)
    total = spec.sum(axis=0)
    if len(voice.notches):
        total *= notch_gain(voice.notches, freqs).astype(np.float32)
    out = _istft(total, padded)[N_FFT // 2 : N_FFT // 2 + length]
    out = out.astype(np.float64)
    return out * (0.1 / (np.sqrt(np.mean(out**2)) + 1e-9))

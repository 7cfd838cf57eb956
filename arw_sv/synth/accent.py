"""The phone inventory and the accents: how each nationality's speakers talk.

An :class:`Accent` is shared by every speaker of a nationality: it shifts the vowel
targets, sets how often each vowel and consonant is used, and sets the rhythm (rate,
stress-timed or syllable-timed, codas) and the intonation (pitch range, final rises).
It is drawn from a generator keyed by the nationality's name, so any name is an accent.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

# Adult male reference vowels (F1, F2, F3 in Hz), after Hillenbrand et al. (1995).
VOWELS = (
    "i",
    "I",
    "E",
    "ae",
    "a",
    "o",
    "U",
    "u",
    "V",
    "3",
)  # ARPAbet-ish: iy ih eh ae aa ao uh uw ah er
VOWEL_FORMANTS = np.array(
    [
        [342, 2322, 3000],
        [427, 2034, 2684],
        [580, 1799, 2605],
        [588, 1952, 2601],
        [768, 1333, 2522],
        [652, 997, 2538],
        [469, 1122, 2434],
        [378, 997, 2343],
        [623, 1200, 2550],
        [474, 1379, 1710],
    ],
    dtype=np.float64,
)
UPPER_FORMANTS = np.array([3500.0, 4500.0])  # F4, F5: barely vowel-dependent, speaker-specific
SCHWA = np.array([500.0, 1500.0, 2500.0])

# Consonants: (class, place); place sets the F2 locus or the noise band.
CONSONANTS = ("p", "t", "k", "f", "s", "sh", "h", "m", "n")
F2_LOCUS = {"p": 900.0, "t": 1800.0, "k": 2200.0, "m": 900.0, "n": 1700.0}
FRICATION_BAND = {  # centre, bandwidth in Hz (before vocal-tract scaling)
    "p": (1500.0, 3000.0),
    "t": (4000.0, 2000.0),
    "k": (2200.0, 900.0),
    "f": (5000.0, 5000.0),
    "s": (5500.0, 1500.0),
    "sh": (3000.0, 1200.0),
}


@dataclass(frozen=True, eq=False)
class Accent:
    """How one nationality speaks: shared by all its speakers.

    Attributes:
        name: the nationality it belongs to.
        vowel_shift: (10, 3) multiplicative offsets of F1-F3 of each vowel.
        vowel_weights: (10,) how often each vowel is used.
        consonant_weights: (9,) how often each consonant is used.
        rate: mean speaking rate in syllables per second.
        stress_contrast: 0 (syllable-timed) to 1 (stress-timed): how much stressed
            syllables lengthen and unstressed ones shorten and centralise.
        pitch_range: multiplier of every speaker's intonation range.
        final_rise: probability that a phrase ends rising rather than falling.
        f0_shift: multiplier of every speaker's median F0.
        coda_prob: probability that a syllable ends with a consonant.
    """

    name: str
    vowel_shift: np.ndarray
    vowel_weights: np.ndarray
    consonant_weights: np.ndarray
    rate: float
    stress_contrast: float
    pitch_range: float
    final_rise: float
    f0_shift: float
    coda_prob: float


def make_accent(name: str, strength: float = 1.0) -> Accent:
    """Build the accent of a nationality, a pure function of its name.

    The name is hashed with CRC-32 (stable across machines and Python runs), so a
    nationality keeps its accent whatever the corpus seed. ``strength`` scales every
    departure from the neutral accent; 0 makes all nationalities sound alike.
    """
    rng = np.random.default_rng(np.random.SeedSequence([zlib.crc32(name.encode()), 7321]))
    shift = np.exp(strength * rng.normal(0.0, [0.10, 0.08, 0.05], size=(len(VOWELS), 3)))
    vowel_weights = rng.dirichlet(np.full(len(VOWELS), 2.0 / max(strength, 1e-3)))
    consonant_weights = rng.dirichlet(np.full(len(CONSONANTS), 3.0 / max(strength, 1e-3)))
    return Accent(
        name=name,
        vowel_shift=shift,
        vowel_weights=vowel_weights,
        consonant_weights=consonant_weights,
        rate=4.6 * float(np.exp(strength * rng.normal(0.0, 0.12))),
        stress_contrast=float(np.clip(0.5 + strength * rng.uniform(-0.4, 0.4), 0.0, 1.0)),
        pitch_range=float(np.exp(strength * rng.normal(0.0, 0.2))),
        final_rise=float(np.clip(0.25 + strength * rng.uniform(-0.2, 0.3), 0.0, 1.0)),
        f0_shift=float(np.exp(strength * rng.normal(0.0, 0.04))),
        coda_prob=float(np.clip(0.4 + strength * rng.uniform(-0.3, 0.3), 0.0, 1.0)),
    )

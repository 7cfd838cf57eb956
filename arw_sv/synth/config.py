"""What the synthetic corpus generator makes: :class:`SynthConfig`, presets, overrides.

``SynthConfig`` is typed by its defaults, which are the ``demo`` preset. Planting a
disparity is a matter of group sizes and spreads, e.g. a gender minority in training::

    arw-sv synth --out data/synth dev_female_share=0.15 gender_spread=1.0,0.8
"""

from __future__ import annotations

import difflib
import math
import typing
from dataclasses import asdict, dataclass, fields, replace

from arw_sv.config import ConfigError, coerce_value
from arw_sv.safe_yaml import YamlError, load_yaml, shorten

#: The most utterances a corpus may have (the bench preset has about 60,000): a typo such
#: as ``dev_sessions=100000`` is refused with its size instead of filling the disk.
MAX_UTTERANCES = 2_000_000


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a synthetic corpus; the defaults are the demo preset.

    Attributes:
        seed: the root of every random draw.
        nationalities: one accent each; the Nationality column of ``vox1_meta.csv``.
        dev_nationality_share: share of the dev (training) speakers per nationality;
            a small share plants an under-represented group.
        nationality_spread: between-speaker spread of identity parameters per
            nationality (1 = nominal); below 1 its speakers crowd together and are harder
            to tell apart.
        gender_spread: the same for (male, female); multiplies the nationality spread.
        identity_spread: a global multiplier of every between-speaker sd (all groups). It
            sets how hard the task is: calibrated so that the demo's ERM model lands at a
            mid-range EER (see docs/synth.md).
        dev_female_share: share of women among the dev speakers of each nationality.
        num_dev_speakers: training speakers.
        test_speakers_per_cell: test speakers per (nationality, gender) cell.
        calibration_speakers_per_cell: speakers per cell of a third split, ``cal``: for
            fitting score calibration, disjoint from training and test speakers and drawn
            like the test speakers (0: none; every other speaker is the same either way).
        dev_sessions, test_sessions: sessions (channels) per speaker.
        dev_utterances_per_session, test_utterances_per_session: utterances per session.
        min_duration_s, max_duration_s: utterance length range (uniform).
        accent_strength: how far accents depart from a neutral one (0: all alike).
        snr_db: per-session SNR range in dB (uniform; +-2 dB per utterance).
        rt60_s: reverberation time range of reverberant sessions.
        reverb_prob: share of sessions recorded in a reverberant room.
        eq_db: sd in dB of the random EQ peaks of each session's microphone.
        target_trials_per_speaker: cross-session same-speaker trials per test speaker.
        nontarget_cell_trials_per_speaker: different-speaker trials within the speaker's
            (nationality, gender) cell.
        nontarget_cross_trials_per_speaker: different-speaker trials with other cells.
        nationality_snr_shift_db: per nationality, dB added to both ends of ``snr_db``
            (negative: noisier sessions); empty = 0 for all.
        nationality_reverb_prob: per nationality, replaces ``reverb_prob``; empty = none.
        nationality_rt60_scale: per nationality, multiplies ``rt60_s``; empty = 1 for all.
        nationality_session_drift: per nationality, multiplies the sds of the per-session
            drift of a speaker's voice (within-speaker variability); empty = 1 for all.
        nationality_signature_db: per nationality, the depth in dB of each speaker's
            ``signature_notches`` spectral notches (anti-resonances at speaker-specific
            frequencies, 1.2-6.5 kHz, fixed across sessions): an identity cue of its own
            that no other parameter moves; 0 or empty = none (the representation-gap
            mechanism, docs/synth.md).
        signature_notches: notches per signed speaker.
        signature_grid: 0: notch centres anywhere in the band (log-uniform, so each
            speaker's are its own); N: drawn without replacement from N log-spaced
            positions, so the cue is a code over a few shared frequencies that every
            signed training speaker teaches (N >= ``signature_notches``).
    """

    seed: int = 0
    nationalities: tuple[str, ...] = ("USA", "UK", "India")
    dev_nationality_share: tuple[float, ...] = (0.45, 0.45, 0.10)
    nationality_spread: tuple[float, ...] = (1.0, 1.0, 0.6)
    gender_spread: tuple[float, ...] = (1.0, 1.0)
    identity_spread: float = 2.0
    dev_female_share: float = 0.5
    num_dev_speakers: int = 240
    test_speakers_per_cell: int = 20
    calibration_speakers_per_cell: int = 0
    dev_sessions: int = 3
    dev_utterances_per_session: int = 4
    test_sessions: int = 3
    test_utterances_per_session: int = 3
    min_duration_s: float = 2.0
    max_duration_s: float = 6.0
    accent_strength: float = 1.0
    snr_db: tuple[float, ...] = (5.0, 30.0)
    rt60_s: tuple[float, ...] = (0.15, 0.8)
    reverb_prob: float = 0.6
    eq_db: float = 4.0
    target_trials_per_speaker: int = 20
    nontarget_cell_trials_per_speaker: int = 20
    nontarget_cross_trials_per_speaker: int = 5
    # Acoustic disparity, per nationality; empty tuples plant nothing (and leave every
    # draw of a corpus made before these fields existed unchanged).
    nationality_snr_shift_db: tuple[float, ...] = ()
    nationality_reverb_prob: tuple[float, ...] = ()
    nationality_rt60_scale: tuple[float, ...] = ()
    nationality_session_drift: tuple[float, ...] = ()
    nationality_signature_db: tuple[float, ...] = ()
    signature_notches: int = 3
    signature_grid: int = 0

    def __post_init__(self) -> None:
        n_nat = len(self.nationalities)
        _check(n_nat >= 1, "nationalities", self.nationalities, "at least one nationality")
        for nat in self.nationalities:
            ok = isinstance(nat, str) and nat.strip() == nat and nat and not set(nat) & set("\t\n/")
            _check(
                ok, "nationalities", self.nationalities, "non-empty names without tabs or slashes"
            )
        _check(
            len(set(self.nationalities)) == n_nat,
            "nationalities",
            self.nationalities,
            "unique names",
        )
        for key in ("dev_nationality_share", "nationality_spread"):
            value = getattr(self, key)
            _check(len(value) == n_nat, key, value, f"{n_nat} values, one per nationality")
        shares = self.dev_nationality_share
        _check(all(s >= 0 for s in shares), "dev_nationality_share", shares, "non-negative shares")
        _check(
            math.isclose(sum(shares), 1.0, abs_tol=1e-6),
            "dev_nationality_share",
            shares,
            "shares summing to 1",
        )
        _check(
            len(self.gender_spread) == 2,
            "gender_spread",
            self.gender_spread,
            "2 values (male, female)",
        )
        _check(
            self.identity_spread > 0, "identity_spread", self.identity_spread, "a positive spread"
        )
        for key in ("nationality_spread", "gender_spread"):
            _check(
                all(v > 0 for v in getattr(self, key)), key, getattr(self, key), "positive spreads"
            )
        _check(
            0 <= self.dev_female_share <= 1,
            "dev_female_share",
            self.dev_female_share,
            "a share in [0, 1]",
        )
        _check(self.seed >= 0, "seed", self.seed, "a non-negative integer")
        for key in ("num_dev_speakers", "test_speakers_per_cell", "dev_sessions"):
            _check(getattr(self, key) >= 1, key, getattr(self, key), "at least 1")
        _check(
            self.test_sessions >= 2,
            "test_sessions",
            self.test_sessions,
            "at least 2 (targets cross sessions)",
        )
        for key in (
            "dev_utterances_per_session",
            "test_utterances_per_session",
            "target_trials_per_speaker",
        ):
            _check(getattr(self, key) >= 1, key, getattr(self, key), "at least 1")
        for key in ("nontarget_cell_trials_per_speaker", "nontarget_cross_trials_per_speaker"):
            _check(getattr(self, key) >= 0, key, getattr(self, key), "at least 0")
        _check(
            self.calibration_speakers_per_cell >= 0,
            "calibration_speakers_per_cell",
            self.calibration_speakers_per_cell,
            "at least 0",
        )
        n_speakers = self.num_dev_speakers + 2 * n_nat * (
            self.test_speakers_per_cell + self.calibration_speakers_per_cell
        )
        _check(
            n_speakers <= 89999,
            "num_dev_speakers + 2 x nationalities x (test_speakers_per_cell + "
            "calibration_speakers_per_cell)",
            n_speakers,
            f"at most 89999 speakers in all ({self.num_dev_speakers} + 2 x {n_nat} x "
            f"({self.test_speakers_per_cell} + {self.calibration_speakers_per_cell}))",
        )
        for key in (
            "dev_sessions",
            "test_sessions",
            "dev_utterances_per_session",
            "test_utterances_per_session",
        ):
            _check(getattr(self, key) <= 1000, key, getattr(self, key), "at most 1000")
        for key in (
            "target_trials_per_speaker",
            "nontarget_cell_trials_per_speaker",
            "nontarget_cross_trials_per_speaker",
        ):
            _check(getattr(self, key) <= 100_000, key, getattr(self, key), "at most 100000")
        dev = self.num_dev_speakers * self.dev_sessions * self.dev_utterances_per_session
        held_out = n_speakers - self.num_dev_speakers
        utterances = dev + held_out * self.test_sessions * self.test_utterances_per_session
        hours = utterances * (self.min_duration_s + self.max_duration_s) / 2 / 3600
        _check(
            utterances <= MAX_UTTERANCES,
            "speakers x sessions x utterances_per_session",
            utterances,
            f"at most {MAX_UTTERANCES} utterances (this is about {hours:,.0f} h, "
            f"{hours * 3600 * 32000 / 1e9:,.0f} GB of 16 kHz audio)",
        )
        _check(0.1 <= self.min_duration_s, "min_duration_s", self.min_duration_s, "at least 0.1 s")
        _check(
            self.min_duration_s <= self.max_duration_s <= 60,
            "max_duration_s",
            self.max_duration_s,
            f"between min_duration_s ({self.min_duration_s}) and 60 s",
        )
        _check(self.accent_strength >= 0, "accent_strength", self.accent_strength, "non-negative")
        _check(
            _is_range(self.snr_db, -20, 100),
            "snr_db",
            self.snr_db,
            "(low, high) within [-20, 100] dB, low <= high",
        )
        _check(
            _is_range(self.rt60_s, 0.05, 3.0),
            "rt60_s",
            self.rt60_s,
            "(low, high) within [0.05, 3] s",
        )
        _check(0 <= self.reverb_prob <= 1, "reverb_prob", self.reverb_prob, "a probability")
        _check(0 <= self.eq_db <= 20, "eq_db", self.eq_db, "within [0, 20] dB")
        for key in _PER_NATIONALITY_ACOUSTICS:
            value = getattr(self, key)
            _check(
                len(value) in (0, n_nat), key, value, f"none or {n_nat} values, one per nationality"
            )
        shift = self.nationality_snr_shift_db
        _check(
            all(-30 <= v <= 30 for v in shift), "nationality_snr_shift_db", shift, "in [-30, 30]"
        )
        probs = self.nationality_reverb_prob
        _check(all(0 <= v <= 1 for v in probs), "nationality_reverb_prob", probs, "probabilities")
        sig = self.nationality_signature_db
        _check(all(0 <= v <= 40 for v in sig), "nationality_signature_db", sig, "in [0, 40] dB")
        _check(
            1 <= self.signature_notches <= 8, "signature_notches", self.signature_notches, "1 to 8"
        )
        grid = self.signature_grid
        _check(
            grid == 0 or self.signature_notches <= grid <= 64,
            "signature_grid",
            grid,
            f"0 or {self.signature_notches} (signature_notches) to 64",
        )
        for key in ("nationality_rt60_scale", "nationality_session_drift"):
            _check(
                all(0 < v <= 5 for v in getattr(self, key)), key, getattr(self, key), "in (0, 5]"
            )

    def channel_ranges(
        self, nationality: str
    ) -> tuple[tuple[float, float], tuple[float, float], float]:
        """(snr_db, rt60_s, reverb_prob) of a nationality's sessions, after its shifts."""
        i = self.nationalities.index(nationality)
        shift = self.nationality_snr_shift_db[i] if self.nationality_snr_shift_db else 0.0
        scale = self.nationality_rt60_scale[i] if self.nationality_rt60_scale else 1.0
        prob = self.nationality_reverb_prob[i] if self.nationality_reverb_prob else self.reverb_prob
        snr = (self.snr_db[0] + shift, self.snr_db[1] + shift)
        rt60 = (min(self.rt60_s[0] * scale, 3.0), min(self.rt60_s[1] * scale, 3.0))
        return snr, rt60, prob

    def signature_db(self, nationality: str) -> float:
        """Depth of a nationality's speakers' signature notches (0: none)."""
        sig = self.nationality_signature_db
        return sig[self.nationalities.index(nationality)] if sig else 0.0

    def session_drift(self, nationality: str) -> float:
        """Multiplier of the per-session voice drift of a nationality's speakers."""
        drift = self.nationality_session_drift
        return drift[self.nationalities.index(nationality)] if drift else 1.0

    @classmethod
    def from_dict(cls, values: dict[str, typing.Any]) -> SynthConfig:
        """Build from a dict (e.g. a ``corpus.json``); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SynthConfig key(s): {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


_PER_NATIONALITY_ACOUSTICS = (
    "nationality_snr_shift_db",
    "nationality_reverb_prob",
    "nationality_rt60_scale",
    "nationality_session_drift",
    "nationality_signature_db",
)


def _check(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"SynthConfig.{key}={shorten(value)}: expected {expected}")


def _is_range(value: tuple[float, ...], lo: float, hi: float) -> bool:
    return len(value) == 2 and lo <= value[0] <= value[1] <= hi


PRESETS: dict[str, dict[str, typing.Any]] = {
    # ~5 h of audio: trains in the demo's ~5 min budget on 2 CPU cores.
    "demo": {},
    # A few speakers of 1 s clips for tests: generates in about a second.
    "tiny": {
        "nationalities": ("USA", "India"),
        "dev_nationality_share": (0.75, 0.25),
        "nationality_spread": (1.0, 0.6),
        "num_dev_speakers": 8,
        "test_speakers_per_cell": 2,
        "dev_sessions": 2,
        "dev_utterances_per_session": 2,
        "test_sessions": 2,
        "test_utterances_per_session": 2,
        "min_duration_s": 1.0,
        "max_duration_s": 1.0,
        "target_trials_per_speaker": 4,
        "nontarget_cell_trials_per_speaker": 2,
        "nontarget_cross_trials_per_speaker": 2,
    },
    # The fairness benchmark: 200 test speakers per nationality and 300 per gender, so that
    # per-group EERs have bootstrap intervals narrow enough to compare methods.
    "bench": {
        "num_dev_speakers": 480,
        "test_speakers_per_cell": 100,
        "target_trials_per_speaker": 30,
        "nontarget_cell_trials_per_speaker": 30,
        "nontarget_cross_trials_per_speaker": 10,
    },
}
# Disparity mechanisms for the fine-tuning benchmark (docs/synth.md, "Disparity presets"):
# each plants one mechanism on the `bench` layout, so a method's effect can be read per
# mechanism. India is the minority of the nationality ones, women of the gender one.
PRESETS["bench_crowding"] = {**PRESETS["bench"]}  # today's bench: few India speakers, spread 0.6
PRESETS["bench_underrep"] = {**PRESETS["bench"], "nationality_spread": (1.0, 1.0, 1.0)}
PRESETS["bench_acoustics"] = {
    **PRESETS["bench_underrep"],
    "nationality_snr_shift_db": (0.0, 0.0, -8.0),  # India: SNR -3 to 22 dB instead of 5 to 30
    "nationality_reverb_prob": (0.6, 0.6, 1.0),  # every India session reverberant
    "nationality_rt60_scale": (1.0, 1.0, 1.5),  # and longer tails
    "nationality_session_drift": (1.0, 1.0, 2.5),  # more within-speaker variability
}
# Representation gap (issue 20): India's speakers differ from each other mainly by a cue
# of their own (5 spectral notches of 18 dB at speaker-specific frequencies) that the
# majority never varies in, and little in the shared voice parameters (spread 0.35); the
# majority varies in the shared parameters only. Of the settings tried on validation corpus
# seed 100 (docs/fairness-log.md R1-R8), the one where group-balanced fine-tuning gained
# most (-14%, short of the 25%; from the first step it gains 25%, R6).
PRESETS["bench_representation"] = {
    **PRESETS["bench"],
    "nationality_spread": (1.0, 1.0, 0.35),
    "nationality_signature_db": (0.0, 0.0, 18.0),
    "signature_notches": 5,
    # Held-out speakers (a cal split, 12 per cell) for held-out cohort discovery: added
    # speakers only, every training and test speaker is drawn as without them.
    "calibration_speakers_per_cell": 12,
}
PRESETS["bench_gender"] = {
    **PRESETS["bench"],
    "dev_nationality_share": (1 / 3, 1 / 3, 1 / 3),
    "nationality_spread": (1.0, 1.0, 1.0),
    "dev_female_share": 0.15,
    "gender_spread": (1.0, 0.6),
}


def preset(name: str) -> SynthConfig:
    """The named preset (``demo``, ``tiny``, ``bench`` or a ``bench_<mechanism>``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown synth preset {name!r}; choose one of {', '.join(PRESETS)}")
    return SynthConfig(**PRESETS[name])


def apply_overrides(cfg: SynthConfig, overrides: list[str]) -> SynthConfig:
    """Apply ``key=value`` overrides (an optional ``synth.`` prefix is accepted).

    The same language as the training config's overrides (:func:`arw_sv.config.
    parse_overrides`): values are YAML, so lists are written ``[0.5, 0.3, 0.2]``, and each
    is checked against its field's type as the training config checks its own.

    Raises:
        ValueError: naming the malformed override, the unknown key (with the closest
            valid one), or the field whose new value fails validation.
    """
    hints = typing.get_type_hints(SynthConfig)
    changes: dict[str, typing.Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().removeprefix("synth.")
        if not sep or not key:
            raise ValueError(f"synth override {shorten(item)}: expected key=value")
        if key not in hints:
            close = difflib.get_close_matches(key, list(hints), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"unknown synth config key {shorten(key)}{hint}")
        try:
            where = f"synth override {shorten(item)}"
            value = load_yaml(text, where, lines=False) if text.strip() else ""
            changes[key] = coerce_value(value, hints[key], f"synth.{key}")
        except YamlError as exc:
            raise ValueError(str(exc)) from None
        except ConfigError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return replace(cfg, **changes)


def config_dict(cfg: SynthConfig) -> dict[str, typing.Any]:
    """The config as plain JSON-ready values (tuples become lists)."""
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}
    if not out["calibration_speakers_per_cell"]:  # corpora made before the field existed
        del out["calibration_speakers_per_cell"]
    return out

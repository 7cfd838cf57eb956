"""The disparity presets plant what docs/synth.md says they plant (metadata and config only)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import arw_sv.synth.corpus as corpus_mod
from arw_sv.synth import preset
from arw_sv.synth.config import SynthConfig, apply_overrides
from arw_sv.synth.corpus import plan_speakers


def _dev(cfg):
    return [s for s in plan_speakers(cfg) if s.split == "dev"]


def _shares(speakers, attr):
    counts = Counter(getattr(s, attr) for s in speakers)
    return {k: v / len(speakers) for k, v in counts.items()}


def _spread(speakers, **match):
    values = {s.spread for s in speakers if all(getattr(s, k) == v for k, v in match.items())}
    assert len(values) == 1, values
    return values.pop()


@pytest.mark.parametrize("name", ["bench_crowding", "bench_underrep", "bench_acoustics"])
def test_nationality_presets_make_india_a_tenth(name):
    dev = _dev(preset(name))
    assert len(dev) == 480
    assert _shares(dev, "nationality")["India"] == pytest.approx(0.10)


def test_crowding_shrinks_india_spread_and_is_todays_bench():
    cfg = preset("bench_crowding")
    assert cfg == preset("bench")
    dev = _dev(cfg)
    assert _spread(dev, nationality="India", gender="m") == pytest.approx(
        0.6 * _spread(dev, nationality="USA", gender="m")
    )


def test_underrep_keeps_the_spread_and_the_acoustics():
    cfg = preset("bench_underrep")
    dev = _dev(cfg)
    assert _spread(dev, nationality="India", gender="f") == _spread(
        dev, nationality="UK", gender="f"
    )
    assert cfg.channel_ranges("India") == cfg.channel_ranges("USA")
    assert cfg.session_drift("India") == cfg.session_drift("USA") == 1.0


def test_acoustics_makes_india_noisier_reverberant_and_more_variable():
    cfg = preset("bench_acoustics")
    dev = _dev(cfg)
    assert _spread(dev, nationality="India", gender="m") == _spread(
        dev, nationality="USA", gender="m"
    )
    (snr_in, rt_in, p_in), (snr_us, rt_us, p_us) = (cfg.channel_ranges(n) for n in ("India", "USA"))
    assert snr_in[0] < snr_us[0] and snr_in[1] < snr_us[1]
    assert p_in == 1.0 > p_us
    assert rt_in[1] > rt_us[1]
    assert cfg.session_drift("India") > cfg.session_drift("UK") == 1.0


def test_acoustics_reach_the_rendered_sessions(monkeypatch, tmp_path):
    """render_speaker draws each session's channel and drift from its nationality's knobs."""
    cfg = apply_overrides(
        preset("tiny"), ["nationality_snr_shift_db=[0, -10]", "nationality_session_drift=[1, 3]"]
    )
    seen = []
    monkeypatch.setattr(corpus_mod, "draw_channel", _raise_after(seen))
    monkeypatch.setattr(corpus_mod, "session_voice", lambda v, rng, drift: seen.append(drift) or v)
    speakers = {s.nationality: s for s in plan_speakers(cfg)}
    for nat in ("USA", "India"):
        with pytest.raises(_Stop):
            corpus_mod.render_speaker(cfg, speakers[nat], tmp_path)
    assert seen == [1.0, (5.0, 30.0), 3.0, (-5.0, 20.0)]


class _Stop(Exception):
    pass


def test_gender_preset_makes_women_a_crowded_minority():
    dev = _dev(preset("bench_gender"))
    assert _shares(dev, "gender")["f"] == pytest.approx(0.15, abs=0.01)
    nat = _shares(dev, "nationality")
    assert max(nat.values()) - min(nat.values()) < 0.01
    for n in ("USA", "India"):
        assert _spread(dev, nationality=n, gender="f") == pytest.approx(
            0.6 * _spread(dev, nationality=n, gender="m")
        )


def test_default_acoustics_plant_nothing_and_bad_lengths_fail():
    cfg = SynthConfig()
    assert all(
        cfg.channel_ranges(n) == (cfg.snr_db, cfg.rt60_s, cfg.reverb_prob)
        for n in cfg.nationalities
    )
    with pytest.raises(ValueError, match="nationality_reverb_prob"):
        apply_overrides(cfg, ["nationality_reverb_prob=[1, 1]"])
    assert np.isfinite(cfg.session_drift("UK"))


def _raise_after(seen):
    def draw(rng, snr, *args):
        seen.append(snr)
        raise _Stop

    return draw


# ---- representation gap (issue 20) ----------------------------------------------------------


def _voices(cfg, nationality, gender=None):
    from arw_sv.synth.corpus import speaker_voice

    return [
        speaker_voice(cfg, s)
        for s in _dev(cfg)
        if s.nationality == nationality and gender in (None, s.gender)
    ]


def test_representation_gives_india_a_cue_of_its_own_and_a_narrow_shared_spread():
    """Measured on the generated speakers: India's speakers barely vary in the shared voice
    parameters (x0.35) and carry 5 notches of 18 dB at their own frequencies; the majority
    has none."""
    cfg = preset("bench_representation")
    assert _shares(_dev(cfg), "nationality")["India"] == pytest.approx(0.10)
    assert cfg.calibration_speakers_per_cell == 12  # held-out speakers for cohort discovery
    india, usa = _voices(cfg, "India"), _voices(cfg, "USA")
    for key in ("f0_hz", "formant_scale", "bandwidth_scale"):
        for gender in ("m", "f"):  # within a gender (their means differ)
            a, b = _voices(cfg, "India", gender), _voices(cfg, "USA", gender)
            sd_india = np.std([np.log(getattr(v, key)) for v in a])
            sd_usa = np.std([np.log(getattr(v, key)) for v in b])
            assert 0.18 < sd_india / sd_usa < 0.6, (key, gender)  # 0.35 planted; 24 drawn
    assert all(len(v.notches) == 0 for v in usa + _voices(cfg, "UK"))
    centres = np.array([v.notches[:, 0] for v in india])
    assert centres.shape == (48, 5) and (np.asarray([v.notches[:, 1] for v in india]) == 18).all()
    assert 1200 <= centres.min() and centres.max() <= 6500
    # Speaker-specific: every speaker's notches are its own (no two share a centre).
    assert len(np.unique(np.round(centres[:, 0]))) == 48


def test_notches_cut_the_spectrum_where_they_say_and_nothing_else():
    from arw_sv.synth.voice import notch_gain

    notches = np.array([[2000.0, 12.0], [5000.0, 6.0]])
    freqs = np.array([2000.0, 5000.0, 300.0, 3500.0])
    gain = notch_gain(notches, freqs)
    assert 20 * np.log10(gain[0]) == pytest.approx(-12.0, abs=0.01)
    assert 20 * np.log10(gain[1]) == pytest.approx(-6.0, abs=0.01)
    assert gain[2] == pytest.approx(1.0, abs=1e-9) and gain[3] > 0.999


def test_the_signature_changes_no_other_draw():
    """A corpus without signatures draws every speaker as before the mechanism existed;
    with them only the signed nationality's notches are added."""
    from dataclasses import replace

    from arw_sv.synth.corpus import speaker_voice

    cfg = preset("bench_representation")
    plain = replace(cfg, nationality_signature_db=())
    for s in _dev(cfg)[:40]:
        a, b = speaker_voice(cfg, s), speaker_voice(plain, s)
        assert a.f0_hz == b.f0_hz and np.array_equal(a.formant_offsets, b.formant_offsets)
        assert len(b.notches) == 0 and len(a.notches) == (5 if s.nationality == "India" else 0)
    with pytest.raises(ValueError, match="nationality_signature_db.*one per nationality"):
        apply_overrides(cfg, ["nationality_signature_db=[0,0]"])
    with pytest.raises(ValueError, match="nationality_signature_db.*in \\[0, 40\\] dB"):
        apply_overrides(cfg, ["nationality_signature_db=[0,0,-3]"])


def test_a_signed_speakers_audio_carries_its_notches():
    from dataclasses import replace

    from arw_sv.synth.accent import make_accent
    from arw_sv.synth.voice import SAMPLE_RATE, draw_voice, synthesize

    accent = make_accent("India", 1.0)
    voice = draw_voice(np.random.default_rng(1), "m", accent, 1.0)
    signed = replace(voice, notches=np.array([[3000.0, 12.0]]))
    a = synthesize(voice, accent, 3.0, np.random.default_rng(2))
    b = synthesize(signed, accent, 3.0, np.random.default_rng(2))  # same excitation
    freqs = np.fft.rfftfreq(a.size, 1 / SAMPLE_RATE)

    def band_db(x, lo, hi):
        power = np.abs(np.fft.rfft(x)) ** 2
        return 10 * np.log10(power[(freqs > lo) & (freqs < hi)].sum())

    # Both are normalised to the same RMS, so compare the notch band against a far band.
    dip = (band_db(b, 2950, 3050) - band_db(b, 600, 1400)) - (
        band_db(a, 2950, 3050) - band_db(a, 600, 1400)
    )
    assert -13.5 < dip < -9.0


def test_a_notch_grid_gives_every_signed_speaker_a_code_over_shared_positions():
    """``signature_grid=N``: each speaker's notches are distinct positions of N shared
    log-spaced ones, every position used by many training speakers; the speakers are
    otherwise drawn exactly as without the grid."""
    from dataclasses import replace

    from arw_sv.synth.corpus import speaker_voice
    from arw_sv.synth.voice import NOTCH_BAND_HZ, notch_grid

    cfg = apply_overrides(
        preset("bench_representation"), ["signature_notches=4", "signature_grid=10"]
    )
    grid = notch_grid(10)
    assert grid[0] == pytest.approx(NOTCH_BAND_HZ[0]) and grid[-1] == pytest.approx(
        NOTCH_BAND_HZ[1]
    )
    assert np.allclose(np.diff(np.log(grid)), np.log(grid[1] / grid[0]))
    india = _voices(cfg, "India")
    idx = np.array([[np.argmin(np.abs(grid - c)) for c in v.notches[:, 0]] for v in india])
    assert np.allclose(grid[idx], [v.notches[:, 0] for v in india])  # on the grid exactly
    assert all(len(set(row)) == 4 for row in idx)  # distinct positions per speaker
    counts = np.bincount(idx.ravel(), minlength=10)
    assert counts.min() >= 8  # 48 x 4 / 10 = 19 expected per position
    assert len({tuple(row) for row in idx}) >= 40  # codes are mostly speakers' own
    free = replace(cfg, signature_grid=0)
    for s in _dev(cfg)[:30]:
        assert speaker_voice(cfg, s).f0_hz == speaker_voice(free, s).f0_hz
    with pytest.raises(ValueError, match="signature_grid.*0 or 4"):
        apply_overrides(cfg, ["signature_grid=3"])

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

"""The synthetic VoxCeleb1-style corpus: layout, formats, determinism, groups, voices, speed."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from arw_sv.cli.synth import add_subparser
from arw_sv.synth import PRESETS, SynthConfig, apply_overrides, generate_corpus, preset
from arw_sv.synth.accent import make_accent
from arw_sv.synth.corpus import load_corpus, plan_speakers
from arw_sv.synth.trials import build_trials

META_HEADER = "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"
TRIAL_LINE = re.compile(
    r"^[01] (id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav) (id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav)$"
)


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def read_meta(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == META_HEADER
    return [line.split("\t") for line in lines[1:]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny preset generated once, serially."""
    return generate_corpus(
        tmp_path_factory.mktemp("synth") / "tiny", preset("tiny"), progress=False
    )


def test_meta_layout_like_voxceleb1(tiny):
    cfg = tiny.config
    rows = read_meta(tiny.meta_path)
    assert all(len(r) == 5 for r in rows)
    n_dev, n_test = cfg.num_dev_speakers, 2 * len(cfg.nationalities) * cfg.test_speakers_per_cell
    assert [r[0] for r in rows] == [f"id{10001 + i}" for i in range(n_dev + n_test)]
    assert [r[1] for r in rows] == [f"Synth_Speaker_{i + 1:04d}" for i in range(n_dev + n_test)]
    assert [r[4] for r in rows] == ["dev"] * n_dev + ["test"] * n_test  # test is one block
    assert {r[2] for r in rows} == {"m", "f"}
    assert {r[3] for r in rows} == set(cfg.nationalities)
    assert (tiny.num_dev_speakers, tiny.num_test_speakers) == (n_dev, n_test)


def test_wav_layout_and_format(tiny):
    cfg = tiny.config
    rows = read_meta(tiny.meta_path)
    wavs = sorted(tiny.wav_dir.rglob("*.wav"))
    assert len(wavs) == tiny.num_utterances
    assert not list(tiny.root.rglob("*.tmp"))
    for spk, *_, split in rows:
        sessions = sorted((tiny.wav_dir / spk).iterdir())
        n_sess = cfg.dev_sessions if split == "dev" else cfg.test_sessions
        n_utt = (
            cfg.dev_utterances_per_session if split == "dev" else cfg.test_utterances_per_session
        )
        assert len(sessions) == n_sess
        for sess in sessions:
            assert re.fullmatch(r"[A-Za-z0-9_-]{11}", sess.name)
            assert sorted(p.name for p in sess.iterdir()) == [
                f"{u:05d}.wav" for u in range(1, n_utt + 1)
            ]
    info = sf.info(wavs[0])
    assert (info.samplerate, info.channels, info.format, info.subtype) == (
        16000,
        1,
        "WAV",
        "PCM_16",
    )
    audio, _ = sf.read(wavs[0], dtype="int16")
    assert audio.shape == (16000,)  # tiny clips are 1.0 s
    assert np.abs(audio).max() > 1000  # not silent


def test_trials_format(tiny):
    rows = {r[0]: r for r in read_meta(tiny.meta_path)}
    lines = tiny.trials_path.read_text().splitlines()
    assert len(lines) == tiny.num_trials > 0
    pairs = set()
    for line in lines:
        match = TRIAL_LINE.match(line)
        assert match, line
        a, b = match.groups()
        assert (tiny.wav_dir / a).is_file() and (tiny.wav_dir / b).is_file()
        assert rows[a[:7]][4] == rows[b[:7]][4] == "test"
        label = line[0] == "1"
        assert label == (a[:7] == b[:7])
        if label:
            assert a.split("/")[1] != b.split("/")[1]  # targets cross sessions
        pairs.add(frozenset((a, b)))
    assert len(pairs) == len(lines)  # no duplicate trials
    assert {line[0] for line in lines} == {"0", "1"}


def test_manifest_marks_completion(tiny):
    manifest = json.loads(tiny.manifest_path.read_text())
    assert manifest["complete"] is True
    assert SynthConfig.from_dict(manifest["config"]) == tiny.config
    assert load_corpus(tiny.root) == dataclasses.replace(tiny, generated=False)


def test_same_seed_is_byte_identical_for_any_worker_count(tiny, tmp_path):
    other = generate_corpus(tmp_path / "again", preset("tiny"), progress=False, workers=2)
    assert tree_digest(other.root) == tree_digest(tiny.root)


def test_different_seed_differs(tiny, tmp_path):
    cfg = apply_overrides(preset("tiny"), ["seed=1"])
    other = generate_corpus(tmp_path / "seed1", cfg, progress=False)
    a, b = tree_digest(tiny.root), tree_digest(other.root)
    assert a["trials.txt"] != b["trials.txt"]
    assert not set(a.values()) & set(b.values())


def test_rerun_is_a_noop(tiny, monkeypatch):
    import arw_sv.synth.corpus as corpus

    def refuse(*args, **kwargs):
        raise AssertionError("a complete corpus was rendered or written again")

    for name in ("_render_task", "_write_text", "_write_wav", "build_trials"):
        monkeypatch.setattr(corpus, name, refuse)
    again = generate_corpus(tiny.root, tiny.config, progress=False)
    assert not again.generated
    assert again == dataclasses.replace(tiny, generated=False)


def test_interrupted_run_resumes_to_the_same_corpus(tiny, tmp_path):
    root = tmp_path / "crash"
    shutil.copytree(tiny.root, root)
    # What a crash mid-generation leaves: manifest not complete, no meta or trials yet,
    # some wavs missing, a stale temporary file.
    manifest = json.loads((root / "corpus.json").read_text())
    (root / "corpus.json").write_text(json.dumps({**manifest, "complete": False}))
    (root / "vox1_meta.csv").unlink()
    (root / "trials.txt").unlink()
    wavs = sorted((root / "wav").rglob("*.wav"))
    for p in wavs[::3]:
        p.unlink()
    (wavs[0].parent / ".00009.wav.tmp").write_bytes(b"half")
    with pytest.raises(RuntimeError, match="incomplete"):
        load_corpus(root)
    info = generate_corpus(root, tiny.config, progress=False)
    assert info.generated
    assert tree_digest(root) == tree_digest(tiny.root)


def test_refuses_other_config_or_foreign_folder(tiny, tmp_path):
    with pytest.raises(FileExistsError, match="seed"):
        generate_corpus(tiny.root, apply_overrides(tiny.config, ["seed=3"]), progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_corpus(tmp_path, tiny.config, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_group_sizes_plant_a_minority():
    cfg = preset("demo")
    speakers = plan_speakers(cfg)
    dev = Counter((s.nationality, s.gender) for s in speakers if s.split == "dev")
    test = Counter((s.nationality, s.gender) for s in speakers if s.split == "test")
    assert sum(dev.values()) == cfg.num_dev_speakers
    per_nat = {n: dev[(n, "m")] + dev[(n, "f")] for n in cfg.nationalities}
    assert per_nat == {"USA": 108, "UK": 108, "India": 24}
    assert all(dev[(n, "m")] == dev[(n, "f")] for n in cfg.nationalities)
    assert set(test.values()) == {cfg.test_speakers_per_cell} and len(test) == 6
    india = [s.spread for s in speakers if s.nationality == "India"]
    assert set(india) == {cfg.identity_spread * cfg.nationality_spread[2]}
    assert cfg.nationality_spread[2] < 1
    # A gender minority is one override away.
    skewed = plan_speakers(apply_overrides(cfg, ["dev_female_share=0.2"]))
    women = sum(s.gender == "f" for s in skewed if s.split == "dev")
    assert women == pytest.approx(0.2 * cfg.num_dev_speakers, abs=len(cfg.nationalities))


def test_trials_are_built_per_cell():
    cfg = preset("demo")
    speakers = plan_speakers(cfg)
    trials = build_trials(cfg, speakers)
    assert trials == build_trials(cfg, plan_speakers(cfg))
    group = {s.speaker_id: (s.nationality, s.gender) for s in speakers if s.split == "test"}
    targets = [t for t in trials if t[0] == 1]
    nontargets = [t for t in trials if t[0] == 0]
    assert len(targets) == cfg.target_trials_per_speaker * len(group)
    within = sum(group[a[:7]] == group[b[:7]] for _, a, b in nontargets)
    expected = cfg.nontarget_cell_trials_per_speaker / (
        cfg.nontarget_cell_trials_per_speaker + cfg.nontarget_cross_trials_per_speaker
    )
    assert within / len(nontargets) == pytest.approx(expected, abs=0.03)


def test_accent_is_a_function_of_the_name():
    usa, india = make_accent("USA"), make_accent("India")
    np.testing.assert_array_equal(usa.vowel_shift, make_accent("USA").vowel_shift)
    assert not np.allclose(usa.vowel_shift, india.vowel_shift)
    flat = make_accent("India", strength=0.0)
    np.testing.assert_array_equal(flat.vowel_shift, np.ones_like(flat.vowel_shift))


def autocorrelation_f0(audio: np.ndarray, sr: int = 16000) -> list[float]:
    """F0 of the clearly voiced 40 ms frames, from the autocorrelation peak in 60-400 Hz."""
    frame, hop = 640, 320
    frames = np.lib.stride_tricks.sliding_window_view(audio, frame)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)
    loud = frames[np.sum(frames**2, axis=1) >= np.quantile(np.sum(frames**2, axis=1), 0.6)]
    f0 = []
    for x in loud:
        ac = np.correlate(x, x, "full")[frame - 1 :]
        lo, hi = sr // 400, sr // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.4 * ac[0]:
            f0.append(sr / lag)
    return f0


def test_gender_shifts_f0(tiny):
    rows = read_meta(tiny.meta_path)
    by_gender: dict[str, list[float]] = {"m": [], "f": []}
    for spk, _, gender, _, _ in rows:
        for wav in sorted((tiny.wav_dir / spk).rglob("*.wav")):
            by_gender[gender] += autocorrelation_f0(sf.read(wav)[0])
    male, female = np.median(by_gender["m"]), np.median(by_gender["f"])
    assert len(by_gender["m"]) > 50 and len(by_gender["f"]) > 50
    assert 80 < male < 170 and 150 < female < 300
    assert female > 1.3 * male


def test_overrides_parse_and_reject_bad_input():
    cfg = apply_overrides(
        preset("demo"),
        ["num_dev_speakers=60", "synth.dev_nationality_share=[0.5, 0.3, 0.2]", "snr_db=[0, 10]"],
    )
    assert cfg.num_dev_speakers == 60
    assert cfg.dev_nationality_share == (0.5, 0.3, 0.2)
    assert cfg.snr_db == (0.0, 10.0)
    with pytest.raises(ValueError, match="num_dev_speaker.*did you mean num_dev_speakers"):
        apply_overrides(cfg, ["num_dev_speaker=3"])
    with pytest.raises(ValueError, match="num_dev_speakers=many.*expected an integer"):
        apply_overrides(cfg, ["num_dev_speakers=many"])
    with pytest.raises(ValueError, match="dev_nationality_share"):
        apply_overrides(cfg, ["dev_nationality_share=[0.5, 0.5]"])
    # the training overrides' language: a list is YAML, not comma-separated text
    with pytest.raises(ValueError, match="dev_nationality_share.*expected a list"):
        apply_overrides(cfg, ["dev_nationality_share=0.5,0.3,0.2"])
    with pytest.raises(ValueError, match="nationalities.*expected a list"):
        apply_overrides(cfg, ["nationalities=USA"])
    with pytest.raises(ValueError, match="max_duration_s"):
        apply_overrides(cfg, ["max_duration_s=1"])
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides(cfg, ["seed"])
    with pytest.raises(ValueError, match="unknown SynthConfig key"):
        SynthConfig.from_dict({"seed": 0, "speakers": 3})
    with pytest.raises(ValueError, match="unknown synth preset 'huge'"):
        preset("huge")


def test_every_preset_builds():
    for name in PRESETS:
        assert plan_speakers(preset(name))


def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="arw-sv")
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "synth",
            "--out",
            str(tmp_path / "c"),
            "--preset",
            "tiny",
            "--seed",
            "5",
            "--quiet",
            "num_dev_speakers=4",
            "test_speakers_per_cell=1",
            "nontarget_cell_trials_per_speaker=0",
        ]
    )
    assert args.func(args) == 0
    info = load_corpus(tmp_path / "c")
    assert (info.config.seed, info.num_dev_speakers, info.num_test_speakers) == (5, 4, 4)
    assert "generated" in capsys.readouterr().out
    bad = parser.parse_args(["synth", "--out", str(tmp_path / "d"), "speakers=3"])
    with pytest.raises(ValueError, match="speakers"):
        bad.func(bad)
    assert not (tmp_path / "d").exists()

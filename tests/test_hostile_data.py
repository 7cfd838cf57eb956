"""Issue #21, data and outputs: manifests from every reader validated in one place, trial
lists and score files that contradict themselves, quotas that cannot be met, exports and
pipe outputs that are whole or absent. Each expected failure is one line and exit 2.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from arw_sv.cli import main
from arw_sv.data.corpora import read_corpus_csv, read_kaldi, read_librispeech
from arw_sv.data.manifest import COLUMNS, ManifestError, Utterance, read_manifest, write_manifest
from arw_sv.data.trial_gen import TrialPlan
from arw_sv.data.trials import TrialsError, read_scores, read_trials


def _one_line_exit_2(argv: list[str], capsys, *names: str) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert status == 2, (captured.out, err)
    assert len(err.splitlines()) == 1, err
    for name in names:
        assert name in err, err
    return err


@pytest.fixture
def one_second(tmp_path) -> Path:
    path = tmp_path / "rec.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    return path


def _kaldi(tmp_path: Path, audio: Path, **files: str) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "wav.scp").write_text(f"r1 {audio}\n")
    (data / "utt2spk").write_text("u1 spk\n")
    for name, text in files.items():
        (data / name).write_text(text)
    return data


# ---- 1. a CSV field over the csv module's limit ----------------------------------------------
def test_a_huge_csv_field_is_one_line_in_manifest_and_read_manifest(tmp_path, capsys):
    corpus = tmp_path / "corpus.csv"
    corpus.write_text("path,speaker\n" + "x" * 200_000 + ",spk\n")
    _one_line_exit_2(
        ["manifest", str(corpus), "--out", str(tmp_path / "m.csv")], capsys, "corpus.csv:2"
    )
    manifest = tmp_path / "bad.csv"
    manifest.write_text(",".join(COLUMNS) + "\n" + "s/" + "u" * 200_000 + ",a.wav,s,1,m,X,dev\n")
    with pytest.raises(ManifestError, match=r"bad\.csv:\d+: not valid CSV"):
        read_manifest(manifest)
    _one_line_exit_2(["trials", str(manifest), "--out", str(tmp_path / "t.txt")], capsys, "bad.csv")


# ---- 2. bad values accepted silently --------------------------------------------------------
def test_a_segment_listed_twice_is_refused_naming_both_lines(tmp_path, one_second):
    data = _kaldi(tmp_path, one_second, segments="u1 r1 0 0.5\nu1 r1 0.5 1.0\n")
    with pytest.raises(ManifestError, match=r"segments:2: utterance u1 appears twice .*segments:1"):
        read_kaldi(data)


@pytest.mark.parametrize(
    ("segment", "match"),
    [
        ("50 60", "outside recording r1"),
        ("50 -1", "outside recording r1"),
        ("0.2 1.5", "outside recording r1"),
        ("nan 0.5", "must be a finite number"),
        ("0 inf", "must be a finite number"),
        ("0.5 0.2", "empty or negative"),
        ("-0.5 0.2", "must be a finite number >= 0"),
    ],
)
def test_a_segment_outside_its_file_or_not_finite_is_refused(tmp_path, one_second, segment, match):
    data = _kaldi(tmp_path, one_second, segments=f"u1 r1 {segment}\n")
    with pytest.raises(ManifestError, match=rf"segments:1: .*{match}"):
        read_kaldi(data)


def test_a_segment_to_the_end_gets_the_files_remaining_duration(tmp_path, one_second):
    data = _kaldi(tmp_path, one_second, segments="u1 r1 0.25 -1\n")
    (utt,) = read_kaldi(data)
    assert utt.start == 0.25 and utt.duration == pytest.approx(0.75)


@pytest.mark.parametrize("value", ["nan", "-3", "inf"])
def test_bad_durations_are_refused_at_the_reader(tmp_path, one_second, value):
    data = _kaldi(tmp_path, one_second, utt2dur=f"u1 {value}\n")
    with pytest.raises(ManifestError, match=r"utt2dur:1: duration .* must be a finite number"):
        read_kaldi(data)
    corpus = tmp_path / "c.csv"
    corpus.write_text(f"path,speaker,duration\n{one_second},spk,{value}\n")
    with pytest.raises(ManifestError, match=r"c\.csv:2: duration .* must be a finite number"):
        read_corpus_csv(corpus)


def test_a_speaker_listed_twice_with_two_genders_is_refused(tmp_path, one_second):
    root = tmp_path / "libri"
    audio = root / "103" / "1240" / "103-1240-0000.flac"
    audio.parent.mkdir(parents=True)
    sf.write(audio, np.zeros(16000, dtype=np.float32), 16000)
    (root / "SPEAKERS.TXT").write_text(
        "103 | F | train-clean-100 | 1 | A\n103 | M | train-clean-100 | 1 | A\n"
    )
    with pytest.raises(ManifestError, match=r"SPEAKERS.TXT:2: speaker 103 is m/.* on line 1"):
        read_librispeech(root)
    # The same line twice is no contradiction.
    (root / "SPEAKERS.TXT").write_text("103 | F | train-clean-100 | 1 | A\n" * 2)
    assert read_librispeech(root)[0].gender == "f"


def test_a_speaker_table_listing_a_speaker_twice_is_refused(tmp_path, one_second):
    corpus = tmp_path / "c.csv"
    corpus.write_text(f"path,speaker\n{one_second},spk\n")
    table = tmp_path / "speakers.csv"
    table.write_text("speaker,gender\nspk,m\nspk,f\n")
    with pytest.raises(ManifestError, match=r"speakers.csv:3: speaker spk is listed twice"):
        read_corpus_csv(corpus, speakers=table)


@pytest.mark.parametrize("speaker", ["a/b", "a\\b", "a b"])
def test_a_speaker_id_with_a_separator_is_refused_by_every_reader(tmp_path, one_second, speaker):
    corpus = tmp_path / "c.csv"
    corpus.write_text(f'path,speaker,utt_id\n{one_second},"{speaker}",u1\n')
    with pytest.raises(ManifestError, match=r"c\.csv:2: speaker id"):
        read_corpus_csv(corpus)
    if " " not in speaker:  # utt2spk is space-separated
        data = _kaldi(tmp_path, one_second)
        (data / "utt2spk").write_text(f"r1 {speaker}\n")
        with pytest.raises(ManifestError, match=r"utt2spk:1: speaker id"):
            read_kaldi(data)
    with pytest.raises(ManifestError, match="refusing to write"):
        write_manifest(
            [Utterance(f"{speaker}/u", str(one_second), speaker, 1, "m", "X", "dev")],
            tmp_path / "m.csv",
        )
    assert not (tmp_path / "m.csv").exists()


def test_a_speaker_with_two_genders_in_one_manifest_is_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(",".join(COLUMNS) + "\ns/1,a.wav,s,1,m,X,dev\ns/2,b.wav,s,1,f,X,dev\n")
    with pytest.raises(ManifestError, match=r"m\.csv:3: speaker 's' is f/X here but m/X at line 2"):
        read_manifest(path)


def test_a_trial_labelled_both_ways_is_refused_naming_both_lines(tmp_path, capsys):
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a/x b/y\n0 a/x c/z\n0 b/y a/x\n")
    with pytest.raises(TrialsError, match=r"trials.txt:3: .*non-target here and target on line 1"):
        read_trials(trials)
    scores = tmp_path / "scores.txt"
    scores.write_text("1 a/x b/y 0.5\n1 a/x c/z 0.1\n0 a/x b/y 0.5\n")
    with pytest.raises(TrialsError, match=r"scores.txt:3: .*on line 1"):
        read_scores(scores)
    _one_line_exit_2(
        ["eval", "--scores", str(scores), "--out", str(tmp_path / "e")], capsys, "scores.txt:3"
    )
    assert not (tmp_path / "e" / "report.json").exists()


def test_exact_duplicate_trials_are_counted_and_warned_about(tmp_path, capsys):
    scores = tmp_path / "scores.txt"
    lines = ["1 a/x a/y 0.9", "0 a/x b/y 0.1", "1 a/x a/y 0.9", "0 b/y a/x 0.1", "0 c/x a/y 0.2"]
    scores.write_text("\n".join(lines + lines[:1]) + "\n")
    assert read_scores(scores)[0].duplicates == 2  # the reversed pair is not a duplicate
    assert main(["eval", "--scores", str(scores), "--out", str(tmp_path / "e"), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 trials of" in err and "scores.txt" in err
    import json

    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["inputs"]["duplicate_trials"] == 2 and report["overall"]["n_trials"] == 6


# ---- 3. whole outputs -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tiny_manifests, tmp_path_factory):
    from arw_sv.train.loop import fit
    from tests.conftest import tiny_config

    out = tmp_path_factory.mktemp("run")
    fit(tiny_config(out, tiny_manifests[0], "train.steps=1"))
    return out / "checkpoints" / "step_1.pt"


def test_export_into_a_non_empty_folder_is_refused_without_force(checkpoint, tmp_path, capsys):
    out = tmp_path / "sb"
    out.mkdir()
    (out / "hyperparams.yaml").write_text("mine\n")
    argv = ["export", str(checkpoint), "--format", "speechbrain", "--out", str(out)]
    _one_line_exit_2(argv, capsys, "not empty", "--force")
    assert (out / "hyperparams.yaml").read_text() == "mine\n"
    assert main([*argv, "--force"]) == 0
    assert "ECAPA_TDNN" in (out / "hyperparams.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sb"]  # no temporaries left


def test_an_export_that_fails_midway_leaves_nothing_or_the_old_folder(
    checkpoint, tmp_path, monkeypatch
):
    from arw_sv import speechbrain_folder
    from arw_sv.export import export_checkpoint

    real_save = torch.save

    def crash_on_classifier(obj, path, *args, **kwargs):
        if str(path).endswith("classifier.ckpt"):
            raise KeyboardInterrupt  # as a kill between two files would
        return real_save(obj, path, *args, **kwargs)

    out = tmp_path / "sb"
    monkeypatch.setattr(speechbrain_folder.torch, "save", crash_on_classifier)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(checkpoint, "speechbrain", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(speechbrain_folder.torch, "save", real_save)
    export_checkpoint(checkpoint, "speechbrain", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(speechbrain_folder.torch, "save", crash_on_classifier)
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(checkpoint, "speechbrain", out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old folder, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sb"]


def test_an_export_killed_by_sigkill_leaves_no_folder(checkpoint, tmp_path):
    out = tmp_path / "sb"
    code = (
        "import os, torch, signal\n"
        "from arw_sv import speechbrain_folder as s\n"
        "real = torch.save\n"
        "def save(obj, path, *a, **k):\n"
        "    real(obj, path, *a, **k)\n"
        "    if str(path).endswith('embedding_model.ckpt'): os.kill(os.getpid(), signal.SIGKILL)\n"
        "s.torch.save = save\n"
        "from arw_sv.export import export_checkpoint\n"
        f"export_checkpoint({str(checkpoint)!r}, 'speechbrain', {str(out)!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    assert done.returncode == -9
    assert not out.exists()  # only a hidden temporary, removed by the next export
    from arw_sv.export import export_checkpoint

    export_checkpoint(checkpoint, "speechbrain", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sb"]


def test_a_half_written_speechbrain_folder_is_refused_by_embed(
    checkpoint, tiny_manifests, tmp_path, capsys
):
    from arw_sv.export import export_checkpoint

    out = tmp_path / "sb"
    export_checkpoint(checkpoint, "speechbrain", out)
    (out / "classifier.ckpt").unlink()
    (out / "label_encoder.txt").unlink()
    (out / "label_encoder.ckpt").unlink()
    argv = [
        "embed",
        f"speechbrain:{out}",
        "--manifest",
        str(tiny_manifests[1]),
        "--out",
        str(tmp_path / "x.npz"),
        "--quiet",
    ]
    _one_line_exit_2(argv, capsys, "incomplete SpeechBrain folder", "classifier")


def test_a_failing_pipe_leaves_no_half_written_wav(tmp_path, one_second):
    data = _kaldi(tmp_path, one_second)
    (data / "wav.scp").write_text(f"r1 head -c 2000 {one_second}; exit 3 |\n")
    (data / "utt2spk").write_text("r1 spk\n")
    pipes = tmp_path / "pipes"
    with pytest.raises(ManifestError, match=r"wav.scp:1: command failed \(3\)"):
        read_kaldi(data, allow_pipes=True, pipe_dir=pipes)
    assert not pipes.exists() or list(pipes.iterdir()) == []


@pytest.mark.parametrize("rec", ["../../mine/keep", "/abs/keep", "..", "a\\b"])
def test_a_recording_id_cannot_write_outside_the_pipe_folder(tmp_path, one_second, rec):
    keep = tmp_path / "mine" / "keep.wav"
    keep.parent.mkdir()
    keep.write_bytes(b"precious")
    data = _kaldi(tmp_path, one_second)
    (data / "wav.scp").write_text(f"{rec} cat {one_second} |\n")
    (data / "utt2spk").write_text(f"{rec} spk\n")
    with pytest.raises(ManifestError, match=r"wav.scp:1: recording id .* cannot name a file"):
        read_kaldi(data, allow_pipes=True, pipe_dir=tmp_path / "a" / "b")
    assert keep.read_bytes() == b"precious"


# ---- 4. bounded work ------------------------------------------------------------------------
def test_a_quota_past_the_supply_finishes_and_says_so(tiny_manifests, tmp_path, capsys):
    out = tmp_path / "t.txt"
    start = time.monotonic()
    argv = ["trials", str(tiny_manifests[1]), "--out", str(out), "--within", "100000000"]
    assert main(argv) == 0
    assert time.monotonic() - start < 30
    printed = capsys.readouterr().out
    assert "note: --within 100000000 capped at" in printed
    lines = out.read_text().splitlines()
    pairs = {tuple(sorted(line.split()[1:])) for line in lines}
    assert len(pairs) == len(lines)  # distinct pairs, as always


@pytest.mark.parametrize("flag", ["--targets", "--within", "--across", "--max-per-speaker"])
def test_a_negative_quota_is_refused(flag, tiny_manifests, tmp_path, capsys):
    argv = ["trials", str(tiny_manifests[1]), "--out", str(tmp_path / "t.txt"), flag, "-5"]
    _one_line_exit_2(argv, capsys, flag, "-5")
    with pytest.raises(ValueError, match="--targets must be >= 0"):
        TrialPlan(targets=-1)


# ---- 6. one clear line --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["wav.scp", "utt2spk", "segments", "spk2gender"])
def test_a_kaldi_file_that_is_not_utf8_is_named(tmp_path, one_second, name):
    data = _kaldi(tmp_path, one_second, segments="u1 r1 0 0.5\n", spk2gender="spk m\n")
    (data / name).write_bytes(b"u1 \xff\xfe spk\n")
    with pytest.raises(ManifestError, match=rf"{name}: not UTF-8 text"):
        read_kaldi(data)


def test_speakers_txt_that_is_not_utf8_is_named(tmp_path):
    root = tmp_path / "libri"
    audio = root / "103" / "1240" / "103-1240-0000.flac"
    audio.parent.mkdir(parents=True)
    sf.write(audio, np.zeros(16000, dtype=np.float32), 16000)
    (root / "SPEAKERS.TXT").write_bytes(b"103 | F | train \xff | 1 | A\n")
    with pytest.raises(ManifestError, match=r"SPEAKERS.TXT: not UTF-8 text"):
        read_librispeech(root)


def test_trials_out_a_folder_names_the_folder_not_a_temporary(tiny_manifests, tmp_path, capsys):
    err = _one_line_exit_2(
        ["trials", str(tiny_manifests[1]), "--out", str(tmp_path)], capsys, str(tmp_path)
    )
    assert ".tmp" not in err


def test_a_bad_config_yaml_is_one_line(tmp_path, tiny_manifests, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  lr: [1, 2\n  steps: }\n")
    _one_line_exit_2(["train", str(config)], capsys, "c.yaml:")
    config.write_bytes(b"train:\n  lr: \xff\n")
    _one_line_exit_2(["train", str(config)], capsys, "c.yaml", "UTF-8")


def test_a_checkpoint_whose_weights_do_not_fit_is_one_line(
    checkpoint, tmp_path, tiny_manifests, capsys
):
    state = torch.load(checkpoint, weights_only=True)
    state["extractor"] = {k: v[..., :1] if v.dim() else v for k, v in state["extractor"].items()}
    broken = tmp_path / "step_1.pt"
    torch.save(state, broken)
    argv = [
        "embed",
        str(broken),
        "--manifest",
        str(tiny_manifests[1]),
        "--out",
        str(tmp_path / "x.npz"),
        "--quiet",
    ]
    err = _one_line_exit_2(argv, capsys, "step_1.pt", "do not fit")
    assert "more" in err


def test_a_wav_scp_path_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    """Found by the long fuzz tier: os.stat raised ENAMETOOLONG through Path.is_file."""
    from arw_sv.cli import main

    (tmp_path / "wav.scp").write_text(f"r1 {'x' * 5000}\n")
    (tmp_path / "utt2spk").write_text("r1 spk\n")
    assert main(["manifest", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "wav.scp:1" in err and "unusable audio path" in err and len(err.splitlines()) == 1

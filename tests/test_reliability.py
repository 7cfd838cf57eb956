"""Issue #9: wrong-rate and unusable audio, resume with a changed config, run-folder locks,
config ranges, exponent floats, manifest checks, one-line CLI errors, atomic-write details."""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from arw_sv.audio import AudioError
from arw_sv.cli import main
from arw_sv.config import ConfigError, load_config
from arw_sv.data.manifest import COLUMNS, Manifest, ManifestError, Utterance, read_manifest
from arw_sv.demo import config_path
from tests.conftest import tiny_config

TINY = config_path("tiny")


def _utt(path: Path, duration: float, utt_id: str = "a/b/1.wav", speaker: str = "a") -> Utterance:
    return Utterance(utt_id, str(path), speaker, duration, "m", "X", "dev")


def _tone(seconds: float, rate: int, channels: int = 1, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    wav = amplitude * np.sin(2 * np.pi * 220 * t).astype(np.float32)
    return np.stack([wav] * channels, axis=1) if channels > 1 else wav


# ---- 1. other sample rates and stereo in training ----------------------------------------
@pytest.mark.parametrize("channels", [1, 2])
def test_an_8khz_file_is_cropped_at_the_training_rate(tmp_path, channels):
    from arw_sv.data.dataset import CropDataset

    path = tmp_path / "c8k.wav"
    sf.write(path, _tone(4.0, 8000, channels), 8000)
    dataset = CropDataset(Manifest([_utt(path, 4.0)]), crop_seconds=1.0, sample_rate=16000)
    for seed in range(20):  # before: a start past the file's 32000 samples read nothing
        wav, label, index = dataset[(0, seed)]
        assert wav.shape == (16000,) and float(wav.abs().max()) > 0.1


# ---- 2. too short, silent and truncated files ----------------------------------------------
@pytest.fixture(scope="module")
def encoder():
    from arw_sv.inference import SpeakerEncoder
    from arw_sv.train.build import extractor_from_config

    cfg = load_config(TINY)
    return SpeakerEncoder(extractor_from_config(cfg.model, cfg.features))


def test_a_too_short_file_is_refused_naming_it_in_embed_and_training(tmp_path, encoder):
    from arw_sv.data.dataset import CropDataset

    short = tmp_path / "short.wav"
    sf.write(short, _tone(0.03, 16000), 16000)
    with pytest.raises(AudioError, match=r"short\.wav: 0\.030 s is shorter than the minimum"):
        encoder.embed_files([short])
    with pytest.raises(AudioError, match=r"short\.wav: .* minimum"):
        encoder.embed_file(short)
    dataset = CropDataset(Manifest([_utt(short, 0.03)]), crop_seconds=1.0)
    with pytest.raises(AudioError, match=r"short\.wav: .* minimum"):
        dataset[(0, 0)]


def test_silent_and_truncated_files_are_embedded_with_a_warning(tmp_path, encoder, caplog):
    silent, truncated = tmp_path / "silent.wav", tmp_path / "truncated.wav"
    sf.write(silent, np.zeros(16000, np.float32), 16000)
    sf.write(truncated, _tone(1.0, 16000), 16000, subtype="PCM_16")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="arw_sv"):
        vectors = encoder.embed_files([silent, truncated])
    assert vectors.shape == (2, encoder.dim)
    text = caplog.text
    assert "silent.wav: silent" in text
    assert "truncated.wav: truncated (header says 16000 samples" in text


# ---- 3. resume with a changed config ---------------------------------------------------------
@pytest.fixture
def short_run(tiny_manifests, tmp_path):
    from arw_sv.train.loop import fit

    out = tmp_path / "run"
    fit(tiny_config(out, tiny_manifests[0], "train.steps=2"), progress=False)
    return out


def test_resume_refuses_a_changed_lr_naming_the_key(short_run, tiny_manifests):
    from arw_sv.train.loop import fit

    saved = (short_run / "config.yaml").read_text()
    cfg = tiny_config(short_run, tiny_manifests[0], "train.steps=3", "train.lr=1.0e+12")
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.003 -> 1000000000000\.0"):
        fit(cfg, resume=True, progress=False)
    assert (short_run / "config.yaml").read_text() == saved  # not overwritten
    preset = tiny_config(short_run, tiny_manifests[0], "model.preset=c256")
    with pytest.raises(ConfigError, match=r"model\.preset: 'tiny' -> 'c256'"):
        fit(preset, resume=True, progress=False)


def test_resume_refuses_another_speaker_set(short_run, tiny_manifests, tmp_path):
    from arw_sv.train.loop import fit

    rows = list(csv.DictReader(tiny_manifests[0].open()))
    fewer = [r for r in rows if r["speaker"] != rows[0]["speaker"]]
    other = tmp_path / "fewer.csv"
    with other.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(fewer)
    cfg = tiny_config(short_run, other, "train.steps=3")
    with pytest.raises(ConfigError, match=r"speakers .*data\.train_manifest"):
        fit(cfg, resume=True, progress=False)


def test_resume_allows_more_steps_and_an_explicit_config_change(short_run, tiny_manifests):
    from arw_sv.checkpoint import load_checkpoint
    from arw_sv.train.loop import fit

    extended = fit(
        tiny_config(short_run, tiny_manifests[0], "train.steps=3"), resume=True, progress=False
    )
    assert extended.steps == 3
    changed = tiny_config(short_run, tiny_manifests[0], "train.steps=4", "train.lr=0.002")
    result = fit(changed, resume=True, progress=False, allow_config_change=True)
    state = load_checkpoint(result.checkpoint)
    assert state["scheduler"]["base_lrs"] == [0.002]
    assert "train.lr 0.003 -> 0.002" in (short_run / "train.log").read_text()


def test_resume_with_a_changed_model_and_allow_is_a_checkpoint_error(short_run, tiny_manifests):
    from arw_sv.checkpoint import CheckpointError
    from arw_sv.train.loop import fit

    cfg = tiny_config(short_run, tiny_manifests[0], "model.preset=c256")
    with pytest.raises(CheckpointError, match="do not fit this config"):
        fit(cfg, resume=True, progress=False, allow_config_change=True)


# ---- 4. one run per folder ---------------------------------------------------------------
def test_a_run_folder_is_locked_and_a_stale_lock_is_reported(tmp_path, caplog):
    from arw_sv.train.lock import RunLock, RunLockedError

    first = RunLock(tmp_path)
    with pytest.raises(
        RunLockedError, match=rf"in use by another arw-sv train \(pid {os.getpid()}"
    ):
        RunLock(tmp_path)
    first.release()
    again = RunLock(tmp_path)
    assert again.stale_owner is None  # a clean exit leaves no owner behind
    again.release()
    (tmp_path / ".lock").write_text("pid 4242 on elsewhere\n")  # as a killed run leaves it
    with caplog.at_level(logging.WARNING, logger="arw_sv"):
        taken = RunLock(tmp_path)
    assert taken.stale_owner == "pid 4242 on elsewhere"
    assert "did not exit cleanly" in caplog.text
    taken.release()


def test_training_into_a_locked_folder_is_refused(tiny_manifests, tmp_path, capsys):
    from arw_sv.train.lock import RunLock

    held = RunLock(tmp_path / "busy")
    try:
        code = main(
            ["train", str(TINY), f"data.train_manifest={tiny_manifests[0]}",
             f"train.out_dir={tmp_path / 'busy'}", "--quiet"]
        )  # fmt: skip
    finally:
        held.release()
    err = capsys.readouterr().err
    assert code == 2 and "is in use by another arw-sv train" in err
    assert not list((tmp_path / "busy" / "checkpoints").glob("*.pt"))


# ---- 5. config ranges ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        "train.checkpoint_every=0",
        "train.log_every=0",
        "adversary.adversary_every=0",
        "adversary.cluster_refresh_steps=0",
        "train.steps=0",
        "train.steps=-5",
        "data.crop_seconds=0",
        "train.device=gpu",
        "model.embedding_dim=0",
        "train.lr=-0.003",
        "train.lr=0",
        "train.grad_clip=-1",
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(override):
    key = re.escape(override.split("=")[0])
    with pytest.raises(ConfigError, match=rf"tiny\.yaml: {key}: "):
        load_config(TINY, [override])


# ---- 6. exponent floats ----------------------------------------------------------------------
def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(Path(TINY).read_text().replace("lr: 0.003", "lr: 3e-3"))
    assert yaml.safe_load(path.read_text())["train"]["lr"] == "3e-3"  # PyYAML's reading
    assert load_config(path).train.lr == 3e-3
    assert load_config(TINY, ["train.lr=1e-4"]).train.lr == 1e-4
    with pytest.raises(ConfigError, match="train.lr: expected a number, got 'fast'"):
        load_config(TINY, ["train.lr=fast"])


# ---- 7. manifest rows ------------------------------------------------------------------------
def _manifest_with(tmp_path, rows) -> Path:
    path = tmp_path / "m.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("duration", "message"),
    [("nan", "'nan' must be a finite number >= 0"), ("inf", "'inf' must be a finite"),
     ("-1.5", "'-1.5' must be a finite number >= 0")],
)  # fmt: skip
def test_non_finite_or_negative_durations_are_refused_with_file_and_line(
    tmp_path, duration, message
):
    path = _manifest_with(
        tmp_path, [["u1", "a.wav", "s", "1.0", "m", "X", "dev"], ["u2", "b.wav", "s", duration, "m", "X", "dev"]]
    )  # fmt: skip
    with pytest.raises(ManifestError, match=rf"m\.csv:3: duration {message}"):
        read_manifest(path)


def test_a_duplicate_utt_id_is_refused_naming_both_lines(tmp_path):
    row = ["s/u1", "a.wav", "s", "1.0", "m", "X", "dev"]
    path = _manifest_with(tmp_path, [row, ["s/u2", "b.wav", "s", "1.0", "m", "X", "dev"], row])
    with pytest.raises(
        ManifestError, match=r"m\.csv:4: duplicate utt_id 's/u1' \(first on line 2\)"
    ):
        read_manifest(path)


# ---- 8. one clear line on stderr ---------------------------------------------------------
def test_the_nan_stop_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    import arw_sv.train.loop as loop
    from arw_sv.train.step import NonFiniteError

    def explode(*args, **kwargs):
        raise NonFiniteError("step 3: non-finite loss; the batch and model are saved in x.pt")

    monkeypatch.setattr(loop, "fit", explode)
    code = main(["train", str(TINY), f"train.out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        err
        == "arw-sv train: error: step 3: non-finite loss; the batch and model are saved in x.pt\n"
    )


@pytest.mark.parametrize("workers", [0, 1])
def test_a_missing_audio_file_says_so_in_one_line(tiny_manifests, tmp_path, capsys, workers):
    rows = list(csv.DictReader(tiny_manifests[0].open()))
    for row in rows:
        row["path"] = str(tmp_path / "gone" / Path(row["path"]).name)
    manifest = tmp_path / "gone.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code = main(
        ["train", str(TINY), f"data.train_manifest={manifest}", f"train.out_dir={tmp_path / 'r'}",
         f"data.num_workers={workers}", "--quiet"]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("arw-sv train: error: ") and err.rstrip().endswith(": no such file")


def test_worker_traceback_text_is_reduced_to_the_message():
    from arw_sv.cli import _one_line

    wrapped = AudioError(
        "Caught AudioError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        'call last):\n  File "x.py", line 1, in f\narw_sv.audio.AudioError: a.wav: no such file\n'
    )
    assert _one_line(wrapped) == "a.wav: no such file"
    assert _one_line(KeyError("plain")) == "plain"


def test_a_checkpoint_with_pickled_objects_gives_no_weights_only_advice(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    torch.save({"extractor": argparse.Namespace(), "config": {}}, bad)
    sf.write(tmp_path / "a.wav", _tone(1.0, 16000), 16000)
    code = main(["embed", str(bad), "--folder", str(tmp_path), "--out", str(tmp_path / "e.npz")])
    err = capsys.readouterr().err
    assert code == 2 and "not a readable checkpoint" in err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    assert err.count("\n") == 1


# ---- 9. smaller ------------------------------------------------------------------------
def test_orphan_temporaries_are_removed_and_live_ones_kept(tmp_path):
    from arw_sv.atomic import atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    orphan = tmp_path / f".scores.txt.{int(dead.stdout)}.abc123.tmp"
    live = tmp_path / f".scores.txt.{os.getpid()}.def456.tmp"
    orphan.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    atomic_write_text(tmp_path / "scores.txt", "1 a b 0.5\n")
    assert not orphan.exists() and live.exists()
    assert (tmp_path / "scores.txt").read_text() == "1 a b 0.5\n"
    assert [p.name for p in tmp_path.glob(".*.tmp")] == [live.name]


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_outputs_respect_the_umask(tmp_path, umask, mode):
    from arw_sv.atomic import atomic_write_bytes

    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "out.bin", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == mode


def test_a_resumed_run_saves_the_same_torch_rng_state(tiny_manifests, tmp_path):
    from arw_sv.checkpoint import load_checkpoint
    from arw_sv.train.loop import fit

    extra = ("train.steps=4", "train.checkpoint_every=100")
    full = fit(tiny_config(tmp_path / "full", tiny_manifests[0], *extra), progress=False)
    cut = tiny_config(tmp_path / "cut", tiny_manifests[0], *extra)
    fit(cut, progress=False, stop_after=2)
    resumed = fit(cut, resume=True, progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


def test_overrides_may_follow_an_option(monkeypatch, tmp_path):
    import arw_sv.train.loop as loop

    seen = {}

    def fake_fit(cfg, **kwargs):
        seen["cfg"], seen["kwargs"] = cfg, kwargs
        raise ValueError("stop here")

    monkeypatch.setattr(loop, "fit", fake_fit)
    argv = ["train", str(TINY), "--quiet", "train.lr=0.01", "--resume", "train.steps=7"]
    assert main(argv) == 2
    assert seen["cfg"].train.lr == 0.01 and seen["cfg"].train.steps == 7
    assert seen["kwargs"]["resume"] is True and seen["kwargs"]["progress"] is False
    with pytest.raises(SystemExit):
        main(["train", str(TINY), "--quiet", "--bogus"])


def test_resume_on_another_world_size_with_the_same_chunks_is_not_a_change():
    from arw_sv.config import config_to_dict
    from arw_sv.train.resume import check_resumed_config

    cfg = load_config(TINY, ["train.batch_chunks=2"])
    saved = config_to_dict(load_config(TINY))  # batch_chunks=1 on 2 ranks: 2 chunks in all
    state = {"config": saved, "speakers": ["a"], "step": 5, "world_size": 2}
    check_resumed_config(state, cfg, ["a"], 1, allow=False)
    with pytest.raises(ConfigError, match=r"train\.batch_chunks: 1 -> 2"):
        check_resumed_config({**state, "world_size": 1}, cfg, ["a"], 1, allow=False)
    del saved["train"]["sync_batchnorm"]  # a key added after the checkpoint: its default
    check_resumed_config(state, cfg, ["a"], 1, allow=False)

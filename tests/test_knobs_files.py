"""Issue #27, items 4-8: embedding files validated like manifests, run folders that never
write through a symlink, the data readers' remaining cases, one-line messages that give
no unsafe advice, and fine-tuning advice a user can follow. Each hostile input is built
in the test.
"""

from __future__ import annotations

import argparse
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from arw_sv.cli import main
from arw_sv.config import ConfigError
from arw_sv.data.manifest import ManifestError
from arw_sv.data.trials import TrialsError, read_embeddings, read_scores
from tests.conftest import tiny_config
from tests.test_hostile_data import checkpoint  # noqa: F401 (a fixture)
from tests.test_knobs import _one_line_exit_2


def _npz(path: Path, ids, matrix) -> Path:
    np.savez(path, ids=np.array(ids), embeddings=matrix)
    return path


def _good(n: int = 4, dim: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)


# ---- 4. embedding files ---------------------------------------------------------------------


def _hostile_embeddings():
    good = _good()
    nan, huge, zero = good.copy(), good.copy(), good.copy()
    nan[2, 1] = np.nan
    huge[1, 0] = 1e38
    zero[3] = 0
    ids = ["a/1", "a/2", "b/1", "b/2"]
    return [
        (["a/1", "a/1", "b/1", "b/2"], good, "'a/1' is listed twice with different vectors"),
        (ids, good + 1j * good, "complex"),
        (ids, good.astype(str), "expected real numbers"),
        (ids, nan, "'b/1' has NaN or infinite values"),
        (ids, huge, "'a/2' has values over"),
        (ids, zero, "'b/2' has an all-zero vector"),
        (ids, np.ones((4, 3), np.float32), "all 4 vectors are the same"),
        (ids, np.zeros((4, 0), np.float32), "0-dim embeddings"),
    ]


@pytest.mark.parametrize("ids, matrix, match", _hostile_embeddings())
def test_a_hostile_embedding_file_is_one_line_naming_it(tmp_path, ids, matrix, match):
    path = _npz(tmp_path / "emb.npz", ids, matrix)
    with pytest.raises(TrialsError) as info:
        read_embeddings(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and match in message and "\n" not in message


def test_an_exact_duplicate_is_read_once(tmp_path):
    good = _good()
    path = _npz(tmp_path / "emb.npz", ["a/1", "a/2", "b/1", "a/1"], np.vstack([good[:3], good[:1]]))
    ids, matrix = read_embeddings(path)
    assert ids == ["a/1", "a/2", "b/1"] and np.array_equal(matrix, good[:3])


def _trial_set(tmp_path: Path, matrix: np.ndarray) -> tuple[Path, Path]:
    emb = _npz(tmp_path / "emb.npz", ["a/1", "a/2", "b/1", "b/2"], matrix)
    trials = tmp_path / "trials.txt"
    trials.write_text("1 a/1 a/2\n0 a/1 b/1\n1 b/1 b/2\n0 a/2 b/2\n")
    return emb, trials


def test_score_refuses_numeric_strings_in_one_line(tmp_path, capsys):
    emb, trials = _trial_set(tmp_path, _good().astype(str))
    out = tmp_path / "s.txt"
    argv = ["score", "--embeddings", str(emb), "--trials", str(trials), "--out", str(out)]
    _one_line_exit_2(argv, capsys, "emb.npz", "real numbers")
    assert not out.exists()


def test_eval_refuses_an_asnorm_cohort_of_another_dimension(tmp_path, capsys):
    emb, trials = _trial_set(tmp_path, _good())
    cohort = _npz(tmp_path / "cohort.npz", ["c/1", "c/2", "d/1"], _good(3, 5))
    argv = ["eval", "--embeddings", str(emb), "--trials", str(trials), "--asnorm-cohort",
            str(cohort), "--no-plots", "--out", str(tmp_path / "e")]  # fmt: skip
    _one_line_exit_2(argv, capsys, "cohort.npz", "5-dim")


def test_the_asnorm_top_n_is_blamed_for_itself():
    from arw_sv.metrics.asnorm import cohort_stats

    with pytest.raises(ValueError, match="top_n .* at least 2, got 0"):
        cohort_stats(_good(), _good(10), top_n=0)


def test_embed_refuses_a_model_with_nan_weights(checkpoint, tmp_path, tiny_manifests, capsys):  # noqa: F811
    state = torch.load(checkpoint, weights_only=True)
    for tensor in state["extractor"].values():
        if tensor.is_floating_point():
            tensor.fill_(float("nan"))
    broken = tmp_path / "nan.pt"
    torch.save(state, broken)
    out = tmp_path / "emb.npz"
    argv = ["embed", str(broken), "--manifest", str(tiny_manifests[1]), "--out", str(out),
            "--backend", "eager", "--quiet"]  # fmt: skip
    _one_line_exit_2(argv, capsys, "nan.pt", "NaN")
    assert not out.exists() and not Path(f"{out}.model.json").exists()


# ---- 5. run folders and symbolic links ------------------------------------------------------


@pytest.mark.parametrize("name", [".lock", "train.log", "history.jsonl"])
def test_a_run_never_writes_through_a_planted_symlink(tiny_manifests, tmp_path, capsys, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("SECRET\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(victim)
    from arw_sv.demo import config_path

    argv = ["train", str(config_path("tiny")), f"data.train_manifest={tiny_manifests[0]}",
            f"train.out_dir={run}", "train.steps=1"]  # fmt: skip
    err = _one_line_exit_2(argv, capsys, name, "symbolic link")
    assert victim.read_text() == "SECRET\n" and "SECRET" not in err


def test_an_atomic_folder_is_written_through_a_symlinked_empty_folder(tmp_path):
    from arw_sv.atomic import atomic_folder

    target, link = tmp_path / "target", tmp_path / "link"
    target.mkdir()
    link.symlink_to(target)
    with atomic_folder(link) as tmp:
        (tmp / "hyperparams.yaml").write_text("x: 1\n")
    assert link.is_symlink() and (target / "hyperparams.yaml").read_text() == "x: 1\n"


# ---- 6. data readers --------------------------------------------------------------------------


@pytest.fixture
def audio(tmp_path) -> Path:
    path = tmp_path / "rec.wav"
    sf.write(path, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    return path


def test_a_nul_byte_in_a_csv_field_is_refused(tmp_path, audio):
    from arw_sv.data.corpora import read_corpus_csv

    corpus = tmp_path / "corpus.csv"
    corpus.write_text(f"path,speaker\n{audio},s\x001\n")
    with pytest.raises(ManifestError, match=r"corpus\.csv:2: contains a NUL byte"):
        read_corpus_csv(corpus)


def test_re_reading_a_segment_manifest_as_csv_keeps_the_segments(tmp_path, audio):
    from arw_sv.data.corpora import read_corpus_csv

    corpus = tmp_path / "segments.csv"
    corpus.write_text(
        f"utt_id,path,speaker,start,duration\ns/1,{audio},s,0.0,0.5\ns/2,{audio},s,0.5,0.5\n"
    )
    assert [u.start for u in read_corpus_csv(corpus)] == [0.0, 0.5]


def test_a_huge_utt2dur_is_refused_naming_the_file(tmp_path, audio):
    from arw_sv.data.corpora import read_kaldi

    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"u1 {audio}\n")
    (data / "utt2spk").write_text("u1 spk\n")
    (data / "utt2dur").write_text("u1 1e300\n")
    with pytest.raises(ManifestError, match=r"duration 1e\+300 must be in \[0, 1000000\] s"):
        read_kaldi(data)


def test_a_score_with_a_digit_separator_is_refused(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("1 a/1 a/2 0.5\n0 a/1 b/1 1_000\n")
    with pytest.raises(TrialsError, match=r"scores\.txt:2: score '1_000' is not a number"):
        read_scores(path)


def test_upper_case_wespeaker_labels_are_read(tmp_path):
    path = tmp_path / "scores.txt"
    path.write_text("a/1 a/2 0.5 TARGET\na/1 b/1 0.1 NonTarget\n")
    trials, scores = read_scores(path)
    assert trials.labels.tolist() == [1, 0] and scores.tolist() == [0.5, 0.1]


def test_max_per_speaker_0_is_documented_as_no_cap(capsys):
    with pytest.raises(SystemExit):
        main(["trials", "--help"])
    assert "0: no cap" in " ".join(capsys.readouterr().out.split())


# ---- 7. messages -------------------------------------------------------------------------------


def test_a_weights_only_refusal_gives_no_unsafe_advice(tmp_path):
    from arw_sv.speechbrain_folder import SpeechBrainFolderError, _load

    path = tmp_path / "embedding_model.ckpt"
    torch.save({"w": torch.zeros(1), "x": argparse.Namespace(a=1)}, path)
    with pytest.raises(SpeechBrainFolderError) as info:
        _load(path)
    message = str(info.value)
    assert "argparse.Namespace" in message and "refuses to unpickle" in message
    assert "Re-running" not in message and "False" not in message and "\n" not in message


def test_a_checkpoint_with_a_bad_config_names_the_file(checkpoint, tmp_path):  # noqa: F811
    from arw_sv.checkpoint import CheckpointError, load_extractor

    state = torch.load(checkpoint, weights_only=True)
    for bad, match in ((["x"], "its config is a list"), ({"model": {"preset": 3}}, "preset")):
        state["config"] = bad
        path = tmp_path / "bad.pt"
        torch.save(state, path)
        with pytest.raises(CheckpointError, match=rf"bad\.pt: .*{match}"):
            load_extractor(path)


def test_the_cli_silences_torchs_deprecation_notices():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        main(["configs"])
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
    assert not [w for w in seen if "LeafSpec" in str(w.message)]


# ---- 8. a valid SpeechBrain folder wider in attention than its last layer ----------------------


def test_the_fine_tuning_advice_for_a_speechbrain_folder_is_true(tiny_manifests, tmp_path):
    from arw_sv.train.loop import fit
    from tests.test_speechbrain import make_speechbrain_folder

    speakers = ["id10003", "id10001", "id10002"]
    folder = make_speechbrain_folder(tmp_path / "sb", 32, speakers)  # attention 128 > 96
    base = ("train.steps=1", "data.speakers_per_batch=2",
            f"train.init_checkpoint=speechbrain:{folder}")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        fit(tiny_config(tmp_path / "run", tiny_manifests[0], *base), progress=False)
    advice = re.search(r"train with (.*)$", str(info.value))
    assert advice, str(info.value)
    overrides = advice.group(1).split()
    assert "model.attention_exact=true" in overrides and "model.attention_channels=128" in overrides
    cfg = tiny_config(tmp_path / "run2", tiny_manifests[0], *base, *overrides)
    fit(cfg, progress=False)  # the advice builds the folder's model: it loads and trains
    assert (tmp_path / "run2" / "checkpoints" / "step_1.pt").exists()

"""Score files of the field (arw-sv, WeSpeaker, Kaldi + key): read, written back, detected."""

from __future__ import annotations

import numpy as np
import pytest

from arw_sv.cli import main
from arw_sv.cli.eval import main as eval_main
from arw_sv.data.trials import (
    Trials,
    TrialsError,
    detect_score_format,
    read_scores,
    read_trials,
    write_scores,
)

HAND_WRITTEN = {
    "arw": "1 a/1 a/2 0.75\n0 a/1 b/1 -0.125\n1 b/1 b/2 0.5\n",
    "wespeaker": "a/1 a/2 0.75 target\na/1 b/1 -0.125 nontarget\nb/1 b/2 0.5 target\n",
    "kaldi": "a/1 a/2 0.75\na/1 b/1 -0.125\nb/1 b/2 0.5\n",
}


@pytest.mark.parametrize("fmt", sorted(HAND_WRITTEN))
def test_each_format_is_read_and_written_back_identically(tmp_path, fmt, rng):
    path = tmp_path / "in.txt"
    path.write_text(HAND_WRITTEN[fmt])
    assert detect_score_format(path) == fmt
    trials, scores = read_scores(path)
    assert trials.enroll == ["a/1", "a/1", "b/1"] and trials.test == ["a/2", "b/1", "b/2"]
    assert scores.tolist() == [0.75, -0.125, 0.5]
    assert trials.labels.tolist() == ([-1, -1, -1] if fmt == "kaldi" else [1, 0, 1])
    write_scores(tmp_path / "out.txt", trials, scores, fmt)
    assert (tmp_path / "out.txt").read_text() == HAND_WRITTEN[fmt]
    # Random float64 scores survive bit for bit.
    noisy = rng.normal(size=3) / 7
    write_scores(tmp_path / "r.txt", trials, noisy, fmt)
    assert read_scores(tmp_path / "r.txt", fmt)[1].tolist() == noisy.tolist()


def test_mismatches_name_the_line(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("a b 0.1 target\na c 0.2 impostor\n")
    with pytest.raises(TrialsError, match=r"s\.txt:2: label must be target or nontarget"):
        read_scores(path)
    path.write_text("a b 0.1\na c\n")
    with pytest.raises(TrialsError, match=r"s\.txt:2: expected '<enroll> <test> <score>'"):
        read_scores(path)
    path.write_text("\na b c\n")
    with pytest.raises(TrialsError, match=r"s\.txt:2: expected .*\(wespeaker\)"):
        read_scores(path)
    path.write_text("1 a b 0.1\n")
    with pytest.raises(TrialsError, match=r"s\.txt:1: label must be target"):
        read_scores(path, "wespeaker")
    unlabelled = Trials(np.array([-1], np.int8), ["a"], ["b"])
    with pytest.raises(ValueError, match="needs labels"):
        write_scores(tmp_path / "x.txt", unlabelled, np.array([0.1]), "wespeaker")


def test_kaldi_key_is_a_trial_list(tmp_path):
    key = tmp_path / "key"
    key.write_text("a/1 a/2 target\na/1 b/1 nontarget\n")
    trials = read_trials(key)
    assert trials.labels.tolist() == [1, 0] and trials.enroll == ["a/1", "a/1"]
    key.write_text("a/1 a/2 target\na/1 b/1 maybe\n")
    with pytest.raises(TrialsError, match=r"key:2: label must be target or nontarget"):
        read_trials(key)


def _embeddings(tmp_path, rng):
    ids = [f"s{s}/{u}.wav" for s in range(6) for u in range(3)]
    centres = rng.normal(size=(6, 8))
    vecs = np.stack([centres[int(i[1])] + 0.3 * rng.normal(size=8) for i in ids])
    path = tmp_path / "emb.npz"
    np.savez(path, ids=np.array(ids), embeddings=vecs)
    lines = [f"1 s{s}/0.wav s{s}/{u}.wav" for s in range(6) for u in (1, 2)]
    lines += [f"0 s{s}/0.wav s{(s + d) % 6}/1.wav" for s in range(6) for d in (1, 2, 3)]
    (tmp_path / "trials.txt").write_text("\n".join(lines) + "\n")
    return path


def test_score_writes_each_format_and_eval_reads_it(tmp_path, rng, capsys):
    emb = _embeddings(tmp_path, rng)
    eers = {}
    for fmt in ("arw", "wespeaker", "kaldi"):
        out = tmp_path / f"{fmt}.txt"
        args = ["score", "--embeddings", str(emb), "--trials", str(tmp_path / "trials.txt")]
        assert main([*args, "--out", str(out), "--format", fmt]) == 0
        assert detect_score_format(out) == fmt
        extra = ["--key", str(tmp_path / "trials.txt")] if fmt == "kaldi" else []
        capsys.readouterr()
        assert (
            eval_main(["--scores", str(out), *extra, "--out", str(tmp_path / fmt), "--no-plots"])
            == 0
        )
        eers[fmt] = capsys.readouterr().out.split()[1]
    assert len(set(eers.values())) == 1  # the same scores, whatever the file format
    # Kaldi scores without their key: a clear error, no report.
    assert eval_main(["--scores", str(tmp_path / "kaldi.txt"), "--out", str(tmp_path / "k2")]) == 2
    assert "--key" in capsys.readouterr().err

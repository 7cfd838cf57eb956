"""The ``arw-sv`` command end to end on the tiny corpus, and its error messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from arw_sv.cli import main
from arw_sv.demo import config_path


@pytest.fixture(scope="module")
def trained(tiny_corpus, tiny_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_run")
    code = main(
        [
            "train",
            str(config_path("tiny")),
            f"data.train_manifest={tiny_manifests[0]}",
            f"train.out_dir={out}",
            "train.steps=3",
            "--quiet",
        ]
    )
    assert code == 0
    return out / "checkpoints" / "step_3.pt"


def _embedded(path) -> dict:
    """An ``arw-sv embed`` output as ``{utterance id: vector}`` (either layout)."""
    from arw_sv.data.trials import read_embeddings

    ids, matrix = read_embeddings(path)
    return dict(zip(ids, matrix, strict=True))


def test_train_embed_score_eval(trained, tiny_corpus, tiny_manifests, tmp_path, capsys):
    emb = tmp_path / "test.npz"
    assert (
        main(
            [
                "embed",
                str(trained),
                "--manifest",
                str(tiny_manifests[1]),
                "--out",
                str(emb),
                "--quiet",
            ]
        )
        == 0
    )
    with np.load(emb) as data:  # the matrix layout: two arrays, not one per utterance
        assert sorted(data.files) == ["embeddings", "ids"]
        assert data["embeddings"].shape == (8 * 2 * 2, 192)  # 8 speakers x 2 sessions x 2
        assert data["embeddings"].dtype == np.float32 and data["ids"].size == 8 * 2 * 2
        vec = data["embeddings"][0]
        assert np.isclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    scores = tmp_path / "scores.txt"
    assert (
        main(
            [
                "score",
                "--embeddings",
                str(emb),
                "--trials",
                str(tiny_corpus.trials_path),
                "--out",
                str(scores),
            ]
        )
        == 0
    )
    lines = scores.read_text().splitlines()
    trials = tiny_corpus.trials_path.read_text().splitlines()
    assert len(lines) == len(trials)
    label, enroll, test, score = lines[0].split()
    assert [label, enroll, test] == trials[0].split() and -1.0 <= float(score) <= 1.0
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                "--scores",
                str(scores),
                "--meta",
                str(tiny_corpus.meta_path),
                "--min-speakers",
                "1",
                "--out",
                str(out),
                "--no-plots",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["n_trials"] == len(trials)
    assert set(report["groups"]["gender"]["groups"]) == {"m", "f"}


def test_embed_backends_give_the_same_embeddings(trained, tiny_manifests, tmp_path):
    got = {}
    for backend in ("eager", "onnx"):
        out = tmp_path / f"{backend}.npz"
        args = ["embed", str(trained), "--manifest", str(tiny_manifests[1])]
        assert main([*args, "--out", str(out), "--backend", backend, "--quiet"]) == 0
        got[backend] = _embedded(out)
    assert got["eager"].keys() == got["onnx"].keys() and got["eager"]
    cosines = [float(got["eager"][k] @ got["onnx"][k]) for k in got["eager"]]
    assert min(cosines) > 0.9999


def test_embed_a_folder_uses_relative_ids(trained, tiny_corpus, tmp_path):
    emb = tmp_path / "folder.npz"
    assert (
        main(
            [
                "embed",
                str(trained),
                "--folder",
                str(tiny_corpus.wav_dir),
                "--out",
                str(emb),
                "--quiet",
            ]
        )
        == 0
    )
    ids = list(_embedded(emb))
    assert len(ids) == tiny_corpus.num_utterances
    assert all(k.startswith("id1") and k.endswith(".wav") and k.count("/") == 2 for k in ids)


def test_score_names_missing_utterances_or_skips_them(trained, tiny_corpus, tmp_path, capsys):
    emb = tmp_path / "partial.npz"
    np.savez(emb, **{"id10009/x/00001.wav": np.ones(4)})
    trials = tmp_path / "trials.txt"
    trials.write_text(
        "1 id10009/x/00001.wav id10009/x/00001.wav\n0 id10009/x/00001.wav id99/y/1.wav\n"
    )
    assert (
        main(
            [
                "score",
                "--embeddings",
                str(emb),
                "--trials",
                str(trials),
                "--out",
                str(tmp_path / "s.txt"),
            ]
        )
        == 2
    )
    assert "id99/y/1.wav" in capsys.readouterr().err
    assert not (tmp_path / "s.txt").exists()
    assert (
        main(
            [
                "score",
                "--embeddings",
                str(emb),
                "--trials",
                str(trials),
                "--out",
                str(tmp_path / "s.txt"),
                "--allow-missing",
            ]
        )
        == 0
    )
    assert "1 skipped" in capsys.readouterr().out
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 1


def test_unknown_override_exits_2_naming_the_key(tiny_manifests, tmp_path, capsys):
    code = main(["train", str(config_path("tiny")), "train.stepz=3", f"train.out_dir={tmp_path}"])
    assert code == 2
    assert "train.stepz" in capsys.readouterr().err


def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", np.zeros(1600, dtype=np.float32), 16000)
    code = main(
        ["embed", str(bad), "--folder", str(tmp_path / "audio"), "--out", str(tmp_path / "e.npz")]
    )
    assert code == 2
    assert "bad.pt" in capsys.readouterr().err


def test_embed_an_empty_folder_is_a_clear_error(trained, tmp_path, capsys):
    assert main(["embed", str(trained), "--folder", str(tmp_path), "--out", "x.npz"]) == 2
    assert "no audio files" in capsys.readouterr().err


def test_bench_moved_out_of_the_library_says_where(capsys):
    assert main(["bench", "fairness", "--out", "x"]) == 2
    assert "python -m bench.fairness" in capsys.readouterr().err


def test_embed_reads_kaldi_segments_as_their_own_audio(trained, tiny_manifests, tmp_path, capsys):
    """A Kaldi data dir whose utterances are segments of longer recordings: each segment's
    embedding equals that of the same samples written out as a file of its own."""
    import soundfile as sf

    from arw_sv.data.manifest import read_manifest

    utts = [u for u in read_manifest(tiny_manifests[1])][:3]
    waves = [sf.read(u.path, dtype="float32")[0] for u in utts]
    rate = sf.info(utts[0].path).samplerate
    recording = np.concatenate(waves)  # one long recording, three speakers' turns
    kaldi = tmp_path / "kaldi"
    kaldi.mkdir()
    sf.write(tmp_path / "rec.wav", recording, rate)
    bounds = np.cumsum([0] + [len(w) for w in waves]) / rate
    cut = tmp_path / "cut"
    cut.mkdir()
    segs, spk, ref = [], [], []
    for i, u in enumerate(utts):
        a, b = bounds[i] + 0.1, bounds[i + 1] - 0.05  # inside each turn, not on its edges
        segs.append(f"seg{i} rec {a:.3f} {b:.3f}")
        spk.append(f"seg{i} {u.speaker}")
        piece = recording[int(round(a * rate)) : int(round(a * rate)) + int(round((b - a) * rate))]
        sf.write(cut / f"seg{i}.wav", piece, rate)
        ref.append(cut / f"seg{i}.wav")
    (kaldi / "wav.scp").write_text(f"rec {tmp_path / 'rec.wav'}\n")
    (kaldi / "segments").write_text("\n".join(segs) + "\n")
    (kaldi / "utt2spk").write_text("\n".join(spk) + "\n")
    assert main(["manifest", str(kaldi), "--out", str(tmp_path / "m.csv")]) == 0
    assert main(["embed", str(trained), "--manifest", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "seg.npz"), "--quiet"]) == 0  # fmt: skip
    assert main(["embed", str(trained), "--folder", str(cut),
                 "--out", str(tmp_path / "cut.npz"), "--quiet"]) == 0  # fmt: skip
    s, c = _embedded(tmp_path / "seg.npz"), _embedded(tmp_path / "cut.npz")
    for i, u in enumerate(utts):
        got, want = s[f"{u.speaker}/seg{i}"], c[f"seg{i}.wav"]
        assert float(got @ want) > 0.99999
    # Three different segments of one file: not the whole file's embedding three times.
    assert float(s[f"{utts[0].speaker}/seg0"] @ s[f"{utts[1].speaker}/seg1"]) < 0.999
    # A manifest whose segment runs past its recording's end (the Kaldi reader refuses
    # one; a hand-written CSV may hold one): one line naming the file, no output.
    from dataclasses import replace

    from arw_sv.data.manifest import write_manifest

    seg = read_manifest(tmp_path / "m.csv")
    write_manifest([replace(seg[0], start=0.5, duration=bounds[-1] + 4.5)], tmp_path / "m2.csv")
    capsys.readouterr()
    code = main(["embed", str(trained), "--manifest", str(tmp_path / "m2.csv"),
                 "--out", str(tmp_path / "bad.npz"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "rec.wav" in err and "past the file's end" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "bad.npz").exists()

"""Speaker metadata and trial/score files, read as the real VoxCeleb files are."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from arw_sv.data.meta import (
    VOX1_NATIONALITY_FIXES,
    MetadataError,
    pool_nationalities,
    read_speaker_meta,
)
from arw_sv.data.trials import (
    Trials,
    TrialsError,
    read_embeddings,
    read_scores,
    read_trials,
    score_trial_list,
    score_trials,
    speaker_of,
    write_scores,
)

VOXCELEB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "voxceleb"
needs_voxceleb = pytest.mark.skipif(not VOXCELEB.is_dir(), reason="shared VoxCeleb files absent")


@needs_voxceleb
def test_vox1_meta_published_counts():
    meta = read_speaker_meta(VOXCELEB / "vox1_meta.csv")
    assert len(meta) == 1251
    assert Counter(i.gender for i in meta.values()) == {"m": 690, "f": 561}
    assert Counter(i.set for i in meta.values()) == {"dev": 1211, "test": 40}
    assert meta["id10001"].nationality == "Ireland"
    test = [s for s, i in meta.items() if i.set == "test"]
    assert test == [f"id{n}" for n in range(10270, 10310)]
    assert Counter(meta[s].gender for s in test) == {"m": 25, "f": 15}
    pooled, notes = pool_nationalities(meta, 5, speakers=test)
    assert Counter(pooled.values()) == {"USA": 25, "UK": 5, "others": 10}
    assert notes["kept"] == {"UK": 5, "USA": 25} and sum(notes["pooled_into_others"].values()) == 10


@needs_voxceleb
def test_vox1_norway_quirk_and_mapping():
    meta = read_speaker_meta(VOXCELEB / "vox1_meta.csv")
    assert meta["id10457"].nationality == "Norway"  # Jean Reno, as the file has it
    pooled, notes = pool_nationalities(meta, 20, mapping=VOX1_NATIONALITY_FIXES)
    assert pooled["id10457"] == "France" and notes["kept"]["France"] == 21
    assert "Norway" not in notes["kept"] and notes["mapping"] == {"Norway": "France"}


@needs_voxceleb
def test_vox2_meta_with_bom_crlf_and_spaces():
    meta = read_speaker_meta(VOXCELEB / "vox2_meta.csv")
    assert len(meta) == 6114
    assert Counter(i.gender for i in meta.values()) == {"m": 3763, "f": 2351}
    first = meta["id00012"]
    assert (first.speaker, first.gender, first.nationality, first.set) == (
        "id00012",
        "m",
        None,
        "dev",
    )
    assert Counter(i.set for i in meta.values()) == {"dev": 5994, "test": 120}


def test_manifest_is_deduplicated_per_speaker(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text(
        "utt_id,path,speaker,duration,gender,nationality,split\n"
        "a/v/1.wav,x.wav,a,1.0,male,USA,test\n"
        "a/v/2.wav,y.wav,a,2.0,male,USA,test\n"
        "b/v/1.wav,z.wav,b,1.5,F,,test\n"
    )
    meta = read_speaker_meta(path)
    assert list(meta) == ["a", "b"]
    assert (meta["a"].gender, meta["a"].nationality, meta["b"].gender, meta["b"].nationality) == (
        "m",
        "USA",
        "f",
        None,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speaker,gender\na,m\na,f\n", r"meta.csv:3: speaker a conflicts with line 2"),
        ("speaker,gender\na,m,extra\n", r"meta.csv:2: expected 2 fields, found 3"),
        ("speaker,split\na,dev\n", r"meta.csv:1: no attribute column"),
        ("name,gender\na,m\n", r"meta.csv:1: no speaker column"),
        ("", "empty file"),
    ],
)
def test_bad_metadata_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "meta.csv"
    path.write_text(text)
    with pytest.raises(MetadataError, match=message):
        read_speaker_meta(path)


@needs_voxceleb
def test_real_trial_list_without_final_newline():
    trials = read_trials(VOXCELEB / "veri_test2.txt")
    assert len(trials) == 37611 and int(trials.labels.sum()) == 18802
    assert trials.test[-1] == "id10296/Y-qKARMSO7k/00001.wav"
    assert speaker_of(trials.enroll[0]) == "id10270"
    speakers = {speaker_of(u) for u in trials.enroll + trials.test}
    assert len(speakers) == 40
    assert len(read_trials(VOXCELEB / "veri_test.txt")) == 37720


def test_trials_survive_bom_crlf_blank_lines_and_spaces(tmp_path):
    path = tmp_path / "trials.txt"
    path.write_bytes(
        b"\xef\xbb\xbf1 a/x/1.wav  a/y/2.wav\r\n\r\n0\tb/x/1.wav a/x/1.wav \r\n1 b/x/1.wav b/z/3.wav"
    )
    trials = read_trials(path)
    assert trials.labels.tolist() == [1, 0, 1]
    assert trials.enroll == ["a/x/1.wav", "b/x/1.wav", "b/x/1.wav"]
    assert trials.test[1] == "a/x/1.wav"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 a b\n1 a\n", r"trials.txt:2: expected '<1\|0> <enroll> <test>'"),
        ("1 a b\n\n2 a b\n", r"trials.txt:3: label must be 1 \(target\) or 0"),
        ("target a b\n", r"trials.txt:1: label must be"),
        ("\n\n", "no trials"),
    ],
)
def test_bad_trial_lines_name_the_line(tmp_path, content, message):
    path = tmp_path / "trials.txt"
    path.write_text(content)
    with pytest.raises(TrialsError, match=message):
        read_trials(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 a b 0.5\n0 a c nan\n", r"scores.txt:2: score is 'nan'"),
        ("1 a b 0.5\n0 a c inf\n", r"scores.txt:2: score is 'inf'"),
        ("1 a b 0.5\n0 a c high\n", r"scores.txt:2: score 'high' is not a number"),
        ("1 a b\n", r"scores.txt:1: expected '<1\|0> <enroll> <test> <score>'"),
        ("3 a b 0.1\n", r"scores.txt:1: label must be"),
    ],
)
def test_bad_score_lines_name_the_line(tmp_path, content, message):
    path = tmp_path / "scores.txt"
    path.write_text(content)
    with pytest.raises(TrialsError, match=message):
        read_scores(path)


def test_scores_round_trip_exactly_and_atomically(tmp_path, rng):
    trials = Trials(np.array([1, 0, 1], np.int8), ["a/1", "a/1", "b/2"], ["a/2", "b/2", "b/3"])
    scores = rng.normal(size=3) / 3
    path = tmp_path / "out" / "scores.txt"
    write_scores(path, trials, scores)
    back, values = read_scores(path)
    assert values.tolist() == scores.tolist()  # bit for bit
    assert back.enroll == trials.enroll and back.labels.tolist() == [1, 0, 1]
    assert [p.name for p in path.parent.iterdir()] == ["scores.txt"]  # no temp file left
    with pytest.raises(ValueError, match="NaN"):
        write_scores(path, trials, np.array([0.1, np.nan, 0.2]))
    assert read_scores(path)[1].tolist() == scores.tolist()  # the old file survives


def test_cosine_scoring_matches_a_loop_and_reports_missing(rng):
    ids = [f"s{i // 3}/v/{i}.wav" for i in range(9)]
    matrix = rng.normal(size=(9, 5)).astype(np.float32)
    trials = Trials(
        np.array([1, 0, 1, 0], np.int8),
        [ids[0], ids[1], ids[4], "gone/v/1.wav"],
        [ids[2], ids[5], ids[3], ids[0]],
    )
    with pytest.raises(KeyError, match=r"1 of 4 trials .* \(1 utterances, first: gone/v/1.wav\)"):
        score_trials(trials, (ids, matrix))
    kept, scores, skipped = score_trial_list(trials, (ids, matrix), allow_missing=True)
    assert skipped == 1 and len(kept) == 3 and kept.enroll == trials.enroll[:3]
    for i in range(3):
        e, t = matrix[ids.index(kept.enroll[i])], matrix[ids.index(kept.test[i])]
        assert scores[i] == pytest.approx(
            float(e @ t / np.linalg.norm(e) / np.linalg.norm(t)), abs=1e-6
        )
    as_dict = score_trials(kept, {u: matrix[i] for i, u in enumerate(ids)})
    np.testing.assert_array_equal(as_dict, scores)


def test_npz_embeddings_both_layouts(tmp_path, rng):
    ids = ["id10270/x6uYqmx31kE/00001.wav", "id10270/x6uYqmx31kE/00002.wav"]
    matrix = rng.normal(size=(2, 4))
    np.savez(tmp_path / "per_utt.npz", **{u: matrix[i] for i, u in enumerate(ids)})
    np.savez(tmp_path / "matrix.npz", ids=np.array(ids), embeddings=matrix)
    for name in ("per_utt.npz", "matrix.npz"):
        got_ids, got = read_embeddings(tmp_path / name)
        assert got_ids == ids  # keys with '/' survive np.savez
        np.testing.assert_array_equal(got, matrix)

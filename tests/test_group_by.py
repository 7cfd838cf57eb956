"""Any speaker attribute as a grouping: manifests keep it, `arw-sv eval --group-by` reports it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_curve

from arw_sv.cli import main
from arw_sv.data.attributes import parse_bins, parse_group_by, speaker_groups
from arw_sv.data.corpora import read_corpus_csv
from arw_sv.data.manifest import ManifestError, read_manifest, write_manifest
from arw_sv.data.meta import read_speaker_meta

# 16 speakers: made-up ages over four bands, two genders.
AGES = [8, 9, 11, 12, 14, 15, 16, 17, 25, 33, 41, 58, 61, 70, 77, 200]
EDGES = "0,13,18,60,200"
BANDS = ["0-13", "13-18", "18-60", "60-200"]


def _speaker(i: int) -> str:
    return f"s{i:02d}"


def _sklearn_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """The EER (the point where FAR and FRR are closest) from scikit-learn's ROC, compared
    in whole trial counts so that float ties break as arw-sv's exact integers do.
    """
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    n_tar, n_non = int(labels.sum()), int((1 - labels).sum())
    false_alarms, misses = np.rint(fpr * n_non), np.rint((1 - tpr) * n_tar)
    gap = np.abs(false_alarms * n_tar - misses * n_non)
    k = int(np.flatnonzero(gap == gap.min())[-1])
    return (fpr[k] + 1 - tpr[k]) / 2


@pytest.fixture
def scored(tmp_path, rng):
    """A speaker table with ages, and a score file whose quality differs by age band."""
    table = tmp_path / "speakers.csv"
    table.write_text(
        "speaker,gender,age\n"
        + "".join(f"{_speaker(i)},{'mf'[i % 2]},{a}\n" for i, a in enumerate(AGES))
    )
    utts = [f"{_speaker(i)}/u{j}.wav" for i in range(len(AGES)) for j in range(4)]
    lines, rows = [], []
    for a, e in enumerate(utts):
        for t in utts[a + 1 :]:
            label = int(e.split("/")[0] == t.split("/")[0])
            gap = 1.0 + 0.02 * AGES[int(e[1:3])]  # children hardest
            score = round(float(rng.normal(gap if label else 0.0, 1.0)), 6)
            lines.append(f"{label} {e} {t} {score:.6f}")
            rows.append((label, e, t, score))
    scores = tmp_path / "scores.txt"
    scores.write_text("\n".join(lines) + "\n")
    return tmp_path, table, scores, rows


def test_eval_by_binned_attribute_matches_a_hand_split(scored, capsys):
    root, table, scores, rows = scored
    out = root / "out"
    rc = main(
        [
            "eval",
            "--scores",
            str(scores),
            "--meta",
            str(table),
            "--out",
            str(out),
            "--group-by",
            "age_band",
            "--group-by",
            "gender,age_band",
            "--bins",
            f"age={EDGES}",
            "--min-speakers",
            "1",
            "--bootstrap",
            "20",
        ]  # fmt: skip
    )
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert list(report["groups"]) == ["age_band", "gender_x_age_band"]
    section = report["groups"]["age_band"]
    assert list(section["groups"]) == BANDS  # in band order, not by name
    assert section["notes"]["bins"] == {"attribute": "age", "edges": [0, 13, 18, 60, 200]}
    band = {_speaker(i): BANDS[int(np.searchsorted([13, 18, 60], a, side="right"))]
            for i, a in enumerate(AGES)}  # fmt: skip
    band[_speaker(15)] = "60-200"  # the top edge belongs to the last band
    for name in BANDS:
        mine = [(lab, s) for lab, e, t, s in rows if band[e[:3]] == band[t[:3]] == name]
        labels, values = np.array([m[0] for m in mine]), np.array([m[1] for m in mine])
        assert section["groups"][name]["n_trials"] == len(mine)
        assert section["groups"][name]["eer"] == pytest.approx(_sklearn_eer(values, labels))
        assert "ci" in section["groups"][name] or section["groups"][name].get("eer_ci")
    cross = report["groups"]["gender_x_age_band"]["groups"]
    assert list(cross)[:2] == ["f/0-13", "f/13-18"]
    assert cross["m/0-13"]["n_trials"] == sum(
        1 for _, e, t, _ in rows
        if band[e[:3]] == band[t[:3]] == "0-13" and int(e[1:3]) % 2 == int(t[1:3]) % 2 == 0
    )  # fmt: skip
    md = (out / "report.md").read_text()
    assert "## Age band" in md and "## Gender x age band" in md and "60-200" in md
    assert (out / "det_age_band.png").is_file() and (out / "group_eer.png").is_file()


def test_default_groupings_and_binned_default(scored):
    root, table, _, _ = scored
    meta = read_speaker_meta(table)
    speakers = [_speaker(i) for i in range(len(AGES))]
    names = [g.name for g in speaker_groups(speakers, meta)]
    assert names == ["gender"]  # no nationality in this table: left out, as before
    found = speaker_groups(speakers, meta, bins=parse_bins([f"age={EDGES}"]), min_speakers=5)
    age = found[-1]
    assert age.name == "age_band"
    # 0-13 and 13-18 have 4 speakers each: pooled; 18-60 has 4 too; 60-200 has 4.
    assert set(age.values) == {"others"} and age.notes["pooled_into_others"] == dict.fromkeys(
        BANDS, 4
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--group-by", "accent"], "speakers.csv: --group-by accent: none of the trials' 16 "),
        (["--group-by", "gender,Age"], "--group-by 'gender,Age': 'Age' is not an attribute"),
        (["--bins", "age=0,18,13,200"], "--bins 'age=0,18,13,200': the edges must increase"),
        (["--bins", "age=0,13,18,60"], "speakers.csv: speaker s12: age '61' lies outside"),
        (["--bins", "age=0,x"], "--bins 'age=0,x': an edge is not a number"),
        (["--bins", "height=0,2"], "speakers.csv: --bins height: no speaker has 'height'"),
    ],
)
def test_bad_group_by_is_one_line_and_writes_nothing(scored, capsys, extra, message):
    root, table, scores, _ = scored
    out = root / "out"
    rc = main(["eval", "--scores", str(scores), "--meta", str(table), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_group_by_specs_parse():
    assert parse_group_by(["age_band", "gender, age_band"]) == [
        ("age_band",),
        ("gender", "age_band"),
    ]
    with pytest.raises(ValueError, match="crossed with itself"):
        parse_group_by(["age,age"])
    assert parse_bins(["age=0,13.5"]) == {"age": (0.0, 13.5)}


def test_a_value_that_is_not_a_number_is_named(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text("speaker,age\na,12\nb,old\n")
    with pytest.raises(ValueError, match=r"t.csv: speaker b: age 'old' is not a number"):
        speaker_groups(["a", "b"], read_speaker_meta(table), bins={"age": (0, 100)}, source=table)


# --- manifests keep further attributes ---------------------------------------------------


def _corpus(tmp_path: Path, rng) -> Path:
    rows = []
    for s in ("a", "b"):
        for j in range(2):
            f = tmp_path / s / f"{j}.wav"
            f.parent.mkdir(parents=True, exist_ok=True)
            sf.write(f, (0.1 * rng.standard_normal(4000)).astype(np.float32), 16000)
            rows.append(f"{s}/{j}.wav,{s}")
    (tmp_path / "corpus.csv").write_text("path,speaker\n" + "\n".join(rows) + "\n")
    return tmp_path / "corpus.csv"


def test_speaker_table_attributes_survive_the_manifest(tmp_path, rng):
    corpus = _corpus(tmp_path, rng)
    table = tmp_path / "speakers.csv"
    table.write_text("speaker,gender,age,accent\na,f,34,scottish\nb,m,9,\n")
    manifest = read_corpus_csv(corpus, speakers=table)
    assert manifest.attribute_names == ["gender", "nationality", "accent", "age"]
    assert manifest.speaker_attribute("age") == ["34", "9"]
    assert manifest.speaker_attribute("accent") == ["scottish", "unknown"]
    write_manifest(manifest, tmp_path / "m.csv")
    header = (tmp_path / "m.csv").read_text().splitlines()[0]
    assert header.endswith(",session,accent,age")
    again = read_manifest(tmp_path / "m.csv")
    assert list(again) == list(manifest)
    meta = read_speaker_meta(tmp_path / "m.csv")  # the manifest as eval's --meta
    assert meta["a"].attribute("age") == "34" and meta["b"].attribute("accent") is None
    with pytest.raises(KeyError, match="no speaker attribute 'height'"):
        manifest.speaker_attribute("height")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            ["a/0.wav,x,a,1,m,,dev,,30", "a/1.wav,y,a,1,m,,dev,,31"],
            r"m.csv:3: speaker 'a' has age '31' here but '30' at line 2",
        ),  # fmt: skip
    ],
)
def test_a_speaker_with_two_values_is_refused(tmp_path, rows, message):
    path = tmp_path / "m.csv"
    path.write_text("utt_id,path,speaker,duration,gender,nationality,split,session,age\n")
    path.write_text(path.read_text() + "\n".join(rows) + "\n")
    with pytest.raises(ManifestError, match=message):
        read_manifest(path)


def test_a_bad_attribute_column_is_named(tmp_path, rng):
    corpus = _corpus(tmp_path, rng)
    table = tmp_path / "speakers.csv"
    table.write_text("speaker,Native Language\na,en\n")
    with pytest.raises(ManifestError, match=r"speakers.csv:1: 'native language' cannot be"):
        read_corpus_csv(corpus, speakers=table)


# --- the training side: the oracle balances any attribute ---------------------------------


def test_balance_key_takes_any_attribute_or_a_cross():
    from arw_sv.config import ConfigError, load_config
    from arw_sv.data.manifest import Manifest, Utterance
    from arw_sv.train.loop import _speaker_groups

    ages = {"a": "0-13", "b": "0-13", "c": "18-60", "d": "60-200"}
    manifest = Manifest(
        Utterance(
            f"{s}/{j}.wav",
            "x.wav",
            s,
            1.0,
            "mf"[i % 2],
            "UK",
            "dev",
            attributes=(("age_band", band),),
        )  # fmt: skip
        for i, (s, band) in enumerate(ages.items())
        for j in range(2)
    )
    assert _speaker_groups(manifest, "age_band") == [0, 0, 1, 2]
    # f/0-13, f/60-200, m/0-13, m/18-60
    assert _speaker_groups(manifest, "gender,age_band") == [2, 0, 3, 1]
    assert _speaker_groups(manifest, "gender_nationality") == [1, 0, 1, 0]
    with pytest.raises(ValueError, match="data.balance_key=accent: the training manifest has"):
        _speaker_groups(manifest, "accent")
    assert load_config(None, overrides=["data.balance_key=age_band"]).data.balance_key == "age_band"
    with pytest.raises(ConfigError, match="data.balance_key: 'Age Band' is not"):
        load_config(None, overrides=["data.balance_key=Age Band"])


def test_not_attributes_are_the_manifest_utterance_columns():
    from arw_sv.data.columns import NOT_ATTRIBUTES
    from arw_sv.data.manifest import COLUMNS, OPTIONAL_COLUMNS

    assert NOT_ATTRIBUTES == set(COLUMNS + OPTIONAL_COLUMNS) - {"gender", "nationality"}

"""``arw-sv eval`` / ``eval/evaluate.py``: inputs, outputs and bad input, end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from arw_sv.cli.eval import add_subparser, main
from arw_sv.data.meta import read_speaker_meta
from arw_sv.data.trials import read_scores, read_trials, speaker_of
from arw_sv.evaluate import evaluate_scores, write_report

REPO = Path(__file__).resolve().parents[1]
VOXCELEB = REPO.parent / "shared" / "data" / "voxceleb"
PNG = b"\x89PNG\r\n\x1a\n"


def _no_nan(text: str) -> dict:
    def reject(token):
        raise AssertionError(f"{token} in report.json")

    return json.loads(text, parse_constant=reject)


@pytest.fixture
def corpus(tmp_path, rng):
    """12 speakers (vox1_meta format), 4 utterances each, embeddings and a trial list."""
    genders = ["m", "f"] * 6
    nations = ["USA"] * 6 + ["UK"] * 4 + ["Spain", "Chile"]
    meta = tmp_path / "vox1_meta.csv"
    meta.write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
        + "".join(f"id{100 + s}\tName_{s}\t{genders[s]}\t{nations[s]}\ttest\n" for s in range(12))
    )
    centres = rng.normal(size=(12, 16))
    utts = [f"id{100 + s}/vid{j}/0000{j}.wav" for s in range(12) for j in range(4)]
    matrix = np.repeat(centres, 4, axis=0) + 0.7 * rng.normal(size=(48, 16))
    np.savez(tmp_path / "emb.npz", **{u: matrix[i] for i, u in enumerate(utts)})
    np.savez(
        tmp_path / "cohort.npz",
        ids=np.array([f"c{i}" for i in range(30)]),
        embeddings=rng.normal(size=(30, 16)),
    )
    lines = []
    for i, e in enumerate(utts):
        for t in utts[i + 1 :]:
            lines.append(f"{int(speaker_of(e) == speaker_of(t))} {e} {t}")
    (tmp_path / "trials.txt").write_text("\n".join(lines))  # no final newline
    return tmp_path


def test_embeddings_to_full_report_with_plots(corpus, capsys):
    out = corpus / "out"
    rc = main(
        [
            "--embeddings",
            str(corpus / "emb.npz"),
            "--trials",
            str(corpus / "trials.txt"),
            "--meta",
            str(corpus / "vox1_meta.csv"),
            "--out",
            str(out),
            "--bootstrap",
            "30",
            "--cohorts",
            "3",
            "--asnorm-cohort",
            str(corpus / "cohort.npz"),
            "--asnorm-top-n",
            "10",
            "--min-speakers",
            "3",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    report = _no_nan((out / "report.json").read_text())
    assert (
        report["schema"] == "arw-sv/eval-report" and report["conventions"]["group_rule"] == "both"
    )
    assert set(report["groups"]) == {"gender", "nationality", "gender_x_nationality"}
    nat = report["groups"]["nationality"]
    assert set(nat["groups"]) == {"USA", "UK", "others"}  # Spain, Chile: 1 speaker each
    assert nat["notes"]["pooled_into_others"] == {"Chile": 1, "Spain": 1}
    assert report["inputs"]["asnorm"] == {
        "cohort": str(corpus / "cohort.npz"),
        "cohort_size": 30,
        "top_n": 10,
    }
    assert report["cohorts"]["k"] == 3 and report["bootstrap"]["n_resamples"] == 30
    trials, scores = read_scores(out / "scores.txt")
    assert len(trials) == report["overall"]["n_trials"] == 1128
    markdown = (out / "report.md").read_text()
    assert "Trial-to-group rule: **both speakers in the group**" in markdown
    for name in ("det_overall.png", "det_gender.png", "group_eer.png", "cohorts.png"):
        assert (out / name).read_bytes().startswith(PNG)


def test_scores_file_against_a_trial_list_with_missing_trials(corpus, capsys):
    main(
        [
            "--embeddings",
            str(corpus / "emb.npz"),
            "--trials",
            str(corpus / "trials.txt"),
            "--out",
            str(corpus / "a"),
            "--no-plots",
        ]
    )
    lines = (corpus / "a" / "scores.txt").read_text().splitlines()
    (corpus / "partial.txt").write_text("\n".join(lines[5:]) + "\n")
    args = [
        "--scores",
        str(corpus / "partial.txt"),
        "--trials",
        str(corpus / "trials.txt"),
        "--meta",
        str(corpus / "vox1_meta.csv"),
        "--out",
        str(corpus / "b"),
        "--no-plots",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "5 of 1128 trials" in err and "--allow-missing" in err and "id100/vid0/00000.wav" in err
    assert main([*args, "--allow-missing"]) == 0
    report = _no_nan((corpus / "b" / "report.json").read_text())
    assert report["inputs"]["skipped_missing"] == 5 and report["overall"]["n_trials"] == 1123
    assert "5 skipped" in capsys.readouterr().out
    assert not (corpus / "b" / "det_overall.png").exists()


def test_missing_embeddings_error_and_skip(corpus, capsys):
    trials = (corpus / "trials.txt").read_text() + "\n1 id999/v/1.wav id100/vid0/00000.wav"
    (corpus / "more.txt").write_text(trials)
    args = [
        "--embeddings",
        str(corpus / "emb.npz"),
        "--trials",
        str(corpus / "more.txt"),
        "--out",
        str(corpus / "o"),
        "--no-plots",
    ]
    assert main(args) == 2
    assert "1 of 1129 trials name utterances without an embedding" in capsys.readouterr().err
    assert main([*args, "--allow-missing"]) == 0
    assert _no_nan((corpus / "o" / "report.json").read_text())["inputs"]["skipped_missing"] == 1


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("1 a/x/1.wav", "more.txt:1129: expected"),
        ("7 a/x/1.wav a/x/2.wav", "more.txt:1129: label must be"),
    ],
)
def test_malformed_trial_line_is_named(corpus, capsys, line, expected):
    (corpus / "more.txt").write_text((corpus / "trials.txt").read_text() + "\n" + line + "\n")
    rc = main(
        [
            "--embeddings",
            str(corpus / "emb.npz"),
            "--trials",
            str(corpus / "more.txt"),
            "--out",
            str(corpus / "o"),
            "--no-plots",
        ]
    )
    assert rc == 2 and expected in capsys.readouterr().err


def test_nan_score_is_named(corpus, capsys):
    (corpus / "s.txt").write_text(
        "1 id100/a/1.wav id100/b/1.wav 0.9\n0 id100/a/1.wav id101/b/1.wav nan\n"
    )
    assert main(["--scores", str(corpus / "s.txt"), "--out", str(corpus / "o")]) == 2
    assert "s.txt:2: score is 'nan'" in capsys.readouterr().err


def test_registered_as_arw_sv_subcommand(corpus):
    parser = argparse.ArgumentParser(prog="arw-sv")
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--scores", "s.txt", "--out", "o", "--group-rule", "enroll"])
    assert args.func.__name__ == "run" and args.group_rule == "enroll" and args.min_speakers == 5
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--scores", "s.txt", "--out", "o", "--group-rule", "test"])


def test_thin_script_runs(corpus):
    main(
        [
            "--embeddings",
            str(corpus / "emb.npz"),
            "--trials",
            str(corpus / "trials.txt"),
            "--out",
            str(corpus / "a"),
            "--no-plots",
        ]
    )
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "eval" / "evaluate.py"),
            "--scores",
            str(corpus / "a" / "scores.txt"),
            "--meta",
            str(corpus / "vox1_meta.csv"),
            "--group-rule",
            "enroll",
            "--out",
            str(corpus / "c"),
            "--no-plots",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "EER" in result.stdout
    report = _no_nan((corpus / "c" / "report.json").read_text())
    assert (
        report["groups"]["gender"]["rule"] == "enroll"
        and report["groups"]["gender"]["cross_group"] is None
    )


@pytest.mark.skipif(not VOXCELEB.is_dir(), reason="shared VoxCeleb files absent")
def test_voxceleb1_o_groups_and_trial_accounting(rng, tmp_path):
    trials = read_trials(VOXCELEB / "veri_test2.txt")
    meta = read_speaker_meta(VOXCELEB / "vox1_meta.csv")
    scores = np.where(trials.labels == 1, 2.5, 0.0) + rng.normal(size=len(trials))
    report = evaluate_scores(scores, trials.labels, trials.enroll, trials.test, meta)
    groups = report["groups"]
    assert {k: g["n_speakers"] for k, g in groups["nationality"]["groups"].items()} == {
        "USA": 25,
        "UK": 5,
        "others": 10,
    }
    assert {k: g["n_speakers"] for k, g in groups["gender"]["groups"].items()} == {"m": 25, "f": 15}
    for section in groups.values():
        inside = sum(g["n_trials"] for g in section["groups"].values())
        total = inside + section["cross_group"]["n_trials"] + section["unassigned"]["n_trials"]
        assert total == 37611 and section["unassigned"]["n_trials"] == 0
        assert section["cross_group"]["n_target"] == 0  # a target pair is one speaker
    # gender x nationality cells with fewer than 5 speakers stay out of the disparity measures
    cells = groups["gender_x_nationality"]["groups"]
    assert (
        cells["f/UK"]["in_disparity"] is False
        and "fewer than 5" in cells["f/UK"]["excluded_because"]
    )
    assert report["inputs"]["speakers_without_metadata"]["count"] == 0
    written = write_report(report, tmp_path, plots=False)
    assert [p.name for p in written] == ["report.json", "report.md"]


def test_recipe_scoring_and_eval_share_one_as_norm(corpus, capsys):
    # recipes/voxceleb/local/score.py and `arw-sv eval --asnorm-cohort` both call
    # arw_sv.evaluate.as_norm_trials: the same normalised scores, to the last digit.
    import importlib.util

    from arw_sv.data.trials import read_embeddings
    from arw_sv.metrics import as_norm

    path = REPO / "recipes" / "voxceleb" / "local" / "score.py"
    spec = importlib.util.spec_from_file_location("recipe_score", path)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    emb, cohort, trial_list = (corpus / n for n in ("emb.npz", "cohort.npz", "trials.txt"))
    args = ["--embeddings", str(emb), "--trials", str(trial_list), "--out", str(corpus / "e")]
    assert main([*args, "--asnorm-cohort", str(cohort), "--asnorm-top-n", "10"]) == 0
    assert recipe.main(["--embeddings", str(emb), "--trials", f"O={trial_list}",
                        "--out-dir", str(corpus / "r"), "--cohort", str(cohort),
                        "--top-n", "10"]) == 0  # fmt: skip
    capsys.readouterr()
    evaluated, by_eval = read_scores(corpus / "e" / "scores.txt")
    scored, by_recipe = read_scores(corpus / "r" / "vox1_O_asnorm.txt")
    raw = read_scores(corpus / "r" / "vox1_O.txt")[1]
    assert evaluated.enroll == scored.enroll and evaluated.test == scored.test
    np.testing.assert_array_equal(by_eval, by_recipe)
    # ... and that is AS-norm (not the raw cosine), computed here from its definition's inputs.
    ids, matrix = read_embeddings(emb)
    row = {u: i for i, u in enumerate(ids)}
    trials = read_trials(trial_list)
    expected = as_norm(raw, [row[u] for u in trials.enroll], [row[u] for u in trials.test],
                       matrix, read_embeddings(cohort)[1], 10)  # fmt: skip
    np.testing.assert_allclose(by_recipe, expected, rtol=0, atol=1e-12)
    assert not np.allclose(by_recipe, raw)

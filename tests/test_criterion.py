"""bench.criterion: issue 13's success rule on hand-made runs (each part able to fail)."""

from __future__ import annotations

import json

import pytest

from bench import criterion


def _metrics(eer, worst, std, female=None, male=None, gap=None) -> dict:
    m = {"eer": eer, "worst_nationality_eer": worst, "nationality_std": std}
    if female is not None:
        m |= {"eer_gender:f": female, "eer_gender:m": male, "gender_gap": gap}
    return m


def _write(root, mechanism, corpus, method, seed, metrics):
    folder = root / mechanism / f"corpus{corpus}" / "runs" / method / f"seed{seed}"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text(
        json.dumps({"method": method, "seed": seed, "metrics": metrics})
    )


def test_each_part_of_the_rule_can_fail():
    base = dict(corpus=0, seed=0, method="m")
    assert criterion.SeedCheck(
        **base, worst_change=-0.10, spread_change=-0.20, overall_change=0.0
    ).met
    assert not criterion.SeedCheck(
        **base, worst_change=-0.09, spread_change=-0.5, overall_change=-1
    ).met
    assert not criterion.SeedCheck(
        **base, worst_change=-0.5, spread_change=-0.19, overall_change=-1
    ).met
    assert not criterion.SeedCheck(
        **base, worst_change=-0.5, spread_change=-0.5, overall_change=1e-4
    ).met


def test_two_of_three_seeds_on_every_corpus(tmp_path, capsys):
    erm = _metrics(0.07, 0.12, 0.020)
    good = _metrics(0.069, 0.10, 0.015)  # -16.7% worst, -25% spread, -0.1 points
    bad = _metrics(0.071, 0.10, 0.015)  # overall worse
    for corpus in (0, 1):
        for seed in (0, 1, 2):
            _write(tmp_path, "crowding", corpus, "erm", seed, erm)
            # "a" meets on seeds 0 and 1 of both corpora; "b" on corpus 0 only
            _write(tmp_path, "crowding", corpus, "a", seed, good if seed < 2 else bad)
            _write(tmp_path, "crowding", corpus, "b", seed, good if corpus == 0 else bad)
    assert criterion.main(["--out", str(tmp_path), "--mechanisms", "crowding"]) == 0
    record = json.loads((tmp_path / "criterion.json").read_text())["crowding"]
    assert record["verdict"]["a"]["works"] is True
    assert record["verdict"]["b"]["works"] is False
    assert record["verdict"]["b"]["corpora"] == {"0": [3, 3], "1": [0, 3]}
    check = next(c for c in record["checks"] if c["method"] == "a" and c["seed"] == 0)
    assert check["worst_change"] == pytest.approx(0.10 / 0.12 - 1)
    assert check["spread_change"] == pytest.approx(-0.25)
    assert check["overall_change"] == pytest.approx(-0.001)
    assert "`a` **meets**" in capsys.readouterr().out


def test_gender_mechanism_uses_the_worse_gender_and_the_gap(tmp_path):
    _write(
        tmp_path, "gender", 0, "erm", 0, _metrics(0.08, 0.2, 0.05, female=0.11, male=0.07, gap=0.04)
    )
    _write(
        tmp_path, "gender", 0, "x", 0, _metrics(0.08, 0.2, 0.05, female=0.09, male=0.07, gap=0.02)
    )
    checks = criterion.check_corpus(
        criterion.read_runs(tmp_path / "gender" / "corpus0"), 0, "gender"
    )
    (c,) = checks
    assert c.worst_change == pytest.approx(0.09 / 0.11 - 1) and c.spread_change == pytest.approx(
        -0.5
    )


def test_missing_folder_is_one_clear_line(tmp_path, capsys):
    assert criterion.main(["--out", str(tmp_path), "--mechanisms", "crowding"]) == 2
    assert "corpus0: no such benchmark folder" in capsys.readouterr().err

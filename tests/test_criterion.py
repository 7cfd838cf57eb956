"""bench.fairness.criterion: issue 13's success rule on hand-made runs (each part able to fail)."""

from __future__ import annotations

import json

import pytest

from bench.fairness import criterion


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


def test_overview_is_the_mean_over_corpora_and_seeds_per_mechanism(tmp_path):
    """The method x mechanism table: means over every (corpus, seed), counts of seeds better
    and meeting the rule, by hand; a mechanism with no runs is left out."""
    erm = _metrics(0.07, 0.12, 0.020)
    for corpus in (0, 1):
        for seed in (0, 1):
            _write(tmp_path, "crowding", corpus, "erm", seed, erm)
    # "a": meets on corpus 0 (both seeds), worse everywhere on corpus 1
    _write(tmp_path, "crowding", 0, "a", 0, _metrics(0.069, 0.09, 0.010))  # -25%, -50%, -0.1
    _write(tmp_path, "crowding", 0, "a", 1, _metrics(0.070, 0.096, 0.015))  # -20%, -25%, 0
    _write(tmp_path, "crowding", 1, "a", 0, _metrics(0.072, 0.132, 0.022))  # +10%, +10%, +0.2
    _write(tmp_path, "crowding", 1, "a", 1, _metrics(0.071, 0.126, 0.020))  # +5%, 0, +0.1
    g = dict(female=0.11, male=0.07, gap=0.04)
    _write(tmp_path, "gender", 0, "erm", 0, _metrics(0.08, 0.2, 0.05, **g))
    _write(tmp_path, "gender", 0, "a", 0, _metrics(0.081, 0.2, 0.05, female=0.121, male=0.07,
                                                    gap=0.051))  # fmt: skip
    table = criterion.write_overview(
        tmp_path, {"crowding": [0, 1], "gender": [0], "acoustics": [0]}
    )
    row = table["a"]["crowding"]
    assert row["worst_change"] == pytest.approx((-0.25 - 0.20 + 0.10 + 0.05) / 4)
    assert row["spread_change"] == pytest.approx((-0.50 - 0.25 + 0.10 + 0.0) / 4)
    assert row["overall_change"] == pytest.approx((-0.001 + 0.0 + 0.002 + 0.001) / 4)
    assert (row["better"], row["met"], row["seeds"], row["corpora"]) == (2, 2, 4, [0, 1])
    assert row["works"] is False  # 0 of 2 seeds on corpus 1
    assert table["a"]["gender"]["worst_change"] == pytest.approx(0.121 / 0.11 - 1)
    assert table["a"]["gender"]["better"] == 0
    assert set(table) == {"a"} and set(table["a"]) == {"crowding", "gender"}
    text = (tmp_path / "overview.md").read_text()
    assert "| method | crowding | gender |" in text
    assert "-7.5%, +0.05 pt, better 2/4, met 2/4" in text
    assert (tmp_path / "overview.png").stat().st_size > 0
    assert json.loads((tmp_path / "overview.json").read_text())["a"]["gender"]["seeds"] == 1


def test_a_zero_baseline_gives_no_division_error(tmp_path):
    """A tiny test set can leave ERM with a zero spread: equal is no change, more is +inf."""
    _write(tmp_path, "crowding", 0, "erm", 0, _metrics(0.05, 0.10, 0.0))
    _write(tmp_path, "crowding", 0, "same", 0, _metrics(0.05, 0.10, 0.0))
    _write(tmp_path, "crowding", 0, "wider", 0, _metrics(0.05, 0.10, 0.01))
    checks = criterion.check_corpus(criterion.read_runs(tmp_path / "crowding" / "corpus0"), 0,
                                    "crowding")  # fmt: skip
    by = {c.method: c for c in checks}
    assert by["same"].spread_change == 0.0 and not by["same"].met
    assert by["wider"].spread_change == float("inf")


def test_half_of_the_oracles_gain_is_measured_against_the_oracle_on_the_same_seed(tmp_path):
    """Issue 20: a label-free method meets the rule on a seed when its worst-group drop is
    at least half the oracle's (same seed) with the overall EER not higher; not where the
    oracle did not help, never for the oracle itself."""
    erm = _metrics(0.08, 0.20, 0.05)
    oracle = {0: _metrics(0.078, 0.15, 0.04), 1: _metrics(0.08, 0.21, 0.05)}  # seed 1: no gain
    runs = {("erm", s): erm for s in (0, 1)} | {("erm_balanced", s): oracle[s] for s in (0, 1)}
    runs |= {
        ("half", 0): _metrics(0.08, 0.175, 0.05),  # 2.5 of the oracle's 5 points
        ("short", 0): _metrics(0.07, 0.176, 0.05),  # 2.4 of 5
        ("worse", 0): _metrics(0.0801, 0.15, 0.05),  # the whole gain, overall worse
        ("half", 1): _metrics(0.08, 0.10, 0.05),  # the oracle did not help on seed 1
    }
    checks = {(c.method, c.seed): c for c in criterion.check_corpus(runs, 0, "representation")}
    assert checks[("half", 0)].oracle_share == pytest.approx(0.5)
    assert checks[("half", 0)].half_oracle
    assert checks[("short", 0)].oracle_share == pytest.approx(0.48)
    assert not checks[("short", 0)].half_oracle
    assert not checks[("worse", 0)].half_oracle
    assert checks[("half", 1)].oracle_share is None and not checks[("half", 1)].half_oracle
    assert checks[("erm_balanced", 0)].oracle_share == pytest.approx(1.0)
    assert not checks[("erm_balanced", 0)].half_oracle
    table = criterion.overview({"representation": list(checks.values())})
    assert table["half"]["representation"]["half_oracle"] == 1
    assert "half-oracle 1/2" in criterion.render_overview(table, ["representation"])

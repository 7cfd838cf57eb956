"""The fairness benchmark end to end at tiny scale, and the benchmark configs' contract."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from arw_sv.config import Config, load_config
from bench.common import config_path
from bench.fairness.analysis import adversary_summary, point_biserial, spearman
from bench.fairness.cli import METHODS, parse_methods, run_benchmark

TINY = (
    "model.preset=tiny",
    "model.channels=[]",
    "data.crop_seconds=1.0",
    "data.speakers_per_batch=4",
    "train.steps=6",
    "train.warmup_steps=2",
    "train.log_every=2",
    "train.checkpoint_every=3",
    "loss.margin_warmup_start=0",
    "loss.margin_warmup_steps=2",
    "adversary.warmup_steps=2",
    "adversary.n_clusters=2",
    "adversary.cluster_refresh_steps=2",
)


def _sklearn_eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """EER from scikit-learn's ROC: (FAR + FRR) / 2 where |FAR - FRR| is smallest, exact
    ties to the lower threshold (arw_sv.metrics' definition)."""
    from sklearn.metrics import roc_curve

    far, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)  # thresholds falling
    frr = 1 - tpr
    gap = np.abs(far - frr)
    i = np.flatnonzero(gap == gap.min())[-1]
    return float((far[i] + frr[i]) / 2)


def _refuse_second_calls(monkeypatch, *targets) -> None:
    """Replace each (module, name) by a function that fails the test when called."""
    for module, name in targets:

        def refuse(*args, _name=f"{module.__name__}.{name}", **kwargs):
            raise AssertionError(f"{_name} called again: a finished stage was redone")

        monkeypatch.setattr(module, name, refuse)


def _spy_adversary_summaries(monkeypatch) -> list[tuple[tuple, dict]]:
    """Record the inputs and output of every ``adversary_summary`` call of the analysis."""
    import bench.fairness.analysis as analysis

    calls = []
    original = analysis.adversary_summary

    def spy(weights, aam_loss, groups, cluster_ids=None):
        out = original(weights, aam_loss, groups, cluster_ids)
        calls.append(((weights.copy(), aam_loss.copy(), groups), out))
        return out

    monkeypatch.setattr(analysis, "adversary_summary", spy)
    return calls


def _check_correlations_independently(weights, aam_loss, groups, summary) -> None:
    """The summary's correlations, recomputed with scipy's own point-biserial and with
    Pearson's r of numpy ranks (Spearman's definition)."""
    from scipy import stats

    for attribute, values in groups.items():
        values = np.asarray(values)
        for group, entry in summary["by_group"][attribute].items():
            member = values == group
            if member.all() or np.ptp(weights) == 0:
                assert entry["point_biserial_r"] is None
            else:
                expected = stats.pointbiserialr(member, weights).statistic
                assert entry["point_biserial_r"] == pytest.approx(expected, abs=1e-12)
    ranks = np.corrcoef(stats.rankdata(weights), stats.rankdata(aam_loss))[0, 1]
    assert summary["spearman_weight_vs_aam_loss"] == pytest.approx(ranks, abs=1e-12)


def test_bench_configs_differ_only_where_they_must():
    erm = load_config(config_path(METHODS["erm"]))
    for method, name in METHODS.items():
        cfg = load_config(config_path(name))
        allowed = {"adversary"} if method.startswith("arw_") else {"data"}
        for field in dataclasses.fields(Config):
            mine, theirs = getattr(cfg, field.name), getattr(erm, field.name)
            if field.name == "train":
                mine, theirs = (dataclasses.replace(t, out_dir="") for t in (mine, theirs))
            if field.name == "data" and method == "erm_balanced":
                assert cfg.data.sampling == "group_balanced"
                mine = dataclasses.replace(mine, sampling="speaker", balance_key="nationality")
            if field.name not in allowed or method in ("erm", "erm_balanced"):
                assert mine == theirs, (method, field.name)
        if method.startswith("arw_"):
            assert cfg.adversary.formulation == method.removeprefix("arw_")


def test_parse_methods_with_variant():
    methods = parse_methods(["erm"], ["pw_fast=arw_pw:adversary.lr=0.1;adversary.n_clusters=4"])
    assert methods == {
        "erm": ("bench_erm", ()),
        "pw_fast": ("bench_arw_pw", ("adversary.lr=0.1", "adversary.n_clusters=4")),
    }
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods(["sgd"], [])


def test_adversary_summary_consistent(rng):
    scores = rng.random(40)
    weights = 1 + scores / scores.mean()  # as arl_weights: >= 1, mean 2
    loss = weights + 0.1 * rng.standard_normal(40)
    groups = {"nationality": ["A"] * 10 + ["B"] * 30, "gender": ["m", "f"] * 20}
    summary = adversary_summary(weights, loss, groups, np.zeros(40, dtype=int))
    counts = [g["count"] for g in summary["by_group"]["nationality"].values()]
    assert counts == [10, 30]
    assert summary["mean_weight"] == pytest.approx(2.0)
    # The two indicators of a two-group attribute have opposite correlations.
    r = [g["point_biserial_r"] for g in summary["by_group"]["gender"].values()]
    assert r[0] == pytest.approx(-r[1])
    assert summary["spearman_weight_vs_aam_loss"] > 0.5
    _check_correlations_independently(weights, loss, groups, summary)
    assert point_biserial(weights, np.ones(40, bool)) is None
    assert spearman(np.ones(5), np.arange(5.0)) is None


@pytest.mark.slow
def test_fairness_benchmark_tiny(tmp_path, monkeypatch):
    out = tmp_path / "bench"
    summaries = _spy_adversary_summaries(monkeypatch)
    kwargs = dict(
        methods=parse_methods(["erm", "arw_pw"], []),
        seeds=[0],
        jobs=1,
        threads=1,
        synth_preset="tiny",
        synth_overrides=["test_speakers_per_cell=3"],
        overrides=TINY,
        bootstrap=10,
        analysis_utterances=12,
        workers=1,
        progress=False,
    )
    results = run_benchmark(out, **kwargs)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema"] == "arw-sv/bench-fairness"
    assert {r["method"] for r in on_disk["runs"]} == {"erm", "arw_pw"}
    assert not on_disk["failed"]
    for run in on_disk["runs"]:
        m = run["metrics"]
        scored = np.loadtxt(out / "runs" / run["method"] / "seed0" / "scores.txt", dtype=str)
        labels, scores = scored[:, 0].astype(int), scored[:, 3].astype(float)
        assert m["eer"] == pytest.approx(_sklearn_eer(labels, scores), abs=1e-12)
        assert {"min_dcf_0.01", "gender_gap", "nationality_std", "worst_nationality_eer"} <= set(m)
        assert any(k.startswith("eer_nationality:") for k in m)
        assert run["steps"] == 6
        assert run["ci"] is not None and "eer" in run["ci"]
    pw = next(r for r in on_disk["runs"] if r["method"] == "arw_pw")["analysis"]["adversary"]
    assert pw["mean_weight"] == pytest.approx(2.0, abs=1e-6)
    assert pw["min_weight"] >= 1.0
    for attribute in ("gender", "nationality"):
        groups = pw["by_group"][attribute]
        assert sum(g["count"] for g in groups.values()) == 12
    (weights, aam_loss, groups), summary = summaries[-1]  # erm has no adversary to analyse
    assert len(summaries) == 1 and summary == pw and weights.shape == (12,)
    _check_correlations_independently(weights, aam_loss, groups, pw)
    erm = next(r for r in on_disk["runs"] if r["method"] == "erm")["analysis"]
    assert erm["adversary"] is None and erm["loss_by_group"]["nationality"]
    assert set(results["paired"]) == {"arw_pw"}
    assert results["paired"]["arw_pw"]["eer"]["n"] == 1
    assert (out / "results.md").read_text().startswith("# Fairness benchmark")
    assert (out / "eer_by_group.png").is_file() and (out / "paired_differences.png").is_file()
    # Finished runs are not redone: a second call only re-aggregates.
    import arw_sv.inference
    import arw_sv.synth.corpus
    import arw_sv.train.loop
    import bench.fairness.analysis

    _refuse_second_calls(
        monkeypatch,
        (arw_sv.train.loop, "fit"),
        (arw_sv.inference, "embed_utterances"),
        (bench.fairness.analysis, "analyse_checkpoint"),
        (arw_sv.synth.corpus, "_render_task"),
    )
    assert run_benchmark(out, **kwargs)["runs"] == results["runs"]


FT_SYNTH = (
    "num_dev_speakers=12",
    "test_speakers_per_cell=2",
    "dev_sessions=2",
    "dev_utterances_per_session=3",
    "test_sessions=2",
    "test_utterances_per_session=2",
    "min_duration_s=1.0",
    "max_duration_s=1.0",
    "target_trials_per_speaker=4",
    "nontarget_cell_trials_per_speaker=2",
    "nontarget_cross_trials_per_speaker=2",
)


def test_finetune_methods_that_exist_are_configs_differing_only_in_data_sampling(capsys):
    from bench.fairness.finetune import FINETUNE_METHODS, available_methods

    methods = available_methods(tuple(FINETUNE_METHODS), {"x": ("bench_nonexistent", ())})
    assert "x" not in methods and "bench_nonexistent" in capsys.readouterr().out
    erm = load_config(config_path("bench_erm"))
    for name in ("cohort_oversample", "jtt"):
        cfg = load_config(config_path(methods[name][0]))
        assert cfg.data.sampling == name
        assert dataclasses.replace(cfg, data=erm.data, train=erm.train) == erm


@pytest.mark.slow
def test_finetune_protocol_tiny_every_method_starts_from_the_same_erm(tmp_path, monkeypatch):
    import torch

    import arw_sv.train.loop as loop
    from bench.fairness.finetune import Protocol, run_finetune_benchmark

    probe = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    first: dict[str, torch.Tensor] = {}
    original = loop._initialise_from

    def spy(path, learner, speakers, cfg):
        start = original(path, learner, speakers, cfg)
        learner.eval()
        with torch.no_grad():
            first[str(cfg.train.out_dir)] = learner.extractor(probe).clone()
        learner.train()
        return start

    monkeypatch.setattr(loop, "_initialise_from", spy)
    protocol = Protocol(
        mechanisms=("crowding",),
        val_corpus=7,
        test_corpora=(8,),
        seeds=(0,),
        pretrain_steps=6,
        finetune_steps=3,
        curve_points=2,
        synth_overrides=FT_SYNTH,
        overrides=tuple(o for o in TINY if not o.startswith("train.steps"))
        + ("data.n_cohorts=3", "data.cohort_oversample_top=1", "data.cohort_neighbours=2"),
        analysis_utterances=8,
        methods=("erm", "cohort_oversample", "jtt", "arw_pw", "groupdro", "unshipped"),
        extra={"unshipped": ("bench_not_shipped", ())},
    )
    summary = run_finetune_benchmark(tmp_path, protocol, jobs=1, threads=1, workers=1)
    corpus = tmp_path / "crowding" / "corpus8"
    curve = json.loads((corpus / "seed0" / "erm_pretrain" / "pretrain_curve.json").read_text())
    assert [p["step"] for p in curve["curve"]] == [3, 6]
    assert all(0 <= p["eer"] <= 1 for p in curve["curve"])
    methods = {"erm", "cohort_oversample", "jtt", "arw_pw", "groupdro"}  # unshipped: skipped
    runs = [p for p in first if "/corpus8/" in p]
    assert {p.split("/runs/")[1].split("/")[0] for p in runs} == methods
    reference = first[runs[0]]
    for path in runs:  # every fine-tuning starts from the very same ERM weights
        torch.testing.assert_close(first[path], reference, rtol=0, atol=0)
    on_disk = json.loads((corpus / "results.json").read_text())
    assert {r["method"] for r in on_disk["runs"]} == methods and not on_disk["failed"]
    assert all(r["steps"] == 3 for r in on_disk["runs"])
    assert (corpus / "runs" / "jtt" / "seed0" / "train" / "sampling_prepass.json").is_file()
    assert set(summary) == {"crowding"}
    assert summary["crowding"]["setup"]["role"] == "held-out corpora pooled"
    overview = json.loads((tmp_path / "overview.json").read_text())  # held-out corpus 8 only
    assert set(overview) == methods - {"erm"}
    assert all(
        set(row) == {"crowding"} and row["crowding"]["seeds"] == 1 for row in overview.values()
    )
    # Resumable: a second call trains nothing (the pre-training is not redone either).
    import arw_sv.inference
    import arw_sv.synth.corpus

    first.clear()
    _refuse_second_calls(
        monkeypatch,
        (loop, "fit"),
        (arw_sv.inference, "embed_utterances"),
        (arw_sv.synth.corpus, "_render_task"),
    )
    assert run_finetune_benchmark(tmp_path, protocol, jobs=1, threads=1, workers=1) == summary
    assert not first


def test_finetune_cli_builds_the_protocol_asked_for():
    import argparse

    from bench.fairness.cli import add_fairness_arguments, finetune_protocol
    from bench.fairness.finetune import FULL, QUICK

    parser = argparse.ArgumentParser()
    add_fairness_arguments(parser)
    args = parser.parse_args(
        ["--protocol", "finetune", "--quick", "--mechanisms", "gender", "--test-corpora", "3",
         "4", "--variant", "pw_fast=arw_pw:adversary.lr=0.1", "train.lr=0.1"]
    )  # fmt: skip
    protocol = finetune_protocol(args)
    assert protocol.mechanisms == ("gender",) and protocol.test_corpora == (3, 4)
    assert protocol.pretrain_steps == QUICK.pretrain_steps < FULL.pretrain_steps
    assert protocol.overrides == (*QUICK.overrides, "train.lr=0.1")
    assert protocol.extra == {"pw_fast": ("bench_arw_pw", ("adversary.lr=0.1",))}
    assert protocol.bootstrap == 0
    full = finetune_protocol(parser.parse_args(["--protocol", "finetune", "--bootstrap", "50"]))
    assert full.overrides == FULL.overrides and full.bootstrap == 50 and full.gate
    assert not finetune_protocol(parser.parse_args(["--protocol", "finetune", "--no-gate"])).gate
    with pytest.raises(ValueError, match="--variant"):
        finetune_protocol(parser.parse_args(["--protocol", "finetune", "--variant", "x=nope:a=1"]))


def test_full_protocol_runs_the_corpora_the_issue_states():
    """Crowding, acoustics and representation (issue 20): validation corpus and two held-out
    corpora; the mechanisms
    outside the success criterion: one held-out corpus and no validation corpus. Corpora
    asked for by name apply to every mechanism."""
    import argparse

    from bench.fairness.cli import add_fairness_arguments, finetune_protocol

    parser = argparse.ArgumentParser()
    add_fairness_arguments(parser)
    full = finetune_protocol(parser.parse_args(["--protocol", "finetune"]))
    assert set(full.mechanisms) == {"crowding", "acoustics", "underrep", "gender", "representation"}
    for mechanism in ("crowding", "acoustics", "representation"):
        assert full.corpora(mechanism) == [(100, True), (0, False), (1, False)]
    for mechanism in ("underrep", "gender"):
        assert full.corpora(mechanism) == [(0, False)]
    no_val = finetune_protocol(parser.parse_args(["--protocol", "finetune", "--val-seeds"]))
    assert no_val.corpora("crowding") == [(0, False), (1, False)]
    named = finetune_protocol(
        parser.parse_args(["--protocol", "finetune", "--test-corpora", "0", "1"])
    )
    assert named.corpora("gender") == [(100, True), (0, False), (1, False)]
    named_val = finetune_protocol(
        parser.parse_args(["--protocol", "finetune", "--val-corpus", "5", "--val-seeds", "0"])
    )
    assert named_val.corpora("underrep") == [(5, True), (0, False), (1, False)]


@pytest.mark.slow
def test_finetune_protocol_tiny_new_methods_record_cohorts_and_the_pair_term(tmp_path):
    """Held-out cohort discovery and the hard-pair methods end to end on a tiny corpus with
    held-out speakers: held-out discovery records the seed's table on held-out speakers
    disjoint from training and test, every run its pair term, results.md both tables."""
    from arw_sv.data.manifest import read_manifest
    from bench.fairness.finetune import Protocol, run_finetune_benchmark

    protocol = Protocol(
        mechanisms=("crowding",),
        val_corpus=7,
        test_corpora=(8,),
        val_seeds=(),
        seeds=(0,),
        pretrain_steps=6,
        finetune_steps=4,
        curve_points=1,
        synth_overrides=(*FT_SYNTH, "calibration_speakers_per_cell=2"),
        overrides=tuple(o for o in TINY if not o.startswith("train.steps"))
        + ("data.n_cohorts=3", "data.cohort_oversample_top=1"),
        analysis_utterances=8,
        methods=("erm", "cohort_heldout", "erm_hard", "arw_pw_hard"),
    )
    run_finetune_benchmark(tmp_path, protocol, jobs=1, threads=1, workers=1)
    corpus = tmp_path / "crowding" / "corpus8"
    on_disk = json.loads((corpus / "results.json").read_text())
    assert not on_disk["failed"]
    by = {r["method"]: r for r in on_disk["runs"]}
    assert all(by[m]["pair_term"]["logged_steps"] >= 1 for m in by)
    held = read_manifest(corpus / "manifests" / "heldout.csv")
    train = read_manifest(corpus / "manifests" / "train.csv")
    test = read_manifest(corpus / "manifests" / "test.csv")
    assert set(held.speakers).isdisjoint(set(train.speakers) | set(test.speakers))
    found = by["cohort_heldout"]["cohorts"]
    assert found["sampling"] == "cohort_heldout" and 0 < found["bottom_share"] < 1
    assert 0 <= found["bottom_eer"] <= 1 and 0 <= found["rest_eer"] <= 1
    nat = found["groups"]["nationality"]
    assert sum(nat["oversampled"].values()) == pytest.approx(1.0)
    assert sum(nat["heldout"].values()) == pytest.approx(1.0)
    prepass = json.loads((corpus / "runs" / "erm_hard" / "seed0" / "train" /
                          "sampling_prepass.json").read_text())  # fmt: skip
    assert prepass["key"]["sampling"] == "cohort_batches"
    md = (corpus / "results.md").read_text()
    assert "## What the cohort samplers found" in md and "## The pair term" in md
    # bench.fairness.cohort_table on the same ERM model and setting gives the run's own table
    from bench.fairness import cohort_table

    init = json.loads((corpus / "seed0" / "erm_pretrain" / "pretrain_curve.json").read_text())
    argv = ["data.speakers_per_batch=4", "--corpus", str(corpus), "--checkpoint",
            init["checkpoint"], "--cohorts", "2", "3"]  # fmt: skip
    assert cohort_table.main(argv) == 0
    rows = json.loads((corpus / "cohort_table.json").read_text())
    assert [r["cohorts"] for r in rows] == [2, 3]
    assert rows[1]["bottom_eer"] == found["bottom_eer"] and rows[1]["groups"] == found["groups"]
    assert len((corpus / "cohort_table.md").read_text().splitlines()) == 2 + 2  # head + rows

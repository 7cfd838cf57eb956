"""The fine-tuning benchmark's bookkeeping: which ERM pre-training each fine-tune starts from.

The stages themselves (corpus, pre-training, runs) are replaced by recorders: what is
checked is the protocol's wiring, which a full run would take an hour to show.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.fairness import finetune, runs, summary


@pytest.fixture
def recorded(monkeypatch):
    calls = {"pretrain": [], "tasks": [], "results": []}

    def fake_prepare(folder, preset, synth, workers, progress):
        return {k: str(folder / k) for k in ("train_manifest", "test_manifest", "trials", "meta")}

    def fake_pretrain(folder, paths, seed, protocol, threads):
        calls["pretrain"].append((Path(folder), seed))
        return Path(folder) / "final.pt"

    def fake_run_tasks(tasks, jobs, run_one):
        calls["tasks"] += tasks
        return [{"method": t.method, "seed": t.seed} for t in tasks]

    def fake_write(out, setup, results):
        calls["results"].append((Path(out), setup, results))
        return {}

    monkeypatch.setattr(runs, "prepare_data", fake_prepare)
    monkeypatch.setattr(finetune, "pretrain", fake_pretrain)
    monkeypatch.setattr(finetune, "_run_tasks", fake_run_tasks)
    monkeypatch.setattr(summary, "write_results", fake_write)
    return calls


def _protocol(**changes):
    base = finetune.Protocol(
        mechanisms=("crowding",), val_corpus=100, test_corpora=(0,), seeds=(0, 1, 2),
        methods=("erm", "arw_pw"),
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def _init_of(task) -> str:
    (init,) = [o for o in task.overrides if o.startswith("train.init_checkpoint=")]
    return init.split("=", 1)[1]


def test_shared_pretraining_is_one_per_corpus_and_every_seed_finetunes_from_it(tmp_path, recorded):
    finetune.run_finetune_benchmark(tmp_path, _protocol())
    # one pre-training per corpus, with the first training seed (asked for once per seed;
    # the real stage returns at once when its output is complete)
    assert {(p.parent.parent.name, p.parent.name, s) for p, s in recorded["pretrain"]} == {
        ("corpus100", "seed0", 0),
        ("corpus0", "seed0", 0),
    }
    for task in recorded["tasks"]:
        corpus = Path(task.run_dir).parents[2].name
        erm = tmp_path / "crowding" / corpus / "seed0" / "erm_pretrain" / "final.pt"
        assert _init_of(task) == str(erm)
    # every (corpus, method, seed) fine-tuned once, each seed in its own folder
    got = sorted((Path(t.run_dir).parents[2].name, t.method, t.seed) for t in recorded["tasks"])
    # the validation corpus with its own seeds (default: the first), held-out with all three
    methods = ("erm", "arw_pw")
    want = sorted(
        [("corpus100", m, 0) for m in methods]
        + [("corpus0", m, s) for m in methods for s in (0, 1, 2)]
    )
    assert got == want
    assert len({t.run_dir for t in recorded["tasks"]}) == len(want)
    # the held-out pool renames seeds 1000 * corpus + seed; the validation corpus stays out of it
    pooled = [r for out, setup, r in recorded["results"] if out.name == "heldout"]
    assert pooled and sorted({x["seed"] for x in pooled[0]}) == [0, 1, 2]


def test_per_seed_pretraining_gives_each_seed_its_own_erm(tmp_path, recorded):
    finetune.run_finetune_benchmark(
        tmp_path, _protocol(shared_pretrain=False, test_corpora=(), val_seeds=(0, 1, 2))
    )
    assert sorted(s for _, s in recorded["pretrain"]) == [0, 1, 2]
    for task in recorded["tasks"]:
        assert f"/seed{task.seed}/erm_pretrain/" in _init_of(task)


def test_no_validation_seeds_skips_the_validation_corpus(tmp_path, recorded):
    finetune.run_finetune_benchmark(tmp_path, _protocol(val_seeds=(), test_corpora=(0, 1)))
    corpora = {Path(t.run_dir).parents[2].name for t in recorded["tasks"]}
    assert corpora == {"corpus0", "corpus1"}
    assert not (tmp_path / "crowding" / "corpus100").exists()
    assert all(p.parent.parent.name != "corpus100" for p, _ in recorded["pretrain"])


def test_the_oracle_balances_the_mechanisms_planted_attribute(tmp_path, recorded):
    from arw_sv.config import load_config
    from bench.common import config_path

    protocol = _protocol(
        mechanisms=("crowding", "gender"), val_seeds=(), seeds=(0,),
        methods=("erm", "erm_balanced"),
    )  # fmt: skip
    finetune.run_finetune_benchmark(tmp_path, protocol)
    keys = {}
    for task in recorded["tasks"]:
        mechanism = Path(task.run_dir).parents[3].name
        cfg = load_config(config_path(task.config), list(task.overrides))
        keys[(mechanism, task.method)] = (cfg.data.sampling, cfg.data.balance_key)
    assert keys[("crowding", "erm_balanced")] == ("group_balanced", "nationality")
    assert keys[("gender", "erm_balanced")] == ("group_balanced", "gender")
    assert keys[("gender", "erm")][0] != "group_balanced"


def test_the_new_methods_resolve_to_their_samplers_and_the_heldout_manifest(tmp_path, recorded):
    """Held-out cohort discovery gets the corpus's held-out manifest in place of @heldout;
    the hard-pair methods keep the batch size (8 speakers x 4 crops from 2 cohorts, a pair
    margin) and differ from ERM / ARW-PW only there; without held-out speakers the run
    says so in one line."""
    from arw_sv.config import load_config
    from bench.common import config_path

    protocol = _protocol(
        val_seeds=(),
        seeds=(0,),
        methods=("erm", "arw_pw", "cohort_heldout", "erm_hard", "arw_pw_hard"),
    )
    finetune.run_finetune_benchmark(tmp_path, protocol)
    tasks = {t.method: t for t in recorded["tasks"]}
    held = runs._resolve(tasks["cohort_heldout"].overrides, "/x/heldout.csv", "cohort_heldout")
    cfg = load_config(config_path(tasks["cohort_heldout"].config), held)
    assert cfg.data.sampling == "cohort_heldout" and cfg.data.heldout_manifest == "/x/heldout.csv"
    with pytest.raises(ValueError, match="cohort_heldout needs held-out speakers.*cal split"):
        runs._resolve(tasks["cohort_heldout"].overrides, "", "cohort_heldout")

    def config_of(name):
        return load_config(config_path(tasks[name].config), list(tasks[name].overrides))

    for plain, hard in (("erm", "erm_hard"), ("arw_pw", "arw_pw_hard")):
        a, b = config_of(plain), config_of(hard)
        assert (b.data.sampling, b.data.cohorts_per_batch) == ("cohort_batches", 2)
        assert b.data.speakers_per_batch * b.data.utterances_per_speaker == (
            a.data.speakers_per_batch * a.data.utterances_per_speaker
        )
        assert b.data.utterances_per_speaker == 4 and b.loss.pair_margin == 0.2
        assert a.loss.pair_margin == 0.0
        same = dataclasses.replace(b, data=a.data, loss=a.loss)
        assert same == a and b.adversary == a.adversary


def test_prepare_data_writes_the_cal_split_as_the_heldout_manifest(tmp_path):
    """A corpus with a cal split gets manifests/heldout.csv: its speakers only, disjoint
    from the training and test manifests; a corpus without one gets none."""
    from arw_sv.data.manifest import read_manifest
    from arw_sv.synth import apply_overrides, preset

    paths = runs.prepare_data(tmp_path / "a", "tiny", ["calibration_speakers_per_cell=2"], 1, False)
    train, test = (read_manifest(paths[k]) for k in ("train_manifest", "test_manifest"))
    held = read_manifest(paths["heldout_manifest"])
    cells = 2 * len(apply_overrides(preset("tiny"), []).nationalities)  # x 2 genders
    assert {u.split for u in held} == {"cal"} and len(held.speakers) == 2 * cells
    assert set(held.speakers).isdisjoint(set(train.speakers) | set(test.speakers))
    assert {u.split for u in train} == {"dev"} and {u.split for u in test} == {"test"}
    again = runs.prepare_data(tmp_path / "a", "tiny", ["calibration_speakers_per_cell=2"], 1, False)
    assert again == paths
    assert "heldout_manifest" not in runs.prepare_data(tmp_path / "b", "tiny", [], 1, False)


@pytest.mark.parametrize("oracle_worst, passes", [(0.18, False), (0.14, True)])
def test_the_headroom_gate_stops_a_mechanism_whose_oracle_gains_too_little(
    tmp_path, recorded, monkeypatch, oracle_worst, passes
):
    """Representation: ERM and the oracle run first on the validation corpus; the rest of
    the methods and the held-out corpora only when the oracle lowers the worst group's EER
    by at least 25% (0.20 -> 0.18 is -10%, -> 0.14 is -30%); --no-gate and the other
    mechanisms are not gated."""
    import json

    def metrics(method):
        worst = oracle_worst if method == "erm_balanced" else 0.20
        return {"eer": 0.08, "worst_nationality_eer": worst, "nationality_std": 0.05}

    def fake_run_tasks(tasks, jobs, run_one):
        recorded["tasks"] += tasks
        return [{"method": t.method, "seed": t.seed, "metrics": metrics(t.method)} for t in tasks]

    monkeypatch.setattr(finetune, "_run_tasks", fake_run_tasks)
    protocol = _protocol(
        mechanisms=("representation", "crowding"), seeds=(0,),
        methods=("erm", "erm_balanced", "arw_pw"), primary=(),
    )  # fmt: skip
    finetune.run_finetune_benchmark(tmp_path, protocol)
    ran = {(Path(t.run_dir).parents[3].name, Path(t.run_dir).parents[2].name, t.method)
           for t in recorded["tasks"]}  # fmt: skip
    gate = json.loads((tmp_path / "representation" / "corpus100" / "headroom.json").read_text())
    assert gate["passed"] is passes
    assert gate["oracle_worst_change"] == pytest.approx(oracle_worst / 0.20 - 1)
    every = {(c, m) for c in ("corpus100", "corpus0") for m in ("erm", "erm_balanced", "arw_pw")}
    want = every if passes else {("corpus100", "erm"), ("corpus100", "erm_balanced")}
    assert {(c, m) for mech, c, m in ran if mech == "representation"} == want
    assert {(c, m) for mech, c, m in ran if mech == "crowding"} == every
    assert not (tmp_path / "crowding" / "corpus100" / "headroom.json").exists()
    recorded["tasks"].clear()
    finetune.run_finetune_benchmark(tmp_path / "nogate", dataclasses.replace(protocol, gate=False))
    assert {(Path(t.run_dir).parents[2].name, t.method) for t in recorded["tasks"]
            if "representation" in t.run_dir} == every  # fmt: skip
    with pytest.raises(ValueError, match="headroom gate of representation needs methods"):
        finetune.run_finetune_benchmark(
            tmp_path / "x", dataclasses.replace(protocol, methods=("arw_pw",))
        )

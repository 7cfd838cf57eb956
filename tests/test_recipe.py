"""recipes/voxceleb: configs that cannot drift apart, checkpoint averaging, and (slow) every
stage of run.sh on a VoxCeleb-layout mini corpus."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_config

from arw_sv.checkpoint import list_checkpoints, load_checkpoint
from arw_sv.config import load_config
from arw_sv.data.manifest import read_manifest
from arw_sv.data.trials import read_trials, speaker_of
from arw_sv.inference import SpeakerEncoder
from arw_sv.train.average import average_checkpoints, average_run
from arw_sv.train.loop import fit

RECIPE = REPO / "recipes" / "voxceleb"
CONF = RECIPE / "conf"
PYTHON = sys.executable
VOX2_DEV_UTTERANCES = 1_092_009


def _conf(name: str):
    return load_config(CONF / f"{name}.yaml")


def _differing(a, b) -> set[str]:
    out = set()
    for section in dataclasses.fields(a):
        x, y = getattr(a, section.name), getattr(b, section.name)
        for f in dataclasses.fields(x):
            if getattr(x, f.name) != getattr(y, f.name):
                out.add(f"{section.name}.{f.name}")
    return out


@pytest.mark.parametrize("model", ["c512", "c1024"])
@pytest.mark.parametrize("lm", ["", "_lm"])
def test_erm_and_arw_configs_differ_only_in_the_adversary(model, lm):
    erm, arw = _conf(f"ecapa_{model}_erm{lm}"), _conf(f"ecapa_{model}_arw_pw{lm}")
    assert {d.split(".")[0] for d in _differing(erm, arw)} == {"adversary", "train"}
    assert {d for d in _differing(erm, arw) if d.startswith("train")} == {"train.out_dir"}
    assert arw.adversary.formulation == "pw" and erm.adversary.formulation == "erm"


@pytest.mark.parametrize("name", ["erm", "arw_pw", "erm_lm", "arw_pw_lm"])
def test_c512_and_c1024_differ_only_in_the_model(name):
    small, big = _conf(f"ecapa_c512_{name}"), _conf(f"ecapa_c1024_{name}")
    assert _differing(small, big) == {"model.preset", "train.out_dir"}


@pytest.mark.parametrize("name", ["ecapa_c512_erm", "ecapa_c512_arw_pw"])
def test_large_margin_config_changes_only_what_it_says(name):
    base, lm = _conf(name), _conf(f"{name}_lm")
    allowed = {
        "data.crop_seconds", "data.speakers_per_batch", "loss.aam_margin",
        "loss.margin_warmup_start", "loss.margin_warmup_steps", "train.out_dir", "train.steps",
        "train.lr", "train.final_lr", "train.warmup_steps", "train.checkpoint_every",
        "train.keep_checkpoints", "train.average_last", "adversary.warmup_steps",
        "adversary.cluster_refresh_steps",
    }  # fmt: skip
    assert _differing(base, lm) <= allowed
    assert lm.data.crop_seconds > base.data.crop_seconds
    assert lm.loss.aam_margin > base.loss.aam_margin and lm.train.lr < base.train.lr


def test_epoch_arithmetic_of_the_recipe_configs():
    base, lm = _conf("ecapa_c512_erm"), _conf("ecapa_c512_erm_lm")
    epoch = VOX2_DEV_UTTERANCES // (base.data.speakers_per_batch * base.data.utterances_per_speaker)
    assert epoch == base.train.checkpoint_every == 4265
    assert base.train.steps == 150 * epoch and base.train.warmup_steps == 6 * epoch
    assert base.loss.margin_warmup_start == 20 * epoch == base.loss.margin_warmup_steps
    assert base.train.keep_checkpoints >= base.train.average_last == 10
    lm_epoch = VOX2_DEV_UTTERANCES // (lm.data.speakers_per_batch * lm.data.utterances_per_speaker)
    assert lm.train.steps == 5 * lm_epoch and lm.train.checkpoint_every == lm_epoch
    # The default objective is the same on 1 or 2 processes (2 chunks of whole speakers).
    assert base.data.speakers_per_batch % base.train.batch_chunks == 0


def test_run_sh_rejects_unknown_options_and_missing_inputs(tmp_path):
    def run(*args):
        return subprocess.run(
            ["bash", str(RECIPE / "run.sh"), *args], capture_output=True, text=True, cwd=tmp_path
        )

    assert run("--no_such_option", "1").returncode == 2
    bad = run("--stage", "1", "--stop_stage", "1")
    assert bad.returncode == 2 and "--vox1" in bad.stderr
    bad = run("--stage", "4", "--stop-stage", "6")
    assert bad.returncode == 2 and "--trials_O" in bad.stderr


def test_average_of_checkpoints(tiny_manifests, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(
        run, tiny_manifests[0], "train.steps=4", "train.checkpoint_every=1", "train.average_last=3",
        "train.keep_checkpoints=2",
    )  # fmt: skip
    fit(cfg, progress=False)
    paths = list_checkpoints(run / "checkpoints")
    assert len(paths) == 3  # keep_checkpoints raised to average_last
    states = [load_checkpoint(p) for p in paths]
    averaged = average_checkpoints(paths)
    key = "extractor.ecapa.fc.conv.weight"
    mean = sum(s["learner"][key].double() for s in states) / 3
    assert torch.allclose(averaged["learner"][key].double(), mean, atol=1e-7)
    assert torch.equal(
        averaged["learner"]["extractor.ecapa.blocks.0.norm.norm.num_batches_tracked"],
        states[-1]["learner"]["extractor.ecapa.blocks.0.norm.norm.num_batches_tracked"],
    )
    out = average_run(run)  # N from train.average_last in the run's config.yaml
    assert out.name == "avg_3.pt" and load_checkpoint(out)["averaged_from"] == [
        str(p) for p in paths
    ]
    encoder = SpeakerEncoder.from_checkpoint(out)
    assert encoder(torch.randn(1, 8000)).shape == (1, encoder.dim)
    with pytest.raises(ValueError, match="holds 3"):
        average_run(run, num=5)


def test_fine_tuning_starts_from_a_checkpoint(tiny_manifests, tmp_path):
    first = fit(tiny_config(tmp_path / "a", tiny_manifests[0], "train.steps=2"), progress=False)
    # Speed perturbation on in the fine-tuning run: the head's new classes are tiled.
    tuned = tiny_config(
        tmp_path / "b", tiny_manifests[0], "train.steps=1", "augment.speed_prob=0.5",
        f"train.init_checkpoint={first.checkpoint}", "train.lr=1e-30",
    )  # fmt: skip
    # train.lr must be positive (issue #9); an update of ~1e-30 is far below float32's
    # resolution at these weights, so the one step leaves them bit for bit as loaded.
    result = fit(tuned, progress=False)
    a, b = load_checkpoint(first.checkpoint), load_checkpoint(result.checkpoint)
    n = a["learner"]["aam.weight"].shape[0]
    assert b["learner"]["aam.weight"].shape[0] == 3 * n
    assert torch.equal(b["learner"]["aam.weight"][n : 2 * n], a["learner"]["aam.weight"])
    assert torch.equal(
        b["learner"]["extractor.ecapa.fc.conv.weight"],
        a["learner"]["extractor.ecapa.fc.conv.weight"],
    )
    assert b["step"] == 1


# ---- slow: every stage of run.sh ------------------------------------------------------------

TINY = [
    "model.preset=tiny", "train.steps=4", "data.speakers_per_batch=4", "data.crop_seconds=1.0",
    "data.num_workers=0", "train.threads=1", "train.device=cpu", "train.precision=fp32",
    "train.checkpoint_every=2", "train.average_last=2", "train.log_every=1",
    "train.warmup_steps=1", "loss.margin_warmup_start=0", "loss.margin_warmup_steps=2",
    "adversary.warmup_steps=1", "adversary.cluster_refresh_steps=2", "adversary.n_clusters=2",
]  # fmt: skip


def _mini_corpus_module():
    path = RECIPE / "local" / "make_mini_corpus.py"
    spec = importlib.util.spec_from_file_location("make_mini_corpus", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_stage_of_run_sh_on_a_mini_corpus(tmp_path):
    mini = tmp_path / "mini"
    summary = _mini_corpus_module().make_mini_corpus(mini)
    with_vox2 = summary["vox2"] is not None  # m4a files need ffmpeg
    lists = {"O": mini / "trials" / "vox1_O.txt"}
    args = [
        "--data", "data", "--exp", "exp/pw", "--config", str(CONF / "ecapa_c512_arw_pw.yaml"),
        "--lm_config", str(CONF / "ecapa_c512_arw_pw_lm.yaml"),
        "--vox1", str(mini / "vox1"), "--vox1_meta", str(mini / "vox1" / "vox1_meta.csv"),
        "--musan", str(mini / "musan"), "--rirs", str(mini / "RIRS_NOISES"),
        "--nproc_per_node", "2", "--jobs", "2", "--plots", "false",
    ]  # fmt: skip
    if with_vox2:
        lists |= {"E": mini / "trials" / "vox1_E.txt", "H": mini / "trials" / "vox1_H.txt"}
        args += ["--vox2", str(mini / "vox2"), "--vox2_meta", str(mini / "vox2" / "vox2_meta.csv")]
        args += ["--train_set", "vox2_dev", "--cal_clusters", "2"]
    else:
        args += ["--train_set", "vox1_dev"]  # E and H name VoxCeleb1-dev speakers
    for name, path in lists.items():
        args += [f"--trials_{name}", str(path)]
    env = {**os.environ, "PYTHON": PYTHON, "OMP_NUM_THREADS": "1"}
    work = tmp_path / "work"
    work.mkdir()

    def run_sh(*extra: str) -> str:
        done = subprocess.run(
            ["bash", str(RECIPE / "run.sh"), *args, *extra, *TINY],
            capture_output=True, text=True, cwd=work, env=env, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        return done.stdout + done.stderr

    log = run_sh("--stage", "1", "--stop_stage", "8")

    data, exp, lm = work / "data", work / "exp" / "pw", work / "exp" / "pw_lm"
    # Stage 1: manifests; the test speakers never reach training.
    train = read_manifest(data / "train.csv")
    trial_speakers = {
        speaker_of(u) for p in lists.values() for t in [read_trials(p)] for u in t.enroll + t.test
    }
    assert not set(train.speakers) & trial_speakers
    if with_vox2:
        assert all(s.startswith("id0") for s in train.speakers)
        assert json.loads((data / "prepare.json").read_text())["inputs"]["vox2"]["converted"] > 0
    # Stage 2: two processes under torchrun, with augmentation and speed classes.
    final = load_checkpoint(exp / "checkpoints" / "step_4.pt")
    assert final["world_size"] == 2 and final["clusters"] is not None
    assert final["learner"]["aam.weight"].shape[0] == 3 * len(train.speakers)
    # Stages 3-6 for both runs; stage 7 started from the averaged model.
    for run in (exp, lm):
        assert load_checkpoint(run / "avg.pt")["averaged_from"]
        assert (run / "embeddings" / "vox1.npz").is_file()
        assert (run / "embeddings" / "cohort.npz").is_file()
        for name in lists:
            for kind in ("", "_asnorm"):
                assert (run / "scores" / f"vox1_{name}{kind}.txt").is_file()
                report = json.loads(
                    (run / "eval" / f"vox1_{name}{kind}" / "report.json").read_text()
                )
                assert report["inputs"]["n_trials"] == len(read_trials(lists[name]))
                assert set(report["groups"]) >= {"gender", "nationality"}
        table = (run / "results.md").read_text()
        assert table.count("| vox1_") == 2 * len(lists)
    if with_vox2:  # VoxCeleb2-test's speakers calibrate the cosine scores
        cal = read_manifest(data / "cal.csv")
        assert len(cal.speakers) == 48 and all(s.startswith("id0") for s in cal.speakers)
        assert not set(cal.speakers) & (set(train.speakers) | trial_speakers)
        for run in (exp, lm):
            report = json.loads((run / "eval" / "vox1_O" / "report.json").read_text())
            assert report["calibrated"]["method"] == "asnorm+fsn"
            assert (run / "eval" / "vox1_O" / "scores_calibrated.txt").is_file()
            assert "asnorm" not in json.dumps(
                json.loads((run / "eval" / "vox1_O_asnorm" / "report.json").read_text()).get(
                    "calibrated", {}
                )
            )
    assert "initialised from exp/pw/avg.pt" in (lm / "train.log").read_text()
    assert load_checkpoint(lm / "checkpoints" / "step_4.pt")["config"]["loss"]["aam_margin"] == 0.5

    # Re-running is safe: prepare converts nothing again, training resumes at its last step.
    before = (data / "train.csv").read_bytes()
    log = run_sh("--stage", "1", "--stop_stage", "3")
    assert (data / "train.csv").read_bytes() == before
    if with_vox2:
        assert (
            json.loads((data / "prepare.json").read_text())["inputs"]["vox2"].get("converted", 0)
            == 0
        )
    assert "stage 3" in log
    shutil.rmtree(work / "exp")  # keep the test folder small

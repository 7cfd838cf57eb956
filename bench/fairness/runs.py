"""One benchmark run (train, embed, score, evaluate, analyse) and the data it needs.

Shared by the from-scratch protocol (:mod:`bench.fairness`) and the fine-tuning one
(:mod:`bench.fairness.finetune`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text
from arw_sv.data.adaptive import FLAGGING_RULES


@dataclass(frozen=True)
class RunTask:
    """Everything one (method, seed) run needs; plain values, so it pickles to a worker."""

    method: str
    config: str
    seed: int
    run_dir: str
    train_manifest: str
    test_manifest: str
    trials: str
    meta: str
    overrides: tuple[str, ...]
    threads: int
    bootstrap: int
    analysis_utterances: int
    #: Manifest of the corpus's held-out speakers (its ``cal`` split; "" when it has none):
    #: what an override ``...=@heldout`` stands for.
    heldout_manifest: str = ""


HELDOUT = "@heldout"


def _resolve(overrides: tuple[str, ...], heldout: str, method: str) -> list[str]:
    """The overrides with :data:`HELDOUT` replaced by the held-out speakers' manifest."""
    if any(o.endswith(f"={HELDOUT}") for o in overrides) and not heldout:
        raise ValueError(
            f"method {method} needs held-out speakers, and this corpus has none: generate it "
            "with calibration_speakers_per_cell > 0 (a cal split)"
        )
    return [o[: -len(HELDOUT)] + heldout if o.endswith(f"={HELDOUT}") else o for o in overrides]


def run_one(task: RunTask) -> dict:
    """Train, embed, score, evaluate and analyse one run; returns (and writes) its result."""
    run_dir = Path(task.run_dir)
    done = run_dir / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    import torch

    from arw_sv.config import load_config
    from arw_sv.data.manifest import read_manifest
    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import read_embeddings, read_trials, score_trials, write_scores
    from arw_sv.evaluate import evaluate_scores, write_report
    from arw_sv.inference import embed_utterances
    from arw_sv.prepass import PREPASS_FILE
    from arw_sv.train.loop import fit
    from bench.common import config_path
    from bench.fairness.analysis import analyse_checkpoint

    if task.threads > 0:
        torch.set_num_threads(task.threads)
    cfg = load_config(
        config_path(task.config),
        [
            f"data.train_manifest={task.train_manifest}",
            f"train.out_dir={run_dir / 'train'}",
            f"train.seed={task.seed}",
            f"train.threads={task.threads}",
            *_resolve(task.overrides, task.heldout_manifest, task.method),
        ],
    )
    started = time.perf_counter()
    fitted = fit(cfg, resume=True, progress=False)
    train_seconds = time.perf_counter() - started

    test = read_manifest(task.test_manifest).subset("test")
    embeddings = run_dir / "embeddings_test.npz"
    if not embeddings.is_file():
        ids, paths = [u.utt_id for u in test], [u.path for u in test]
        embed_utterances(fitted.checkpoint, ids, paths, embeddings, progress=False)
    trials = read_trials(task.trials)
    scores = np.asarray(score_trials(trials, read_embeddings(embeddings)))
    write_scores(run_dir / "scores.txt", trials, scores)
    report = evaluate_scores(
        scores,
        trials.labels,
        trials.enroll,
        trials.test,
        read_speaker_meta(task.meta),
        min_speakers=5,
        group_rule="both",
        bootstrap=task.bootstrap,
        seed=task.seed,
    )
    write_report(report, run_dir / "report", plots=False)
    analysis = analyse_checkpoint(
        fitted.checkpoint,
        read_manifest(task.train_manifest),
        n_utterances=task.analysis_utterances,
        seed=task.seed,
    )
    result = {
        "method": task.method,
        "config": task.config,
        "seed": task.seed,
        "overrides": list(task.overrides),
        "checkpoint": str(fitted.checkpoint),
        "steps": fitted.steps,
        "train_seconds": round(train_seconds, 1),
        "train_utterances_per_second": round(fitted.utterances_per_second, 1),
        "metrics": run_metrics(report),
        "ci": run_intervals(report) if task.bootstrap else None,
        "analysis": analysis,
        "monitors": training_monitors(Path(cfg.train.out_dir) / "history.jsonl", cfg.data),
        "pair_term": pair_term_monitor(Path(cfg.train.out_dir) / "history.jsonl"),
        "cohorts": cohort_report(
            Path(cfg.train.out_dir) / PREPASS_FILE, task.train_manifest, task.heldout_manifest
        ),
        "shares": share_monitor(Path(cfg.train.out_dir), task.train_manifest),
    }
    atomic_write_text(done, json.dumps(result, indent=1))
    return result


def share_monitor(train_dir: Path, train_manifest: str) -> dict | None:
    """What a run drew and weighted, judged with labels it never saw (issue 29): per
    attribute value (nationality, gender), its share of the training speakers and, per
    window of ``sampling.jsonl``, its share of the crops drawn and of the learner's weight;
    for an adaptive cohort sampler, the purity of its cohorts at each kept checkpoint (the
    share of speakers in their cohort's majority nationality). None without a sample log.
    """
    from arw_sv.data.manifest import read_manifest
    from arw_sv.train.sample_log import FILE, group_shares, read_sample_log

    records = read_sample_log(Path(train_dir) / FILE)
    if not records:
        return None
    train = read_manifest(train_manifest)
    train = train.subset("dev") if len({u.split for u in train}) > 1 else train
    out: dict = {"groups": {}}
    for key in ("nationality", "gender"):
        values = np.asarray(train.speaker_attribute(key))
        for value in sorted(set(values.tolist())):
            member = values == value
            out["groups"][f"{key}={value}"] = {
                "speaker_share": float(member.mean()),
                "windows": group_shares(records, member),
            }
    purity = cohort_purity(Path(train_dir), np.asarray(train.speaker_attribute("nationality")))
    if purity:
        out["cohort_purity"] = purity
    return out


def cohort_purity(train_dir: Path, values: np.ndarray) -> list[dict]:
    """Per kept checkpoint of an adaptive cohort sampler: the share of the seen speakers
    that are in their cohort's majority value, and the largest share of one value that a
    single cohort reaches for each value (does a cohort find the minority?)."""
    import torch
    import yaml

    config = Path(train_dir) / "config.yaml"
    sampling = yaml.safe_load(config.read_text())["data"]["sampling"] if config.is_file() else ""
    if sampling not in ("cohort_balanced", *FLAGGING_RULES):
        return []  # no adaptive cohorts: no checkpoint to open
    out = []
    for ckpt in sorted((Path(train_dir) / "checkpoints").glob("step_*.pt"),
                       key=lambda p: int(p.stem.split("_")[1])):  # fmt: skip
        sampler = torch.load(ckpt, map_location="cpu", weights_only=True).get("sampler", {})
        if sampler.get("rule") in FLAGGING_RULES and "flagged" in sampler:
            flagged = np.asarray(sampler["flagged"], dtype=bool)
            if flagged.any():
                labels, counts = np.unique(values[flagged], return_counts=True)
                share = dict(zip(labels.tolist(), (counts / flagged.sum()).tolist(), strict=True))
                out.append({"step": int(ckpt.stem.split("_")[1]), "flagged": int(flagged.sum()),
                            "flagged_share": share})  # fmt: skip
            continue
        if "cohorts" not in sampler or sampler.get("rule") != "cohort_balanced":
            continue
        cohorts = np.asarray(sampler["cohorts"])
        seen = cohorts >= 0
        if not seen.any():
            continue
        majority, best = 0, {}
        for c in np.unique(cohorts[seen]):
            members = values[cohorts == c]
            labels, counts = np.unique(members, return_counts=True)
            majority += int(counts.max())
            for label, count in zip(labels.tolist(), counts.tolist(), strict=True):
                best[label] = max(best.get(label, 0.0), count / members.size)
        out.append({"step": int(ckpt.stem.split("_")[1]), "purity": majority / int(seen.sum()),
                    "best_cohort_share": best})  # fmt: skip
    return out


def pair_term_monitor(history: Path) -> dict | None:
    """The pair term over a run: its loss and its share of the gradient at the embeddings
    (``pair_grad_share``, logged steps), mean over the first and the last quarter of them.
    None when the run logged no share."""
    if not Path(history).is_file():
        return None
    rows = [json.loads(x) for x in Path(history).read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("pair_grad_share") is not None and "pair_loss" in r]
    if not rows:
        return None
    q = max(1, len(rows) // 4)

    def mean(part, key):
        return float(np.mean([r[key] for r in part]))

    return {
        "logged_steps": len(rows),
        "share_first": mean(rows[:q], "pair_grad_share"),
        "share_last": mean(rows[-q:], "pair_grad_share"),
        "loss_first": mean(rows[:q], "pair_loss"),
        "loss_last": mean(rows[-q:], "pair_loss"),
    }


def cohort_report(prepass: Path, train_manifest: str, heldout_manifest: str = "") -> dict | None:
    """What a label-free cohort sampler found, judged with the labels it never saw.

    From the run's pre-pass cache (None without one, or for JTT): per attribute value
    (nationality, gender), its share of the training speakers and of the oversampled ones;
    for held-out discovery also the bottom cohorts' EER against the rest's (the seed's
    table) and the value's share of all held-out speakers and of the bottom cohorts'.
    """
    from arw_sv.data.manifest import read_manifest

    if not Path(prepass).is_file():
        return None
    found = json.loads(Path(prepass).read_text())
    if "oversample" not in found and "cohort" not in found:
        return None
    train = read_manifest(train_manifest)

    def shares(values: list[str], chosen: np.ndarray | None = None) -> dict[str, float]:
        values = np.asarray(values)
        picked = values if chosen is None else values[chosen]
        return {v: float(np.mean(picked == v)) if len(picked) else 0.0 for v in sorted(set(values))}

    out: dict = {"sampling": found["key"]["sampling"], "groups": {}}
    for key in ("nationality", "gender"):
        values = train.speaker_attribute(key)
        entry = {"training": shares(values)}
        if "oversample" in found:
            entry["oversampled"] = shares(values, np.asarray(found["oversample"], dtype=bool))
        if "train_cohort" in found or "cohort" in found:
            cohort = np.asarray(found.get("train_cohort", found.get("cohort")))
            # the cohort that concentrates each value most: its share there
            entry["best_cohort"] = {
                v: max(shares(values, cohort == c)[v] for c in np.unique(cohort))
                for v in sorted(set(values))
            }
        out["groups"][key] = entry
    if found["key"]["sampling"] == "cohort_heldout" and heldout_manifest:
        held = read_manifest(heldout_manifest)
        bottom = np.isin(np.asarray(found["cohort"]), found["selected"])
        out.update({k: found[k] for k in ("bottom_eer", "rest_eer", "bottom_share")})
        for key in ("nationality", "gender"):
            values = held.speaker_attribute(key)
            out["groups"][key]["heldout"] = shares(values)
            out["groups"][key]["bottom_heldout"] = shares(values, bottom)
    return out


def training_monitors(history: Path, data_cfg) -> dict | None:
    """The trainer's own weight monitors over a run (``history.jsonl``), or None without.

    ``ess_fraction``: the effective batch (sum w)^2 / sum w^2 over the batch size, mean and
    minimum over the logged steps (1 = uniform weights, 1/B = one sample holds them all);
    ``weight_max``: the largest lambda_i logged; ``spearman``: mean weight-vs-loss rank
    correlation; ``point_biserial``: mean over the logged steps of each group's r, the
    groups never seen by the adversary.
    """
    if not Path(history).is_file():
        return None
    rows = [json.loads(x) for x in Path(history).read_text().splitlines() if x.strip()]
    rows = [r for r in rows if "weight_ess" in r]
    if not rows:
        return None
    batch = data_cfg.speakers_per_batch * data_cfg.utterances_per_speaker
    ess = [r["weight_ess"] / batch for r in rows]
    rho = [r["weight_loss_spearman"] for r in rows if r.get("weight_loss_spearman") is not None]
    pb: dict[str, list[float]] = {}
    for r in rows:
        for key, value in r.items():
            if key.startswith("weight_pb/") and value is not None:
                pb.setdefault(key.removeprefix("weight_pb/"), []).append(value)
    return {
        "logged_steps": len(rows),
        "ess_fraction_mean": float(np.mean(ess)),
        "ess_fraction_min": float(np.min(ess)),
        "weight_max": float(max(r["weight_max"] for r in rows)),
        "spearman_mean": float(np.mean(rho)) if rho else None,
        "point_biserial_mean": {k: float(np.mean(v)) for k, v in sorted(pb.items())},
    }


def _sections(report: dict) -> dict:
    # report.json schema: "groups" -> attribute -> {"groups": name -> entry, "disparity"}.
    return report.get("groups") or report.get("groupings") or {}


def _entries(section: dict) -> list[dict]:
    groups = section["groups"]
    return list(groups.values()) if isinstance(groups, dict) else list(groups)


def run_metrics(report: dict) -> dict[str, float | None]:
    """The benchmark's numbers from an evaluation report (rates as fractions).

    Keys: ``eer``, ``min_dcf_0.01``, ``min_dcf_0.05``, ``eer_<attribute>:<group>`` for
    gender, nationality and gender x nationality, ``gender_gap`` (|EER_m - EER_f|),
    ``nationality_std`` (population std over nationality groups), ``nationality_gap``,
    ``worst_nationality_eer`` and ``worst_cell_eer`` (worst gender x nationality cell).
    """
    overall = report["overall"]
    out: dict[str, float | None] = {
        "eer": overall["eer"],
        "min_dcf_0.01": overall["min_dcf"]["0.01"]["value"],
        "min_dcf_0.05": overall["min_dcf"]["0.05"]["value"],
    }
    sections = _sections(report)
    for attribute, section in sections.items():
        for group in _entries(section):
            out[f"eer_{attribute}:{group['name']}"] = group["eer"]
    disparity = {a: s["disparity"] for a, s in sections.items()}
    out["gender_gap"] = disparity.get("gender", {}).get("gap")
    out["nationality_std"] = disparity.get("nationality", {}).get("std")
    out["nationality_gap"] = disparity.get("nationality", {}).get("gap")
    out["worst_nationality_eer"] = disparity.get("nationality", {}).get("worst_eer")
    out["worst_cell_eer"] = disparity.get("gender_x_nationality", {}).get("worst_eer")
    return out


def run_intervals(report: dict) -> dict[str, list[float | None]]:
    """Speaker-bootstrap intervals ``[low, high]`` of the overall and group EERs."""
    out = {}
    if report["overall"].get("ci"):
        ci = report["overall"]["ci"]["eer"]
        out["eer"] = [ci["low"], ci["high"]]
    for attribute, section in _sections(report).items():
        for group in _entries(section):
            if group.get("ci"):
                out[f"eer_{attribute}:{group['name']}"] = [
                    group["ci"]["eer"]["low"],
                    group["ci"]["eer"]["high"],
                ]
        ci = section["disparity"].get("ci")
        if ci and attribute == "nationality":
            out["nationality_std"] = [ci["std"]["low"], ci["std"]["high"]]
            out["nationality_gap"] = [ci["gap"]["low"], ci["gap"]["high"]]
        if ci and attribute == "gender":
            out["gender_gap"] = [ci["gap"]["low"], ci["gap"]["high"]]
    return out


def prepare_data(
    out: Path, synth_preset: str, synth_overrides: list[str], workers: int, progress: bool
) -> dict[str, str]:
    """Generate (or reuse) the corpus and write the manifests; returns their paths."""
    from arw_sv.data.manifest import build_manifest, write_manifest
    from arw_sv.synth import apply_overrides, generate_corpus, preset

    synth_cfg = apply_overrides(preset(synth_preset), synth_overrides)
    corpus = generate_corpus(out / "corpus", synth_cfg, progress=progress, workers=workers)
    paths = {
        "train_manifest": str(out / "manifests" / "train.csv"),
        "test_manifest": str(out / "manifests" / "test.csv"),
        "trials": str(corpus.trials_path),
        "meta": str(corpus.meta_path),
    }
    stale = [str(p.parent) for p in sorted((out / "runs").glob("*/seed*/train"))]
    if corpus.generated and stale:
        raise RuntimeError(
            f"the corpus in {corpus.root} was (re)generated, but {len(stale)} runs in "
            f"{out / 'runs'} were trained on an earlier one (first: {stale[0]}); delete them "
            "or choose another --out"
        )
    heldout = out / "manifests" / "heldout.csv"  # the cal split, when the corpus has one
    have = all(Path(paths[k]).is_file() for k in ("train_manifest", "test_manifest")) and (
        heldout.is_file() or not synth_cfg.calibration_speakers_per_cell
    )
    if corpus.generated or not have:
        heldout.unlink(missing_ok=True)
        manifest = build_manifest(corpus.root, corpus.meta_path, splits=("dev", "test", "cal"))
        write_manifest(manifest.subset("test"), paths["test_manifest"])
        write_manifest(manifest.subset("dev"), paths["train_manifest"])
        if len(manifest.subset("cal")):
            write_manifest(manifest.subset("cal"), heldout)
    if heldout.is_file():
        paths["heldout_manifest"] = str(heldout)
    print(
        f"corpus: {corpus.num_dev_speakers} training / {corpus.num_test_speakers} test "
        f"speakers, {corpus.num_utterances} utterances, {corpus.num_trials} trials",
        flush=True,
    )
    return paths

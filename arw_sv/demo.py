"""The demo (``arw-sv demo``: :mod:`arw_sv.cli.demo`): synthetic corpus -> ERM training ->
embeddings -> trials -> EER report.

Every stage is skipped when its output is already complete, so an interrupted demo picks up
where it stopped (training resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path

import numpy as np


def config_path(name: str) -> Path:
    """A shipped config (``demo``, ``tiny``, ...) from ``arw_sv/configs``."""
    path = Path(str(resources.files("arw_sv") / "configs" / f"{name}.yaml"))
    if not path.is_file():
        raise FileNotFoundError(f"no shipped config named {name!r} ({path})")
    return path


def run_demo(
    out: str | Path,
    *,
    synth_preset: str = "demo",
    config: str = "demo",
    overrides: tuple[str, ...] = (),
    workers: int = 2,
    bootstrap: int = 200,
    progress: bool = True,
) -> dict:
    """Run the whole demo into ``out`` and return the evaluation report.

    Layout of ``out``: ``corpus/`` (synthetic VoxCeleb1-layout data), ``manifests/``,
    ``erm/`` (training run: checkpoints, log, TensorBoard, curves), ``embeddings_test.npz``,
    ``scores.txt``, ``report/`` (report.json, report.md, plots), ``summary.json``.
    """
    from arw_sv.config import load_config
    from arw_sv.data.manifest import build_manifest, write_manifest
    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import read_trials, score_trials, write_scores
    from arw_sv.evaluate import evaluate_scores, write_report
    from arw_sv.inference import embed_utterances
    from arw_sv.synth import generate_corpus, preset
    from arw_sv.train.loop import fit

    out = Path(out)
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        print(f"\n== {name} ==", flush=True)
        timings[name] = time.perf_counter()

    start = time.perf_counter()
    stage("synthetic corpus")
    corpus = generate_corpus(
        out / "corpus", preset(synth_preset), progress=progress, workers=workers
    )
    print(
        f"{corpus.num_dev_speakers} training and {corpus.num_test_speakers} test speakers, "
        f"{corpus.num_utterances} utterances ({corpus.total_duration_s / 3600:.2f} h), "
        f"{corpus.num_trials} trials"
    )

    stage("manifests")
    manifest = build_manifest(corpus.root, corpus.meta_path)
    train_manifest = out / "manifests" / "train.csv"
    write_manifest(manifest.subset("dev"), train_manifest)
    test = manifest.subset("test")
    write_manifest(test, out / "manifests" / "test.csv")

    stage("training (ERM)")
    cfg = load_config(
        config_path(config),
        [f"data.train_manifest={train_manifest}", f"train.out_dir={out / 'erm'}", *overrides],
    )
    result = fit(cfg, resume=True, progress=progress)
    train_rate = training_throughput(out / "erm" / "history.jsonl")
    print(f"{result.steps} steps, {train_rate:.1f} utterances/s")

    stage("embedding and scoring")
    embeddings = out / "embeddings_test.npz"
    embed_utterances(
        result.checkpoint,
        [u.utt_id for u in test],
        [u.path for u in test],
        embeddings,
        progress=progress,
    )
    trials = read_trials(corpus.trials_path)
    with np.load(embeddings) as data:
        scores = score_trials(trials, {k: data[k] for k in data.files})
    write_scores(out / "scores.txt", trials, scores)

    stage("evaluation")
    report = evaluate_scores(
        scores,
        trials.labels,
        trials.enroll,
        trials.test,
        read_speaker_meta(corpus.meta_path),
        min_speakers=1,
        bootstrap=bootstrap,
        seed=0,
    )
    write_report(report, out / "report", plots=True)
    timings = {k: round(v - start, 1) for k, v in timings.items()}
    summary = {
        "seconds": round(time.perf_counter() - start, 1),
        "stage_started_at_s": timings,
        "train_utterances_per_s": round(train_rate, 1),
        "checkpoint": str(result.checkpoint),
        **summarise(report),
    }
    from arw_sv.atomic import atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(format_summary(summary))
    print(f"\nreport: {out / 'report' / 'report.md'}  (JSON, plots beside it)")
    return report


def training_throughput(history: Path) -> float:
    """Utterances/s of the run's last logged step (also right when the run was resumed
    already complete, where ``fit`` itself trained nothing)."""
    lines = [line for line in Path(history).read_text().splitlines() if line.strip()]
    return float(json.loads(lines[-1])["utt_per_s"]) if lines else 0.0


def summarise(report: dict) -> dict:
    """Overall, per-gender and per-nationality EER (%) from an evaluation report."""

    def pct(value):
        return None if value is None else round(100 * value, 2)

    out = {"eer_percent": pct(report["overall"]["eer"])}
    for attribute in ("gender", "nationality"):
        groups = report["groups"][attribute]["groups"]
        out[f"eer_percent_by_{attribute}"] = {name: pct(g["eer"]) for name, g in groups.items()}
    return out


def format_summary(summary: dict) -> str:
    lines = [f"\nEER overall: {summary['eer_percent']:.2f}%"]
    for attribute in ("gender", "nationality"):
        parts = [
            f"{name} {'n/a' if eer is None else f'{eer:.2f}%'}"
            for name, eer in summary[f"eer_percent_by_{attribute}"].items()
        ]
        lines.append(f"EER by {attribute}: " + ", ".join(parts))
    lines.append(f"demo took {summary['seconds']:.0f} s")
    return "\n".join(lines)

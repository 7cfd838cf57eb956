"""The demo (``arw-sv demo``: :mod:`arw_sv.cli.demo`): synthetic corpus -> ERM training ->
fine-tuning ERM and the recommended label-free fairness method -> EER reports side by side.

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


#: The label-free fairness method the demo fine-tunes beside ERM (docs/benchmark.md says why).
RECOMMENDED = "demo_arw_pw_paironly"


def run_demo(
    out: str | Path,
    *,
    synth_preset: str = "demo",
    config: str = "demo",
    fairness: str | None = RECOMMENDED,
    finetune_steps: int = 200,
    overrides: tuple[str, ...] = (),
    workers: int = 2,
    bootstrap: int = 200,
    progress: bool = True,
) -> dict:
    """Run the whole demo into ``out``; returns ``{model name: evaluation report}``.

    ERM is trained on the synthetic corpus (``config``); then, unless ``fairness`` is None,
    two fine-tunes start from that ERM model for ``finetune_steps`` steps each: ERM
    continued (the fair reference) and the ``fairness`` config, and both are evaluated side
    by side. With ``fairness=None`` the ERM model itself is evaluated.

    Layout of ``out``: ``corpus/`` (synthetic VoxCeleb1-layout data), ``manifests/``,
    ``erm/`` (ERM training: checkpoints, log, TensorBoard, curves), ``finetune/<name>/``
    (the fine-tunes), ``eval/<name>/`` (embeddings, scores, ``report/`` with report.json,
    report.md and plots), ``comparison.md`` and ``comparison_groups.png`` (per-group EERs
    side by side), ``summary.json``.
    """
    from arw_sv.config import load_config
    from arw_sv.data.manifest import build_manifest, write_manifest
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
    data = [f"data.train_manifest={train_manifest}"]

    stage("training (ERM)")
    cfg = load_config(config_path(config), [*data, f"train.out_dir={out / 'erm'}", *overrides])
    result = fit(cfg, resume=True, progress=progress)
    train_rate = training_throughput(out / "erm" / "history.jsonl")
    print(f"{result.steps} steps, {train_rate:.1f} utterances/s")

    models = {"erm": result.checkpoint}
    if fairness is not None:
        from arw_sv.finetune import finetune_overrides

        tune = finetune_overrides(result.checkpoint, finetune_steps)
        models = {}
        for name, method in (("erm", config), (method_name(fairness), fairness)):
            stage(f"fine-tuning {name} ({finetune_steps} steps from the ERM model)")
            run_dir = out / "finetune" / name
            tuned = load_config(
                config_path(method), [*data, f"train.out_dir={run_dir}", *overrides, *tune]
            )
            models[name] = fit(tuned, resume=True, progress=progress).checkpoint

    reports = {}
    for name, checkpoint in models.items():
        stage(f"embedding, scoring and evaluation: {name}")
        reports[name] = _evaluate_model(
            checkpoint, test, corpus, out / "eval" / name, bootstrap, progress
        )
    timings = {k: round(v - start, 1) for k, v in timings.items()}
    summary = {
        "seconds": round(time.perf_counter() - start, 1),
        "stage_started_at_s": timings,
        "train_utterances_per_s": round(train_rate, 1),
        "erm_checkpoint": str(result.checkpoint),
        "finetune_steps": finetune_steps if fairness is not None else 0,
        "models": {
            name: {"checkpoint": str(models[name]), **summarise(report)}
            for name, report in reports.items()
        },
    }
    from arw_sv.atomic import atomic_write_bytes, atomic_write_text

    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    text = format_summary(summary)
    atomic_write_text(out / "comparison.md", text + "\n")
    if len(reports) > 1:
        atomic_write_bytes(out / "comparison_groups.png", comparison_plot(summary))
    print(text)
    print(
        f"\nreports: {out / 'eval'}/<model>/report/report.md; side by side: {out / 'comparison.md'}"
    )
    return reports


def method_name(config: str) -> str:
    """``demo_cohort_oversample`` -> ``cohort_oversample`` (a shipped config's method)."""
    return config.removeprefix("demo_") if config != "demo" else "erm"


def _evaluate_model(checkpoint, test, corpus, folder: Path, bootstrap: int, progress: bool):
    """Embed the test utterances, score the trials and write the evaluation report."""
    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import read_trials, score_trials, write_scores
    from arw_sv.evaluate import evaluate_scores, write_report
    from arw_sv.inference import embed_utterances

    embeddings = folder / "embeddings_test.npz"
    if not embeddings.is_file():  # written atomically: present means complete
        ids, wavs = [u.utt_id for u in test], [u.path for u in test]
        embed_utterances(checkpoint, ids, wavs, embeddings, progress=progress)
    trials = read_trials(corpus.trials_path)
    with np.load(embeddings) as data:
        scores = score_trials(trials, {k: data[k] for k in data.files})
    write_scores(folder / "scores.txt", trials, scores)
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
    write_report(report, folder / "report", plots=True)
    return report


def training_throughput(history: Path) -> float:
    """Utterances/s of the run's last logged step (also right when the run was resumed
    already complete, where ``fit`` itself trained nothing).
    """
    lines = [line for line in Path(history).read_text().splitlines() if line.strip()]
    return float(json.loads(lines[-1])["utt_per_s"]) if lines else 0.0


def summarise(report: dict) -> dict:
    """Overall, per-gender and per-nationality EER (%) from an evaluation report."""

    def pct(value):
        return None if value is None else round(100 * value, 2)

    def interval(entry):
        ci = (entry.get("ci") or {}).get("eer") or {}
        if ci.get("low") is None:
            return None
        return [pct(ci["low"]), pct(ci["high"])]

    out = {"eer_percent": pct(report["overall"]["eer"])}
    out["eer_ci_percent"] = {"overall": interval(report["overall"])}
    for attribute in ("gender", "nationality"):
        groups = report["groups"][attribute]["groups"]
        out[f"eer_percent_by_{attribute}"] = {name: pct(g["eer"]) for name, g in groups.items()}
        out["eer_ci_percent"].update({name: interval(g) for name, g in groups.items()})
    return out


def format_summary(summary: dict) -> str:
    """EER overall and per group, one column per model, and the change against ERM."""
    models = summary["models"]
    names = list(models)
    rows = [("EER overall", [m["eer_percent"] for m in models.values()])]
    for attribute in ("gender", "nationality"):
        groups = list(next(iter(models.values()))[f"eer_percent_by_{attribute}"])
        for g in groups:
            rows.append(
                (
                    f"  {attribute} {g}",
                    [m[f"eer_percent_by_{attribute}"].get(g) for m in models.values()],
                )
            )
    head = ["EER (%)", *names] + (["change"] if len(names) > 1 else [])
    lines = ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, values in rows:
        cells = ["n/a" if v is None else f"{v:.2f}" for v in values]
        if len(values) > 1:
            a, b = values[0], values[-1]
            cells.append("n/a" if a is None or b is None else f"{b - a:+.2f}")
        lines.append("| " + " | ".join([label, *cells]) + " |")
    if len(names) > 1:
        lines.append(
            f"\n{' and '.join(names)} both fine-tuned {summary['finetune_steps']} steps from "
            "the same ERM model; 'change' is the last column minus the first."
        )
    lines.append(f"demo took {summary['seconds']:.0f} s")
    return "\n".join(lines)


def comparison_plot(summary: dict) -> bytes:
    """Grouped bars: per-group EER of every model, with the speaker-bootstrap interval of
    each as an error bar where the report has one (PNG).
    """
    from matplotlib.figure import Figure

    from arw_sv.metrics.render import _png

    models = summary["models"]
    first = next(iter(models.values()))
    labels = ["overall"] + [
        g for a in ("gender", "nationality") for g in first[f"eer_percent_by_{a}"]
    ]

    def values(m):
        groups = {**m["eer_percent_by_gender"], **m["eer_percent_by_nationality"]}
        return [m["eer_percent"]] + [groups.get(g) for g in labels[1:]]

    fig = Figure(figsize=(1.2 + 0.9 * len(labels), 4))
    ax = fig.add_subplot()
    width = 0.8 / len(models)
    for i, (name, m) in enumerate(models.items()):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(labels))]
        heights = [np.nan if v is None else v for v in values(m)]
        cis = m.get("eer_ci_percent", {})
        low, high = [], []
        for label, h in zip(labels, heights, strict=True):
            ci = cis.get(label)
            low.append(max(0.0, h - ci[0]) if ci and np.isfinite(h) else 0.0)
            high.append(max(0.0, ci[1] - h) if ci and np.isfinite(h) else 0.0)
        ax.bar(xs, heights, width, label=name, yerr=[low, high], capsize=2, ecolor="0.3")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("EER (%)")
    ax.set_title(
        f"Fine-tuned {summary['finetune_steps']} steps from the same ERM model"
        + (
            " (bars: 95% speaker-bootstrap intervals)"
            if any(any(v for v in m.get("eer_ci_percent", {}).values()) for m in models.values())
            else ""
        )
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)

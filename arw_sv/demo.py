"""The demo (``arw-sv demo``: :mod:`arw_sv.cli.demo`): synthetic corpus -> ERM training ->
fine-tuning ERM and the recommended label-free fairness method -> EER reports side by side.

Every stage is skipped when its output is already complete, so an interrupted demo picks up
where it stopped (training resumes from its last checkpoint).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from arw_sv.calibration.backend import RECOMMENDED as RECOMMENDED_CALIBRATION


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
    calibration_speakers_per_cell: int = 40,
    calibration: dict | None = None,
    progress: bool = True,
) -> dict:
    """Run the whole demo into ``out``; returns ``{model name: evaluation report}``.

    ERM is trained on the synthetic corpus (``config``); then, unless ``fairness`` is None,
    two fine-tunes start from that ERM model for ``finetune_steps`` steps each: ERM
    continued (the fair reference) and the ``fairness`` config, and both are evaluated side
    by side. With ``fairness=None`` the ERM model itself is evaluated.

    Every evaluated model is also calibrated with the recommended label-free back-end
    (:data:`arw_sv.calibration.backend.RECOMMENDED`: AS-norm, then FSN), fitted on
    ``calibration_speakers_per_cell`` extra speakers per gender x nationality cell (the
    corpus's ``cal`` split; 0: no calibration), and each report shows raw and calibrated
    per-group FMR and FNMR at one threshold side by side. ``calibration`` overrides
    settings of the recommended back-end (e.g. ``{"clusters": 4}`` for a small corpus).

    Layout of ``out``: ``corpus/`` (synthetic VoxCeleb1-layout data), ``manifests/``,
    ``erm/`` (ERM training: checkpoints, log, TensorBoard, curves), ``finetune/<name>/``
    (the fine-tunes), ``eval/<name>/`` (embeddings, scores, ``report/`` with report.json,
    report.md and plots), ``comparison.md`` and ``comparison_groups.png`` (per-group EERs
    side by side), ``comparison_threshold.png`` (per-group FMR and FNMR at the overall
    FMR-1% threshold, raw and calibrated), ``summary.json``.
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
    synth = preset(synth_preset)
    if calibration_speakers_per_cell:
        synth = replace(synth, calibration_speakers_per_cell=calibration_speakers_per_cell)
    corpus = generate_corpus(out / "corpus", synth, progress=progress, workers=workers)
    n_cal = synth.calibration_speakers_per_cell * len(synth.nationalities) * 2
    print(
        f"{corpus.num_dev_speakers} training, {corpus.num_test_speakers} test and {n_cal} "
        f"calibration speakers, {corpus.num_utterances} utterances "
        f"({corpus.total_duration_s / 3600:.2f} h), {corpus.num_trials} trials"
    )

    stage("manifests")
    manifest = build_manifest(corpus.root, corpus.meta_path, splits=("dev", "test", "cal"))
    train_manifest = out / "manifests" / "train.csv"
    write_manifest(manifest.subset("dev"), train_manifest)
    test = manifest.subset("test")
    write_manifest(test, out / "manifests" / "test.csv")
    cal = manifest.subset("cal") if n_cal else None
    if cal is not None:
        write_manifest(cal, out / "manifests" / "cal.csv")
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
            checkpoint, test, corpus, out / "eval" / name, bootstrap, progress, cal,
            {**RECOMMENDED_CALIBRATION, **(calibration or {})},
        )  # fmt: skip
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
    if any("at_threshold" in m for m in summary["models"].values()):
        atomic_write_bytes(out / "comparison_threshold.png", threshold_plot(summary))
    print(text)
    print(
        f"\nreports: {out / 'eval'}/<model>/report/report.md; side by side: {out / 'comparison.md'}"
    )
    return reports


def method_name(config: str) -> str:
    """``demo_cohort_oversample`` -> ``cohort_oversample`` (a shipped config's method)."""
    return config.removeprefix("demo_") if config != "demo" else "erm"


def _evaluate_model(
    checkpoint, test, corpus, folder: Path, bootstrap: int, progress: bool, cal=None,
    settings: dict | None = None,
):  # fmt: skip
    """Embed the test utterances, score the trials and write the evaluation report; with
    calibration utterances ``cal``, also fit the recommended calibrator on them
    (``folder/calibration.json``) and put the calibrated report beside the raw one.
    """
    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import read_embeddings, read_trials, score_trials, write_scores
    from arw_sv.evaluate import calibrated_section, evaluate_scores, write_report
    from arw_sv.inference import embed_utterances

    embeddings = folder / "embeddings_test.npz"
    if not embeddings.is_file():  # written atomically: present means complete
        ids, wavs = [u.utt_id for u in test], [u.path for u in test]
        embed_utterances(checkpoint, ids, wavs, embeddings, progress=progress)
    trials = read_trials(corpus.trials_path)
    scores = score_trials(trials, read_embeddings(embeddings))
    write_scores(folder / "scores.txt", trials, scores)
    shared = dict(min_speakers=1, bootstrap=bootstrap, seed=0)
    meta = read_speaker_meta(corpus.meta_path)
    report = evaluate_scores(scores, trials.labels, trials.enroll, trials.test, meta, **shared)
    if cal is not None:
        from arw_sv.calibration import CalibrationError, calibrate_trials, save_calibrator
        from arw_sv.calibration.backend import fit_on_speakers
        from arw_sv.data.trials import read_embedding_model

        cal_embeddings = folder / "embeddings_cal.npz"
        if not cal_embeddings.is_file():
            ids, wavs = [u.utt_id for u in cal], [u.path for u in cal]
            embed_utterances(checkpoint, ids, wavs, cal_embeddings, progress=progress)
        cal_ids, cal_matrix = read_embeddings(cal_embeddings)
        model = read_embedding_model(cal_embeddings) or {}
        speaker = {u.utt_id: u.speaker for u in cal}
        try:
            calibrator, n_pairs, _ = fit_on_speakers(
                [speaker[u] for u in cal_ids], cal_matrix, fingerprint=model.get("fingerprint"),
                **(settings or {}),
            )  # fmt: skip
        except CalibrationError as exc:  # e.g. too few calibration speakers for 16 clusters
            print(f"calibration skipped: {exc}", flush=True)
            write_report(report, folder / "report", plots=True)
            return report
        path = folder / "calibration.json"
        save_calibrator(calibrator, path)
        llr = calibrate_trials(
            path, embeddings, trials, scores, read_embeddings(embeddings), calibrator
        )
        write_scores(folder / "scores_calibrated.txt", trials, llr)
        report["calibrated"] = {
            **calibrated_section(
                llr, trials.labels, trials.enroll, trials.test, meta, file=path,
                method=calibrator.label, **shared,
            ),
            "settings": settings,
            "pairs": n_pairs,
        }  # fmt: skip
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
    if report.get("calibrated"):
        out["calibration"] = report["calibrated"]["method"]
        out["calibrated_eer_percent"] = pct(report["calibrated"]["report"]["overall"]["eer"])
        out["at_threshold"] = {
            "raw": rates_at(report, THRESHOLD),
            "calibrated": rates_at(report["calibrated"]["report"], THRESHOLD),
        }
        calibrated = report["calibrated"]["report"]
        out["fmr_ratios"] = {"raw": fmr_ratios(report), "calibrated": fmr_ratios(calibrated)}
    return out


#: The operating point the demo compares groups at: the overall FMR-1% threshold.
THRESHOLD = "global_fmr_0.01"


def rates_at(report: dict, threshold: str) -> dict:
    """Per group (gender and nationality): FMR and FNMR (%) at one global threshold, with
    their speaker-bootstrap intervals where the report has them, and the max/min ratios.
    """

    def pct(value):
        return None if value is None else round(100 * value, 3)

    out: dict = {}
    for attribute in ("gender", "nationality"):
        section = report["groups"][attribute]
        for name, g in section["groups"].items():
            entry = g["at_threshold"][threshold]
            ci = entry.get("ci") or {}

            def bounds(key, ci=ci):
                b = ci.get(key) or {}
                return None if b.get("low") is None else [pct(b["low"]), pct(b["high"])]

            out[name] = {
                "fmr": pct(entry["fmr"]),
                "fnmr": pct(entry["fnmr"]),
                "fmr_ci": bounds("fmr"),
                "fnmr_ci": bounds("fnmr"),
            }
        d = section["disparity"]["at_threshold"][threshold]
        out[f"{attribute} ratio"] = {"fmr": d["fmr_ratio"], "fnmr": d["fnmr_ratio"]}
    return out


#: The three operating points whose FMR ratio ``make demo`` prints (issue 28).
RATIO_THRESHOLDS = {"FMR 0.1%": "global_fmr_0.001", "FMR 1%": "global_fmr_0.01",
                    "EER": "global_eer"}  # fmt: skip


def fmr_ratios(report: dict) -> dict:
    """Per grouping, the max/min FMR ratio at each of :data:`RATIO_THRESHOLDS` (None where a
    group has no false accept or the report lacks the threshold).
    """
    out: dict = {}
    for attribute in ("gender", "nationality"):
        at = report["groups"][attribute]["disparity"]["at_threshold"]
        out[attribute] = {
            label: (at.get(key) or {}).get("fmr_ratio") for label, key in RATIO_THRESHOLDS.items()
        }
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
    lines += threshold_table(summary)
    lines.append(f"demo took {summary['seconds']:.0f} s")
    return "\n".join(lines)


def threshold_table(summary: dict) -> list[str]:
    """Per-group FMR and FNMR at the overall FMR-1% threshold, raw -> calibrated, per model."""
    models = {n: m for n, m in summary["models"].items() if "at_threshold" in m}
    if not models:
        return []
    first = next(iter(models.values()))
    method = first["calibration"]
    lines = [
        "",
        f"At one threshold (overall FMR 1%), raw cosine -> calibrated ({method}, fitted on "
        "calibration speakers without group labels); FMR and FNMR in %:",
        "",
        "| group | " + " | ".join(f"{n} FMR | {n} FNMR" for n in models) + " |",
        "|---|" + "---|---|" * len(models),
    ]
    groups = [g for g in first["at_threshold"]["raw"] if not g.endswith(" ratio")]
    for g in [*groups, "gender ratio", "nationality ratio"]:
        cells = []
        for m in models.values():
            raw, cal = m["at_threshold"]["raw"][g], m["at_threshold"]["calibrated"][g]
            for key in ("fmr", "fnmr"):
                a, b = raw.get(key), cal.get(key)
                cells.append("n/a" if a is None or b is None else f"{a:.2f} -> {b:.2f}")
        label = f"max/min {g.removesuffix(' ratio')}" if g.endswith(" ratio") else g
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    eers = ", ".join(
        f"{n} {m['eer_percent']:.2f} -> {m['calibrated_eer_percent']:.2f}"
        for n, m in models.items()
    )
    lines.append(f"\nEER (%) raw -> calibrated: {eers}")
    lines += ["", "FMR max/min across groups at three thresholds, raw -> calibrated:", ""]
    lines.append("| model | grouping | " + " | ".join(RATIO_THRESHOLDS) + " |")
    lines.append("|---|---|" + "---|" * len(RATIO_THRESHOLDS))
    for name, m in models.items():
        ratios = m.get("fmr_ratios") or {}
        for attribute in ratios.get("raw", {}):
            raw, cal = ratios["raw"][attribute], ratios["calibrated"][attribute]
            cells = [
                "n/a" if raw[t] is None or cal[t] is None else f"{raw[t]:.2f} -> {cal[t]:.2f}"
                for t in RATIO_THRESHOLDS
            ]
            lines.append(f"| {name} | {attribute} | " + " | ".join(cells) + " |")
    return lines


def threshold_plot(summary: dict) -> bytes:
    """Per-group FMR and FNMR at the overall FMR-1% threshold, raw and calibrated, for every
    model, with speaker-bootstrap intervals as error bars (PNG).
    """
    from matplotlib.figure import Figure

    from arw_sv.metrics.render import _png

    models = {n: m for n, m in summary["models"].items() if "at_threshold" in m}
    first = next(iter(models.values()))
    groups = [g for g in first["at_threshold"]["raw"] if not g.endswith(" ratio")]
    fig = Figure(figsize=(1.5 + 0.75 * len(groups) * 2, 6.4))
    axes = fig.subplots(2, 1, sharex=True)
    bars = [(n, kind) for n in models for kind in ("raw", "calibrated")]
    width = 0.8 / len(bars)
    for ax, key in zip(axes, ("fmr", "fnmr"), strict=True):
        for i, (name, kind) in enumerate(bars):
            rates = models[name]["at_threshold"][kind]
            xs = [j + (i - (len(bars) - 1) / 2) * width for j in range(len(groups))]
            ys = [np.nan if rates[g][key] is None else rates[g][key] for g in groups]
            low, high = [], []
            for g, y in zip(groups, ys, strict=True):
                ci = rates[g].get(f"{key}_ci")
                low.append(max(0.0, y - ci[0]) if ci and np.isfinite(y) else 0.0)
                high.append(max(0.0, ci[1] - y) if ci and np.isfinite(y) else 0.0)
            ax.bar(xs, ys, width, yerr=[low, high], capsize=2, ecolor="0.3",
                   label=f"{name}, {kind}", hatch="//" if kind == "calibrated" else None)  # fmt: skip
        ax.set_ylabel(f"{key.upper()} (%)")
    axes[0].set_title(
        f"At the overall FMR-1% threshold: raw cosine and calibrated ({first['calibration']}); "
        "bars: 95% speaker-bootstrap intervals",
        fontsize=9,
    )
    axes[1].set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    axes[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _png(fig)


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

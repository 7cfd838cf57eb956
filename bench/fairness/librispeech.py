"""Label-free fairness from the first step on real speech: ``librispeech-mini`` (issue 29).

ERM and a label-free method trained from scratch on the same split of
``../shared/data/librispeech-mini`` as ``bench.calibration.librispeech`` (2-s segments;
140 training, 60 held-out/calibration and 61 test speakers, gender-stratified; the demo's
narrow ECAPA), then per-gender EER, and FMR and FNMR at the global EER threshold and at
FMR 1%, with speaker-bootstrap intervals (``arw-sv eval --group-by gender --bootstrap``).

The method needs no labels: ``heldout_adaptive`` (docs/method.md §3.4) discovers cohorts on
the 60 held-out speakers (the ``cal`` split, disjoint from training and test) with the
current model every 300 steps and oversamples the training speakers nearest its worst
ones; ``heldout_knn`` scores each training speaker by the held-out error of its 10
nearest held-out speakers and oversamples the top 10% (the scratch protocol's settings).
ERM is the calibration benchmark's model when it is in ``--out`` already (same
split, seed and steps), so both benchmarks share one run.

Usage::

    python -m bench.fairness.librispeech --out runs/librispeech [--steps 1500] [--threads 1]
        [--methods erm heldout_adaptive heldout_knn]

Writes ``fairness.md`` (the table), ``fairness.json`` and ``fairness_gender.png`` under
``--out``; every step is skipped when its output exists, so a rerun resumes.
"""

from __future__ import annotations

import json
from pathlib import Path

from arw_sv.atomic import atomic_write_text
from bench.calibration.librispeech import parser, prepare, run, test_trials, train_model

#: method -> (training folder under --out, overrides of the demo config)
METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "erm": ("train", ()),
    "heldout_adaptive": (
        "train_heldout_adaptive",
        (
            "data.sampling=heldout_adaptive",
            "data.heldout_manifest=@manifest",
            "data.heldout_split=cal",
            "data.adaptive_start_step=300",
            "data.adaptive_refresh_steps=300",
            # bench/conf/bench_cohort_oversample.yaml's cohort settings
            "data.n_cohorts=8",
            "data.cohort_oversample_top=2",
            "data.cohort_share=0.5",
            "data.cohort_neighbours=5",
        ),
    ),
    # The scratch protocol's ``heldout_knn`` (bench/fairness/scratch.py), settings unchanged.
    "heldout_knn": (
        "train_heldout_knn",
        (
            "data.sampling=heldout_knn",
            "data.heldout_manifest=@manifest",
            "data.heldout_split=cal",
            "data.adaptive_start_step=300",
            "data.adaptive_refresh_steps=300",
            "data.cohort_neighbours=10",
            "data.crowded_fraction=0.1",
            "data.cohort_share=0.5",
        ),
    ),
}
THRESHOLDS = {"global_eer": "global EER", "global_fmr_0.01": "FMR 1%"}


def _interval(entry: dict, key: str) -> str:
    ci = (entry.get("ci") or {}).get(key) or {}
    if ci.get("low") is None:
        return ""
    return f" [{100 * ci['low']:.2f}, {100 * ci['high']:.2f}]"


def summarise(reports: dict[str, dict]) -> tuple[str, dict]:
    """The per-gender table (Markdown) and its numbers, from each method's report."""
    rows = {}
    lines = [
        "| method | EER % | EER f % | EER m % | threshold | FMR f % | FMR m % | FNMR f % | FNMR m % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, report in reports.items():
        groups = report["groups"]["gender"]["groups"]
        f, m = groups["f"], groups["m"]
        rows[method] = {"eer": report["overall"]["eer"], "eer_f": f["eer"], "eer_m": m["eer"]}
        for key, label in THRESHOLDS.items():
            a, b = f["at_threshold"][key], m["at_threshold"][key]
            rows[method][key] = {"fmr_f": a["fmr"], "fmr_m": b["fmr"],
                                 "fnmr_f": a["fnmr"], "fnmr_m": b["fnmr"]}  # fmt: skip
            lines.append(
                f"| {method} | {100 * report['overall']['eer']:.2f}"
                f"{_interval(report['overall'], 'eer')} | {100 * f['eer']:.2f}{_interval(f, 'eer')} | "
                f"{100 * m['eer']:.2f}{_interval(m, 'eer')} | {label} | "
                f"{100 * a['fmr']:.2f}{_interval(a, 'fmr')} | {100 * b['fmr']:.2f}{_interval(b, 'fmr')} | "
                f"{100 * a['fnmr']:.2f}{_interval(a, 'fnmr')} | "
                f"{100 * b['fnmr']:.2f}{_interval(b, 'fnmr')} |"
            )
    return "\n".join(lines) + "\n", rows


def plot(reports: dict[str, dict], path: Path) -> None:
    """Per-gender EER of each method with its bootstrap interval."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 3))
    ax = fig.subplots()
    width = 0.8 / len(reports)
    for j, (method, report) in enumerate(reports.items()):
        groups = report["groups"]["gender"]["groups"]
        ys, err = [], []
        for g in ("f", "m"):
            e = groups[g]
            ci = (e.get("ci") or {}).get("eer") or {}
            lo, hi = ci.get("low", e["eer"]), ci.get("high", e["eer"])
            ys.append(100 * e["eer"])
            err.append((100 * (e["eer"] - (lo if lo is not None else e["eer"])),
                        100 * ((hi if hi is not None else e["eer"]) - e["eer"])))  # fmt: skip
        xs = np.arange(2) + (j - (len(reports) - 1) / 2) * width
        ax.bar(xs, ys, width, yerr=np.array(err).T.clip(min=0), capsize=3, label=method)
    ax.set_xticks(range(2), ["women", "men"])
    ax.set_ylabel("EER %")
    ax.set_title("librispeech-mini, from scratch", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    p = parser(__doc__, "runs/librispeech")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    args = p.parse_args()

    out = args.out.resolve()
    manifest, _ = prepare(out, args.corpus, args.seed)
    trials = test_trials(out, manifest)
    reports = {}
    for method in args.methods:
        folder, overrides = METHODS[method]
        own = tuple(o.replace("@manifest", str(manifest)) for o in overrides)
        last = train_model(out / folder, manifest, args.steps, args.threads, args.seed, own)
        npz = out / ("test.npz" if method == "erm" else f"test_{method}.npz")
        if not npz.is_file():
            run("embed", str(last), "--manifest", str(manifest), "--split", "test",
                "--out", str(npz), "--quiet")  # fmt: skip
        report = out / f"eval_{method}" / "report.json"
        if not report.is_file():
            run("eval", "--embeddings", str(npz), "--trials", str(trials), "--meta",
                str(manifest), "--group-by", "gender", "--bootstrap", str(args.bootstrap),
                "--seed", str(args.seed), "--out", str(report.parent))  # fmt: skip
        reports[method] = json.loads(report.read_text())
    table, rows = summarise(reports)
    text = (
        f"librispeech-mini, from scratch ({args.steps} steps, seed {args.seed}): per-gender "
        "EER, and FMR / FNMR at two global thresholds, in %, speaker-bootstrap 95% "
        f"intervals ({args.bootstrap} resamples).\n\n{table}"
    )
    atomic_write_text(out / "fairness.md", text)
    atomic_write_text(out / "fairness.json", json.dumps(rows, indent=1))
    plot(reports, out / "fairness_gender.png")
    print(text)


if __name__ == "__main__":
    main()

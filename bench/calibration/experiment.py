"""Decision-threshold fairness: every calibration method on one model's embeddings.

Given embeddings of a corpus's test speakers and of its calibration speakers (the synthetic
corpus's ``cal`` split, or any speakers disjoint from training and test), a trial list over
the test speakers, and the speakers' groups (for the oracle and for the report only), fit
each calibration method on the calibration speakers and report, against uncalibrated
cosine, the per-group FMR and FNMR at the global FMR-1% and FMR-0.1% thresholds, their
max/min ratios, GARBE, FaDR, overall EER, minDCF and Cllr. A learning curve refits the
oracle and FSN on growing subsets of calibration speakers. AS-norm (top 300, the
calibration speakers' utterances as its cohort) is reported beside them.

Usage (after ``arw-sv embed`` of both splits and ``arw-sv trials`` over the test split)::

    python -m bench.calibration.experiment --test test.npz --cal cal.npz --trials trials.txt \\
        --meta all.csv --out runs/cal_probe [--clusters 4 16] [--curve 24 60 120 240]

Writes ``results.json``, ``results.md`` and ``curve.png`` under ``--out``; each cell is
computed once and kept in ``results.json``, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text
from arw_sv.calibration import (
    CalibrationError,
    cosine_scores,
    fit_calibrator,
    fit_on_speakers,
    sample_pairs,
    split_cohort,
)
from arw_sv.data.meta import attribute_names, read_speaker_meta
from arw_sv.data.trials import read_embeddings, read_trials, speaker_of, utterance_rows
from arw_sv.evaluate import evaluate_scores

GROUPINGS = ("nationality", "gender")
THRESHOLDS = {"eer": "global_eer", "0.01": "global_fmr_0.01", "0.001": "global_fmr_0.001"}


def summarise(report: dict, groupings: tuple[str, ...] = GROUPINGS) -> dict:
    """The numbers the table shows, from a full report."""
    out = {
        "eer": report["overall"]["eer"],
        "min_dcf": report["overall"]["min_dcf"]["0.01"]["value"],
        "cllr": report["overall"]["cllr"],
        "min_cllr": report["overall"]["min_cllr"],
    }
    for grouping in groupings:
        section = report["groups"].get(grouping)
        if section is None:
            continue
        for short, t in THRESHOLDS.items():
            d = section["disparity"]["at_threshold"][t]
            key = f"{grouping}@{short}"
            out[key] = {
                "fmr_ratio": d["fmr_ratio"],
                "fnmr_ratio": d["fnmr_ratio"],
                "garbe": d["garbe"],
                "fadr": d["fadr"],
                "fmr": {g: e["at_threshold"][t]["fmr"] for g, e in section["groups"].items()},
                "rates": {g: e["at_threshold"][t] for g, e in section["groups"].items()},
                "n_nontarget": {g: e["n_nontarget"] for g, e in section["groups"].items()},
            }
        out[f"{grouping}_eer"] = {g: e["eer"] for g, e in section["groups"].items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--cal", type=Path, required=True)
    p.add_argument("--trials", type=Path, required=True)
    p.add_argument("--meta", type=Path, required=True, help="speakers' gender and nationality")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--clusters", type=int, nargs="+", default=[4, 16])
    p.add_argument("--curve", type=int, nargs="*", default=[], help="calibration speaker counts")
    p.add_argument("--max-pairs", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=0,
                   help="speaker-bootstrap draws for intervals on each group's rates")  # fmt: skip
    p.add_argument("--oracle-key", default="nationality",
                   help="the speaker attribute of --meta the label oracles calibrate per group "
                   "(the planted one: nationality, gender, age_band, ...)")  # fmt: skip
    p.add_argument("--paired", type=int, default=0, metavar="R",
                   help="also judge the default back-end (all speakers and each --curve size) "
                   "against raw cosine with a paired speaker bootstrap of R resamples "
                   "(bench/calibration/paired.py): paired.json, paired.md")  # fmt: skip
    p.add_argument(
        "--plot-fmr",
        nargs="*",
        default=[],
        metavar="METHOD",
        help="also draw per-nationality FMR against the overall FMR, raw and after each METHOD "
        "(e.g. fsn_k16 oracle), as fmr_vs_threshold.png",
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}

    meta = read_speaker_meta(args.meta)
    trials = read_trials(args.trials)
    test_ids, test_matrix = read_embeddings(args.test)
    cal_ids, cal_matrix = read_embeddings(args.cal)
    cal_speakers = [speaker_of(u) for u in cal_ids]
    test_speakers = {speaker_of(u) for u in test_ids}
    if test_speakers & set(cal_speakers):
        raise SystemExit("calibration and test speakers overlap")
    e, t = utterance_rows(trials.enroll, test_ids), utterance_rows(trials.test, test_ids)
    raw = cosine_scores(test_matrix, e, t)
    if args.oracle_key not in attribute_names(meta):
        raise SystemExit(f"{args.meta}: no speaker has --oracle-key {args.oracle_key!r}")
    group_of = {s: meta[s].attribute(args.oracle_key) for s in meta}
    # The report's groupings: nationality and gender where there, and the oracle's attribute.
    groupings = tuple(dict.fromkeys(g for g in (*GROUPINGS, args.oracle_key)
                                    if g in attribute_names(meta)))  # fmt: skip
    test_groups = np.array([group_of[speaker_of(u)] for u in test_ids])

    def evaluate(scores: np.ndarray) -> dict:
        report = evaluate_scores(scores, trials.labels, trials.enroll, trials.test, meta,
                                 min_speakers=5, det_points=0, bootstrap=args.bootstrap,
                                 group_by=[(g,) for g in groupings])  # fmt: skip
        return summarise(report, groupings)

    def fit_and_score(method: str, keep: np.ndarray, **kw) -> np.ndarray:
        matrix = cal_matrix[keep]
        speakers = [cal_speakers[i] for i in keep]
        pe, pt, labels = sample_pairs(speakers, args.max_pairs, seed=args.seed)
        scores = cosine_scores(matrix, pe, pt)
        groups = np.array([group_of[s] for s in speakers])
        cal = fit_calibrator(method, scores, labels, pe, pt, matrix, seed=args.seed,
                             groups=groups if method.startswith("oracle") else None, **kw)  # fmt: skip
        return cal.transform_indexed(raw, e, t, test_matrix,
                                     groups=test_groups if method.startswith("oracle") else None)  # fmt: skip

    def cell(name: str, compute) -> None:
        if name in results:
            return
        try:
            results[name] = compute()
        except CalibrationError as exc:
            results[name] = {"error": str(exc)}
        atomic_write_text(results_path, json.dumps(results, indent=1))
        print(name, json.dumps({k: v for k, v in results[name].items() if not isinstance(v, dict)}))

    everyone = np.arange(len(cal_ids))
    cell("raw", lambda: evaluate(raw))

    def asnorm() -> dict:
        from arw_sv.metrics import as_norm

        return evaluate(as_norm(raw, e, t, test_matrix, cal_matrix, top_n=300))

    cell("asnorm_top300", asnorm)  # the calibration speakers' utterances as the cohort

    # AS-norm made deployable: cohort = calibration half A; calibrator fitted on half B's
    # pairs, AS-normalised against A (no pair meets its own speaker in the cohort).
    # (The product's fit_on_speakers, with the whole half as the cohort: no size cap.)
    cohort = cal_matrix[split_cohort(cal_speakers, 0.5, seed=args.seed)]

    cal_groups = np.array([group_of[s] for s in cal_speakers])

    def asnorm_scores(method: str, **kw) -> np.ndarray:
        oracle = method.startswith("oracle")
        cal, _, _ = fit_on_speakers(cal_speakers, cal_matrix, method=method,
                                    cohort_size=len(cal_matrix), max_pairs=args.max_pairs,
                                    seed=args.seed, groups=cal_groups if oracle else None,
                                    **kw)  # fmt: skip
        return cal.transform_indexed(raw, e, t, test_matrix, groups=test_groups if oracle else None)

    def asnorm_then(method: str | None, **kw) -> dict:
        from arw_sv.metrics import as_norm

        if method is None:
            return evaluate(as_norm(raw, e, t, test_matrix, cohort, top_n=300))
        return evaluate(asnorm_scores(method, **kw))

    cell("asnorm_half", lambda: asnorm_then(None))
    cell("asnorm_half_global", lambda: asnorm_then("global"))
    cell("asnorm_half_fsn_k16", lambda: asnorm_then("fsn", clusters=16))
    cell("asnorm_half_faircal_k16", lambda: asnorm_then("faircal", clusters=16))
    # Issue 28: per-region quantile matching after AS-norm (its default shrinkage prior),
    # and its label oracle.
    cell("asnorm_half_quantile_k16", lambda: asnorm_then("quantile", clusters=16))
    cell("oracle_quantile", lambda: evaluate(fit_and_score("oracle_quantile", everyone)))
    # The ceilings of both in their own form: AS-norm, then the true groups as the regions.
    cell("asnorm_half_oracle", lambda: asnorm_then("oracle"))
    cell("asnorm_half_oracle_quantile", lambda: asnorm_then("oracle_quantile"))
    # Maps fitted on within-region pairs, the trials a group's FMR counts (calibration-log Q4).
    cell("asnorm_half_oracle_quantile_within",
         lambda: asnorm_then("oracle_quantile", quantile_pairs="within"))  # fmt: skip
    cell("asnorm_half_quantile_within_k16",
         lambda: asnorm_then("quantile", clusters=16, quantile_pairs="within"))  # fmt: skip
    cell("global", lambda: evaluate(fit_and_score("global", everyone)))
    for method in ("oracle", "oracle_faircal"):
        cell(method, lambda m=method: evaluate(fit_and_score(m, everyone)))
    for k in args.clusters:
        for method in ("fsn", "faircal", "softcal", "quantile"):
            cell(
                f"{method}_k{k}",
                lambda m=method, k=k: evaluate(fit_and_score(m, everyone, clusters=k)),
            )

    def recommended(keep: np.ndarray, **kw) -> np.ndarray:
        """The product's default back-end fitted on these rows (since issue 28: k from the
        speakers, global calibration below 200 of them; ``clusters=16``: as before)."""
        cal, _, _ = fit_on_speakers([cal_speakers[i] for i in keep], cal_matrix[keep],
                                    max_pairs=args.max_pairs, seed=args.seed, **kw)  # fmt: skip
        return cal.transform_indexed(raw, e, t, test_matrix)

    # The product's default as `arw-sv calibrate` fits it on these speakers (issue 28's
    # rule: below 200 speakers, global calibration of cosines), and with quantile matching.
    cell("default", lambda: evaluate(recommended(everyone)))
    cell("default_quantile", lambda: evaluate(recommended(everyone, method="quantile")))

    # Learning curve: the first n calibration speakers of a seeded order; the oracle, FSN
    # with the smallest k, and the recommended back-end.
    order = np.random.default_rng(args.seed).permutation(sorted(set(cal_speakers)))
    for n in args.curve:
        chosen = set(order[:n])
        keep = np.array([i for i, s in enumerate(cal_speakers) if s in chosen])
        cell(f"curve_oracle_n{n}", lambda keep=keep: evaluate(fit_and_score("oracle", keep)))
        k = min(args.clusters)
        cell(
            f"curve_fsn_k{k}_n{n}",
            lambda keep=keep, k=k: evaluate(fit_and_score("fsn", keep, clusters=k)),
        )
        cell(f"curve_recommended_n{n}", lambda keep=keep: evaluate(recommended(keep)))
        cell(f"curve_fsn16_n{n}", lambda keep=keep: evaluate(recommended(keep, clusters=16)))
        cell(f"curve_quantile_n{n}",
             lambda keep=keep: evaluate(recommended(keep, method="quantile")))  # fmt: skip

    if args.plot_fmr:
        curves = {"raw cosine": raw}
        for name in args.plot_fmr:
            method, _, k = name.removeprefix("asnorm_half_").partition("_k")
            kw = {"clusters": int(k)} if k else {}
            if name.startswith("asnorm_half_"):
                curves[name] = asnorm_scores(method, **kw)
            else:
                curves[name] = fit_and_score(method, everyone, **kw)
        for grouping in GROUPINGS:
            of = {s: getattr(meta[s], grouping) for s in meta}
            nat = np.array([of[speaker_of(u)] for u in trials.enroll])
            same = nat == np.array([of[speaker_of(u)] for u in trials.test])
            suffix = "" if grouping == args.oracle_key else f"_{grouping}"
            plot_fmr_curves(
                curves, trials.labels, nat, same, args.out / f"fmr_vs_threshold{suffix}.png"
            )

    if args.paired and not (args.out / "paired.json").is_file():
        sets = {"raw": raw, "default": recommended(everyone),
                "default_quantile": recommended(everyone, method="quantile")}  # fmt: skip
        for n in args.curve:
            chosen = set(order[:n])
            keep = np.array([i for i, s in enumerate(cal_speakers) if s in chosen])
            sets[f"curve_recommended_n{n}"] = recommended(keep)
        write_paired(sets, trials, meta, groupings, args.paired, args.seed, args.out)

    lines = [
        "| method | EER % | minDCF 0.01 | Cllr | nat. FMR max/min @0.1% | @1% | @EER thr. | "
        "nat. GARBE @1% | gender FMR max/min @0.1% | @1% | @EER thr. |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def num(x, d=2, scale=1.0):
        return "n/a" if x is None else f"{scale * x:.{d}f}"

    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error'][:80]} | | | | | | | | | |")
            continue

        def ratios(grouping, r=r):
            return " | ".join(
                num(r.get(f"{grouping}@{t}", {}).get("fmr_ratio")) for t in ("0.001", "0.01", "eer")
            )

        lines.append(
            f"| {name} | {num(r['eer'], 2, 100)} | {num(r['min_dcf'], 3)} | {num(r['cllr'], 3)} | "
            f"{ratios('nationality')} | "
            f"{num(r.get('nationality@0.01', {}).get('garbe'), 3)} | {ratios('gender')} |"
        )
    atomic_write_text(args.out / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.curve:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 3.2))
        ax = fig.subplots()
        for label, prefix in (
            ("oracle", "curve_oracle_n"),
            (f"FSN k={min(args.clusters)}", f"curve_fsn_k{min(args.clusters)}_n"),
            ("default (k from speakers, global below 200)", "curve_recommended_n"),
            ("AS-norm + FSN k=16 (the default before)", "curve_fsn16_n"),
            ("AS-norm + quantile (auto k)", "curve_quantile_n"),
        ):
            xs = [n for n in args.curve if "error" not in results.get(f"{prefix}{n}", {"error": 1})]
            ys = [results[f"{prefix}{n}"][f"{args.oracle_key}@0.01"]["fmr_ratio"] for n in xs]
            ax.plot(xs, ys, marker="o", label=label)
        ax.axhline(
            results["raw"][f"{args.oracle_key}@0.01"]["fmr_ratio"],
            color="k",
            linestyle="--",
            label="raw cosine",
        )
        ax.set_xlabel("calibration speakers")
        ax.set_ylabel(f"{args.oracle_key} FMR max/min at FMR 1%")
        ax.set_xscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out / "curve.png")


def write_paired(sets, trials, meta, groupings, n_resamples, seed, out: Path) -> dict:
    """``paired.json`` / ``paired.md``: each score set against raw, paired speaker bootstrap."""
    from arw_sv.metrics.groups import Grouping
    from arw_sv.metrics.report import default_strata
    from bench.calibration.paired import null_ratio_floor, paired_changes

    names = sorted({speaker_of(u) for u in (*trials.enroll, *trials.test)})
    index = {s: i for i, s in enumerate(names)}
    enroll = np.array([index[speaker_of(u)] for u in trials.enroll])
    test = np.array([index[speaker_of(u)] for u in trials.test])
    grouping = {g: Grouping.from_values(g, [meta[s].attribute(g) for s in names])
                for g in groupings}  # fmt: skip
    result = paired_changes(sets, trials.labels, enroll, test, grouping,
                            n_resamples=n_resamples, seed=seed)  # fmt: skip
    # The ratio speaker sampling alone gives, with as many pseudo-groups as each grouping has.
    strata = default_strata(list(grouping.values()), len(names))
    result["null_floor"] = {
        g: {name: null_ratio_floor(sets[name], trials.labels, enroll, test, strata,
                                   len(grouping[g].groups), seed=seed)
            for name in ("raw", "default") if name in sets}
        for g in groupings
    }  # fmt: skip
    atomic_write_text(out / "paired.json", json.dumps(result, indent=1))
    keys = ["min_dcf"] + [f"{g}@{t}" for g in groupings for t in ("0.001", "0.01", "eer")]

    def fmt(row):
        if row["change"] is None:
            return "n/a"
        mark = " **worse**" if row["worse_beyond_noise"] else ""
        return f"{row['change']:+.3f} [{row['low']:+.3f}, {row['high']:+.3f}]{mark}"

    lines = [
        f"Change against raw cosine, paired speaker bootstrap ({n_resamples} resamples, 95% "
        "percentile intervals; **worse**: the interval's lower end is above 0).",
        "",
        "| back-end | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, rows in result.items():
        if name not in ("ratios", "null_floor"):
            lines.append(f"| {name} | " + " | ".join(fmt(rows[k]) for k in keys) + " |")
    ratio_keys = keys[1:]
    lines += ["", "Each back-end's own max/min FMR ratio with its interval:", "",
              "| back-end | " + " | ".join(ratio_keys) + " |", "|---" * len(keys) + "|"]  # fmt: skip

    def fmt_ratio(r):
        return "n/a" if r["value"] is None or r["low"] is None else (
            f"{r['value']:.2f} [{r['low']:.2f}, {r['high']:.2f}]")  # fmt: skip

    for name, rows in result["ratios"].items():
        lines.append(f"| {name} | " + " | ".join(fmt_ratio(rows[k]) for k in ratio_keys) + " |")
    lines += ["", "The max/min ratio of random pseudo-groups of equal composition (speaker "
              "sampling alone; median [90th percentile] of 100 deals):", "",
              "| scores | " + " | ".join(ratio_keys) + " |", "|---" * len(keys) + "|"]  # fmt: skip
    for name in ("raw", "default"):
        cells = []
        for k in ratio_keys:
            g, _, t = k.partition("@")
            f = result["null_floor"][g].get(name, {}).get(t)
            cells.append("n/a" if f is None else f"{f['median']:.2f} [{f['p90']:.2f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    atomic_write_text(out / "paired.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


def plot_fmr_curves(curves: dict, labels, group, within, path: Path) -> None:
    """Per-group FMR against the overall FMR of one shared threshold, one panel per score.

    A shared threshold sweeps the overall FMR (x); each group's FMR at it (y, within-group
    non-targets) is a line. Equal lines mean equal false accepts at any one threshold.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * (len(curves) + 1), 3.6))
    first, *axes = np.atleast_1d(fig.subplots(1, len(curves) + 1))
    non = np.asarray(labels) == 0
    overall_grid = np.logspace(-4, -1, 60)
    for name, scores in curves.items():  # the first panel: the max/min ratio per method
        nons = np.sort(scores[non])[::-1]
        thresholds = nons[np.minimum((overall_grid * nons.size).astype(int), nons.size - 1)]
        rates = []
        for g in sorted(set(group)):
            mine = np.sort(scores[non & within & (group == g)])
            rates.append(1.0 - np.searchsorted(mine, thresholds, side="left") / mine.size)
        rates = np.array(rates)
        ratio = rates.max(axis=0) / np.maximum(rates.min(axis=0), 1e-12)
        first.loglog(overall_grid, np.where(rates.min(axis=0) > 0, ratio, np.nan), label=name)
    first.axhline(1.0, color="k", linestyle=":", linewidth=1)
    first.axhline(1.25, color="grey", linestyle="--", linewidth=0.8)
    for x in (0.01, 0.001):
        first.axvline(x, color="grey", linewidth=0.5)
    first.set_title("FMR max/min across groups")
    first.set_xlabel("overall FMR at the shared threshold")
    first.set_ylabel("max/min group FMR")
    first.legend(fontsize=7)
    for ax, (name, scores) in zip(axes, curves.items(), strict=True):
        nons = np.sort(scores[non])[::-1]
        thresholds = nons[np.minimum((overall_grid * nons.size).astype(int), nons.size - 1)]
        for g in sorted(set(group)):
            mine = np.sort(scores[non & within & (group == g)])
            fmr = 1.0 - np.searchsorted(mine, thresholds, side="left") / mine.size
            ax.loglog(overall_grid, np.maximum(fmr, 1e-5), label=g)
        ax.loglog(overall_grid, overall_grid, "k:", linewidth=1, label="overall")
        for x in (0.01, 0.001):
            ax.axvline(x, color="grey", linewidth=0.5)
        ax.set_title(name)
        ax.set_xlabel("overall FMR at the shared threshold")
    axes[0].set_ylabel("group FMR (within-group non-targets)")
    for ax in axes[1:]:
        ax.sharey(axes[0])
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

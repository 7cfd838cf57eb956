"""Human-readable views of a report dict: Markdown tables and PNG plots.

Undefined values print as "n/a". Rates print as percentages, gaps as percentage points.
matplotlib is imported only when plots are drawn, through its object-oriented API (no
pyplot, so no global backend state is touched).
"""

from __future__ import annotations

import io

import numpy as np

from arw_sv.metrics.probit import probit

NA = "n/a"


def _pct(x: float | None, digits: int = 2) -> str:
    return NA if x is None else f"{100 * x:.{digits}f}"


def _num(x: float | None, digits: int = 4) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def _ci(entry: dict, key: str = "eer", scale: float = 100.0, digits: int = 2) -> str:
    ci = (entry.get("ci") or {}).get(key)
    if not ci or ci["low"] is None:
        return NA
    return f"[{scale * ci['low']:.{digits}f}, {scale * ci['high']:.{digits}f}]"


def _maybe_ci(ci: dict, key: str, scale: float = 100.0) -> str:
    """``" [low, high]"`` when the report has a bootstrap interval for ``key``, else nothing."""
    return f" {_ci({'ci': ci}, key, scale)}" if ci.get(key) else ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _grouping_md(name: str, section: dict, thresholds: dict, boot: bool) -> list[str]:
    rule = {"both": "both speakers in the group", "enroll": "enrolment speaker's group"}[
        section["rule"]
    ]
    lines = [f"## {name.replace('_', ' ').capitalize()}", "", f"Trial-to-group rule: **{rule}**."]
    notes = section.get("notes") or {}
    if notes.get("pooled_into_others"):
        pooled = ", ".join(f"{k} ({v})" for k, v in notes["pooled_into_others"].items())
        lines.append(
            f'Pooled into "others" (fewer than {notes["min_speakers"]} speakers): {pooled}.'
        )
    if notes.get("mapping"):
        lines.append(
            "Relabelled first: "
            + ", ".join(f"{k} -> {v}" for k, v in notes["mapping"].items())
            + "."
        )
    tnames = list(thresholds)
    header = ["group", "speakers", "trials", "target", "non-target", "EER %"]
    header += ["EER 95% CI"] if boot else []
    header += ["minDCF 0.01", "minDCF 0.05"]
    header += [f"FMR % @ {t}" for t in tnames] + [f"FNMR % @ {t}" for t in tnames]
    rows = []
    for g in section["groups"].values():
        dcf = g["min_dcf"]
        row = [
            g["name"] + ("" if g["in_disparity"] else " *"),
            str(g["n_speakers"]),
            str(g["n_trials"]),
            str(g["n_target"]),
            str(g["n_nontarget"]),
            _pct(g["eer"]),
        ]
        row += [_ci(g)] if boot else []
        row += [
            _num((dcf.get("0.01") or {}).get("value")),
            _num((dcf.get("0.05") or {}).get("value")),
        ]
        row += [_pct(g["at_threshold"][t]["fmr"], 3) for t in tnames]
        row += [_pct(g["at_threshold"][t]["fnmr"], 3) for t in tnames]
        rows.append(row)
    lines += [""] + _table(header, rows) + [""]
    excluded = [
        f"{g['name']} ({g['excluded_because']})"
        for g in section["groups"].values()
        if not g["in_disparity"]
    ]
    if excluded:
        lines.append("\\* left out of the disparity measures: " + "; ".join(excluded) + ".")
    cross = section.get("cross_group")
    if cross is not None:
        fmr = cross["at_threshold"].get(tnames[0], {}).get("fmr") if cross["n_trials"] else None
        lines.append(
            f"Cross-group trials: {cross['n_trials']} ({cross['n_target']} target); "
            f"FMR at the global EER threshold {_pct(fmr, 3)} %."
        )
    lines.append(
        f"Unassigned trials (speaker without this attribute): {section['unassigned']['n_trials']}."
    )
    d = section["disparity"]
    ci = d.get("ci") or {}
    lines += [
        "",
        f"Disparity over {d['n_groups']} groups: EER gap {_pct(d['gap'])} points"
        f"{_maybe_ci(ci, 'gap')}, ratio {_num(d['ratio'], 2)}{_maybe_ci(ci, 'ratio', 1.0)}, "
        f"std (ddof 0) {_pct(d['std'])} points{_maybe_ci(ci, 'std')}, worst group "
        f"{d['worst_group'] or NA} ({_pct(d['worst_eer'])} %).",
    ]
    rows = [
        [
            t,
            _num(v["threshold"], 5),
            _num(v["fadr"]),
            _num(v["garbe"]),
            _pct(v["fmr_gap"], 3),
            _pct(v["fnmr_gap"], 3),
        ]
        for t, v in d["at_threshold"].items()
    ]
    lines += [""] + _table(
        ["threshold", "value", "FaDR", "GARBE", "FMR gap pts", "FNMR gap pts"], rows
    )
    return lines + [""]


def _calibrated_md(report: dict) -> list[str]:
    """Raw against calibrated, side by side: overall, then each grouping at each threshold."""
    cal = report["calibrated"]
    new = cal["report"]
    lines = [
        f"## Raw cosine against calibrated ({cal['method']}, `{cal['file']}`)",
        "",
        "Thresholds are set on each score's own overall FMR, so the rows compare like with like.",
        "",
    ]
    rows = []
    for label, r in (("raw", report), ("calibrated", new)):
        o = r["overall"]
        rows.append(
            [label, _pct(o["eer"], 3), _num(o["min_dcf"]["0.01"]["value"]),
             _num(o.get("cllr"), 3), _num(o.get("min_cllr"), 3)]
        )  # fmt: skip
    lines += _table(["scores", "EER %", "minDCF 0.01", "Cllr", "minCllr"], rows) + [""]
    for name, section in report["groups"].items():
        other = new["groups"].get(name)
        if other is None:
            continue
        rows = []
        for t in report["thresholds"]:
            a, b = section["disparity"]["at_threshold"][t], other["disparity"]["at_threshold"][t]
            rows.append(
                [t, _num(a.get("fmr_ratio"), 2), _num(b.get("fmr_ratio"), 2),
                 _num(a.get("fnmr_ratio"), 2), _num(b.get("fnmr_ratio"), 2),
                 _num(a.get("garbe"), 3), _num(b.get("garbe"), 3)]
            )  # fmt: skip
        header = ["threshold", "FMR max/min raw", "calibrated", "FNMR max/min raw",
                  "calibrated", "GARBE raw", "calibrated"]  # fmt: skip
        lines += [f"### {name}", ""] + _table(header, rows) + [""]
    return lines


def render_markdown(report: dict) -> str:
    """The report as Markdown tables."""
    o, inputs = report["overall"], report.get("inputs", {})
    boot = report.get("bootstrap") is not None
    lines = ["# Speaker verification evaluation", ""]
    src = inputs.get("scores") or inputs.get("embeddings")
    lines.append(
        f"{o['n_trials']} trials ({o['n_target']} target, {o['n_nontarget']} non-target), "
        f"{o['n_speakers']} speakers" + (f"; from `{src}`" if src else "") + "."
    )
    if inputs.get("skipped_missing"):
        lines.append(f"Skipped {inputs['skipped_missing']} trials naming missing utterances.")
    if inputs.get("asnorm"):
        a = inputs["asnorm"]
        lines.append(
            f"Scores AS-normalised against {a['cohort_size']} cohort embeddings, top {a['top_n']}."
        )
    missing_meta = inputs.get("speakers_without_metadata", {})
    if missing_meta.get("count"):
        lines.append(
            f"{missing_meta['count']} speakers have no metadata (first: {', '.join(missing_meta['first'])})."
        )
    header = (
        ["EER %"]
        + (["95% CI"] if boot else [])
        + ["EER threshold", "minDCF 0.01", "minDCF 0.05", "Cllr", "minCllr"]
    )
    row = [_pct(o["eer"], 3)] + ([_ci(o, digits=3)] if boot else [])
    row += [
        _num(o["eer_threshold"], 5),
        _num(o["min_dcf"]["0.01"]["value"]),
        _num(o["min_dcf"]["0.05"]["value"]),
        _num(o.get("cllr"), 3),
        _num(o.get("min_cllr"), 3),
    ]
    lines += ["", "## Overall", ""] + _table(header, [row]) + [""]
    if report.get("calibrated"):
        lines += _calibrated_md(report)
    for name, section in report["groups"].items():
        lines += _grouping_md(name, section, report["thresholds"], boot)
    c = report.get("cohorts")
    if c:
        b = c["bottom"]
        lines += [
            "## Discovered cohorts (k-means on speaker mean embeddings)",
            "",
            f"{c['k']} clusters. Bottom cohort {b['name']}: {_pct(b['share_of_speakers'], 1)} % of "
            f"speakers, EER {_pct(b['eer'])} % vs {_pct(b['rest_eer'])} % for the other clusters' "
            f"trials (gap {_pct(b['gap'])} points, relative {_pct(b['relative_gap'], 1)} %"
            + (f", 95% CI {_ci({'ci': {'g': b['gap_ci']}}, 'g')}" if b.get("gap_ci") else "")
            + ").",
            "",
        ]
        rows = [
            [
                g["name"],
                str(g["n_speakers"]),
                _pct(g.get("share_of_speakers"), 1),
                str(g["n_trials"]),
                _pct(g["eer"]),
            ]
            for g in c["groups"].values()
        ]
        lines += _table(["cohort", "speakers", "share %", "trials", "EER %"], rows) + [""]
    if boot:
        b = report["bootstrap"]
        lines.append(
            f"Intervals: {b['interval']} bootstrap, {b['n_resamples']} resamples of speakers "
            f"({b['stratified']}), {100 * b['confidence']:.0f} %."
        )
    lines.append(
        f"EER convention: {report['conventions']['eer']}. minDCF: {report['conventions']['min_dcf']}."
    )
    return "\n".join(lines) + "\n"


def _png(fig, tight: bool = True) -> bytes:
    """The figure as PNG bytes; ``tight`` crops to the drawn content (one extra draw)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _det_axes(ax) -> None:
    ticks = np.array([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4])
    for set_ticks, set_labels in (
        (ax.set_xticks, ax.set_xticklabels),
        (ax.set_yticks, ax.set_yticklabels),
    ):
        set_ticks(probit(ticks))
        set_labels([f"{100 * t:g}" for t in ticks])
    lim = (probit(0.0005), probit(0.5))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xlabel("false-alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.grid(True, alpha=0.3)


def _bars(
    ax, name: str, section: dict, report: dict, ylabel: bool, highlight_first: bool = False
) -> None:
    """Bar per group: EER with its bootstrap interval; dashed line: overall EER."""
    groups = [g for g in section["groups"].values() if g["eer"] is not None]
    y = np.array([100 * g["eer"] for g in groups])
    err = np.zeros((2, len(groups)))
    for j, g in enumerate(groups):
        ci = (g.get("ci") or {}).get("eer")
        if ci and ci["low"] is not None:
            err[:, j] = [max(0.0, y[j] - 100 * ci["low"]), max(0.0, 100 * ci["high"] - y[j])]
    # Red: the bottom cohort; grey: groups left out of disparity measures (too few speakers).
    colors = [
        "tab:red" if highlight_first and j == 0 else "tab:blue" if g["in_disparity"] else "silver"
        for j, g in enumerate(groups)
    ]
    ax.bar(range(len(groups)), y, yerr=err, capsize=3, color=colors)
    ax.axhline(100 * report["overall"]["eer"], color="black", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g["name"] for g in groups], rotation=60, ha="right", fontsize=7)
    ax.set_title(name.replace("_", " "), fontsize=9)
    ax.set_ylabel("EER (%)" if ylabel else "")


def render_plots(report: dict) -> dict[str, bytes]:
    """PNG plots: DET curves per grouping, group EERs with intervals, cohort EERs."""
    from matplotlib.figure import Figure

    def curve(ax, det, label, **kw):
        far = np.clip(det["far"], 1e-5, 1 - 1e-5)
        frr = np.clip(det["frr"], 1e-5, 1 - 1e-5)
        ax.plot(probit(far), probit(frr), label=label, **kw)

    plots = {}
    sections = dict(report["groups"])
    if report.get("cohorts"):
        sections["cohorts"] = report["cohorts"]
    with_det = [("overall", None)] + list(sections.items()) if report["overall"].get("det") else []
    if with_det:
        # One figure for every DET plot, its axes and margins fixed (the labels are the
        # same on all): each PNG is one draw, with no tight-bbox pass.
        fig = Figure(figsize=(5, 5))
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.1, top=0.94)
        ax = fig.add_subplot()
        _det_axes(ax)
    for name, section in with_det:
        for line in list(ax.lines):
            line.remove()
        ax.set_prop_cycle(None)  # each plot's groups start at the first colour
        curve(ax, report["overall"]["det"], "all trials", color="black", linewidth=2)
        for g in (section or {}).get("groups", {}).values():
            if g.get("det"):
                curve(ax, g["det"], f"{g['name']} ({_pct(g['eer'])} %)")
        ax.legend(fontsize=7)
        ax.set_title(f"DET: {name.replace('_', ' ')}")
        plots[f"det_{name}.png"] = _png(fig, tight=False)
    demographic = {k: v for k, v in sections.items() if k != "cohorts"}
    if demographic:
        fig = Figure(figsize=(4 + 1.6 * len(demographic), 4))
        for i, (name, section) in enumerate(demographic.items(), start=1):
            _bars(fig.add_subplot(1, len(demographic), i), name, section, report, i == 1)
        plots["group_eer.png"] = _png(fig)
    if "cohorts" in sections:
        fig = Figure(figsize=(5, 4))
        _bars(fig.add_subplot(), "cohorts (bottom in red)", sections["cohorts"], report, True, True)
        plots["cohorts.png"] = _png(fig)
    return plots

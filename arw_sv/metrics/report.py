"""The fairness report: overall rates, every group, disparity, bootstrap intervals.

Everything comes from one sort of the scores: groups are contiguous runs of a stable
re-ordering of the sorted trials by group id, so each group's trials stay sorted.
The report is a plain dict (the ``report.json`` schema, see ``docs/evaluation.md``);
undefined values are ``None``, never NaN.

Shape legend (the package one, :mod:`arw_sv`): N trials, P speakers, R resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from arw_sv.metrics.bootstrap import SpeakerBootstrap, percentile_interval, speaker_multiplicities
from arw_sv.metrics.cllr import calibration_summary
from arw_sv.metrics.groups import (
    CROSS_GROUP,
    UNASSIGNED,
    Grouping,
    assign_trials,
    eer_disparity,
    rate_disparity,
    speakers_per_group,
)
from arw_sv.metrics.probit import probit
from arw_sv.metrics.rates import (
    OperatingPoints,
    check_scores_labels,
    dcf_from_points,
    eer_from_points,
    points_from_sorted,
    threshold_at_far,
)

SCHEMA = "arw-sv/eval-report"
SCHEMA_VERSION = 1
EER_CONVENTION = (
    "EER = (FAR + FRR) / 2 at the operating point (one per distinct score, accept iff "
    "score >= threshold) where |FAR - FRR| is smallest; exact ties go to the lower threshold"
)


def _key(p: float) -> str:
    return f"{p:g}"


def _clipped_probit(counts: np.ndarray, total: float) -> np.ndarray:
    """``probit(clip(counts / total))`` by one probit per possible count.

    Unweighted counts take at most ``total + 1`` values, about half as many as there are
    operating points on the two axes together; ``arange / total`` are the same floats as
    ``counts / total``, so the result is bit for bit the direct one.
    """
    if counts.dtype.kind not in "iu" or total + 1 > counts.size:
        return probit(np.clip(counts / total, 1e-5, 1 - 1e-5))
    table = probit(np.clip(np.arange(int(total) + 1) / total, 1e-5, 1 - 1e-5))
    return table[counts]


def det_summary(points: OperatingPoints, n_points: int = 100) -> dict:
    """A DET curve thinned to about ``n_points`` points evenly spaced along it (probit axes)."""
    far, frr = points.far, points.frr
    x = _clipped_probit(points.false_alarms, points.n_nontarget)
    y = _clipped_probit(points.misses, points.n_target)
    arc = np.concatenate(([0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))))
    picks = np.unique(np.searchsorted(arc, np.linspace(0, arc[-1], n_points), side="left"))
    picks = np.minimum(picks, far.size - 1)
    return {"far": far[picks].tolist(), "frr": frr[picks].tolist()}


class _SortedTrials:
    """Trials sorted once by score, with the quantities every group shares."""

    def __init__(self, scores, labels, enroll_spk, test_spk):
        scores, labels = check_scores_labels(scores, labels)
        self.order = np.argsort(scores)  # tie order is irrelevant: ties are cut as blocks
        self.scores = scores[self.order]
        self.labels = labels[self.order]
        self.enroll = np.asarray(enroll_spk, dtype=np.int64)[self.order]
        self.test = np.asarray(test_spk, dtype=np.int64)[self.order]

    def subset(self, positions: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Sorted scores and labels of a subset (``None``: all trials)."""
        if positions is None:
            return self.scores, self.labels
        return self.scores[positions], self.labels[positions]

    @staticmethod
    def at_thresholds(scores, labels, thresholds: dict[str, float]) -> dict:
        """FNMR and FMR of sorted trials at each fixed threshold (accept iff score >= t)."""
        n_tar = int(labels.sum())
        n_non = int(scores.size - n_tar)
        at = {}
        for name, t in thresholds.items():
            rejected = int(np.searchsorted(scores, t, side="left"))
            misses = int(labels[:rejected].sum())
            accepted_non = int((scores.size - rejected) - (n_tar - misses))
            at[name] = {
                "fnmr": misses / n_tar if n_tar else None,
                "fmr": accepted_non / n_non if n_non else None,
                "misses": misses,  # of n_target
                "false_accepts": accepted_non,  # of n_nontarget
            }
        return at

    def rates(
        self,
        positions: np.ndarray | None,
        p_targets: Sequence[float],
        thresholds: dict[str, float],
        det_points: int,
        points: OperatingPoints | None = None,
    ) -> dict:
        """Counts, EER, minDCF, rates at fixed thresholds and a DET summary of a subset.

        ``points``: the subset's operating points when the caller has them already.
        """
        scores, labels = self.subset(positions)
        n_tar = int(labels.sum())
        out: dict = {
            "n_trials": int(scores.size),
            "n_target": n_tar,
            "n_nontarget": int(scores.size - n_tar),
        }
        at = self.at_thresholds(scores, labels, thresholds)
        if n_tar == 0 or n_tar == scores.size:
            out.update(
                eer=None, eer_threshold=None, det=None, min_dcf={_key(p): None for p in p_targets}
            )
            out["undefined"] = "no target trials" if n_tar == 0 else "no non-target trials"
        else:
            if points is None:
                points = points_from_sorted(scores, labels)
            value, threshold = eer_from_points(points)
            out.update(eer=value, eer_threshold=threshold, undefined=None)
            out["min_dcf"] = {}
            for p in p_targets:
                cost = dcf_from_points(points, p)
                k = int(np.argmin(cost))
                out["min_dcf"][_key(p)] = {
                    "value": float(cost[k]),
                    "threshold": float(points.thresholds[k]),
                }
            out["det"] = det_summary(points, det_points) if det_points else None
        out["at_threshold"] = at
        out.update(calibration_summary(scores, labels))
        return out


def _boot_intervals(
    boot: SpeakerBootstrap, positions, p_targets, confidence
) -> tuple[dict, np.ndarray]:
    eers, dcfs = boot.evaluate(positions)
    ci = {"eer": percentile_interval(eers, confidence)}
    for i, p in enumerate(p_targets):
        ci[f"min_dcf_{_key(p)}"] = percentile_interval(dcfs[:, i], confidence)
    return ci, eers


def _rate_intervals(
    boot: SpeakerBootstrap,
    groups: list[dict],
    positions,
    grouping: Grouping,
    disparity: dict,
    thresholds: dict[str, float],
    confidence: float,
) -> None:
    """Speaker-bootstrap intervals of each group's FMR and FNMR at each global threshold
    (``group["at_threshold"][name]["ci"]``), and of their max/min ratios across the groups
    in the disparity measures (``disparity["at_threshold"][name]["ci"]``).
    """
    for name, threshold in thresholds.items():
        fmrs, fnmrs = [], []
        for gid, entry in enumerate(groups):
            pos = positions(gid)
            if not pos.size:
                continue
            fmr, fnmr = boot.rates_at(pos, threshold)
            entry["at_threshold"][name]["ci"] = {
                "fmr": percentile_interval(fmr, confidence),
                "fnmr": percentile_interval(fnmr, confidence),
            }
            if entry["in_disparity"]:
                fmrs.append(fmr)
                fnmrs.append(fnmr)
        if len(fmrs) >= 2:
            disparity["at_threshold"][name]["ci"] = {
                "fmr_ratio": percentile_interval(_ratio(np.stack(fmrs, axis=1)), confidence),
                "fnmr_ratio": percentile_interval(_ratio(np.stack(fnmrs, axis=1)), confidence),
            }


def _ratio(rates: np.ndarray) -> np.ndarray:
    """Max / min across groups per resample; NaN where undefined. Shape: (R, G) -> (R,)."""
    high, low = np.nanmax(rates, axis=1), np.nanmin(rates, axis=1)
    complete = np.isfinite(rates).all(axis=1) & (low > 0)
    return np.where(complete, high / np.where(low > 0, low, 1.0), np.nan)


def _disparity_intervals(eers: np.ndarray, confidence: float) -> dict:
    """Intervals of gap, ratio and std from per-resample group EERs. Shape: eers (R, G)."""
    complete = np.isfinite(eers).all(axis=1)
    filled = np.where(np.isfinite(eers), eers, 0.0)  # rows with a NaN are dropped below
    high, low = filled.max(axis=1), filled.min(axis=1)
    gap = np.where(complete, high - low, np.nan)
    ratio = np.where(complete & (low > 0), high / np.where(low > 0, low, 1.0), np.nan)
    std = np.where(complete, filled.std(axis=1), np.nan)
    return {
        "gap": percentile_interval(gap, confidence),
        "ratio": percentile_interval(ratio, confidence),
        "std": percentile_interval(std, confidence),
    }


def _evaluate_grouping(
    trials: _SortedTrials,
    grouping: Grouping,
    rule: str,
    min_speakers: int,
    p_targets: Sequence[float],
    thresholds: dict[str, float],
    alpha: float,
    det_points: int,
    boot: SpeakerBootstrap | None,
    confidence: float,
) -> tuple[dict, np.ndarray]:
    trial_group = assign_trials(grouping, trials.enroll, trials.test, rule)
    n_speakers = speakers_per_group(grouping, trial_group, trials.enroll, trials.test, rule)
    # Stable, so each group's trials stay score-sorted; int16 keys get numpy's radix sort.
    keys = trial_group.astype(np.int16) if len(grouping.groups) < 30_000 else trial_group
    perm = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(trial_group[perm], np.arange(UNASSIGNED, len(grouping.groups) + 1))

    def positions(gid: int) -> np.ndarray:
        return perm[bounds[gid - UNASSIGNED] : bounds[gid - UNASSIGNED + 1]]

    groups, included, boot_eers = [], [], []
    for gid, name in enumerate(grouping.groups):
        pos = positions(gid)
        entry = {"name": name, "n_speakers": int(n_speakers[gid])}
        entry.update(trials.rates(pos, p_targets, thresholds, det_points))
        reasons = []
        if entry["eer"] is None:
            reasons.append(entry["undefined"])
        if entry["n_speakers"] < min_speakers:
            reasons.append(f"fewer than {min_speakers} speakers")
        entry["in_disparity"] = not reasons
        entry["excluded_because"] = "; ".join(reasons) or None
        if boot is not None and pos.size:
            entry["ci"], eers = _boot_intervals(boot, pos, p_targets, confidence)
            if entry["in_disparity"]:
                boot_eers.append(eers)
        groups.append(entry)
        if entry["in_disparity"]:
            included.append(entry)

    disparity = eer_disparity([g["name"] for g in included], [g["eer"] for g in included])
    disparity["at_threshold"] = {
        name: rate_disparity(
            [g["at_threshold"][name]["fmr"] for g in included],
            [g["at_threshold"][name]["fnmr"] for g in included],
            threshold,
            alpha,
        )
        for name, threshold in thresholds.items()
    }
    if boot is not None and thresholds:
        _rate_intervals(boot, groups, positions, grouping, disparity, thresholds, confidence)
    if boot is not None and len(boot_eers) >= 2:
        disparity["ci"] = _disparity_intervals(np.stack(boot_eers, axis=1), confidence)

    cross = trials.rates(positions(CROSS_GROUP), p_targets, thresholds, det_points=0)
    section = {
        "rule": rule,
        "notes": grouping.notes,
        "groups": {g["name"]: g for g in groups},
        "disparity": disparity,
        "cross_group": None
        if rule == "enroll"
        else {k: cross[k] for k in ("n_trials", "n_target", "n_nontarget", "at_threshold")},
        "unassigned": {"n_trials": int(positions(UNASSIGNED).size)},
    }
    return section, trial_group


def default_strata(groupings: Sequence[Grouping], n_speakers: int) -> np.ndarray:
    """One stratum per combination of group memberships (e.g. gender x nationality)."""
    if not groupings:
        return np.zeros(n_speakers, dtype=np.int64)
    cells = np.stack([g.speaker_group for g in groupings], axis=1)
    return np.unique(cells, axis=0, return_inverse=True)[1].reshape(-1)


def fairness_report(
    scores: np.ndarray,
    labels: np.ndarray,
    enroll_spk: np.ndarray,
    test_spk: np.ndarray,
    groupings: Sequence[Grouping] = (),
    *,
    group_rule: str = "both",
    min_speakers: int = 5,
    p_targets: Sequence[float] = (0.01, 0.05),
    far_target: float | Sequence[float] = (0.01, 0.001),
    alpha: float = 0.5,
    bootstrap: int = 0,
    confidence: float = 0.95,
    strata: np.ndarray | None = None,
    cohort_labels: np.ndarray | None = None,
    seed: int = 0,
    det_points: int = 100,
) -> dict:
    """Overall and per-group verification rates with disparity measures.

    Args:
        scores: trial scores (higher = same speaker more likely).
        labels: 1 target, 0 non-target.
        enroll_spk: enrolment speaker index of each trial (0..P-1).
        test_spk: test speaker index of each trial.
        groupings: speaker partitions to report on (``speaker_group`` of length S).
        group_rule: ``"both"`` or ``"enroll"`` (see ``arw_sv.metrics.groups``).
        min_speakers: groups with fewer speakers are reported but left out of disparity.
        p_targets: priors for minDCF (c_miss = c_fa = 1).
        far_target: the global false-alarm rates whose thresholds every group's FMR and
            FNMR, FaDR and GARBE are also reported at.
        alpha: weight of FMR against FNMR in FaDR and GARBE.
        bootstrap: number of speaker resamples (0 = no intervals).
        confidence: level of the percentile intervals.
        strata: speaker strata for resampling; default: combinations of ``groupings``.
        cohort_labels: k-means cluster of each speaker, for cohort discovery.
        seed: seed of the resampling generator.
        det_points: points kept per DET curve (0 = none).

    Returns:
        The report dict (``report.json`` schema without the ``inputs`` block).

    Shape:
        scores, labels, enroll_spk, test_spk: (N,); strata, cohort_labels: (P,).
    """
    trials = _SortedTrials(scores, labels, enroll_spk, test_spk)
    n_spk = int(max(trials.enroll.max(initial=-1), trials.test.max(initial=-1)) + 1)
    for g in groupings:
        if g.speaker_group.size < n_spk:
            raise ValueError(
                f"grouping {g.name!r} covers {g.speaker_group.size} of {n_spk} speakers"
            )
    n_tar = int(trials.labels.sum())
    if n_tar == 0 or n_tar == trials.labels.size:
        raise ValueError(
            "cannot evaluate: " + ("no target trials" if n_tar == 0 else "no non-target trials")
        )
    points = points_from_sorted(trials.scores, trials.labels)  # once, for all that follows
    overall = trials.rates(None, p_targets, {}, det_points, points=points)
    targets = (far_target,) if isinstance(far_target, int | float) else tuple(far_target)
    thresholds = {"global_eer": overall["eer_threshold"]}
    thresholds.update({f"global_fmr_{_key(f)}": threshold_at_far(points, f) for f in targets})
    overall["at_threshold"] = trials.at_thresholds(trials.scores, trials.labels, thresholds)
    overall["n_speakers"] = int(
        np.count_nonzero(np.bincount(np.concatenate([trials.enroll, trials.test])))
    )

    boot = None
    if bootstrap > 0:
        if strata is None:
            strata = default_strata(groupings, n_spk)
        rng = np.random.default_rng(seed)
        mult = speaker_multiplicities(np.asarray(strata)[:n_spk], bootstrap, rng)
        boot = SpeakerBootstrap(
            trials.scores, trials.labels, trials.enroll, trials.test, mult, tuple(p_targets)
        )
        overall["ci"], _ = _boot_intervals(boot, None, p_targets, confidence)

    shared = dict(
        p_targets=p_targets,
        thresholds=thresholds,
        alpha=alpha,
        det_points=det_points,
        boot=boot,
        confidence=confidence,
    )
    report = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "conventions": {
            "eer": EER_CONVENTION,
            "decision": "accept iff score >= threshold",
            "rates": "fractions in [0, 1] (report.md shows percentages)",
            "min_dcf": "min over thresholds of c_miss*p*FRR + c_fa*(1-p)*FAR, divided by "
            "min(c_miss*p, c_fa*(1-p)); c_miss = c_fa = 1",
            "group_rule": group_rule,
            "min_speakers": min_speakers,
            "disparity_std": "population standard deviation (ddof = 0) of group EERs",
            "alpha": alpha,
        },
        "overall": overall,
        "thresholds": thresholds,
        "groups": {
            g.name: _evaluate_grouping(trials, g, group_rule, min_speakers, **shared)[0]
            for g in groupings
        },
        "bootstrap": None
        if boot is None
        else {
            "n_resamples": bootstrap,
            "unit": "speaker",
            "stratified": "by combination of group memberships" if groupings else "none",
            "trial_weight": "W_a for same-speaker trials, W_a * W_b otherwise",
            "interval": "percentile",
            "confidence": confidence,
            "seed": seed,
        },
        "cohorts": None,
    }
    if cohort_labels is not None:
        report["cohorts"] = _cohort_section(trials, cohort_labels, group_rule, shared)
    return report


def _cohort_section(
    trials: _SortedTrials, cohort_labels: np.ndarray, rule: str, shared: dict
) -> dict:
    """Clusters ranked by EER; the bottom cohort against all other clustered trials."""
    grouping = Grouping.from_values("cohort", [f"c{int(c):02d}" for c in cohort_labels])
    section, trial_group = _evaluate_grouping(trials, grouping, rule, 1, **shared)
    n_speakers = sum(g["n_speakers"] for g in section["groups"].values())
    ranked = sorted(
        section["groups"].values(),
        key=lambda g: -1.0 if g["eer"] is None else g["eer"],
        reverse=True,
    )
    for g in ranked:
        g["share_of_speakers"] = g["n_speakers"] / n_speakers if n_speakers else None
    section["groups"] = {g["name"]: g for g in ranked}
    section["ranking"] = [g["name"] for g in ranked]
    bottom = ranked[0]
    bottom_id = grouping.groups.index(bottom["name"])
    rest_pos = np.flatnonzero((trial_group >= 0) & (trial_group != bottom_id))
    rest = trials.rates(rest_pos, shared["p_targets"], {}, 0)
    summary = {
        "name": bottom["name"],
        "share_of_speakers": bottom["share_of_speakers"],
        "eer": bottom["eer"],
        "rest_eer": rest["eer"],
        "gap": None,
        "relative_gap": None,
        "rest_n_trials": rest["n_trials"],
    }
    if bottom["eer"] is not None and rest["eer"] is not None:
        summary["gap"] = bottom["eer"] - rest["eer"]
        summary["relative_gap"] = summary["gap"] / rest["eer"] if rest["eer"] > 0 else None
    boot = shared["boot"]
    if boot is not None and summary["gap"] is not None:
        bottom_pos = np.flatnonzero(trial_group == bottom_id)
        gap = boot.evaluate(bottom_pos)[0] - boot.evaluate(rest_pos)[0]
        summary["gap_ci"] = percentile_interval(gap, shared["confidence"])
    section["k"] = len(grouping.groups)
    section["bottom"] = summary
    return section

"""Trial lists for a corpus that has none: targets, within-group and cross-group non-targets.

For each speaker (its own seeded RNG, so a speaker's trials do not depend on the others'):
``targets`` same-speaker pairs from different sessions (any two utterances where sessions
are unknown or the speaker has only one); ``within`` non-targets with another speaker of
its group (same gender and nationality: the hard negatives of VoxCeleb1-H); ``across``
non-targets with a speaker of another group. The speaker's own utterance comes first.
Repeated pairs (in either order) are dropped; with ``max_per_speaker`` no speaker is named
by more trials than that, so prolific or lonely speakers cannot dominate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from arw_sv.data.manifest import Manifest

TRIALS_STREAM = 5  # the random stream of trial sampling (the synthetic corpus's value)


@dataclass(frozen=True)
class TrialPlan:
    """How many trials per speaker, and the cap (``None``: 2 x the quota; 0: no cap)."""

    targets: int = 10
    within: int = 10
    across: int = 10
    max_per_speaker: int | None = None

    def __post_init__(self) -> None:
        for name in ("targets", "within", "across"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if self.max_per_speaker is not None and self.max_per_speaker < 0:
            raise ValueError(f"--max-per-speaker must be >= 0, got {self.max_per_speaker}")

    def cap(self) -> int | None:
        """The most trials that may name one speaker; ``None`` when there is no cap."""
        if self.max_per_speaker is None:
            return 2 * (self.targets + self.within + self.across)
        return self.max_per_speaker or None


@dataclass(frozen=True)
class TrialSpeaker:
    """A speaker as the generator sees it: utterance ids, their sessions, its group."""

    name: str
    key: int  # seeds this speaker's RNG
    utterances: Sequence[str]
    sessions: Sequence[str]  # "" where unknown
    group: Hashable


def _target_pairs(spk: TrialSpeaker) -> list[tuple[int, int]]:
    n, sess = len(spk.utterances), spk.sessions
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n) if sess[a] != sess[b] or not sess[a]]
    return pairs or [(a, b) for a in range(n) for b in range(a + 1, n)]


def build_trials(
    speakers: Sequence[TrialSpeaker],
    plan: TrialPlan,
    seed: int,
    stream: int = TRIALS_STREAM,
    cap: int | None = None,
) -> list[tuple[int, str, str]]:
    """Trials ``(label, enroll, test)`` over ``speakers`` (see module docstring).

    Args:
        speakers: the speakers, in a fixed order (it decides the pools' order).
        plan: trials per speaker.
        seed: the seed; speaker ``s`` draws from ``SeedSequence([seed, stream, s.key])``.
        stream: the random stream.
        cap: most trials naming one speaker (``None``: no cap).
    """
    groups: dict[Hashable, list[TrialSpeaker]] = {}
    for s in speakers:
        groups.setdefault(s.group, []).append(s)
    count: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    trials: list[tuple[int, str, str]] = []

    def room(*names: str) -> bool:
        return cap is None or all(count[n] < cap for n in set(names))

    def add(label: int, a: str, b: str, names: tuple[str, ...]) -> None:
        key = (min(a, b), max(a, b))
        if key not in seen and room(*names):
            seen.add(key)
            trials.append((label, a, b))
            count.update(set(names))

    for spk in speakers:
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream, spk.key]))
        utts = spk.utterances
        pairs = _target_pairs(spk)
        chosen = rng.permutation(len(pairs))[: plan.targets]
        for i in sorted(chosen):
            add(1, utts[pairs[i][0]], utts[pairs[i][1]], (spk.name,))
        same = [o for o in groups[spk.group] if o is not spk]
        other = [o for o in speakers if o.group != spk.group]
        for pool, n in ((same, plan.within), (other, plan.across)):
            # Never more draws than distinct pairs: a quota past the supply cannot loop on.
            n = min(n, len(utts) * sum(len(o.utterances) for o in pool))
            for _ in range(n):
                if cap is not None:
                    pool = [o for o in pool if count[o.name] < cap]
                    if not pool or count[spk.name] >= cap:
                        break
                partner = pool[int(rng.integers(len(pool)))]
                enroll = utts[int(rng.integers(len(utts)))]
                test = partner.utterances[int(rng.integers(len(partner.utterances)))]
                add(0, enroll, test, (spk.name, partner.name))
    return trials


def manifest_trials(
    manifest: Manifest, plan: TrialPlan, seed: int = 0
) -> tuple[list[tuple[int, str, str]], dict]:
    """Trials over every speaker of ``manifest``, grouped by (gender, nationality).

    Returns:
        ``(trials, summary)``; ``summary`` maps each group ``"gender/nationality"`` to its
        speakers and its target / within / across trial counts (a trial counts for its
        enrolment speaker's group), plus ``"total"``.
    """
    by_speaker: dict[str, list] = {}
    for u in manifest:
        by_speaker.setdefault(u.speaker, []).append(u)
    speakers = [
        TrialSpeaker(
            name=s,
            key=i,
            utterances=[u.utt_id for u in by_speaker[s]],
            sessions=[u.session for u in by_speaker[s]],
            group=(by_speaker[s][0].gender, by_speaker[s][0].nationality),
        )
        for i, s in enumerate(manifest.speakers)
        if len(by_speaker[s]) > 0
    ]
    trials = build_trials(speakers, plan, seed, cap=plan.cap())
    owner = {u.utt_id: u.speaker for u in manifest}
    group = {s.name: s.group for s in speakers}
    summary: dict[str, dict[str, int]] = {}
    for s in speakers:
        row = summary.setdefault(
            "/".join(s.group), dict.fromkeys(("speakers", "target", "within", "across"), 0)
        )
        row["speakers"] += 1
    for label, a, b in trials:
        ga, gb = group[owner[a]], group[owner[b]]
        kind = "target" if label else ("within" if ga == gb else "across")
        summary["/".join(ga)][kind] += 1
    total = {
        k: sum(r[k] for r in summary.values()) for k in ("speakers", "target", "within", "across")
    }
    summary = dict(sorted(summary.items()))
    summary["total"] = total
    return trials, summary


def supply(manifest: Manifest) -> dict[str, int]:
    """The most trials of each kind one speaker of ``manifest`` can have (distinct pairs):
    ``target``, ``within`` (its group) and ``across`` (other groups).
    """
    by_speaker: dict[str, list] = {}
    for u in manifest:
        by_speaker.setdefault(u.speaker, []).append(u)
    group_utts: Counter[tuple[str, str]] = Counter()
    for utts in by_speaker.values():
        group_utts[(utts[0].gender, utts[0].nationality)] += len(utts)
    total = sum(group_utts.values())
    most = dict.fromkeys(("target", "within", "across"), 0)
    for utts in by_speaker.values():
        n, group = len(utts), (utts[0].gender, utts[0].nationality)
        most["target"] = max(most["target"], n * (n - 1) // 2)
        most["within"] = max(most["within"], n * (group_utts[group] - n))
        most["across"] = max(most["across"], n * (total - group_utts[group]))
    return most


def quota_notes(manifest: Manifest, plan: TrialPlan) -> list[str]:
    """One line for each quota of ``plan`` that no speaker of ``manifest`` can fill."""
    most = supply(manifest)
    asked = {"target": plan.targets, "within": plan.within, "across": plan.across}
    flags = {"target": "--targets", "within": "--within", "across": "--across"}
    return [
        f"{flags[k]} {asked[k]} capped at {most[k]} per speaker: the manifest has no more "
        f"distinct {k} pairs"
        for k in asked
        if asked[k] > most[k]
    ]


def format_summary(summary: dict) -> str:
    """The per-group summary as an aligned text table."""
    width = max(len(g) for g in summary)
    lines = [f"{'group':<{width}}  speakers  target  within  across"]
    for g, r in summary.items():
        lines.append(
            f"{g:<{width}}  {r['speakers']:>8}  {r['target']:>6}  {r['within']:>6}  {r['across']:>6}"
        )
    return "\n".join(lines)

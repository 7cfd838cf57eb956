"""`arw-sv trials`: the generator's invariants on a manifest with groups and sessions."""

from __future__ import annotations

from collections import Counter

import pytest

from arw_sv.cli import main
from arw_sv.data.manifest import Manifest, Utterance, write_manifest
from arw_sv.data.trial_gen import TrialPlan, manifest_trials
from arw_sv.data.trials import read_trials


def _manifest(n_speakers: int = 16, sessions: int = 3, per_session: int = 3) -> Manifest:
    utts = []
    for s in range(n_speakers):
        spk = f"spk{s:02d}"
        gender, nat = "mf"[s % 2], ("USA", "UK", "India")[s % 3]
        for k in range(sessions):
            for u in range(per_session):
                utts.append(
                    Utterance(
                        f"{spk}/s{k}/{u}.wav",
                        f"/x/{spk}/{k}/{u}.wav",
                        spk,
                        2.0,
                        gender,
                        nat,
                        "test",
                        session=f"s{k}",
                    )
                )
    return Manifest(utts)


@pytest.mark.parametrize("seed", [0, 7])
def test_trial_invariants(seed):
    manifest = _manifest()
    by_utt = {u.utt_id: u for u in manifest}
    plan = TrialPlan(targets=5, within=4, across=4)
    trials, summary = manifest_trials(manifest, plan, seed=seed)
    assert trials == manifest_trials(manifest, plan, seed=seed)[0]  # deterministic
    assert trials != manifest_trials(manifest, plan, seed=seed + 1)[0]  # the seed matters
    pairs = [frozenset((a, b)) for _, a, b in trials]
    assert len(set(pairs)) == len(pairs)  # no repeated pair, in either order
    within = across = 0
    for label, a, b in trials:
        ua, ub = by_utt[a], by_utt[b]
        assert a != b  # no self-trials
        assert label == int(ua.speaker == ub.speaker)  # targets are the same speaker only
        if label:
            assert ua.session != ub.session  # across sessions where sessions are known
        elif (ua.gender, ua.nationality) == (ub.gender, ub.nationality):
            within += 1
        else:
            across += 1
    n = len(manifest.speakers)
    assert sum(t[0] for t in trials) == 5 * n
    assert summary["total"] == {"speakers": n, "target": 5 * n, "within": within, "across": across}
    assert within > 3 * n and across > 3 * n  # both kinds, close to the plan (some duplicates)
    assert summary["m/USA"]["speakers"] == 3  # speakers 0, 6, 12


def test_per_speaker_cap_bounds_every_speaker():
    # One lonely speaker in its group and few speakers: without a cap its group partner
    # would be drawn by every within-group non-target of the other.
    manifest = _manifest(n_speakers=6)
    trials, _ = manifest_trials(manifest, TrialPlan(4, 8, 8, max_per_speaker=12), seed=1)
    owner = {u.utt_id: u.speaker for u in manifest}
    named = Counter()
    for _, a, b in trials:
        named.update({owner[a], owner[b]})
    assert max(named.values()) <= 12
    free, _ = manifest_trials(manifest, TrialPlan(4, 8, 8, max_per_speaker=0), seed=1)
    assert len(free) > len(trials)


def test_cli_writes_a_trial_list_and_summary(tmp_path, capsys):
    write_manifest(_manifest(), tmp_path / "m.csv")
    out = tmp_path / "trials.txt"
    args = ["trials", str(tmp_path / "m.csv"), "--out", str(out), "--targets", "3", "--seed", "3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "f/UK" in printed and "total" in printed
    trials = read_trials(out)
    assert int(trials.labels.sum()) == 3 * 16
    text = out.read_text()
    assert main(args) == 0 and out.read_text() == text

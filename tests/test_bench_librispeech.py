"""The librispeech-mini drivers (bench/calibration/librispeech.py, bench/fairness/librispeech.py):
segments, the gender-stratified split and the per-gender fairness table, on made-up input."""

from __future__ import annotations

import pytest

from arw_sv.data.manifest import Utterance
from bench.calibration.librispeech import N_CAL_PER_GENDER, N_TEST_EXTRA, assign_splits, segments
from bench.fairness.librispeech import summarise


def _utt(speaker: str, gender: str, duration: float, split: str = "dev", k: int = 0) -> Utterance:
    return Utterance(f"{speaker}/c/{speaker}-{k}.flac", f"/x/{speaker}-{k}.flac", speaker,
                     duration, gender, "unknown", split)  # fmt: skip


def test_segments_cut_two_seconds_and_keep_a_last_piece_of_at_least_one():
    cut = segments([_utt("s1", "f", 5.5), _utt("s2", "m", 4.4), _utt("s3", "m", 0.7)])
    pieces = {u.utt_id: (u.start, u.duration) for u in cut}
    assert [pieces[f"s1/c/s1-0-{k:03d}"] for k in range(3)] == [(0.0, 2.0), (2.0, 2.0), (4.0, 1.5)]
    # 0.4 s left over: dropped; a clip shorter than one piece is kept whole.
    assert [v for k, v in pieces.items() if k.startswith("s2")] == [(0.0, 2.0), (2.0, 2.0)]
    assert pieces["s3/c/s3-0-000"] == (0.0, 0.7)


def test_the_split_is_gender_stratified_disjoint_and_seeded():
    utts = [_utt(f"f{i}", "f", 3.0) for i in range(80)] + [
        _utt(f"m{i}", "m", 3.0) for i in range(80)
    ]
    utts += [_utt(f"t{i}", "f" if i % 2 else "m", 3.0, split="test") for i in range(10)]
    out = assign_splits(utts, seed=0)
    split = {u.speaker: u.split for u in out}
    gender = {u.speaker: u.gender for u in out}
    cal = [s for s, v in split.items() if v == "cal"]
    assert sorted(gender[s] for s in cal) == ["f"] * N_CAL_PER_GENDER + ["m"] * N_CAL_PER_GENDER
    test = {s for s, v in split.items() if v == "test"}
    assert {f"t{i}" for i in range(10)} <= test and len(test) == 10 + N_TEST_EXTRA
    assert len(out) == len(utts) and len(set(split)) == 170  # every speaker in one split
    assert assign_splits(utts, seed=0) == out and assign_splits(utts, seed=1) != out


def _report(eer: float, f: float, m: float, fmr_f: float, ci: bool) -> dict:
    def group(e, fmr):
        at = {k: {"fmr": fmr, "fnmr": 0.5} for k in ("global_eer", "global_fmr_0.01")}
        if ci:
            at["global_eer"]["ci"] = {"fmr": {"low": fmr / 2, "high": fmr * 2}}
        return {"eer": e, "at_threshold": at, "ci": {"eer": {"low": e - 0.01, "high": e + 0.01}}}

    return {"overall": {"eer": eer},
            "groups": {"gender": {"groups": {"f": group(f, fmr_f), "m": group(m, 0.01)}}}}  # fmt: skip


def test_the_fairness_table_keeps_women_and_men_apart_with_their_intervals():
    table, rows = summarise({"erm": _report(0.10, 0.12, 0.08, 0.2, True),
                             "heldout_adaptive": _report(0.09, 0.10, 0.08, 0.1, False)})  # fmt: skip
    assert rows["erm"]["eer_f"] == 0.12 and rows["erm"]["eer_m"] == 0.08
    assert rows["heldout_adaptive"]["global_eer"]["fmr_f"] == 0.1
    lines = table.splitlines()
    assert len(lines) == 2 + 2 * 2  # header, rule, two thresholds per method
    erm_eer = next(line for line in lines if line.startswith("| erm |") and "global EER" in line)
    cells = [c.strip() for c in erm_eer.split("|")[1:-1]]
    assert cells[2] == "12.00 [11.00, 13.00]" and cells[3] == "8.00 [7.00, 9.00]"
    assert cells[5] == "20.00 [10.00, 40.00]" and cells[6] == "1.00 [0.50, 2.00]"
    other = next(line for line in lines if line.startswith("| heldout_adaptive |"))
    assert [c.strip() for c in other.split("|")[1:-1]][5] == "10.00"  # no interval given
    with pytest.raises(KeyError):
        summarise({"x": {"overall": {"eer": 0.1}, "groups": {}}})

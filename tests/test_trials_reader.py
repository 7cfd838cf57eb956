"""The fast score-file reader gives exactly what the line-by-line parser gives, or leaves the
file to it: same trials, same float64 bits, same errors."""

from __future__ import annotations

import numpy as np
import pytest

from arw_sv.data import trials as trials_io
from arw_sv.data.trials import Trials, TrialsError, read_scores, read_trials, write_scores


def _line_by_line(monkeypatch):
    monkeypatch.setattr(trials_io, "_regular_columns", lambda data, n_fields: None)


def _outcome(reader, path):
    try:
        got = reader(path)
    except TrialsError as err:
        return ("error", str(err))
    if isinstance(got, Trials):
        return (got.labels.dtype.str, got.labels.tolist(), got.enroll, got.test)
    trials, scores = got
    return (trials.labels.tolist(), trials.enroll, trials.test, scores.view(np.int64).tolist())


def test_written_scores_take_the_fast_path_and_round_trip(tmp_path, rng, monkeypatch):
    n = 500
    ids = [f"id{rng.integers(10000, 10100)}/v{k % 7:04d}/{k:05d}.wav" for k in range(n)]
    labels = rng.integers(0, 2, n).astype(np.int8)
    # Pair k is pair n-1-k reversed: one label for both (a pair labelled both ways is refused).
    trials = Trials(np.minimum(labels, labels[::-1]), ids, ids[::-1])
    scores = rng.normal(size=n) * 10.0 ** rng.integers(-8, 3, n)
    path = tmp_path / "scores.txt"
    write_scores(path, trials, scores)
    calls = []
    monkeypatch.setattr(trials_io, "_read_lines", lambda *a: calls.append(a) or [])
    back, values = read_scores(path)
    assert calls == []  # never fell back to the line-by-line parser
    assert back.enroll == trials.enroll and back.test == trials.test
    assert back.labels.dtype == np.int8 and np.array_equal(back.labels, trials.labels)
    assert np.array_equal(values.view(np.int64), scores.view(np.int64))


@pytest.mark.parametrize(
    "text",
    [
        "1 a/x b/y 0.5\n0 a/x c/z -0.25",  # no final newline
        "\ufeff1 a/x b/y 0.5\n0 a/x c/z 1e-3\n",  # byte-order mark
        "1 a/x b/y 0.5\r\n0 a/x c/z -0.25\r\n",  # CRLF
        "1 a/x b/y 0.5\n\n0 a/x c/z -0.25\n",  # blank line
        "1  a/x b/y 0.5\n0\ta/x c/z -0.25\n",  # repeated space, tab
        " 1 a/x b/y 0.5 \n",  # leading and trailing space
        "1 a/x b/y 0.5\n0 a/x c/z\n",  # a short line
        "1 a/x b/y 0.5 7\n0 a/x c/z 0.1\n",  # a long line...
        "1 a/x b/y 0.5 7\n0 a/x 0.1\n",  # ...and a short one: right total, wrong lines
        "2 a/x b/y 0.5\n",  # bad label
        "10 a/x b/y 0.5\n",  # two-character label
        "1 a/x b/y nan\n",  # not finite
        "1 a/x b/y x\n",  # not a number
        "1 a/x b/y 1_0\n",  # what float() accepts
        "1 é/x b/y 0.5\n",  # not ASCII
        "1 a/x\x0bb/y 0.5\n",  # a line break str.splitlines knows
        "",
        "\n",
    ],
)
def test_fast_reader_agrees_with_the_line_parser(tmp_path, monkeypatch, text):
    path = tmp_path / "f.txt"
    path.write_bytes(text.encode())
    fast = (_outcome(read_scores, path), _outcome(read_trials, path))
    _line_by_line(monkeypatch)
    assert fast == (_outcome(read_scores, path), _outcome(read_trials, path))


def test_fast_reader_agrees_on_random_files(tmp_path, monkeypatch, rng):
    pieces = ["1", "0", "a/b", "c/d", "0.5", "-1e-3", " ", " ", "\n", "\n", "\t", "\r\n", "x"]
    files = []
    for i in range(400):
        if i % 2:  # well-formed lines, some with a wrong number of fields
            lines = [
                " ".join(
                    [str(rng.integers(0, 2)), "a/x", "b/y"] + ["0.25"] * int(rng.integers(0, 3))
                )
                for _ in range(rng.integers(1, 5))
            ]
            text = "\n".join(lines) + ("\n" if rng.random() < 0.5 else "")
        else:
            text = "".join(rng.choice(pieces, size=rng.integers(0, 20)))
        path = tmp_path / f"{i}.txt"
        path.write_text(text)
        files.append(path)
    fast = [(_outcome(read_scores, p), _outcome(read_trials, p)) for p in files]
    _line_by_line(monkeypatch)
    slow = [(_outcome(read_scores, p), _outcome(read_trials, p)) for p in files]
    assert fast == slow
    assert sum(f[0][0] != "error" for f in fast) > 20  # some parse, not only errors


# ---- speaker indices of trial sides (arw_sv.evaluate) --------------------------------------


def _random_ids(rng, n: int, speakers: list[str]) -> list[str]:
    tails = ["/v1/00001.wav", "/x/y/2.wav", "", "/"]
    return [
        str(speakers[i]) + tails[j]
        for i, j in zip(rng.integers(0, len(speakers), n), rng.integers(0, 4, n), strict=True)
    ]


@pytest.mark.parametrize(
    "speakers",
    [
        [f"id{k:05d}" for k in range(300)],  # VoxCeleb's 7 bytes: the packed path
        ["a", "ab", "abc", "12345678", "", "1234567", "b"],  # 0 to 8 bytes, and "" ('/x')
        ["speaker_0001", "s2"],  # longer than 8 bytes: the dict path
        ["spéaker", "x"],  # not ASCII: the dict path
        ["a b", "a\tb", "c\r"],  # whitespace inside is still a speaker
    ],
)
def test_speaker_indices_equal_the_dict_reference(rng, speakers):
    from arw_sv.evaluate import _packed_speakers, _speaker_indices_by_dict, speaker_indices

    enroll, test = _random_ids(rng, 700, speakers), _random_ids(rng, 500, speakers[::-1])
    got = speaker_indices(enroll, test)
    want = _speaker_indices_by_dict(enroll, test)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert got[2] == want[2]
    assert [got[2][i] for i in got[0]] == [u.partition("/")[0] for u in enroll]
    fits = all(len(s) <= 8 and s.isascii() for s in speakers)
    assert (_packed_speakers([enroll, test]) is not None) == fits


@pytest.mark.parametrize(
    "enroll,test",
    [
        ([], []),
        (["a/1"], []),
        ([], ["b/1", "a/2", "b/3"]),
        (["x\ny/1", "x/2"], ["x/3"]),  # a newline inside an id: the dict path
        (["\0a/1", "a/1"], ["a/2"]),  # a NUL would alias "a": the dict path
    ],
)
def test_speaker_indices_edge_cases(enroll, test):
    from arw_sv.evaluate import _speaker_indices_by_dict, speaker_indices

    got, want = speaker_indices(enroll, test), _speaker_indices_by_dict(enroll, test)
    assert [g.tolist() for g in got[:2]] == [w.tolist() for w in want[:2]]
    assert got[2] == want[2]

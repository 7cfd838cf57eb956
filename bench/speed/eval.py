"""End-to-end speed of ``arw-sv eval --scores`` and of the CLI's start-up (a benchmark, not a test).

Writes the VoxCeleb1-H-shaped score file of ``bench/speed/metrics.py`` (550,894 trials), then
times, each as a fresh ``python`` subprocess and interleaved so that machine load hits all
alike, ``--repeat`` times (median and minimum reported):

- ``arw-sv eval --scores FILE --meta vox1_meta.csv --out DIR`` with and without ``--no-plots``;
- ``arw-sv --help``, ``arw-sv eval --help`` and ``python -c "import arw_sv.evaluate"``;

and, in this process, the score-file reader against the line-by-line parser it falls back
to on irregular files (the reader of earlier versions), checking both give the same bits.

With ``--baseline DIR`` (an older checkout, e.g. ``git archive 3d4f4e4 | tar -x -C DIR``)
every command also runs from there, side by side, and the two ``report.json`` files are
compared byte for byte.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.speed.eval [--baseline DIR] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from arw_sv.data import trials as trials_io
from bench.speed.metrics import META, synthesise

ROOT = Path(__file__).resolve().parents[2]


def write_score_file(path: Path, meta: Path) -> None:
    trials, ids, matrix, _ = synthesise(meta)
    scored = trials_io.score_trial_list(trials, (ids, matrix))
    trials_io.write_scores(path, scored.trials, scored.scores)


def reader_speed(path: Path, repeat: int) -> tuple[list[float], list[float]]:
    """Seconds of ``read_scores`` (fast path) and of the line-by-line parser, interleaved."""
    fast, lines = [], []
    regular = trials_io._regular_columns
    for _ in range(repeat):
        t0 = time.perf_counter()
        a, sa = trials_io.read_scores(path)
        fast.append(time.perf_counter() - t0)
        trials_io._regular_columns = lambda data, n_fields: None  # force the old parser
        try:
            t0 = time.perf_counter()
            b, sb = trials_io.read_scores(path)
            lines.append(time.perf_counter() - t0)
        finally:
            trials_io._regular_columns = regular
        same = (
            a.enroll == b.enroll
            and a.test == b.test
            and np.array_equal(a.labels, b.labels)
            and np.array_equal(sa.view(np.int64), sb.view(np.int64))
        )
        if not same:
            raise SystemExit("the fast reader and the line-by-line parser disagree")
    return fast, lines


def timed_run(cmd: list[str], pythonpath: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``cmd``.

    CPU time is what the command itself used, so it moves less than wall time when other
    jobs share the machine (it still grows with cache and memory contention).
    """
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=pythonpath)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _without_new_keys(now: bytes, old: bytes) -> bytes:
    """``now`` without the entries the baseline's report does not have yet (e.g.
    ``inputs.duplicate_trials``, ``cllr``), at any depth, re-serialised as ``write_report``
    does; unchanged when there are none. What both have must still be identical.
    """
    import json

    def prune(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: prune(v, b[k]) for k, v in a.items() if k in b}
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return [prune(x, y) for x, y in zip(a, b, strict=True)]
        return a

    new, base = json.loads(now), json.loads(old)
    pruned = prune(new, base)
    if pruned == new:
        return now
    return (json.dumps(pruned, indent=1, allow_nan=False) + "\n").encode()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--meta", type=Path, default=META)
    parser.add_argument("--scores", type=Path, help="reuse this score file instead of writing one")
    parser.add_argument("--baseline", type=Path, help="an older checkout to compare against")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scores = args.scores
        if scores is None:
            scores = tmp / "scores.txt"
            write_score_file(scores, args.meta)
        size = scores.stat().st_size / 1e6
        py = sys.executable
        cli = [py, "-m", "arw_sv.cli"]
        commands = {
            "eval --scores, no plots": cli
            + ["eval", "--scores", str(scores), "--meta", str(args.meta), "--no-plots"],
            "eval --scores, with plots": cli
            + ["eval", "--scores", str(scores), "--meta", str(args.meta)],
            "arw-sv --help": cli + ["--help"],
            "arw-sv eval --help": cli + ["eval", "--help"],
            "import arw_sv.evaluate": [py, "-c", "import arw_sv.evaluate"],
        }
        trees = {"now": ROOT}
        if args.baseline is not None:
            trees["baseline"] = args.baseline.resolve()
        times: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for i in range(args.repeat):
            for what, cmd in commands.items():
                for tree, path in trees.items():
                    run = cmd
                    if what.startswith("eval --scores"):
                        run = cmd + ["--out", str(tmp / f"{tree}_{i}_{what[15:]}")]
                    wall, used = timed_run(run, path)
                    times.setdefault((what, tree), []).append(wall)
                    cpu.setdefault((what, tree), []).append(used)
        fast, lines = reader_speed(scores, args.repeat)
        if args.baseline is not None:
            for what in ("no plots", "with plots"):
                now = (tmp / f"now_0_{what}" / "report.json").read_bytes()
                old = (tmp / f"baseline_0_{what}" / "report.json").read_bytes()
                now = _without_new_keys(now, old)
                print(f"report.json ({what}) identical to the baseline's: {now == old}")
                if now != old:
                    raise SystemExit("report.json differs from the baseline's")

    def cell(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} / {min(values):.2f}"

    print(
        f"\n{size:.1f} MB score file, {args.repeat} runs each, seconds as median / min, "
        f"wall and CPU (user + system) (machine load varies: compare within a row)\n"
    )
    header = ["what", *trees, *(f"{tree}: CPU s" for tree in trees)]
    header += ["speed-up (median)"] if len(trees) > 1 else []
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for what in commands:
        row = [what] + [cell(times[(what, tree)]) for tree in trees]
        row += [cell(cpu[(what, tree)]) for tree in trees]
        if len(trees) > 1:
            ratio = statistics.median(times[(what, "baseline")]) / statistics.median(
                times[(what, "now")]
            )
            row.append(f"{ratio:.1f}x")
        print("| " + " | ".join(row) + " |")
    ratio = statistics.median(lines) / statistics.median(fast)
    print(
        f"| read_scores in-process: fast reader / line-by-line parser | "
        f"{cell(fast)} | {cell(lines)} |  |  | {ratio:.1f}x |"
        if len(trees) > 1
        else f"| read_scores: fast {cell(fast)}, line-by-line {cell(lines)} ({ratio:.1f}x) |"
    )


if __name__ == "__main__":
    main()

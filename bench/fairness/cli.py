"""``python -m bench.fairness``: ERM vs ARW (APS, PL, PW) and group-balanced ERM, over seeds.

Stages, each skipped when its output is complete (so the benchmark resumes after an
interruption, and a finished run is never trained twice):

1. the synthetic corpus with a planted disparity (``bench`` preset: an under-represented
   nationality with a smaller identity spread);
2. manifests (dev for training, test for evaluation);
3. per (method, seed), in ``--jobs`` parallel processes of ``--threads`` torch threads:
   train (``fit(resume=True)``) -> embed the test set -> score the trials -> evaluate
   (EER, minDCF, per gender / nationality, disparity, optional speaker bootstrap) ->
   "what the adversary learned" (:mod:`bench.fairness.analysis`) -> ``result.json``;
4. aggregate: ``results.json``, ``results.md`` and plots (:mod:`bench.fairness.summary`).

Layout of ``--out``: ``corpus/``, ``manifests/``, ``runs/<method>/seed<k>/`` (``train/``,
``embeddings_test.npz``, ``scores.txt``, ``report/``, ``result.json``), ``results.*``,
``*.png``.

Methods are shipped configs that differ only where they must: the ARW ones only in the
``adversary`` section, ``erm_balanced`` only in ``data.sampling``. ``--variant`` adds a
method as a base method plus overrides, for tuning investigations.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

from bench.fairness.runs import RunTask, prepare_data, run_one

#: method name -> benchmark config (bench/conf/<name>.yaml)
METHODS: dict[str, str] = {
    "erm": "bench_erm",
    "erm_balanced": "bench_erm_balanced",
    "arw_aps": "bench_arw_aps",
    "arw_pl": "bench_arw_pl",
    "arw_pw": "bench_arw_pw",
}


def _progress_line(tasks: list[RunTask], pending: set, started: float) -> str:
    parts = []
    for task in tasks:
        if (task.method, task.seed) not in pending:
            continue
        history = Path(task.run_dir) / "train" / "history.jsonl"
        step = "queued"
        if history.is_file():
            lines = history.read_text().strip().splitlines()
            step = f"step {json.loads(lines[-1])['step']}" if lines else "started"
        parts.append(f"{task.method}/s{task.seed}: {step}")
    return f"[{time.perf_counter() - started:6.0f} s] " + "; ".join(parts)


def run_benchmark(
    out: str | Path,
    *,
    methods: dict[str, tuple[str, tuple[str, ...]]],
    seeds: list[int],
    jobs: int = 2,
    threads: int = 1,
    synth_preset: str = "bench",
    synth_overrides: list[str] = (),
    overrides: tuple[str, ...] = (),
    bootstrap: int = 0,
    analysis_utterances: int = 1500,
    workers: int = 2,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Run (or finish) the whole benchmark into ``out`` and return ``results.json``'s dict.

    Args:
        out: output folder.
        methods: name -> (shipped config, extra overrides of that method).
        seeds: training seeds (the corpus is the same for all).
        jobs: runs trained at the same time (processes).
        threads: torch threads per process (1 when ``jobs`` saturates the cores).
        synth_preset, synth_overrides: the corpus.
        overrides: training overrides applied to every method (e.g. ``train.steps=400``).
        bootstrap: speaker resamples for confidence intervals in each run's evaluation.
        analysis_utterances: training utterances for the adversary analysis.
        workers: corpus generation processes.
        progress: print progress.
        command: the command line, recorded in the results.
    """
    from bench.fairness.summary import write_results

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = prepare_data(out, synth_preset, list(synth_overrides), workers, progress)
    tasks = [
        RunTask(
            method=name,
            config=config,
            seed=seed,
            run_dir=str(out / "runs" / name / f"seed{seed}"),
            overrides=(*overrides, *extra),
            threads=threads,
            bootstrap=bootstrap,
            analysis_utterances=analysis_utterances,
            **paths,
        )
        for seed in seeds
        for name, (config, extra) in methods.items()
    ]
    setup = {
        "command": command,
        "synth_preset": synth_preset,
        "synth_overrides": list(synth_overrides),
        "overrides": list(overrides),
        "methods": {name: {"config": c, "overrides": list(e)} for name, (c, e) in methods.items()},
        "seeds": seeds,
        "jobs": jobs,
        "threads": threads,
        "bootstrap": bootstrap,
        "analysis_utterances": analysis_utterances,
        "tasks": [asdict(t) for t in tasks],
    }
    results: list[dict] = []
    started = time.perf_counter()
    if jobs <= 1:
        for task in tasks:
            print(f"run {task.method} seed {task.seed}", flush=True)
            results.append(run_one(task))
            write_results(out, setup, results)
    else:
        # spawn: the parent may hold torch threads; each worker sets its own thread count.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            futures = {pool.submit(run_one, task): task for task in tasks}
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=60, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = futures[future]
                    try:
                        results.append(future.result())
                        print(f"finished {task.method} seed {task.seed}", flush=True)
                    except Exception as exc:  # one failed run must not stop the others
                        results.append({"method": task.method, "seed": task.seed,
                                        "error": f"{type(exc).__name__}: {exc}"})  # fmt: skip
                        print(f"FAILED {task.method} seed {task.seed}: {exc}", flush=True)
                    write_results(out, setup, results)
                if progress and pending:
                    keys = {(futures[f].method, futures[f].seed) for f in pending}
                    print(_progress_line(tasks, keys, started), flush=True)
    return write_results(out, setup, results)


def parse_methods(names: list[str], variants: list[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``--methods`` and ``--variant NAME=BASE:key=value;key=value`` into name -> (config,
    overrides)."""
    methods: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        methods[name] = (METHODS[name], ())
    for spec in variants:
        name, sep, rest = spec.partition("=")
        base, sep2, extra = rest.partition(":")
        if not sep or not sep2 or base not in METHODS or not name:
            raise ValueError(f"--variant {spec!r}: expected NAME=BASE:key=value;key=value")
        methods[name] = (METHODS[base], tuple(x.strip() for x in extra.split(";") if x.strip()))
    return methods


def variants(specs: list[str], table: dict) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``--variant NAME=BASE:key=value;key=value`` over a protocol's method ``table``: the
    base method's config and overrides plus the variant's."""
    extra = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        base, sep, more = rest.partition(":")
        if not sep or base not in table:
            raise ValueError(f"--variant {spec!r}: expected NAME=BASE:key=value;key=value")
        config, base_extra = table[base]
        extra[name] = (config, (*base_extra, *(x.strip() for x in more.split(";") if x.strip())))
    return extra


def finetune_protocol(args: argparse.Namespace):
    """The :class:`~bench.fairness.finetune.Protocol` that ``--protocol finetune`` args ask for."""
    import dataclasses

    from bench.fairness.finetune import FINETUNE_METHODS, FULL, QUICK

    protocol = QUICK if args.quick else FULL
    changes: dict = {}
    for key in ("mechanisms", "val_corpus", "test_corpora", "pretrain_steps", "finetune_steps"):
        value = getattr(args, key)
        if value is not None:
            changes[key] = tuple(value) if isinstance(value, list) else value
    if args.methods is not None:
        changes["methods"] = tuple(args.methods)
    if args.seeds is not None:
        changes["seeds"] = tuple(args.seeds)
    if args.val_seeds is not None:
        changes["val_seeds"] = tuple(args.val_seeds)
    if args.pretrain_per_seed:
        changes["shared_pretrain"] = False
    if args.no_gate:
        changes["gate"] = False
    if args.curve_points is not None:
        changes["curve_points"] = args.curve_points
    changes["extra"] = variants(args.variant, FINETUNE_METHODS)
    if args.test_corpora is not None or args.val_corpus is not None:
        changes["primary"] = ()  # corpora asked for by name: every mechanism gets them
    changes["synth_overrides"] = (*protocol.synth_overrides, *args.synth)
    changes["overrides"] = (*protocol.overrides, *args.overrides)
    changes["bootstrap"] = args.bootstrap if args.bootstrap is not None else protocol.bootstrap
    return dataclasses.replace(protocol, **changes)


def _run_finetune_cli(args: argparse.Namespace, command: str) -> int:
    from bench.fairness.finetune import run_finetune_benchmark

    summary = run_finetune_benchmark(
        args.out,
        finetune_protocol(args),
        jobs=args.jobs,
        threads=args.threads,
        workers=args.workers,
        progress=not args.quiet,
        command=command,
    )
    for mechanism in summary:
        print(f"== {mechanism} (held-out corpora) ==")
        print((Path(args.out) / mechanism / "heldout" / "results.md").read_text())
    print("== every method x mechanism (overview.md, overview.png) ==")
    print((Path(args.out) / "overview.md").read_text())
    return 0


def scratch_protocol(args: argparse.Namespace):
    """The :class:`~bench.fairness.scratch.ScratchProtocol` that ``--protocol scratch --mechanisms``
    args ask for."""
    import dataclasses

    from bench.fairness.scratch import SCRATCH_METHODS, ScratchProtocol

    protocol = ScratchProtocol()
    changes: dict = {"mechanisms": tuple(args.mechanisms)}
    for key, name in (
        ("val_corpora", "val_corpora"),
        ("test_corpora", "test_corpora"),
        ("seeds", "seeds"),
        ("val_seeds", "val_seeds"),
        ("methods", "methods"),
    ):
        value = getattr(args, name)
        if value is not None:
            changes[key] = tuple(value)
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.early_step is not None:
        changes["early_step"] = args.early_step
    if args.bootstrap is not None:
        changes["bootstrap"] = args.bootstrap
    changes["extra"] = variants(args.variant, SCRATCH_METHODS)
    changes["gate"] = not args.no_gate
    changes["skip_validation"] = args.skip_validation
    changes["synth_overrides"] = (*protocol.synth_overrides, *args.synth)
    changes["overrides"] = (*protocol.overrides, *args.overrides)
    return dataclasses.replace(protocol, **changes)  # fmt: skip


def _run_scratch_cli(args: argparse.Namespace, command: str) -> int:
    from bench.fairness.scratch import run_scratch_benchmark

    summary = run_scratch_benchmark(args.out, scratch_protocol(args), jobs=args.jobs,
                                    threads=args.threads, workers=args.workers,
                                    progress=not args.quiet, command=command)  # fmt: skip
    for mechanism in summary:
        print(f"== {mechanism} (held-out corpora) ==")
        print((Path(args.out) / mechanism / "heldout" / "results.md").read_text())
    return 0


def _run_cli(args: argparse.Namespace) -> int:
    from bench.fairness.summary import load_results, write_results

    command = " ".join(shlex.quote(a) for a in [os.path.basename(sys.argv[0]), *sys.argv[1:]])
    if args.protocol == "finetune":
        return _run_finetune_cli(args, command)
    if args.mechanisms is not None:
        return _run_scratch_cli(args, command)
    if args.bootstrap is None:
        args.bootstrap = 200
    if args.methods is None:
        args.methods = list(METHODS)
    if args.seeds is None:
        args.seeds = [0, 1, 2]
    out = Path(args.out)
    if args.aggregate_only:
        setup, results = load_results(out)
        write_results(out, setup, results)
        print(f"wrote {out / 'results.md'}")
        return 0
    run_benchmark(
        out,
        methods=parse_methods(args.methods, args.variant),
        seeds=args.seeds,
        jobs=args.jobs,
        threads=args.threads,
        synth_preset=args.synth_preset,
        synth_overrides=args.synth,
        overrides=tuple(args.overrides),
        bootstrap=args.bootstrap,
        analysis_utterances=args.analysis_utterances,
        workers=args.workers,
        progress=not args.quiet,
        command=command,
    )
    print((out / "results.md").read_text())
    return 0


def add_fairness_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/bench_fairness", help="output folder")
    p.add_argument(
        "--protocol",
        choices=("scratch", "finetune"),
        default="scratch",
        help="scratch: every method trains from scratch (with --mechanisms: the gated "
        "protocol of bench/fairness/scratch.py; without: the original 600-step benchmark on the bench "
        "preset); finetune: ERM pre-trains once per (corpus, seed), every method fine-tunes "
        "from it (docs/benchmark.md)",
    )
    p.add_argument("--val-corpora", type=int, nargs="*", default=None,
                   help="scratch: validation corpus seeds (default 100 101)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="scratch: the training budget (1800)")
    p.add_argument("--early-step", type=int, default=None,
                   help="scratch: the ERM checkpoint the early methods start from (300)")  # fmt: skip
    p.add_argument("--skip-validation", action="store_true",
                   help="scratch: held-out corpora only (the validation choice is made)")  # fmt: skip
    p.add_argument("--quick", action="store_true",
                   help="finetune: tiny corpus and budget, <= ~15 min on 2 cores")  # fmt: skip
    p.add_argument("--mechanisms", nargs="+", default=None,
                   help="disparity presets bench_<mechanism> (crowding underrep acoustics "
                   "gender representation); scratch: selects the gated protocol")  # fmt: skip
    p.add_argument("--val-corpus", type=int, default=None, help="finetune: validation corpus seed")
    p.add_argument("--test-corpora", type=int, nargs="*", default=None,
                   help="finetune: held-out corpus seeds (reported; none: the validation "
                   "corpus only). Default: 0 1 for crowding and acoustics, 0 for the others "
                   "(no validation corpus either); given, or with --val-corpus, every "
                   "mechanism gets these")  # fmt: skip
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None)
    p.add_argument("--val-seeds", type=int, nargs="*", default=None,
                   help="finetune: training seeds on the validation corpus (default 0; none: "
                   "skip the validation corpus, e.g. once its choice is made)")  # fmt: skip
    p.add_argument("--curve-points", type=int, default=None,
                   help="finetune: learning-curve points of the ERM pre-training")  # fmt: skip
    p.add_argument("--pretrain-per-seed", action="store_true",
                   help="finetune: one ERM pre-training per training seed (default: one per "
                   "corpus, fine-tuned with every seed)")  # fmt: skip
    p.add_argument("--no-gate", action="store_true",
                   help="finetune: run every method and corpus of a mechanism with a headroom "
                   "gate (representation) even when the oracle gains too little on the "
                   "validation corpus (bench/fairness/finetune.py: HEADROOM_GATE)")  # fmt: skip
    p.add_argument("--methods", nargs="+", default=None, help="methods to run")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BASE:K=V;K=V",
        help="an extra method: a base method plus overrides, e.g. "
        "'arw_pw_lr10=arw_pw:adversary.lr=0.1' (repeatable)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds (default 0 1 2; finetune --quick 0)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=2, help="runs trained in parallel")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--synth-preset", default="bench")
    p.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE",
                   help="synthetic corpus override (repeatable)")  # fmt: skip
    p.add_argument("--bootstrap", type=int, default=None,
                   help="speaker resamples per run (scratch default 200, finetune 0)")  # fmt: skip
    p.add_argument("--analysis-utterances", type=int, default=1500)
    p.add_argument("--workers", type=int, default=2, help="corpus generation processes")
    p.add_argument("--aggregate-only", action="store_true",
                   help="only rebuild results.* from the finished runs")  # fmt: skip
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", help="training overrides for every method")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.fairness``."""
    parser = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_fairness_arguments(parser)
    return _run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

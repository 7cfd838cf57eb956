"""``python -m bench.fairness --protocol finetune``: every method fine-tunes one ERM model.

Reweighting is meant to act on a model that already fits its training data, not during
pre-training. Per disparity mechanism (a ``bench_<mechanism>`` synth preset), per corpus
seed (one validation corpus for choosing hyper-parameters, held-out ones for reporting) and
per training seed:

1. the corpus and its manifests (reused by every method);
2. ERM pre-training for ``pretrain_steps`` (``erm_pretrain/``), stopped at a few points of
   its schedule to log the learning curve (training loss, EER on the corpus's test trials)
   in ``pretrain_curve.json``;
3. every method fine-tunes from that checkpoint for the same ``finetune_steps``
   (``train.init_checkpoint``; ERM simply continues), with the margin already at its final
   value, no adversary warm-up, and a fresh optimizer;
4. per corpus ``results.*`` (paired differences over training seeds), and per mechanism
   ``heldout/results.*`` pooling the held-out corpora (a run's "seed" there is
   ``1000 * corpus seed + training seed``).

Each stage is skipped when its output is complete. A method whose shipped config does not
exist (yet) is skipped with a message.

Layout: ``<out>/<mechanism>/corpus<c>/{corpus,manifests,seed<k>/erm_pretrain,runs/<method>/
seed<k>,results.*}`` and ``<out>/<mechanism>/heldout/results.*``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text
from bench.fairness.criterion import BASELINE, ORACLE

#: Harder in-batch pairs (issue 20) at the same batch size (32 crops): 8 speakers x 4 crops
#: from 2 of the `data.n_cohorts` k-means cohorts (label-free hard negatives), and a margin
#: in the pair loss.
HARD_PAIRS = (
    "data.sampling=cohort_batches",
    "data.cohorts_per_batch=2",
    "data.speakers_per_batch=8",
    "data.utterances_per_speaker=4",
    "loss.pair_margin=0.2",
)

#: method -> (shipped config, extra overrides)
FINETUNE_METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "erm": ("bench_erm", ()),
    "erm_balanced": ("bench_erm_balanced", ()),
    "arw_pw": ("bench_arw_pw", ()),
    "arw_pw_paironly": ("bench_arw_pw", ("adversary.weight_aam=false",)),
    "arw_pw_linear_cap": ("bench_arw_pw_linear_cap", ()),
    "cohort_oversample": ("bench_cohort_oversample", ()),
    "jtt": ("bench_jtt", ()),
    "groupdro": ("bench_groupdro", ()),
    # Held-out cohort discovery (Dheram et al.): cohorts ranked by EER on the corpus's
    # held-out speakers (its cal split, bench.fairness.runs.HELDOUT), nearest training speakers
    # oversampled as cohort_oversample does.
    "cohort_heldout": (
        "bench_cohort_oversample",
        ("data.sampling=cohort_heldout", "data.heldout_manifest=@heldout"),
    ),
    # Harder in-batch pairs, with ERM and with ARW-PW.
    "erm_hard": ("bench_erm", HARD_PAIRS),
    "arw_pw_hard": ("bench_arw_pw", HARD_PAIRS),
}

MECHANISMS = ("crowding", "underrep", "acoustics", "gender", "representation")

#: Issue 20's rule, per mechanism: before any label-free run, the label oracle must lower
#: the worst group's EER by at least this share (relative, against ERM continued, mean over
#: the validation seeds) on the validation corpus; otherwise only ERM and the oracle run
#: there and the held-out corpora are skipped (`Protocol.gate`; `--no-gate` runs them).
HEADROOM_GATE = {"representation": 0.25}
GATE_METHODS = (BASELINE, ORACLE)


@dataclass(frozen=True)
class Protocol:
    """The budget of one fine-tuning benchmark (see docs/benchmark.md)."""

    mechanisms: tuple[str, ...] = MECHANISMS
    val_corpus: int = 100
    test_corpora: tuple[int, ...] = (0, 1)
    seeds: tuple[int, ...] = (0, 1, 2)
    #: Training seeds on the validation corpus (choosing settings; the first one only by
    #: default, which is what the held-out seeds are spent on instead).
    val_seeds: tuple[int, ...] = (0,)
    #: True: one ERM pre-training per corpus (with the first training seed), fine-tuned with
    #: every seed, so seeds vary the fine-tuning only; False: one pre-training per seed.
    shared_pretrain: bool = True
    pretrain_steps: int = 3000
    finetune_steps: int = 300
    finetune_lr: float = 0.0005
    curve_points: int = 5
    synth_overrides: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()  # every run (pre-training and fine-tuning)
    bootstrap: int = 0
    analysis_utterances: int = 500
    methods: tuple[str, ...] = tuple(FINETUNE_METHODS)
    extra: dict = field(default_factory=dict)  # variant name -> (config, overrides)
    #: The mechanisms of the success criterion: a validation corpus and every held-out
    #: corpus. The others get the first held-out corpus only and no validation corpus (they
    #: take the settings chosen on these); empty: every mechanism gets every corpus.
    primary: tuple[str, ...] = ("crowding", "acoustics", "representation")
    gate: bool = True  # apply HEADROOM_GATE

    def corpora(self, mechanism: str) -> list[tuple[int, bool]]:
        """``(corpus seed, is validation)`` for each corpus ``mechanism`` is run on."""
        if self.primary and mechanism not in self.primary:
            return [(c, False) for c in self.test_corpora[:1]]
        validation = [(self.val_corpus, True)] if self.val_seeds else []
        return validation + [(c, False) for c in self.test_corpora]


#: Full mode: about 3 h (second machine) to 6 h (first) of the 2-core machine (measured per
#: stage in docs/benchmark.md).
#: Narrower model, shorter crops, half the test speakers of `bench`. Held-out corpora 0 and 1
#: and validation corpus 100 for crowding and acoustics, corpus 0 for the other two.
FULL = Protocol(
    synth_overrides=("test_speakers_per_cell=50",),
    overrides=("model.channels=[96,96,96,96,288]", "data.crop_seconds=1.5"),
)

#: Quick mode: at most ~15 min on 2 cores, for iterating on the pipeline (numbers are noise).
QUICK = Protocol(
    mechanisms=("crowding", "acoustics"),
    val_corpus=100,
    test_corpora=(0,),
    seeds=(0,),
    pretrain_steps=150,
    finetune_steps=30,
    curve_points=3,
    synth_overrides=(
        "num_dev_speakers=48",
        "test_speakers_per_cell=6",
        "dev_sessions=2",
        "dev_utterances_per_session=4",
        "test_sessions=2",
        "test_utterances_per_session=2",
        "min_duration_s=1.5",
        "max_duration_s=2.5",
        "target_trials_per_speaker=6",
        "nontarget_cell_trials_per_speaker=6",
        "nontarget_cross_trials_per_speaker=2",
    ),
    overrides=(
        "model.preset=tiny",
        "model.channels=[]",
        "data.crop_seconds=1.0",
        "data.speakers_per_batch=8",
        # The margin reaches its final value within pre-training (bench_erm: steps 100-300).
        "loss.margin_warmup_start=20",
        "loss.margin_warmup_steps=60",
        "train.warmup_steps=20",
        "train.log_every=10",
        "train.checkpoint_every=20",
        "adversary.n_clusters=4",
        "adversary.cluster_refresh_steps=20",
        "data.n_cohorts=4",
        "data.cohort_oversample_top=1",
    ),
    analysis_utterances=64,
)


def available_methods(
    names: tuple[str, ...], extra: dict, table: dict | None = None
) -> dict[str, tuple[str, tuple]]:
    """The methods (of ``table``, default the fine-tuning ones, and ``extra``) whose shipped
    config exists; a missing one is skipped with a message."""
    from bench.common import config_path

    table = {**(FINETUNE_METHODS if table is None else table), **extra}
    out = {}
    for name in (*names, *[n for n in extra if n not in names]):
        if name not in table:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(table)}")
        config, overrides = table[name]
        try:
            config_path(config)
        except FileNotFoundError:
            print(f"skipping {name}: no shipped config {config}.yaml (not added yet)", flush=True)
            continue
        out[name] = (config, tuple(overrides))
    return out


#: The attribute the label oracle balances on, per mechanism: the planted group's.
ORACLE_KEY = {"gender": "gender"}


def mechanism_overrides(config: str, mechanism: str) -> tuple[str, ...]:
    """What a method needs on a mechanism: the label oracle (group-balanced sampling)
    balances the attribute the mechanism plants its disparity on (nationality, or gender
    for ``gender``, whose nationalities are balanced already)."""
    key = ORACLE_KEY.get(mechanism)
    if key is None or config != FINETUNE_METHODS["erm_balanced"][0]:
        return ()
    return (f"data.balance_key={key}",)


def _finetune_overrides(protocol: Protocol, init: Path) -> tuple[str, ...]:
    from arw_sv.finetune import finetune_overrides

    return (
        *protocol.overrides,
        *finetune_overrides(init, protocol.finetune_steps, protocol.finetune_lr),
    )


def _eer(checkpoint: Path, paths: dict[str, str], out_npz: Path) -> float:
    from arw_sv.data.manifest import read_manifest
    from arw_sv.data.trials import read_embeddings, read_trials, score_trials
    from arw_sv.inference import embed_utterances
    from arw_sv.metrics.rates import eer

    test = read_manifest(paths["test_manifest"]).subset("test")
    if not out_npz.is_file():
        ids, wavs = [u.utt_id for u in test], [u.path for u in test]
        embed_utterances(checkpoint, ids, wavs, out_npz, progress=False)
    trials = read_trials(paths["trials"])
    scores = np.asarray(score_trials(trials, read_embeddings(out_npz)))
    return float(eer(scores, np.asarray(trials.labels))[0])


def pretrain(folder: Path, paths: dict[str, str], seed: int, protocol: Protocol, threads: int):
    """ERM pre-training with its learning curve; returns the final checkpoint (resumable)."""
    import torch

    from arw_sv.config import load_config
    from arw_sv.train.loop import fit
    from bench.common import config_path

    curve_path = folder / "pretrain_curve.json"
    if curve_path.is_file():
        done = json.loads(curve_path.read_text())
        if done.get("pretrain_steps", protocol.pretrain_steps) != protocol.pretrain_steps:
            raise ValueError(
                f"{curve_path}: pre-trained for {done['pretrain_steps']} steps, "
                f"{protocol.pretrain_steps} asked for; use another --out"
            )
        return Path(done["checkpoint"])
    if threads > 0:
        torch.set_num_threads(threads)
    cfg = load_config(
        config_path("bench_erm"),
        [
            f"data.train_manifest={paths['train_manifest']}",
            f"train.out_dir={folder / 'train'}",
            f"train.seed={seed}",
            f"train.threads={threads}",
            *protocol.overrides,
            f"train.steps={protocol.pretrain_steps}",
        ],
    )
    n = max(1, protocol.curve_points)
    stops = sorted({round(protocol.pretrain_steps * (i + 1) / n) for i in range(n)})
    points = []
    for stop in stops:
        fitted = fit(cfg, resume=True, progress=False, stop_after=stop)
        history = (folder / "train" / "history.jsonl").read_text().splitlines()
        recent = [json.loads(x) for x in history[-5:]]
        points.append(
            {
                "step": fitted.steps,
                "train_loss": float(np.mean([r["loss"] for r in recent])),
                "eer": _eer(fitted.checkpoint, paths, folder / f"embeddings_step{stop}.npz"),
            }
        )
        print(f"  pretrain {folder}: {points[-1]}", flush=True)
    doc = {
        "checkpoint": str(fitted.checkpoint),
        "pretrain_steps": protocol.pretrain_steps,
        "curve": points,
    }
    atomic_write_text(curve_path, json.dumps(doc, indent=1))
    return fitted.checkpoint


def run_finetune_benchmark(
    out: str | Path,
    protocol: Protocol,
    *,
    jobs: int = 1,
    threads: int = 1,
    workers: int = 2,
    progress: bool = True,
    command: str = "",
) -> dict:
    """Run (or finish) the fine-tuning benchmark; returns {mechanism: held-out results}."""
    from bench.fairness.criterion import write_overview
    from bench.fairness.runs import prepare_data
    from bench.fairness.summary import write_results

    out = Path(out)
    methods = available_methods(protocol.methods, protocol.extra)
    summary = {}
    for mechanism in protocol.mechanisms:
        heldout: list[dict] = []
        corpora = protocol.corpora(mechanism)
        for corpus_seed, validation in corpora:
            folder = out / mechanism / f"corpus{corpus_seed}"
            folder.mkdir(parents=True, exist_ok=True)
            synth = [*protocol.synth_overrides, f"seed={corpus_seed}"]
            paths = prepare_data(folder, f"bench_{mechanism}", synth, workers, progress)
            seeds = protocol.val_seeds if validation else protocol.seeds
            gate = HEADROOM_GATE.get(mechanism) if protocol.gate and validation else None
            first = {n: m for n, m in methods.items() if n in GATE_METHODS} if gate else methods
            if gate and set(first) != set(GATE_METHODS):
                raise ValueError(f"the headroom gate of {mechanism} needs methods "
                                 f"{' and '.join(GATE_METHODS)} (or --no-gate)")  # fmt: skip

            where = (folder, paths, mechanism, seeds)
            results = _finetune_corpus(first, where, protocol, jobs, threads)
            passed = True
            if gate:
                passed = headroom(folder, results, mechanism, gate)
                if passed:
                    rest = {n: m for n, m in methods.items() if n not in first}
                    results += _finetune_corpus(rest, where, protocol, jobs, threads)
            setup = {
                "command": command,
                "protocol": "finetune",
                "mechanism": mechanism,
                "corpus_seed": corpus_seed,
                "role": "validation" if validation else "held-out",
                "synth_preset": f"bench_{mechanism}",
                "synth_overrides": synth,
                "budget": _budget(protocol),
                "methods": {
                    n: {"config": c, "overrides": list(e)} for n, (c, e) in methods.items()
                },
                "seeds": list(seeds),
            }
            write_results(folder, setup, results)
            if not passed:
                break  # no label-free run, no held-out corpus
            if not validation:
                heldout += [{**r, "seed": 1000 * corpus_seed + r["seed"]} for r in results]
        if heldout:
            setup = {"command": command, "protocol": "finetune", "mechanism": mechanism,
                     "role": "held-out corpora pooled", "corpora": [c for c, v in corpora if not v],
                     "budget": _budget(protocol),
                     "seeds": sorted({r["seed"] for r in heldout}),
                     "methods": {n: {"config": c} for n, (c, _) in methods.items()}}  # fmt: skip
            summary[mechanism] = write_results(out / mechanism / "heldout", setup, heldout)
    atomic_write_text(out / "protocol.json", json.dumps({"budget": _budget(protocol)}, indent=1))
    # Every mechanism finished under `out`, not only this call's: two processes that share
    # `out` (one per pair of mechanisms) each leave the whole table.
    held_out = {m: [c for c, v in protocol.corpora(m) if not v] for m in MECHANISMS}
    write_overview(out, held_out)
    return summary


def _budget(protocol: Protocol) -> dict:
    return {
        "pretrain_steps": protocol.pretrain_steps,
        "shared_pretrain": protocol.shared_pretrain,
        "finetune_steps": protocol.finetune_steps,
        "finetune_lr": protocol.finetune_lr,
        "overrides": list(protocol.overrides),
        "synth_overrides": list(protocol.synth_overrides),
    }


def _finetune_corpus(methods: dict, where: tuple, protocol: Protocol, jobs: int,
                     threads: int) -> list[dict]:  # fmt: skip
    """Fine-tune ``methods`` on one corpus for each seed, from its ERM pre-training.

    ``where``: (corpus folder, its manifest paths, mechanism, training seeds).
    """
    from bench.fairness.runs import RunTask, run_one

    folder, paths, mechanism, seeds = where
    results = []
    for seed in seeds:
        from_seed = seeds[0] if protocol.shared_pretrain else seed
        init = pretrain(folder / f"seed{from_seed}" / "erm_pretrain", paths, from_seed,
                        protocol, threads)  # fmt: skip
        tasks = [
            RunTask(
                method=name,
                config=config,
                seed=seed,
                run_dir=str(folder / "runs" / name / f"seed{seed}"),
                overrides=(
                    *_finetune_overrides(protocol, init),
                    *mechanism_overrides(config, mechanism),
                    *extra,
                ),
                threads=threads,
                bootstrap=protocol.bootstrap,
                analysis_utterances=protocol.analysis_utterances,
                **paths,
            )
            for name, (config, extra) in methods.items()
        ]
        results += _run_tasks(tasks, jobs, run_one)
    return results


def headroom(folder: Path, results: list[dict], mechanism: str, gate: float) -> bool:
    """Issue 20's gate on a validation corpus: does the label oracle lower the worst
    group's EER by at least ``gate`` (relative, mean over seeds) against ERM continued?
    Writes ``headroom.json`` and says so in one line; False stops the mechanism there."""
    from bench.fairness.criterion import check_corpus

    runs = {(r["method"], r["seed"]): r["metrics"] for r in results if "metrics" in r}
    changes = [c.worst_change for c in check_corpus(runs, 0, mechanism) if c.method == ORACLE]
    if not changes:
        raise RuntimeError(f"{folder}: the headroom gate needs finished erm and erm_balanced runs")
    change = float(np.mean(changes))
    passed = change <= -gate
    doc = {"mechanism": mechanism, "gate": gate, "oracle_worst_change": change,
           "per_seed": changes, "passed": passed}  # fmt: skip
    atomic_write_text(folder / "headroom.json", json.dumps(doc, indent=1))
    verdict = "passed" if passed else "not passed"
    print(
        f"headroom gate {verdict}: the oracle changes the worst group's EER by "
        f"{100 * change:+.1f}% on {folder} (needs -{100 * gate:.0f}%)"
        + (
            ""
            if passed
            else "; label-free methods and held-out corpora not run (--no-gate runs them)"
        ),
        flush=True,
    )
    return passed


def _run_tasks(tasks, jobs: int, run_one) -> list[dict]:
    if jobs <= 1:
        out = []
        for task in tasks:
            print(f"run {task.method} seed {task.seed} -> {task.run_dir}", flush=True)
            out.append(_guarded(run_one, task))
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = [pool.submit(run_one, task) for task in tasks]
        out = []
        for task, future in zip(tasks, futures, strict=True):
            try:
                out.append(future.result())
            except Exception as exc:  # one failed run must not stop the others
                print(f"FAILED {task.method} seed {task.seed}: {exc}", flush=True)
                out.append({"method": task.method, "seed": task.seed, "error": str(exc)})
        return out


def _guarded(run_one, task) -> dict:
    try:
        return run_one(task)
    except Exception as exc:  # one failed run must not stop the others
        print(f"FAILED {task.method} seed {task.seed}: {type(exc).__name__}: {exc}", flush=True)
        return {"method": task.method, "seed": task.seed, "error": f"{type(exc).__name__}: {exc}"}

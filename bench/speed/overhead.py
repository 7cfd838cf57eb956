"""Per-step training overhead of ARW-PW over ERM.

    python -m bench.speed.overhead --threads 1                 # the fairness benchmark's model
    python -m bench.speed.overhead --config demo_arw_pw        # the demo's c256 model


Both players' work is timed exactly as ``fit`` does it per step, on one fixed batch held in
memory (so data loading is excluded): ERM is one ``learner_step``; ARW-PW is the cluster
lookup, the adversary's (no-grad) weights inside ``learner_step``, the ``adversary_step``
and the embedding-bank update. The two are timed in interleaved blocks (ERM, PW, PW, ERM,
...) on the same machine in the same process, after a warm-up, and compared by the median
step time. The k-means refresh, which ``fit`` runs every ``cluster_refresh_steps`` steps,
is timed on its own (a warm-started refit of a full bank, as in training) and amortised.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from arw_sv.arw import arl_weights
from arw_sv.clusters import ClusterIndex, EmbeddingBank
from arw_sv.config import Config, load_config
from arw_sv.models.adversary import build_adversary_from_config
from arw_sv.train.build import build_learner, build_optimizer
from arw_sv.train.objective import Objective
from arw_sv.train.step import adversary_step, learner_step
from bench.common import config_path


@dataclass(frozen=True)
class OverheadResult:
    erm_step_s: float
    pw_step_s: float
    kmeans_refit_s: float
    adversary_work_s: float
    refresh_steps: int
    n_steps: int
    threads: int
    clock: str

    @property
    def ratio(self) -> float:
        """PW step time over ERM step time (k-means refresh excluded)."""
        return self.pw_step_s / self.erm_step_s

    @property
    def ratio_amortised(self) -> float:
        """The same with the k-means refit spread over ``refresh_steps`` steps."""
        return (self.pw_step_s + self.kmeans_refit_s / self.refresh_steps) / self.erm_step_s


def measure_overhead(
    cfg: Config,
    *,
    n_speakers: int = 480,
    steps_per_block: int = 5,
    blocks: int = 6,
    warmup: int = 3,
    seed: int = 0,
    clock: str = "cpu",
) -> OverheadResult:
    """Median step time of ERM and of ARW-PW under ``cfg`` (model, batch, crop, adversary).

    Args:
        cfg: the ARW-PW config; ERM is the same with the adversary off.
        n_speakers: classes of the AAM head.
        steps_per_block: steps timed per block; blocks alternate ERM/PW (ABBA order).
        blocks: blocks per method.
        warmup: untimed steps of each method first.
        seed: seed of the batch, the models and the bank.
        clock: "cpu" (CPU seconds of this process: what a step costs, unaffected by other
            jobs taking turns on the cores) or "wall".
    """
    timer = {"cpu": time.process_time, "wall": time.perf_counter}[clock]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ac = cfg.adversary
    p, k = cfg.data.speakers_per_batch, cfg.data.utterances_per_speaker
    samples = int(round(cfg.data.crop_seconds * cfg.features.sample_rate))
    waveforms = torch.from_numpy(rng.standard_normal((p * k, samples)).astype(np.float32)) * 0.1
    labels = torch.arange(p).repeat_interleave(k)

    # One learner and optimizer for both: each method's steps run on the same, shared
    # weights, so a difference in step time cannot come from the two models drifting apart
    # (e.g. into denormal numbers) rather than from the method.
    learner = build_learner(cfg, n_speakers)
    optimizer = build_optimizer(
        cfg.train.optimizer, learner.parameters(), cfg.train.lr, cfg.train.weight_decay
    )
    ac = dataclasses.replace(ac, formulation="pw")
    adversary = build_adversary_from_config(ac, cfg.model.embedding_dim)
    adv_optimizer = build_optimizer(ac.optimizer, adversary.parameters(), ac.lr)
    bank = EmbeddingBank.for_clusters(ac.n_clusters, cfg.model.embedding_dim)
    bank.add(torch.from_numpy(rng.standard_normal((bank.data.shape[0], bank.data.shape[1]))))
    clusters = ClusterIndex.fit(bank.filled(), ac.n_clusters, seed=seed)
    erm = Objective.from_sections(Config().adversary, cfg.loss)  # formulation "erm"
    pw = Objective.from_sections(ac, cfg.loss)

    def erm_step() -> None:
        learner_step(learner, waveforms, labels, optimizer, adversary=None,
                     clusters=None, objective=erm, clip=cfg.train.grad_clip)  # fmt: skip

    def pw_step() -> None:
        _, detached = learner_step(learner, waveforms, labels, optimizer,
                                   adversary=adversary, clusters=clusters, objective=pw,
                                   clip=cfg.train.grad_clip)  # fmt: skip
        adversary_step(adversary, detached, adv_optimizer, objective=pw,
                       clip=cfg.train.grad_clip)  # fmt: skip
        bank.add(detached.embeddings)

    steps = {"erm": erm_step, "pw": pw_step}
    for name in ("erm", "pw"):
        for _ in range(warmup):
            steps[name]()
    times: dict[str, list[float]] = {"erm": [], "pw": []}
    for block in range(blocks):
        order = ("erm", "pw") if block % 2 == 0 else ("pw", "erm")
        for name in order:
            for _ in range(steps_per_block):
                start = timer()
                steps[name]()
                times[name].append(timer() - start)
    # The ARW-only work on its own (cluster lookup, the adversary's weights, its step, the
    # bank update), many repetitions: small, so robust to a busy machine where the
    # difference of two ~1 s step times is within the noise.
    _, detached = learner_step(learner, waveforms, labels, optimizer, adversary=adversary,
                               clusters=clusters, objective=pw)  # fmt: skip
    work = []
    for _ in range(200):
        start = timer()
        ids = clusters.assign(detached.embeddings)
        with torch.no_grad():
            arl_weights(adversary(detached.embeddings, ids))
        adversary_step(adversary, detached, adv_optimizer, objective=pw,
                       clip=cfg.train.grad_clip)  # fmt: skip
        bank.add(detached.embeddings)
        work.append(timer() - start)
    refits = []
    for i in range(3):
        start = timer()
        ClusterIndex.fit(bank.filled(), ac.n_clusters, seed=seed + i, init=clusters)
        refits.append(timer() - start)
    return OverheadResult(
        erm_step_s=statistics.median(times["erm"]),
        pw_step_s=statistics.median(times["pw"]),
        kmeans_refit_s=statistics.median(refits),
        adversary_work_s=statistics.median(work),
        refresh_steps=ac.cluster_refresh_steps,
        n_steps=len(times["erm"]),
        threads=torch.get_num_threads(),
        clock=clock,
    )


def format_result(result: OverheadResult, cfg: Config) -> str:
    """A Markdown table of the measurement."""
    d = cfg.data
    kmeans_per_step = result.kmeans_refit_s / result.refresh_steps
    return "\n".join(
        [
            f"batch {d.speakers_per_batch} x {d.utterances_per_speaker} crops of "
            f"{d.crop_seconds} s, model {cfg.model.preset} {list(cfg.model.channels) or ''}, "
            f"{result.threads} thread(s), {result.clock} time, median of {result.n_steps} "
            "steps per method "
            "(interleaved blocks, after warm-up), data loading excluded",
            "",
            "| | step time (ms) | ratio to ERM |",
            "|---|---|---|",
            f"| ERM | {1000 * result.erm_step_s:.1f} | 1.000 |",
            f"| ARW-PW (learner + adversary step) | {1000 * result.pw_step_s:.1f} | "
            f"{result.ratio:.3f} |",
            f"| ARW-PW + k-means refit ({1000 * result.kmeans_refit_s:.0f} ms every "
            f"{result.refresh_steps} steps) | {1000 * (result.pw_step_s + kmeans_per_step):.1f}"
            f" | {result.ratio_amortised:.3f} |",
            "",
            f"ARW-only work per step timed alone (cluster lookup, adversary weights and step, "
            f"bank update; median of 200): {1000 * result.adversary_work_s:.2f} ms = "
            f"{100 * result.adversary_work_s / result.erm_step_s:.2f}% of the ERM step; with "
            f"the amortised k-means refit "
            f"{100 * (result.adversary_work_s + kmeans_per_step) / result.erm_step_s:.2f}%.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.speed.overhead``."""
    parser = argparse.ArgumentParser(prog="python -m bench.speed.overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--config", default="bench_arw_pw", help="an ARW-PW config: bench/conf or shipped"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps-per-block", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: process CPU time (robust on a shared machine); wall")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.preset=c512")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(config_path(args.config), ["adversary.formulation=pw", *args.overrides])
    result = measure_overhead(
        cfg,
        steps_per_block=args.steps_per_block,
        blocks=args.blocks,
        warmup=args.warmup,
        clock=args.clock,
    )
    print(format_result(result, cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())

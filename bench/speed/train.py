"""Training-step speed: arw-sv ERM vs a plain SpeechBrain loop, ARW-PW vs ERM, where the time
goes, how it scales, and peak memory.

Every variant trains the same ECAPA (same weights at the start) on the same in-memory batch
of P x K = 16 x 2 two-second crops, against an AAM head over 5,994 speakers (VoxCeleb2):

- ``speechbrain``: SpeechBrain 1.1's classes in a plain loop (``bench.common.SpeechBrainTrainer``);
- ``erm``: arw-sv's ``learner_step`` exactly as ``arw-sv train`` runs it (fbank + mean norm,
  ECAPA, AAM + pair loss, backward, clipping and non-finite checks, Adam), built from
  ``demo.yaml`` with the preset, batch and crop overridden;
- ``arw_pw``: the same plus the ARW-PW adversary (``demo_arw_pw.yaml``): weights from the
  adversary, one adversary step per learner step, and the k-means refresh amortised over
  ``cluster_refresh_steps``.

Variants run round-robin and the median is reported. Sections: ``ratio`` (the goals),
``profile`` (torch.profiler, with the real DataLoader feeding the step), ``scaling`` (crop
length and batch size), ``memory`` (peak RSS of a fresh process per variant).

Usage::

    .venv/bin/python -m bench.speed.train --threads 2                # everything (~6 min)
    .venv/bin/python -m bench.speed.train --sections ratio --presets c512 --rounds 5
    .venv/bin/python -m bench.speed.train --quick                    # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from arw_sv.clusters import ClusterIndex, EmbeddingBank
from arw_sv.config import load_config
from arw_sv.models.adversary import build_adversary_from_config
from arw_sv.train.build import AUTOCAST_DTYPES, build_learner, build_optimizer
from arw_sv.train.objective import Objective
from arw_sv.train.step import adversary_step, learner_step
from bench import common as sc
from bench.common import config_path


def configs(preset: str, batch: int, crop: float):
    overrides = [
        f"model.preset={preset}",
        "model.channels=[]",  # demo.yaml narrows the ECAPA; the preset decides here
        f"data.crop_seconds={crop}",
        f"data.speakers_per_batch={batch // 2}",
        "data.utterances_per_speaker=2",
        "train.threads=0",
    ]
    return (
        load_config(config_path("demo"), overrides),
        load_config(config_path("demo_arw_pw"), overrides),
    )


def batch_of(batch: int, crop: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """P x K in-memory crops (speech-like signals) and speaker labels."""
    rng = np.random.default_rng(seed)
    samples = int(crop * 16000)
    wavs = torch.from_numpy(np.stack([sc.speechlike(samples, rng) for _ in range(batch)]))
    labels = torch.arange(batch // 2).repeat_interleave(2) * 7 % sc.N_SPEAKERS
    return wavs, labels


class ArwTrainer:
    """One arw-sv training step (ERM, or ARW-PW when ``cfg.adversary.formulation == 'pw'``)."""

    def __init__(
        self,
        cfg,
        init_state: dict | None = None,
        fused_adam: bool = False,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        self.cfg = cfg
        torch.manual_seed(cfg.train.seed)
        self.learner = build_learner(cfg, sc.N_SPEAKERS)
        if init_state is not None:
            self.learner.extractor.load_state_dict(init_state)
        self.learner.to(device)
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        self.learner.aam.margin = cfg.loss.aam_margin
        tc, ac = cfg.train, cfg.adversary
        self.optimizer = build_optimizer(
            tc.optimizer, self.learner.parameters(), tc.lr, tc.weight_decay, tc.momentum
        )
        if fused_adam:  # a what-if: arw-sv's build_optimizer does not ask for it
            self.optimizer = torch.optim.Adam(
                self.learner.parameters(), tc.lr, weight_decay=tc.weight_decay, fused=True
            )
        self.scaler = torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")
        self.objective = Objective.from_config(cfg)
        self.adversary = build_adversary_from_config(ac, cfg.model.embedding_dim, seed=0)
        self.clusters = None
        self.bank = EmbeddingBank.for_clusters(ac.n_clusters, cfg.model.embedding_dim)
        if self.adversary is not None:
            self.adversary.to(device)
            self.adv_optimizer = build_optimizer(ac.optimizer, self.adversary.parameters(), ac.lr)
            # A filled bank and fitted clusters, as after the warm-up.
            rng = np.random.default_rng(0)
            size, dim = self.bank.data.shape
            self.bank.add(torch.from_numpy(rng.standard_normal((size, dim)).astype(np.float32)))
            self.clusters = ClusterIndex.fit(self.bank.filled(), ac.n_clusters, seed=0).to(device)

    def step(self, waveforms: torch.Tensor, labels: torch.Tensor) -> float:
        cfg = self.cfg
        stats, detached = learner_step(
            self.learner,
            waveforms,
            labels,
            self.optimizer,
            adversary=self.adversary,
            clusters=self.clusters,
            objective=self.objective,
            scaler=self.scaler,
            clip=cfg.train.grad_clip,
            autocast_dtype=self.autocast_dtype,
        )
        if self.adversary is not None:
            with torch.autograd.profiler.record_function("adversary"):
                adversary_step(
                    self.adversary,
                    detached,
                    self.adv_optimizer,
                    objective=self.objective,
                    clip=cfg.train.grad_clip,
                )
                self.bank.add(detached.embeddings)
        return stats.loss

    def kmeans_refresh(self) -> float:
        """Seconds of one k-means refresh on the full bank (warm start, as the loop does)."""
        ac = self.cfg.adversary
        start = time.perf_counter()
        self.clusters = ClusterIndex.fit(
            self.bank.filled(), ac.n_clusters, seed=1, init=self.clusters
        )
        return time.perf_counter() - start


# ---- ratio ------------------------------------------------------------------------------


def section_ratio(args, out: dict) -> str:
    lines = ["### Training step: arw-sv vs SpeechBrain, ARW-PW vs ERM", ""]
    rows, stability = [], []
    for preset in args.presets:
        erm_cfg, pw_cfg = configs(preset, args.batch, args.crop)
        wavs, labels = batch_of(args.batch, args.crop)
        erm = ArwTrainer(erm_cfg)
        init = erm.learner.extractor.state_dict()
        pw = ArwTrainer(pw_cfg, init)
        sb = sc.SpeechBrainTrainer(erm.learner.extractor)
        fns = {
            "speechbrain": lambda sb=sb, w=wavs, y=labels: sb.step(w, y),
            "erm": lambda erm=erm, w=wavs, y=labels: erm.step(w, y),
            "arw_pw": lambda pw=pw, w=wavs, y=labels: pw.step(w, y),
        }
        compile_s = None
        if args.compile:
            compiled = ArwTrainer(erm_cfg, init)
            # Exactly what train.compile does in `arw-sv train`.
            compiled.learner.extractor.ecapa.compile(mode="default", dynamic=False)
            start = time.perf_counter()
            compiled.step(wavs, labels)
            compile_s = time.perf_counter() - start
            fns["erm_compiled"] = lambda c=compiled, w=wavs, y=labels: c.step(w, y)
        if args.fused_adam:
            fused = ArwTrainer(erm_cfg, init, fused_adam=True)
            fns["erm_fused_adam"] = lambda f=fused, w=wavs, y=labels: f.step(w, y)
        times, agree = sc.time_until_stable(fns, args.rounds, args.max_rounds)
        stability.append(
            f"{preset}: {len(times['erm'])} rounds; median within 5% of the minimum for every "
            f"variant: {'yes' if agree else 'NO'} (median/min: "
            + ", ".join(f"{k} {sc.med(v) / min(v):.3f}" for k, v in times.items())
            + ")"
        )
        kmeans = min(pw.kmeans_refresh() for _ in range(3))
        refresh = pw_cfg.adversary.cluster_refresh_steps
        t_sb, t_erm, t_pw = (sc.med(times[k]) for k in ("speechbrain", "erm", "arw_pw"))
        t_pw_all = t_pw + kmeans / refresh
        out[f"ratio_{preset}"] = {
            "speechbrain": times["speechbrain"],
            "erm": times["erm"],
            "arw_pw": times["arw_pw"],
            "erm_compiled": times.get("erm_compiled"),
            "compile_s": compile_s,
            "erm_fused_adam": times.get("erm_fused_adam"),
            "kmeans_s": kmeans,
            "refresh_steps": refresh,
        }
        b = args.batch
        rows += [
            [
                preset,
                "SpeechBrain plain loop",
                sc.spread(times["speechbrain"]),
                f"{b / t_sb:.1f}",
                "1.000",
                "",
            ],
            [
                preset,
                "arw-sv ERM",
                sc.spread(times["erm"]),
                f"{b / t_erm:.1f}",
                f"**{t_erm / t_sb:.3f}**",
                "",
            ],
            [
                preset,
                "arw-sv ARW-PW",
                sc.spread(times["arw_pw"]),
                f"{b / t_pw:.1f}",
                f"{t_pw / t_sb:.3f}",
                f"**{t_pw / t_erm:.3f}**",
            ],
            [
                preset,
                f"ARW-PW + k-means ({kmeans:.2f} s / {refresh} steps)",
                f"{t_pw_all:.3f}",
                f"{b / t_pw_all:.1f}",
                f"{t_pw_all / t_sb:.3f}",
                f"**{t_pw_all / t_erm:.3f}**",
            ],
        ]
        if args.fused_adam:
            t_f = sc.med(times["erm_fused_adam"])
            rows.append(
                [
                    preset,
                    "ERM + Adam(fused=True), not in `arw-sv train`",
                    sc.spread(times["erm_fused_adam"]),
                    f"{b / t_f:.1f}",
                    f"{t_f / t_sb:.3f}",
                    f"{t_f / t_erm:.3f}",
                ]
            )
        if compile_s is not None:
            t_c = sc.med(times["erm_compiled"])
            rows.append(
                [
                    preset,
                    f"ERM, `train.compile: true` (cold compile {compile_s:.0f} s)",
                    sc.spread(times["erm_compiled"]),
                    f"{b / t_c:.1f}",
                    f"{t_c / t_sb:.3f}",
                    f"{t_c / t_erm:.3f}",
                ]
            )
        del erm, pw, sb
    lines.append(
        f"Batch {args.batch} x {args.crop:g} s crops, AAM over {sc.N_SPEAKERS} speakers, fp32, "
        f"median (min-max) of at least {args.rounds} interleaved rounds after 1 warm-up, "
        f"extended (up to {args.max_rounds}) until each median is within 5% of its minimum."
    )
    lines.append("")
    lines.append(
        sc.table(["model", "variant", "s/step", "utt/s", "vs SpeechBrain", "vs ERM"], rows)
    )
    lines += ["", *(f"- {line}" for line in stability)]
    return "\n".join(lines)


# ---- FLOP/s against the machine's peak --------------------------------------------------


def matmul_peak(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of a dense fp32 ``size`` x ``size`` matmul with the current threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def section_flops(args, out: dict) -> str:
    from torch.utils.flop_counter import FlopCounterMode

    size = 512 if args.quick else 2048
    peak = matmul_peak(torch.get_num_threads(), size=size)
    lines = [
        "### Achieved FLOP/s of the training step against the machine's matmul peak",
        "",
        f"FLOPs of one arw-sv ERM step (forward + backward, counted by "
        f"`torch.utils.flop_counter.FlopCounterMode`: matmuls and convolutions), batch "
        f"{args.batch} x {args.crop:g} s, divided by the median step time; peak = best dense "
        f"fp32 matmul ({size} x {size}) with the same {torch.get_num_threads()} threads: "
        f"**{peak / 1e9:.1f} GFLOP/s**.",
        "",
    ]
    rows = []
    for preset in args.presets:
        erm_cfg, _ = configs(preset, args.batch, args.crop)
        wavs, labels = batch_of(args.batch, args.crop)
        erm = ArwTrainer(erm_cfg)
        erm.step(wavs, labels)
        counter = FlopCounterMode(display=False)
        with counter:
            erm.step(wavs, labels)
        flops = counter.get_total_flops()
        times, _agree = sc.time_until_stable(
            {"erm": lambda e=erm, w=wavs, y=labels: e.step(w, y)}, args.rounds, args.max_rounds
        )
        t = sc.med(times["erm"])
        by_op = counter.get_flop_counts().get("Global", {})
        conv = sum(v for k, v in by_op.items() if "convolution" in str(k))
        out[f"flops_{preset}"] = {"flops": flops, "step_s": times["erm"], "peak": peak}
        rows.append(
            [
                preset,
                f"{flops / 1e9:.1f}",
                f"{100 * conv / max(flops, 1):.0f}%",
                f"{t:.3f}",
                f"{flops / t / 1e9:.1f}",
                f"**{100 * flops / t / peak:.0f}%**",
            ]
        )
        del erm
    lines.append(
        sc.table(["model", "GFLOP / step", "in convolutions", "s/step", "GFLOP/s", "of peak"], rows)
    )
    lines += [
        "",
        "The rest of the time goes to what the counter does not count (elementwise work, "
        "BatchNorm, the fbank front end, memory traffic of the Res2Net splits) and to "
        "convolutions running below matmul efficiency; the profile section shows where.",
    ]
    return "\n".join(lines)


# ---- profile ----------------------------------------------------------------------------


class Labels:
    """record_function ranges around chosen modules' forward passes (via hooks)."""

    def __init__(self, pairs: list[tuple[torch.nn.Module, str]]) -> None:
        self.open: dict[int, list] = defaultdict(list)
        self.handles = []
        for module, name in pairs:
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post))

    def _pre(self, name):
        def hook(module, inputs):
            ctx = torch.autograd.profiler.record_function(name)
            ctx.__enter__()
            self.open[id(module)].append(ctx)

        return hook

    def _post(self, module, inputs, output):
        self.open[id(module)].pop().__exit__(None, None, None)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


CATEGORIES = ("data", "features", "forward", "losses", "adversary", "backward", "optimizer")


def classify(name: str) -> str:
    if name in CATEGORIES:
        return name
    if name.startswith("autograd::engine::evaluate_function"):
        return "backward"
    if name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
        return "optimizer"
    return "other"


def profile_steps(step, loader_iter, steps: int) -> tuple[dict[str, float], float]:
    """Per-step milliseconds by category, from the top-level profiler events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autograd.profiler.record_function("data"):
                wavs, labels, _ = next(loader_iter)
            step(wavs, labels)
        wall = time.perf_counter() - start
    totals: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.cpu_parent is None:
            totals[classify(event.name)] += event.cpu_time_total / 1e3
    totals["other"] = wall * 1e3 - sum(v for k, v in totals.items() if k != "other")
    return {k: v / steps for k, v in totals.items()}, wall / steps


def make_loader(cfg, manifest_path: Path, workers: int):
    """The DataLoader ``fit`` builds (augmentation and speed perturbation as ``cfg`` says)."""
    from torch.utils.data import DataLoader

    from arw_sv.augment import Augmenter, speed_classes
    from arw_sv.data.dataset import CropDataset, collate_crops
    from arw_sv.data.manifest import read_manifest
    from arw_sv.data.sampler import SpeakerBatchSampler

    manifest = read_manifest(manifest_path)
    speeds = cfg.augment.speeds if speed_classes(cfg.augment) > 1 else ()
    dataset = CropDataset(
        manifest,
        cfg.data.crop_seconds,
        16000,
        augmenter=Augmenter(cfg.augment, 16000),
        speeds=speeds,
    )
    sampler = SpeakerBatchSampler(
        manifest.speaker_indices(),
        cfg.data.speakers_per_batch,
        cfg.data.utterances_per_speaker,
        seed=0,
        speed_prob=cfg.augment.speed_prob if speeds else 0.0,
        n_speeds=len(speeds),
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_crops,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def section_profile(args, out: dict) -> str:
    preset = args.presets[0]
    erm_cfg, pw_cfg = configs(preset, args.batch, args.crop)
    manifest = sc.make_corpus(Path(args.corpus))
    erm = ArwTrainer(erm_cfg)
    pw = ArwTrainer(pw_cfg, erm.learner.extractor.state_dict())
    sb = sc.SpeechBrainTrainer(erm.learner.extractor)
    labels = [
        Labels(
            [
                (t.learner.extractor.frontend, "features"),
                (t.learner.extractor.ecapa, "forward"),
                (t.learner.aam, "losses"),
                (t.learner.pair, "losses"),
            ]
            + ([(t.adversary, "adversary")] if t.adversary is not None else [])
        )
        for t in (erm, pw)
    ]
    labels.append(
        Labels(
            [
                (sb.fbank, "features"),
                (sb.norm, "features"),
                (sb.model, "forward"),
                (sb.classifier, "losses"),
                (sb.loss, "losses"),
            ]
        )
    )
    loader = make_loader(erm_cfg, manifest, args.workers)
    it = iter(loader)
    results = {}
    for name, step in (("speechbrain", sb.step), ("erm", erm.step), ("arw_pw", pw.step)):
        wavs, lab, _ = next(it)
        step(wavs, lab % sc.N_SPEAKERS)  # warm-up (Adam state, allocator)
        per_step, wall = profile_steps(
            lambda w, y, step=step: step(w, y % sc.N_SPEAKERS), it, args.profile_steps
        )
        results[name] = (per_step, wall)
    kmeans = min(pw.kmeans_refresh() for _ in range(3))
    refresh = pw_cfg.adversary.cluster_refresh_steps
    for label in labels:
        label.remove()
    out["profile"] = {k: {"ms": v[0], "wall_s": v[1]} for k, v in results.items()}
    out["profile"]["kmeans_s"] = kmeans
    rows = []
    for category in (*CATEGORIES, "k-means refresh (amortised)", "other"):
        row = [category]
        for name in ("speechbrain", "erm", "arw_pw"):
            per_step, wall = results[name]
            if category.startswith("k-means"):
                ms = kmeans * 1e3 / refresh if name == "arw_pw" else 0.0
            else:
                ms = per_step.get(category, 0.0)
            row.append(f"{ms:.0f} ({100 * ms / (wall * 1e3):.1f}%)")
        rows.append(row)
    rows.append(
        ["**step (wall)**"]
        + [f"**{results[n][1] * 1e3:.0f}**" for n in ("speechbrain", "erm", "arw_pw")]
    )
    text = [
        "### Where a training step's time goes (torch.profiler)",
        "",
        f"{preset}, batch {args.batch} x {args.crop:g} s, fed by the real DataLoader "
        f"({args.workers} workers, prefetch 4) over a synthetic wav corpus; ms per step "
        f"(share), mean of {args.profile_steps} profiled steps. `other` = objective, gradient "
        "clipping, non-finite checks, statistics (arw-sv) and profiler overhead. `data` is "
        "the time the step waited for its batch. The k-means row is one refresh on the "
        f"4,096-embedding bank ({kmeans:.2f} s) spread over its {refresh}-step period.",
        "",
        sc.table(["category", "SpeechBrain", "arw-sv ERM", "arw-sv ARW-PW"], rows),
    ]
    return "\n".join(text)


# ---- scaling ----------------------------------------------------------------------------


def section_scaling(args, out: dict) -> str:
    preset = args.presets[0]
    erm_cfg, _ = configs(preset, args.batch, args.crop)
    erm = ArwTrainer(erm_cfg)
    shapes = [(args.batch, c) for c in args.scale_crops] + [
        (b, args.crop) for b in args.scale_batches if b != args.batch
    ]
    batches = {shape: batch_of(*shape) for shape in shapes}
    times = sc.time_interleaved(
        {shape: (lambda s=shape: erm.step(*batches[s])) for shape in shapes},
        rounds=args.scale_rounds,
        warmup=1,
    )
    base = sc.med(times[(args.batch, args.crop)])
    rows = []
    for batch, crop in sorted(shapes, key=lambda s: (s[0] != args.batch, s[0], s[1])):
        t = sc.med(times[(batch, crop)])
        rows.append(
            [
                batch,
                f"{crop:g}",
                f"{t:.3f}",
                f"{batch / t:.1f}",
                f"{batch * crop / t:.1f}",
                f"{t / base:.2f}",
            ]
        )
    out["scaling"] = {f"{b}x{c}": v for (b, c), v in times.items()}
    return "\n".join(
        [
            "### Training step scaling (arw-sv ERM)",
            "",
            f"{preset}; median of {args.scale_rounds} interleaved rounds after 1 warm-up.",
            "",
            sc.table(
                [
                    "batch",
                    "crop (s)",
                    "s/step",
                    "utt/s",
                    "audio s / s",
                    f"vs {args.batch} x {args.crop:g} s",
                ],
                rows,
            ),
        ]
    )


# ---- memory -----------------------------------------------------------------------------


def child(args) -> None:
    """One variant, three steps, in this fresh process; print peak memory as JSON."""
    erm_cfg, pw_cfg = configs(args.presets[0], args.batch, args.crop)
    wavs, labels = batch_of(args.batch, args.crop)
    # A throw-away tiny step first, so lazily loaded kernel libraries are not counted.
    warm_cfg, _ = configs("tiny", 4, 0.5)
    ArwTrainer(warm_cfg).step(*batch_of(4, 0.5))
    before = sc.rss_mib()
    sc.reset_peak_rss()
    if args.child == "speechbrain":
        torch.manual_seed(0)
        from arw_sv.models.ecapa import build_extractor

        trainer = sc.SpeechBrainTrainer(build_extractor(args.presets[0]))
    else:
        trainer = ArwTrainer(erm_cfg if args.child == "erm" else pw_cfg)
    built = sc.rss_mib()
    for _ in range(3):
        trainer.step(wavs, labels)
    print(json.dumps({"before": before, "built": built, "peak": sc.peak_rss_mib()}))


def section_memory(args, out: dict) -> str:
    rows = []
    common = [
        "--presets",
        args.presets[0],
        "--batch",
        str(args.batch),
        "--crop",
        str(args.crop),
        "--threads",
        str(args.threads),
    ]
    for variant in ("speechbrain", "erm", "arw_pw"):
        got = sc.run_child("speed.train", ["--child", variant, *common])
        out[f"memory_{variant}"] = got
        rows.append(
            [
                variant,
                f"{got['peak']:.0f}",
                f"{got['peak'] - got['before']:.0f}",
                f"{got['peak'] - got['built']:.0f}",
            ]
        )
    return "\n".join(
        [
            "### Peak memory of training (fresh process per variant)",
            "",
            f"{args.presets[0]}, batch {args.batch} x {args.crop:g} s, 3 steps. Peak RSS of the "
            "process; minus its RSS after imports and a throw-away tiny step (libraries loaded): "
            "model + optimizer + activations; minus RSS after building the model: activations, "
            "gradients, Adam state.",
            "",
            sc.table(["variant", "peak RSS (MiB)", "model + step (MiB)", "step only (MiB)"], rows),
        ]
    )


SECTIONS = {
    "ratio": section_ratio,
    "profile": section_profile,
    "scaling": section_scaling,
    "memory": section_memory,
    "flops": section_flops,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--presets", nargs="+", default=["c512", "c1024"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds, at least")
    p.add_argument(
        "--max-rounds", type=int, default=15, help="extend up to this until median ~ min"
    )
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--profile-steps", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers in the profile")
    p.add_argument("--corpus", default="/tmp/arw_perf/corpus")
    p.add_argument("--scale-crops", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--scale-batches", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--scale-rounds", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="add ERM with train.compile")
    p.add_argument("--fused-adam", action="store_true", help="add ERM with Adam(fused=True)")
    p.add_argument("--quick", action="store_true", help="tiny model, tiny sizes (smoke test)")
    p.add_argument("--json", help="also write the raw timings here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.presets, args.batch, args.crop, args.rounds = ["tiny"], 8, 0.5, 2
        args.max_rounds = 3
        args.scale_crops, args.scale_batches, args.scale_rounds = [0.5, 1.0], [4, 8], 1
        args.profile_steps = 2
    sc.setup_threads(args.threads)
    if args.child:
        child(args)
        return 0
    print(f"<!-- python -m bench.speed.train {' '.join(argv or sys.argv[1:])} -->")
    print(f"Machine: {sc.machine_line()}\n")
    out: dict = {"machine": sc.machine_line(), "args": vars(args)}
    for name in args.sections:
        start = time.perf_counter()
        print(SECTIONS[name](args, out))
        print(f"\n({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Distributed and mixed-precision training.

DDP is checked with two CPU processes (gloo, one thread each) against one process: with
``train.batch_chunks = 2`` the single process runs the same two chunks of whole speakers
that the two ranks run (per-chunk BatchNorm statistics and pair terms), so the trained
*parameters* must agree up to floating-point summation order. BatchNorm *running*
statistics are not compared across the two: DDP keeps rank 0's (it broadcasts buffers),
the single process updates them once per chunk; they only matter at inference.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gloo_group, tiny_config

from arw_sv.checkpoint import load_checkpoint
from arw_sv.data.sampler import SpeakerBatchSampler
from arw_sv.train.distributed import local_chunks
from arw_sv.train.loop import fit
from arw_sv.train.step import MIN_LOSS_SCALE, NonFiniteError, backward_and_step

DDP_STEPS = 6
CUT_AT = 3


def _ddp_overrides(formulation: str) -> list[str]:
    if formulation in ("loss_weighted", "cohort_balanced"):  # an adaptive sampler, no adversary
        return [f"train.steps={DDP_STEPS}", "train.checkpoint_every=100", "train.log_every=1",
                f"data.sampling={formulation}", "data.adaptive_start_step=1",
                "data.adaptive_refresh_steps=2", "data.adaptive_delay=1", "data.n_cohorts=2"]  # fmt: skip
    return [
        f"train.steps={DDP_STEPS}",
        "train.checkpoint_every=100",
        "train.log_every=1",
        f"adversary.formulation={formulation}",
        "adversary.warmup_steps=2",
        "adversary.cluster_refresh_steps=3",
        # SGD, not Adam: Adam turns the adversary's near-zero bias gradient (ARL weights are
        # invariant to a common shift) into a full step of its sign, i.e. of rounding noise.
        "adversary.optimizer=sgd",
        "adversary.lr=0.5",
    ]


# ---- fast: sharding rules -------------------------------------------------------------------


def test_rank_slices_partition_the_global_batch_into_whole_speakers():
    speakers = np.repeat(np.arange(12), 3)
    full = SpeakerBatchSampler(speakers, 4, 2, seed=7, speed_prob=0.5, n_speeds=2)
    ranks = [
        SpeakerBatchSampler(
            speakers, 4, 2, seed=7, speed_prob=0.5, n_speeds=2, rank=r, world_size=2
        )
        for r in range(2)
    ]
    for batch, *parts in itertools.islice(zip(full, *ranks, strict=False), 10):
        assert parts[0] + parts[1] == batch  # disjoint slices whose union is the batch
        own = [{int(speakers[i]) for i, *_ in part} for part in parts]
        assert not own[0] & own[1] and all(len(s) == 2 for s in own)
        for part in parts:  # a speaker's K crops share its speed
            speed_of = {}
            for i, _seed, speed in part:
                assert speed_of.setdefault(int(speakers[i]), speed) == speed


def test_resume_at_a_global_step_on_another_world_size():
    speakers = np.repeat(np.arange(10), 4)
    full = list(itertools.islice(SpeakerBatchSampler(speakers, 4, 2, seed=1), 9))
    rank1 = SpeakerBatchSampler(speakers, 4, 2, seed=1, rank=1, world_size=2)
    rank1.load_state_dict({"step": 5, "seed": 1})
    assert list(itertools.islice(rank1, 4)) == [b[4:] for b in full[5:]]


@pytest.mark.parametrize(
    ("chunks", "world", "P", "expected"),
    [(1, 1, 4, 1), (1, 2, 4, 1), (2, 1, 4, 2), (4, 2, 8, 2), (8, 4, 8, 2)],
)
def test_local_chunks(chunks, world, P, expected):
    assert local_chunks(chunks, world, P) == expected


@pytest.mark.parametrize(("chunks", "world", "P"), [(3, 2, 6), (2, 1, 3), (1, 4, 6)])
def test_local_chunks_refuses_uneven_splits(chunks, world, P):
    with pytest.raises(ValueError, match="multiple"):
        local_chunks(chunks, world, P)


def test_sampler_refuses_speakers_that_do_not_split_over_ranks():
    with pytest.raises(ValueError, match="world size"):
        SpeakerBatchSampler(np.repeat(np.arange(6), 2), 3, 2, rank=0, world_size=2)


# ---- fast: mixed precision and non-finite checks -------------------------------------------


def test_bf16_autocast_trains_on_cpu(tiny_manifests, tmp_path):
    cfg = tiny_config(tmp_path / "bf16", tiny_manifests[0], "train.steps=3", "train.precision=bf16")
    result = fit(cfg, progress=False)
    state = load_checkpoint(result.checkpoint)
    assert result.steps == 3 and np.isfinite(result.last_loss)
    assert all(v.dtype == torch.float32 for v in state["learner"].values() if v.is_floating_point())


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_fp16_with_grad_scaler_trains_both_players_on_cpu(tiny_manifests, tmp_path):
    cfg = tiny_config(
        tmp_path / "fp16", tiny_manifests[0], "train.steps=3", "train.precision=fp16",
        "adversary.formulation=pw", "adversary.warmup_steps=1",
    )  # fmt: skip
    result = fit(cfg, progress=False)
    state = load_checkpoint(result.checkpoint)
    # The first steps overflow at the initial scale 65536 and are skipped; the scale is kept.
    assert state["scaler"]["scale"] < 65536.0 and np.isfinite(result.last_loss)
    assert state["adversary"] is not None


def test_fp16_scaler_skips_an_overflowing_step_and_stops_a_diverged_run():
    param = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([param], 0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)

    def loss():  # finite (2e10), but its gradient (1e40) overflows float32 at any scale
        return 1e10 * (param**1e30).sum()

    backward_and_step(loss(), opt, [param], scaler=scaler)  # skipped, scale halved
    assert torch.equal(param.detach(), torch.ones(2)) and scaler.get_scale() == 2.0
    with pytest.raises(NonFiniteError, match="loss scale"):
        for _ in range(4):
            backward_and_step(loss(), opt, [param], scaler=scaler)
    assert scaler.get_scale() < MIN_LOSS_SCALE and torch.equal(param.detach(), torch.ones(2))


def test_batch_chunks_change_the_objective_but_train(tiny_manifests, tmp_path):
    one = fit(tiny_config(tmp_path / "c1", tiny_manifests[0], "train.steps=2"), progress=False)
    two = fit(
        tiny_config(tmp_path / "c2", tiny_manifests[0], "train.steps=2", "train.batch_chunks=2"),
        progress=False,
    )
    a, b = load_checkpoint(one.checkpoint), load_checkpoint(two.checkpoint)
    assert not torch.equal(a["learner"]["aam.weight"], b["learner"]["aam.weight"])
    assert np.isfinite(two.last_loss)


# ---- slow: two gloo processes ---------------------------------------------------------------


def _worker(rank: int, world: int, init_file: str, manifest: str, root: str, formulation: str):
    with gloo_group(rank, world, init_file):
        root_path = Path(root)
        extra = _ddp_overrides(formulation)
        # batch_chunks left at 1: under DDP each rank is one chunk (C = max(1, W) = 2).
        fit(tiny_config(root_path / "ddp_full", Path(manifest), *extra), progress=False)
        cut = tiny_config(root_path / "ddp_cut", Path(manifest), *extra)
        fit(cut, progress=False, stop_after=CUT_AT)
        if rank == 0:  # a copy to resume later on one process
            shutil.copytree(root_path / "ddp_cut", root_path / "ddp_cut_then_single")
        torch.distributed.barrier()
        fit(cut, resume=True, progress=False)


DDP_ATOL = 2e-3


def _params(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path)["learner"]
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def _assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert worst <= atol, f"largest difference {worst:g} > {atol:g}"


@pytest.mark.slow
@pytest.mark.parametrize("formulation", ["erm", "pw", "loss_weighted"])
def test_two_processes_match_one_process_and_resume_exactly(tiny_manifests, tmp_path, formulation):
    manifest = str(tiny_manifests[0])
    torch.multiprocessing.spawn(
        _worker,
        args=(2, str(tmp_path / "store"), manifest, str(tmp_path), formulation),
        nprocs=2,
        join=True,
    )
    extra = _ddp_overrides(formulation)
    single = fit(
        tiny_config(tmp_path / "single", tiny_manifests[0], *extra, "train.batch_chunks=2"),
        progress=False,
    )
    final = f"step_{DDP_STEPS}.pt"
    ddp_full = tmp_path / "ddp_full" / "checkpoints" / final
    ddp_resumed = tmp_path / "ddp_cut" / "checkpoints" / final

    # 2 ranks == 1 process with the same 2 chunks, up to summation order. Measured: about
    # 3e-5 after 6 Adam steps on one machine and 4.8e-4 on another (Adam divides by the
    # running RMS, so rounding differences in near-zero gradients grow), against 2e-2 when
    # the single process runs 1 chunk instead: DDP_ATOL sits between the two.
    _assert_close(_params(ddp_full), _params(single.checkpoint), atol=DDP_ATOL)
    # A resumed DDP run continues exactly: every tensor of the learner, adversary, optimizer.
    a, b = load_checkpoint(ddp_full), load_checkpoint(ddp_resumed)
    for key in ("learner", "adversary", "clusters"):
        if a[key] is not None:
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
    assert a["world_size"] == 2 and a["step"] == DDP_STEPS
    if formulation == "loss_weighted":  # every rank folded in the same global batches
        assert torch.equal(a["sampler"]["schedule"], b["sampler"]["schedule"])
        assert len(a["sampler"]["schedule_steps"]) > 1  # a refresh happened
        single_sampler = load_checkpoint(single.checkpoint)["sampler"]
        torch.testing.assert_close(a["sampler"]["mean_loss"], single_sampler["mean_loss"],
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
    if formulation == "pw":
        assert a["clusters"] is not None  # the k-means refresh ran (rank 0, broadcast)
        single_state = load_checkpoint(single.checkpoint)
        _assert_close(a["adversary"], single_state["adversary"], atol=DDP_ATOL)

    # Resume the 2-process run's step-3 checkpoint on 1 process (2 chunks): same run.
    cfg = tiny_config(
        tmp_path / "ddp_cut_then_single", tiny_manifests[0], *extra, "train.batch_chunks=2"
    )
    moved = fit(cfg, resume=True, progress=False)
    assert moved.steps == DDP_STEPS
    _assert_close(_params(moved.checkpoint), _params(ddp_full), atol=DDP_ATOL)


@pytest.mark.parametrize("clean", [True, False])
def test_teardown_waits_for_the_peers_only_after_a_clean_run(tmp_path, monkeypatch, clean):
    import torch.distributed as dist

    from arw_sv.train import distributed

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    barriers = []
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: barriers.append(1))
    ctx = distributed.DistContext(0, 1, 0, True, torch.device("cpu"))
    distributed.teardown(ctx, clean=clean)
    assert barriers == ([1] if clean else [])
    assert not dist.is_initialized()
    distributed.teardown(ctx)  # a second call is a no-op

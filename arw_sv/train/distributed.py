r"""Multi-GPU and multi-node training: ``torchrun`` + DistributedDataParallel (DDP).

Launch exactly as a single process, under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc_per_node 8 -m arw_sv.cli train conf.yaml ...          # one node
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 \
        -m arw_sv.cli train conf.yaml ...                                   # node 0 of 2

``fit`` calls :func:`setup`: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on
CPU. What every piece does under DDP, and why the result does not depend on the number of
processes:

- **Batch.** ``data.speakers_per_batch`` (P) and ``utterances_per_speaker`` (K) describe the
  *global* batch. Every rank draws the same global batch from the sampler and keeps its own
  contiguous slice of P / W whole speakers (W = world size), so the pair loss still sees all
  K utterances of each of its speakers.
- **Chunks.** The global batch is cut into ``C = max(train.batch_chunks, W)`` chunks of whole
  speakers; rank r runs chunks ``r * C / W ...``. Each chunk has its own BatchNorm statistics
  and its own pair terms (pairs are formed within a chunk), and the objective is the mean of
  the chunks' objectives. A single process with ``batch_chunks = C`` computes exactly the same
  objective, so setting ``batch_chunks`` to the largest world size you will use makes a run
  resumable on any W dividing it with the same objective (``tests/test_ddp.py`` checks the
  weights of 2 processes against 1 process with 2 chunks).
- **BatchNorm.** Per chunk, as above, by default. ``train.sync_batchnorm: true`` (CUDA only)
  converts to ``torch.nn.SyncBatchNorm``: statistics over the same-index chunk of every rank.
  Running statistics come from rank 0 (DDP broadcasts buffers), which affects only inference.
- **Learner gradients** are averaged by DDP. **Adversary gradients** are averaged by
  :func:`average_gradients` (the adversary is tiny and called twice per step, once without
  gradients, so it is not wrapped in DDP). ``arl_weights`` normalises over the global batch
  with an autograd-aware all-reduce, so the averaged gradient is the exact gradient of the
  global objective (docs/method.md §5).
- **k-means.** Every rank adds the *gathered* global batch embeddings to its bank (so the
  bank equals the single-process one); rank 0 fits and broadcasts the centroids.
- **Non-finite checks** agree across ranks (one flag all-reduced), so every rank stops at
  the same step instead of leaving the others waiting in a collective.
- **Checkpoints** are written by rank 0 only, atomically, then all ranks pass a barrier. They
  hold the global step, so a run can resume on another number of processes. ``train.out_dir``
  must be on a file system every node sees.
- **Logging** (train.log, history.jsonl, TensorBoard, the progress bar) is rank 0's; the
  logged losses are averaged over ranks.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from arw_sv.train.device import resolve_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the job; a single process is rank 0 of 1.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this node (picks the GPU).
        owns_group: ``setup`` created the process group (and ``teardown`` destroys it).
        comm_device: where tensors must be for collectives (CUDA for NCCL, else CPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """More than one process: the collectives communicate (else they return at once)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the process that logs and writes the run's files and checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank has reached this call; nothing for a single process."""
        if self.enabled:
            dist.barrier()

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """``src``'s tensor on every rank (same shape and dtype everywhere)."""
        if not self.enabled:
            return tensor
        buffer = tensor.to(self.comm_device).contiguous()
        dist.broadcast(buffer, src=src)
        return buffer.to(tensor.device)

    def gather_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every rank's rows concatenated in rank order (equal row counts). No gradient.

        Shape:
            (N, ...) -> (W * N, ...)
        """
        if not self.enabled:
            return tensor
        local = tensor.detach().to(self.comm_device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return torch.cat(parts).to(tensor.device)

    def mean(self, values: Sequence[float]) -> list[float]:
        """The mean over ranks of each value."""
        if not self.enabled:
            return list(values)
        buffer = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(buffer)
        return (buffer / self.world_size).tolist()


def current() -> DistContext:
    """The context of an already initialised process group (single process if none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = dist.get_backend()
    comm = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else None
    return DistContext(rank, world, local_rank, False, comm or torch.device("cpu"))


def setup(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the job ``torchrun`` started (if any) and pick this process's device.

    Uses an existing process group when the caller made one (tests spawn their own);
    otherwise initialises one from the environment when ``WORLD_SIZE > 1``: NCCL with
    ``cuda:LOCAL_RANK`` when CUDA is available and ``device_name`` allows it, else gloo on
    CPU.

    Args:
        device_name: ``train.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).

    Returns:
        ``(context, device)``.
    """
    owns = False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not (dist.is_available() and dist.is_initialized()) and world > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and device_name != "cpu"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            "nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=60)
        )
        owns = True
    ctx = current()
    if ctx.enabled:
        ctx = DistContext(ctx.rank, ctx.world_size, ctx.local_rank, owns, ctx.comm_device)
        device = resolve_device(device_name)
        if device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
            torch.cuda.set_device(device)
        log.info("DDP: rank %d of %d on %s", ctx.rank, ctx.world_size, device)
        return ctx, device
    return ctx, resolve_device(device_name)


def teardown(ctx: DistContext, *, clean: bool = True) -> None:
    """Destroy the process group if :func:`setup` created it.

    After a clean run every rank first waits at a barrier: a rank that destroys its gloo
    group while a peer still talks to it can abort the process (``terminate called without
    an active exception``, SIGABRT) and turn a finished job into a failed one. After an
    error there is no barrier, since the failed peer may never reach it.
    """
    if ctx.owns_group and dist.is_initialized():
        try:
            if clean:
                dist.barrier()
        finally:
            dist.destroy_process_group()


def local_chunks(batch_chunks: int, world_size: int, speakers_per_batch: int) -> int:
    """Chunks this rank runs: ``max(batch_chunks, world_size) / world_size``.

    Raises:
        ValueError: the chunks cannot be whole speakers split evenly over the ranks.
    """
    total = max(batch_chunks, world_size)
    if total % world_size:
        raise ValueError(
            f"train.batch_chunks={batch_chunks} must be a multiple of the world size "
            f"{world_size} (or 1)"
        )
    if speakers_per_batch % total:
        raise ValueError(
            f"data.speakers_per_batch={speakers_per_batch} must be a multiple of the number "
            f"of chunks {total} (max of train.batch_chunks and the world size)"
        )
    return total // world_size


def wrap_learner(
    learner: nn.Module,
    ctx: DistContext,
    device: torch.device,
    *,
    sync_batchnorm: bool,
    find_unused: bool,
) -> nn.Module:
    """The learner as DDP will train it (unchanged for a single process)."""
    if not ctx.enabled:
        if sync_batchnorm:
            log.info("train.sync_batchnorm has no effect in a single process")
        return learner
    if sync_batchnorm:
        if device.type != "cuda":
            raise ValueError("train.sync_batchnorm needs CUDA (torch SyncBatchNorm is GPU-only)")
        learner = nn.SyncBatchNorm.convert_sync_batchnorm(learner)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        learner,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused,
    )


def average_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Average ``.grad`` over ranks in place (one flat all-reduce); no-op in one process.

    Every rank must call it with the same parameters. A missing gradient counts as zero.
    """
    ctx = current()
    if not ctx.enabled:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]).to(ctx.comm_device)
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def all_ranks_true(flag: bool, device: torch.device | None = None) -> bool:
    """True when ``flag`` is true on every rank (a MIN all-reduce); ``flag`` alone otherwise."""
    ctx = current()
    if not ctx.enabled:
        return flag
    buffer = torch.tensor([1.0 if flag else 0.0], device=ctx.comm_device)
    dist.all_reduce(buffer, op=dist.ReduceOp.MIN)
    return bool(buffer.item() > 0)

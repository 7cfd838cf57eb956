"""CUDA paths (marked ``gpu``; skipped without a CUDA device).

- AMP (bf16, fp16 with GradScaler) training on CUDA tracks fp32 training within tolerance;
- the encoder on CUDA gives the CPU embeddings within tolerance;
- one-process NCCL DDP with SyncBatchNorm trains and resumes exactly.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import tiny_config

from arw_sv.checkpoint import load_checkpoint
from arw_sv.train.loop import fit

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

STEPS = ["train.steps=6", "train.checkpoint_every=100", "train.device=cuda"]


def _learner(path):
    state = load_checkpoint(path)["learner"]
    return {k: v for k, v in state.items() if "running_" not in k and "num_batches" not in k}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_amp_tracks_fp32(tiny_manifests, tmp_path, precision):
    fp32 = fit(tiny_config(tmp_path / "fp32", tiny_manifests[0], *STEPS), progress=False)
    amp = fit(
        tiny_config(
            tmp_path / precision, tiny_manifests[0], *STEPS, f"train.precision={precision}"
        ),
        progress=False,
    )
    a, b = _learner(fp32.checkpoint), _learner(amp.checkpoint)
    # After 6 Adam steps at lr 1e-3 the weights move by about 6e-3; half precision
    # must stay well inside that movement (a broken scaler or a skipped step would not).
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst < 2e-3, worst
    history = (tmp_path / precision / "history.jsonl").read_text()
    assert "nan" not in history.lower()


def test_encoder_on_cuda_equals_cpu(tiny_manifests, tmp_path):
    from arw_sv.inference import SpeakerEncoder

    run = fit(tiny_config(tmp_path / "run", tiny_manifests[0], "train.steps=2"), progress=False)
    waves = torch.randn(3, 24000, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([24000, 20000, 16000])
    cpu = SpeakerEncoder.from_checkpoint(run.checkpoint, device="cpu")(waves, lengths)
    gpu = SpeakerEncoder.from_checkpoint(run.checkpoint, device="cuda")(waves, lengths)
    cosine = torch.nn.functional.cosine_similarity(cpu, gpu.cpu(), dim=1)
    assert cosine.min().item() > 0.9999


def test_nccl_ddp_with_sync_batchnorm_resumes_exactly(tiny_manifests, tmp_path):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    torch.distributed.init_process_group("nccl", rank=0, world_size=1)
    try:
        extra = [*STEPS, "train.sync_batchnorm=true"]
        full = fit(tiny_config(tmp_path / "full", tiny_manifests[0], *extra), progress=False)
        cut = tiny_config(tmp_path / "cut", tiny_manifests[0], *extra)
        fit(cut, progress=False, stop_after=3)
        resumed = fit(cut, resume=True, progress=False)
    finally:
        torch.distributed.destroy_process_group()
    a, b = (
        load_checkpoint(full.checkpoint)["learner"],
        load_checkpoint(resumed.checkpoint)["learner"],
    )
    for key in a:
        assert torch.equal(a[key], b[key]), key

"""Two gloo processes: the cap, the per-cluster sums and GroupDRO's weights see the global
batch, so each rank's slice equals the one-process result on the whole batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import gloo_group

from arw_sv.models.adversary import group_dro_sample_weights
from arw_sv.robust import WeightEMA, capped_arl_weights

SCORES = torch.tensor([0.95, 0.1, 0.2, 0.9, 0.05, 0.3, 0.15, 0.6], dtype=torch.float64)
IDS = torch.tensor([0, 1, 1, 2, 0, 0, 2, 1])
Q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    with gloo_group(rank, world, init_file):
        part = slice(rank * 4, rank * 4 + 4)
        scores = SCORES[part].clone().requires_grad_(True)
        capped = capped_arl_weights(scores, 3.0)
        ema = WeightEMA(3, 0.5)(capped.detach(), IDS[part])
        dro = group_dro_sample_weights(Q, IDS[part])
        torch.save(
            {"capped": capped.detach(), "ema": ema, "dro": dro}, Path(out) / f"rank{rank}.pt"
        )


@pytest.mark.slow
def test_two_ranks_match_one_process(tmp_path):
    torch.multiprocessing.spawn(
        _worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    whole = capped_arl_weights(SCORES, 3.0)
    assert float(whole.max()) <= 3.0 + 1e-12 and bool((whole == 3.0).any())  # the cap binds
    for key, expected in (
        ("capped", whole),
        ("ema", WeightEMA(3, 0.5)(whole, IDS)),
        ("dro", group_dro_sample_weights(Q, IDS)),
    ):
        got = torch.cat([r[key] for r in ranks])
        assert torch.allclose(got, expected.to(got.dtype), atol=1e-12), key

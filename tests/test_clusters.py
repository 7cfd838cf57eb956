"""The k-means pseudo groups: the embedding bank and its one sizing rule."""

from __future__ import annotations

import torch

from arw_sv.clusters import EmbeddingBank, bank_size, needs_clusters
from arw_sv.config import AdversaryConfig


def _rows(array) -> list[tuple[float, ...]]:
    return sorted(tuple(row) for row in array.tolist())


def test_bank_after_wrapping_holds_exactly_the_last_size_rows():
    bank = EmbeddingBank(5, 2)
    added = torch.arange(16.0).reshape(8, 2)  # rows 0..7, all distinct
    bank.add(added[:3])
    assert _rows(bank.filled()) == _rows(added[:3].numpy())  # not full yet: what was added
    bank.add(added[3:])  # 8 > 5 rows: wraps around
    assert bank.count == 8 and bank.filled().shape == (5, 2)
    assert _rows(bank.filled()) == _rows(added[3:].numpy())
    restored = EmbeddingBank(5, 2)
    restored.load_state_dict(bank.state_dict())
    restored.add(added[:1])
    bank.add(added[:1])
    assert torch.equal(torch.from_numpy(restored.filled()), torch.from_numpy(bank.filled()))


def test_the_trainers_bank_is_sized_by_the_one_rule():
    for n_clusters in (1, 8, 128, 1000):
        bank = EmbeddingBank.for_clusters(n_clusters, 3)
        assert bank.data.shape == (bank_size(n_clusters), 3)
    assert bank_size(8) == 4096 and bank_size(1000) == 32_000


def test_which_adversaries_read_clusters():
    assert needs_clusters(AdversaryConfig(formulation="pw", use_cluster=True))
    assert not needs_clusters(AdversaryConfig(formulation="pw", use_cluster=False))
    assert needs_clusters(AdversaryConfig(formulation="pl", use_cluster=False))
    assert needs_clusters(AdversaryConfig(formulation="groupdro", use_cluster=False))

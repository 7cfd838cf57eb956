"""PairwiseSimilarityLoss: closed form, masks, batch consistency, gradcheck."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from arw_sv.models.pair_loss import PairTerms, PairwiseSimilarityLoss


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _batch(gen: torch.Generator, speakers: int = 3, per_speaker: int = 2, dim: int = 5):
    labels = torch.arange(speakers).repeat_interleave(per_speaker)
    return torch.randn(len(labels), dim, generator=gen), labels


def test_init_values_and_positive_scale():
    loss_fn = PairwiseSimilarityLoss(init_scale=10.0, init_bias=-5.0)
    assert loss_fn.scale.item() == pytest.approx(10.0, rel=1e-6)
    assert loss_fn.bias.item() == -5.0
    with torch.no_grad():
        loss_fn.w_raw.fill_(-50.0)
    assert loss_fn.scale.item() > 0


def test_masks(gen):
    emb, labels = _batch(gen)
    terms = PairwiseSimilarityLoss()(emb, labels)
    eye = torch.eye(len(labels), dtype=torch.bool)
    assert torch.equal(terms.valid, ~eye)
    assert torch.equal(terms.positive, (labels[:, None] == labels[None, :]) & ~eye)
    assert torch.equal(terms.negative, labels[:, None] != labels[None, :])
    assert torch.all(terms.loss[eye] == 0)


def test_per_pair_loss_matches_closed_form_and_torch(gen):
    emb, labels = _batch(gen)
    emb = emb.double()
    loss_fn = PairwiseSimilarityLoss(init_scale=7.0, init_bias=-2.0).double()
    terms = loss_fn(emb, labels)
    w, b = loss_fn.scale.item(), loss_fn.bias.item()
    for i in range(len(labels)):
        for j in range(len(labels)):
            if i == j:
                continue
            cos = F.cosine_similarity(emb[i], emb[j], dim=0).item()
            z = w * cos + b
            same = labels[i] == labels[j]
            # -log sigmoid(z) for a same-speaker pair, -log(1 - sigmoid(z)) otherwise
            expected = math.log1p(math.exp(-z)) if same else math.log1p(math.exp(z))
            assert terms.loss[i, j].item() == pytest.approx(expected, rel=1e-9)
    target = (labels[:, None] == labels[None, :]).double()
    reference = F.binary_cross_entropy_with_logits(
        loss_fn.logits(emb), target, reduction="none"
    ).masked_fill(torch.eye(len(labels), dtype=torch.bool), 0.0)
    torch.testing.assert_close(terms.loss, reference)
    torch.testing.assert_close(terms.loss, terms.loss.T)


def test_sub_batch_consistency(gen):
    emb, labels = _batch(gen, speakers=4, per_speaker=3)
    loss_fn = PairwiseSimilarityLoss()
    full = loss_fn(emb, labels).loss
    keep = torch.tensor([0, 2, 5, 7, 11])
    part = loss_fn(emb[keep], labels[keep]).loss
    torch.testing.assert_close(part, full[keep][:, keep])


def test_half_precision_input_computed_in_float32(gen):
    emb, labels = _batch(gen)
    loss_fn = PairwiseSimilarityLoss()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        terms = loss_fn(emb.bfloat16(), labels)
    assert terms.loss.dtype == torch.float32
    torch.testing.assert_close(terms.loss, loss_fn(emb.bfloat16().float(), labels).loss)


def test_detach_cuts_graph(gen):
    emb, labels = _batch(gen)
    emb.requires_grad_(True)
    terms = PairwiseSimilarityLoss()(emb, labels)
    detached = terms.detach()
    assert isinstance(detached, PairTerms)
    assert terms.loss.requires_grad and not detached.loss.requires_grad


def test_gradcheck_float64(gen):
    emb, labels = _batch(gen, speakers=2, per_speaker=2, dim=3)
    loss_fn = PairwiseSimilarityLoss().double()
    emb = emb.double().requires_grad_(True)
    w_raw = loss_fn.w_raw.detach().clone().requires_grad_(True)
    bias = loss_fn.bias.detach().clone().requires_grad_(True)

    def pair_losses(emb, w_raw, bias):
        params = {"w_raw": w_raw, "bias": bias}
        return functional_call(loss_fn, params, (emb, labels)).loss

    assert torch.autograd.gradcheck(pair_losses, (emb, w_raw, bias))


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        PairwiseSimilarityLoss()(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        PairwiseSimilarityLoss(init_scale=0.0)


def test_the_pair_margin_shifts_each_pairs_cosine_against_its_label():
    """loss_ij = BCE(w (cos_ij - m) + b, 1) for same-speaker pairs and
    BCE(w (cos_ij + m) + b, 0) for the others, computed here by hand."""
    import math

    torch.manual_seed(0)
    emb, labels = torch.randn(6, 5), torch.tensor([0, 0, 1, 1, 2, 2])
    m = 0.2
    terms = PairwiseSimilarityLoss(margin=m)(emb, labels)
    plain = PairwiseSimilarityLoss()(emb, labels)
    unit = torch.nn.functional.normalize(emb, dim=1)
    cos = unit @ unit.T
    w = float(PairwiseSimilarityLoss().scale)
    for i in range(6):
        for j in range(6):
            if i == j:
                assert float(terms.loss[i, j]) == 0.0
                continue
            same = bool(labels[i] == labels[j])
            z = w * (float(cos[i, j]) + (-m if same else m)) - 5.0
            expected = math.log1p(math.exp(-z)) if same else math.log1p(math.exp(z))
            assert float(terms.loss[i, j]) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    # Every pair costs more with the margin: harder pairs for the pair term to weight.
    valid = terms.valid
    assert bool((terms.loss[valid] > plain.loss[valid]).all())
    with pytest.raises(ValueError, match="pair margin"):
        PairwiseSimilarityLoss(margin=1.5)


def test_the_pair_margin_comes_from_the_config(tiny_manifests, tmp_path):
    from arw_sv.train.build import build_learner
    from tests.conftest import tiny_config

    cfg = tiny_config(tmp_path, tiny_manifests[0], "loss.pair_margin=0.1")
    assert build_learner(cfg, 4).pair.margin == pytest.approx(0.1)
    assert build_learner(tiny_config(tmp_path, tiny_manifests[0]), 4).pair.margin == 0.0


def test_the_pair_terms_gradient_share_is_logged_as_computed_by_hand(tiny_manifests, tmp_path):
    """|g_pair| / (|g_aam| + |g_pair|) at the embeddings, both terms unweighted."""
    import json

    from arw_sv.train.loop import fit
    from arw_sv.train.step import pair_grad_share
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    emb = torch.randn(8, 6, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    head = torch.nn.Linear(6, 4)
    sample_loss = F.cross_entropy(head(emb), labels, reduction="none")
    pairs = (PairwiseSimilarityLoss()(emb, labels),)
    from types import SimpleNamespace

    objective = SimpleNamespace(aam_weight=1.0, pair_weight=2.0)  # what the share reads
    share = pair_grad_share(emb, sample_loss, pairs, objective)
    g_aam = torch.autograd.grad(sample_loss.mean(), emb, retain_graph=True)[0].norm()
    mean_pair = pairs[0].loss.sum() / pairs[0].valid.sum()
    g_pair = torch.autograd.grad(2.0 * mean_pair, emb, retain_graph=True)[0].norm()
    assert share == pytest.approx(float(g_pair / (g_aam + g_pair)), rel=1e-6)
    # The graph survives for the update, and the training log carries the share.
    (sample_loss.mean() + mean_pair).backward()
    assert emb.grad is not None
    fit(tiny_config(tmp_path, tiny_manifests[0], "train.steps=2", "train.log_every=1"),
        progress=False)  # fmt: skip
    rows = [json.loads(r) for r in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert all(0.0 < r["pair_grad_share"] < 1.0 for r in rows)

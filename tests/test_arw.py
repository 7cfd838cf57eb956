"""ARW formulations, ARL weights, the adversary and cluster assignment."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import gloo_group
from torch import nn

from arw_sv.arw import arl_weights, balanced_pair_weights, weighted_objective
from arw_sv.clusters import ClusterIndex
from arw_sv.models.adversary import Adversary, ClusterWeights, build_adversary
from arw_sv.models.pair_loss import PairTerms, PairwiseSimilarityLoss

ARW = ("aps", "pl", "pw")


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _labels(counts: list[int]) -> torch.Tensor:
    return torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))


def _random_terms(gen: torch.Generator, labels: torch.Tensor, dtype=torch.float64) -> PairTerms:
    """Positive, deliberately asymmetric pair losses: a stricter test than real ones."""
    size = len(labels)
    valid = ~torch.eye(size, dtype=torch.bool)
    loss = torch.rand(size, size, generator=gen, dtype=dtype).masked_fill(~valid, 0.0)
    return PairTerms(loss=loss, positive=(labels[:, None] == labels[None, :]) & valid, valid=valid)


def _reference_objective(formulation, sample_loss, terms, labels, lam, *, weight_aam, normalize):
    """Explicit loops over anchors and pairs, in Python floats."""
    size, pw = len(labels), formulation == "pw"
    lam = [1.0] * size if lam is None else [float(x) for x in lam]
    num = den = 0.0
    for i in range(size):
        w = lam[i] if weight_aam and formulation != "erm" else 1.0
        num, den = num + w * float(sample_loss[i]), den + w
    aam = num / (den if normalize == "sum" else size)
    num = den = ref = 0.0
    for i in range(size):
        pos = [j for j in range(size) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(size) if labels[j] != labels[i]]
        for group, other in ((pos, neg), (neg, pos)):
            for j in group:
                beta = (0.5 if other else 1.0) / len(group)
                omega = lam[i] + lam[j] if pw else lam[i]
                num += beta * omega * float(terms.loss[i, j])
                den += beta * omega
                ref += beta * (2.0 if pw else 1.0)
    pair = num / (den if normalize == "sum" else ref)
    return 0.7 * aam + 1.3 * pair


def _objective(formulation, sample_loss, terms, lam, **kwargs):
    return weighted_objective(
        formulation,
        sample_loss=sample_loss,
        pairs=terms,
        sample_weights=lam,
        aam_weight=0.7,
        pair_weight=1.3,
        **kwargs,
    )


# ---- ARL weights ----------------------------------------------------------------------------


def test_arl_weights_normalisation(gen):
    scores = torch.rand(12, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    lam = arl_weights(scores)
    assert torch.all(lam >= 1.0)
    assert lam.mean().item() == pytest.approx(2.0, abs=1e-12)
    torch.testing.assert_close(lam, 1 + len(scores) * scores / scores.sum())
    torch.testing.assert_close(lam, 1 + scores / scores.mean())  # ARL's code form
    torch.testing.assert_close(arl_weights(0.37 * scores), lam)


def test_arl_weight_sum_is_constant_so_its_gradient_vanishes(gen):
    scores = torch.rand(8, generator=gen, dtype=torch.float64).requires_grad_(True)
    arl_weights(scores).sum().backward()
    torch.testing.assert_close(scores.grad, torch.zeros_like(scores))


def test_arl_weights_single_process_group_matches_plain(gen, tmp_path):
    import torch.distributed as dist

    scores = torch.rand(6, generator=gen, dtype=torch.float64).requires_grad_(True)
    plain = arl_weights(scores)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        reduced = arl_weights(scores)
        (reduced * torch.arange(6.0, dtype=torch.float64)).sum().backward()
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(reduced, plain)
    assert scores.grad is not None and torch.isfinite(scores.grad).all()


def _ddp_worker(rank: int, world: int, init_file: str) -> None:
    import torch.distributed as dist

    with gloo_group(rank, world, init_file):
        gen = torch.Generator().manual_seed(0)  # same global batch and init on every rank
        features = torch.randn(8, 4, generator=gen, dtype=torch.float64)
        sample_loss = torch.rand(8, generator=gen, dtype=torch.float64)
        adversary = nn.Linear(4, 1).double()
        with torch.no_grad():
            for p in adversary.parameters():
                p.normal_(generator=gen)
        reference = nn.Linear(4, 1).double()
        reference.load_state_dict(adversary.state_dict())

        local = slice(rank * 8 // world, (rank + 1) * 8 // world)
        lam = arl_weights(torch.sigmoid(adversary(features[local])).squeeze(1))
        (lam * sample_loss[local]).mean().backward()  # each rank: mean over its own samples
        grads = [p.grad.clone() for p in adversary.parameters()]
        for grad in grads:  # what DDP does: average over ranks
            dist.all_reduce(grad)
            grad /= world

        scores = torch.sigmoid(reference(features)).squeeze(1)
        lam_full = 1 + 8 * scores / scores.sum()
        (lam_full * sample_loss).mean().backward()
        torch.testing.assert_close(lam, lam_full[local].detach())
        for grad, p in zip(grads, reference.parameters(), strict=True):
            torch.testing.assert_close(grad, p.grad)


@pytest.mark.slow
def test_arl_weights_two_ranks_match_global_batch(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init")), nprocs=2, join=True)


# ---- weighted objective ---------------------------------------------------------------------


@pytest.mark.parametrize("normalize", ["sum", "none"])
@pytest.mark.parametrize("counts", [[2, 2, 2], [3, 2, 1, 2]])
def test_unit_weights_give_exactly_erm(gen, normalize, counts):
    labels = _labels(counts)
    emb = torch.randn(len(labels), 6, generator=gen)
    terms = PairwiseSimilarityLoss()(emb, labels)
    sample_loss = torch.rand(len(labels), generator=gen)
    erm = _objective("erm", sample_loss, terms, None, normalize=normalize)
    for formulation in ARW:
        for lam in (None, torch.ones(len(labels))):
            value = _objective(formulation, sample_loss, terms, lam, normalize=normalize)
            assert torch.equal(value, erm), (formulation, lam)
    # "sum": any uniform weights, e.g. an untrained adversary's 2s, also give ERM exactly
    twos = torch.full((len(labels),), 2.0)
    for formulation in ARW:
        value = _objective(formulation, sample_loss, terms, twos, normalize=normalize)
        assert torch.equal(value, erm if normalize == "sum" else 2 * erm)


@pytest.mark.parametrize("normalize", ["sum", "none"])
@pytest.mark.parametrize("weight_aam", [True, False])
@pytest.mark.parametrize("formulation", ["erm", *ARW])
@pytest.mark.parametrize("counts", [[2, 2, 2], [3, 2, 1, 2]])
def test_objective_matches_explicit_loops(gen, formulation, weight_aam, normalize, counts):
    labels = _labels(counts)
    terms = _random_terms(gen, labels)
    sample_loss = torch.rand(len(labels), generator=gen, dtype=torch.float64)
    lam = None if formulation == "erm" else 1 + 3 * torch.rand(len(labels), generator=gen).double()
    value = _objective(
        formulation, sample_loss, terms, lam, weight_aam=weight_aam, normalize=normalize
    )
    expected = _reference_objective(
        formulation, sample_loss, terms, labels, lam, weight_aam=weight_aam, normalize=normalize
    )
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("formulation", ["pw", "aps"])
def test_pair_weight_read_back_from_gradient(gen, formulation):
    """d objective / d loss_ij = beta_ij * omega_ij / Z: recover omega_ij for each pair."""
    per_speaker, speakers = 3, 4
    labels = _labels([per_speaker] * speakers)
    terms = _random_terms(gen, labels)
    loss = terms.loss.clone().requires_grad_(True)
    lam = 1 + 3 * torch.rand(len(labels), generator=gen, dtype=torch.float64)
    objective = weighted_objective(
        formulation,
        sample_loss=None,
        pairs=PairTerms(loss, terms.positive, terms.valid),
        sample_weights=lam,
        aam_weight=0.0,
        pair_weight=1.0,
        normalize="none",
    )
    objective.backward()
    beta = torch.where(
        terms.positive, 0.5 / (per_speaker - 1), 0.5 / ((speakers - 1) * per_speaker)
    )
    unit = 2.0 if formulation == "pw" else 1.0
    omega = loss.grad * unit * len(labels) / beta
    expected = lam[:, None] + lam[None, :] if formulation == "pw" else lam[:, None].expand(-1, 12)
    torch.testing.assert_close(omega[terms.valid], expected[terms.valid])
    assert torch.all(loss.grad[~terms.valid] == 0)


def test_balanced_pair_weights_rows(gen):
    terms = _random_terms(gen, _labels([3, 2, 1]))
    beta = balanced_pair_weights(terms)
    torch.testing.assert_close(beta.sum(dim=1), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(
        (beta * terms.positive).sum(dim=1)[:5], torch.full((5,), 0.5).double()
    )


@pytest.mark.parametrize("normalize", ["sum", "none"])
def test_aps_equals_pw_on_symmetric_pk_batches(gen, normalize):
    """Documented identity: with symmetric pair losses in a P x K batch, the two coincide."""
    labels = _labels([3, 3, 3, 3])
    terms = PairwiseSimilarityLoss()(torch.randn(12, 6, generator=gen), labels)
    lam = 1 + 3 * torch.rand(12, generator=gen)
    aps = _objective("aps", torch.zeros(12), terms, lam, normalize=normalize)
    pw = _objective("pw", torch.zeros(12), terms, lam, normalize=normalize)
    torch.testing.assert_close(aps, pw)


def test_objective_rejects_bad_arguments(gen):
    terms = _random_terms(gen, _labels([2, 2]))
    kwargs = dict(sample_loss=torch.rand(4).double(), pairs=terms, aam_weight=1.0, pair_weight=1.0)
    with pytest.raises(ValueError, match="formulation"):
        weighted_objective("arl", sample_weights=None, **kwargs)
    with pytest.raises(ValueError, match="erm"):
        weighted_objective("erm", sample_weights=torch.ones(4), **kwargs)
    with pytest.raises(ValueError, match="shape"):
        weighted_objective("pw", sample_weights=torch.ones(3), **kwargs)
    with pytest.raises(ValueError, match="normalize"):
        weighted_objective("pw", sample_weights=None, normalize="mean", **kwargs)


# ---- adversary --------------------------------------------------------------------------------


def _learner_batch(gen, counts=(3, 3, 3, 3), dim=8, n_clusters=3):
    labels = _labels(list(counts))
    emb = torch.randn(len(labels), dim, generator=gen, dtype=torch.float64)
    terms = PairwiseSimilarityLoss().double()(emb, labels)
    sample_loss = 3 * torch.rand(len(labels), generator=gen, dtype=torch.float64)
    clusters = torch.randint(n_clusters, (len(labels),), generator=gen)
    return emb, labels, terms, sample_loss, clusters


@pytest.mark.parametrize("normalize", ["sum", "none"])
@pytest.mark.parametrize("formulation", ARW)
def test_adversary_step_does_not_lower_weighted_loss(gen, formulation, normalize):
    emb, _, terms, sample_loss, clusters = _learner_batch(gen)
    torch.manual_seed(0)
    adversary = build_adversary(formulation, embedding_dim=8, n_clusters=3, hidden=16).double()
    optimizer = torch.optim.SGD(adversary.parameters(), lr=0.5)

    def objective():
        lam = arl_weights(adversary(emb, clusters))
        return _objective(formulation, sample_loss, terms.detach(), lam, normalize=normalize)

    before = objective()
    (-before).backward()
    optimizer.step()
    with torch.no_grad():
        after = objective()
    assert after.item() > before.item()


@pytest.mark.parametrize("formulation", ARW)
def test_initial_adversary_gives_uniform_weights(gen, formulation):
    emb, _, _, _, clusters = _learner_batch(gen)
    adversary = build_adversary(formulation, embedding_dim=8, n_clusters=3).double()
    scores = adversary(emb, clusters)
    assert torch.all((scores > 0) & (scores < 1))
    torch.testing.assert_close(arl_weights(scores), torch.full_like(scores, 2.0))


@pytest.mark.parametrize("formulation", ARW)
def test_gradients_reach_only_the_side_that_steps(gen, formulation):
    labels = _labels([2, 2, 2])
    extractor, head, pair_fn = nn.Linear(5, 8), nn.Linear(8, 3), PairwiseSimilarityLoss()
    adversary = build_adversary(formulation, embedding_dim=8, n_clusters=2, hidden=4)
    with torch.no_grad():  # leave the zero initialisation so every adversary parameter gets grad
        for p in adversary.parameters():
            p.normal_(generator=gen)
    learner_params = [*extractor.parameters(), *head.parameters(), *pair_fn.parameters()]
    clusters = torch.tensor([0, 1, 0, 1, 1, 0])

    def forward():
        emb = extractor(torch.randn(6, 5, generator=gen)).requires_grad_(True)
        emb.retain_grad()
        sample_loss = F.cross_entropy(head(emb), labels, reduction="none")
        return emb, sample_loss, pair_fn(emb, labels)

    # adversary's view: the caller does NOT detach the embedding; losses are detached
    emb, sample_loss, terms = forward()
    lam = arl_weights(adversary(emb, clusters))
    (-_objective(formulation, sample_loss.detach(), terms.detach(), lam)).backward()
    assert emb.grad is None
    assert all(p.grad is None for p in learner_params)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adversary.parameters())

    # learner's view: weights detached
    adversary.zero_grad(set_to_none=True)
    emb, sample_loss, terms = forward()
    lam = arl_weights(adversary(emb, clusters)).detach()
    _objective(formulation, sample_loss, terms, lam).backward()
    assert all(p.grad is None for p in adversary.parameters())
    assert all(p.grad is not None for p in learner_params)


def test_build_adversary_kinds_and_sizes():
    assert build_adversary("erm", embedding_dim=192, n_clusters=32) is None
    with pytest.raises(ValueError, match="formulation"):
        build_adversary("arl", embedding_dim=192, n_clusters=32)
    mlp = build_adversary("pw", embedding_dim=192, n_clusters=32, hidden=64)
    assert isinstance(mlp, Adversary)
    assert sum(p.numel() for p in mlp.parameters()) == (192 + 32) * 64 + 64 + 64 + 1
    linear = build_adversary("aps", embedding_dim=192, n_clusters=32, hidden=0, use_cluster=False)
    assert sum(p.numel() for p in linear.parameters()) == 192 + 1
    pl = build_adversary("pl", embedding_dim=192, n_clusters=32)
    assert isinstance(pl, ClusterWeights) and sum(p.numel() for p in pl.parameters()) == 32


def test_cluster_weights_depend_only_on_cluster(gen):
    adversary = ClusterWeights(4)
    with torch.no_grad():
        adversary.logits.copy_(torch.tensor([-1.0, 0.0, 1.0, 2.0]))
    ids = torch.tensor([3, 0, 3, 2])
    scores = adversary(torch.randn(4, 8, generator=gen), ids)
    torch.testing.assert_close(scores, torch.sigmoid(adversary.logits[ids]))
    torch.testing.assert_close(adversary(None, ids), scores)


# ---- clusters ---------------------------------------------------------------------------------


def test_assign_matches_brute_force_and_sklearn(gen):
    from sklearn.cluster import KMeans

    index = ClusterIndex(torch.randn(5, 8, generator=gen))
    emb = torch.randn(300, 8, generator=gen) * torch.rand(300, 1, generator=gen) * 4
    brute = torch.tensor(
        [
            max(range(5), key=lambda c: F.cosine_similarity(e, index.centroids[c], dim=0))
            for e in emb
        ]
    )
    ids = index.assign(emb)
    assert ids.dtype == torch.long and torch.equal(ids, brute)
    centres = index.centroids.numpy()
    kmeans = KMeans(5, init=centres, n_init=1, max_iter=1).fit(centres)
    kmeans.cluster_centers_ = centres  # fixed centroids: undo fit's float round-off
    unit = F.normalize(emb, dim=1).numpy()
    assert np.array_equal(kmeans.predict(unit), ids.numpy())


@pytest.mark.parametrize("minibatch", [False, True])
def test_fit_recovers_separated_directions(gen, minibatch):
    directions = torch.eye(6)[:3] * 5
    truth = torch.arange(3).repeat(40)
    points = (directions[truth] + 0.3 * torch.randn(120, 6, generator=gen)).numpy()
    index = ClusterIndex.fit(points, n_clusters=3, seed=0, minibatch=minibatch)
    ids = index.assign(torch.from_numpy(points))
    pairs = {(int(t), int(c)) for t, c in zip(truth, ids, strict=True)}
    assert len(pairs) == 3 and len({c for _, c in pairs}) == 3
    torch.testing.assert_close(index.centroids.norm(dim=1), torch.ones(3))
    warm = ClusterIndex.fit(points, n_clusters=3, seed=1, minibatch=minibatch, init=index)
    assert torch.equal(warm.assign(torch.from_numpy(points)), ids)  # ids stable on refresh


def test_state_dict_round_trip_and_one_hot(gen):
    index = ClusterIndex(torch.randn(4, 6, generator=gen))
    buffer = io.BytesIO()
    torch.save(index.state_dict(), buffer)
    buffer.seek(0)
    restored = ClusterIndex.from_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.centroids, index.centroids)
    emb = torch.randn(10, 6, generator=gen)
    assert torch.equal(restored.assign(emb), index.assign(emb))
    codes = index.one_hot(index.assign(emb))
    assert codes.shape == (10, 4) and torch.all(codes.sum(dim=1) == 1)


def test_fit_rejects_too_few_rows():
    with pytest.raises(ValueError):
        ClusterIndex.fit(np.zeros((3, 4)), n_clusters=5, seed=0)

"""The adversary's stabilisers (cap, temperature, penalties, EMA), GroupDRO, the collapse
monitors, and the schedule knobs (adversary_every, warm-up at fine-tuning, many clusters)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_config

from arw_sv import clusters as clusters_module
from arw_sv.arw import arl_weights
from arw_sv.checkpoint import load_checkpoint
from arw_sv.clusters import ClusterIndex
from arw_sv.config import CHOICES, AdversaryConfig, LossConfig, load_config
from arw_sv.models.adversary import (
    Adversary,
    GroupDROWeights,
    build_adversary,
    group_dro_update,
)
from arw_sv.models.pair_loss import PairwiseSimilarityLoss
from arw_sv.robust import (
    WeightEMA,
    capped_arl_weights,
    divergence_from_uniform,
    point_biserial,
    weight_statistics,
)
from arw_sv.train import loop
from arw_sv.train.build import OPTIMIZERS, build_optimizer
from arw_sv.train.objective import Objective, adversary_weights
from arw_sv.train.step import Detached, adversary_step

# ---- linear adversary ---------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "clusters"), [(16, 3), (192, 8), (192, 64)])
def test_linear_adversary_has_d_plus_c_plus_one_parameters(dim, clusters):
    cfg = load_config(None, ["adversary.formulation=pw", "adversary.hidden=0"])
    adv = build_adversary("pw", embedding_dim=dim, n_clusters=clusters, hidden=cfg.adversary.hidden)
    assert sum(p.numel() for p in adv.parameters()) == dim + clusters + 1
    assert len(adv.net) == 1 and isinstance(adv.net[0], torch.nn.Linear)


# ---- the crowding input -------------------------------------------------------------------


def test_batch_crowding_matches_a_brute_force_reference(rng):
    from arw_sv.models.adversary import batch_crowding

    emb = torch.from_numpy(rng.normal(size=(13, 6))).float()
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5])
    e = emb.numpy() / np.linalg.norm(emb.numpy(), axis=1, keepdims=True)
    for k in (1, 3, 50):  # 50: more than there are other-speaker samples
        got = batch_crowding(emb, labels, k).numpy()
        for i in range(13):
            others = sorted(
                (float(e[i] @ e[j]) for j in range(13) if labels[j] != labels[i]), reverse=True
            )
            assert got[i] == pytest.approx(np.mean(others[:k]), abs=1e-6), (k, i)
    assert torch.equal(batch_crowding(emb[:3], labels[:3], 2), torch.zeros(3))  # one speaker


def test_crowding_adversary_has_one_more_input_and_needs_the_crowding():
    adv = build_adversary("pw", embedding_dim=16, n_clusters=3, hidden=0, use_crowding=True)
    assert sum(p.numel() for p in adv.parameters()) == 16 + 3 + 1 + 1
    with pytest.raises(ValueError, match="crowding"):
        adv(torch.randn(4, 16), torch.zeros(4, dtype=torch.long))
    for formulation in ("pl", "groupdro"):
        with pytest.raises(ValueError, match="use_crowding"):
            build_adversary(formulation, embedding_dim=16, n_clusters=3, use_crowding=True)


def test_crowding_alone_lets_a_linear_adversary_find_the_crowded_samples(rng):
    # The loss is high exactly where samples are crowded; the adversary sees only the
    # crowding and, by gradient ascent on the weighted loss, learns to up-weight it.
    adv = Adversary(
        embedding_dim=4,
        n_clusters=1,
        hidden=0,
        use_embedding=False,
        use_cluster=False,
        use_crowding=True,
    )
    crowding = torch.from_numpy(rng.uniform(0, 1, 64)).float()
    loss = 1.0 + 3.0 * (crowding > 0.7).float()
    opt = torch.optim.Adagrad(adv.parameters(), lr=0.5)
    zeros = torch.zeros(64, dtype=torch.long)
    for _ in range(30):
        opt.zero_grad()
        (-(arl_weights(adv(torch.zeros(64, 4), zeros, crowding)) * loss).mean()).backward()
        opt.step()
    w = arl_weights(adv(torch.zeros(64, 4), zeros, crowding)).detach()
    assert float(adv.net[0].weight[0, 0].detach()) > 0
    assert float(w[crowding > 0.7].mean()) > 1.5 * float(w[crowding <= 0.7].mean())


# ---- the cap --------------------------------------------------------------------------------


def test_cap_matches_a_hand_computation():
    scores = torch.tensor([0.9, 0.1, 0.1, 0.1])
    # Uncapped: 1 + 4 f / 1.2 = [4, 4/3, 4/3, 4/3]. Cap 3: p_0 = 2, the other three share
    # the remaining budget 4 - 2 equally: 2/3 each.
    assert torch.allclose(arl_weights(scores), torch.tensor([4.0, 4 / 3, 4 / 3, 4 / 3]))
    expected = torch.tensor([3.0, 5 / 3, 5 / 3, 5 / 3])
    assert torch.allclose(capped_arl_weights(scores, 3.0), expected)


def test_cap_bounds_every_weight_and_keeps_arl_normalisation():
    gen = torch.Generator().manual_seed(0)
    for trial in range(200):
        batch = int(torch.randint(2, 65, (1,), generator=gen))
        spread = float(torch.rand(1, generator=gen)) * 12
        logits = torch.randn(batch, generator=gen, dtype=torch.float64) * spread
        scores = torch.sigmoid(logits)
        cap = 2.0 + float(torch.rand(1, generator=gen)) * 6
        w = capped_arl_weights(scores, cap)
        assert float(w.max()) <= cap + 1e-9, trial
        assert float(w.min()) >= 1.0 - 1e-12
        assert math.isclose(float(w.mean()), 2.0, rel_tol=1e-9)
        # Order is kept (ties at the cap allowed).
        order = scores.argsort()
        assert bool((w[order].diff() >= -1e-12).all())
        # A cap that does not bind changes nothing.
        if float(arl_weights(scores).max()) < cap:
            assert torch.allclose(w, arl_weights(scores))


def test_capped_weights_give_no_gradient_to_capped_samples():
    scores = torch.tensor([0.9, 0.1, 0.2, 0.3], requires_grad=True)
    w = capped_arl_weights(scores, 3.0)
    (w * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert scores.grad[0] == 0 and bool((scores.grad[1:] != 0).all())


def test_cap_below_two_is_refused():
    with pytest.raises(ValueError, match="max_weight"):
        capped_arl_weights(torch.tensor([0.5, 0.5]), 1.5)


# ---- temperature ----------------------------------------------------------------------------


def test_temperature_one_changes_nothing_and_large_temperature_gives_uniform_weights():
    torch.manual_seed(0)
    emb, ids = torch.randn(6, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    plain = Adversary(embedding_dim=16, n_clusters=3, hidden=8)
    torch.nn.init.normal_(plain.net[-1].weight, std=3.0)
    torch.nn.init.normal_(plain.net[-1].bias, std=3.0)
    hot = Adversary(embedding_dim=16, n_clusters=3, hidden=8, temperature=1.0)
    hot.load_state_dict(plain.state_dict())
    assert torch.equal(plain(emb, ids), hot(emb, ids))
    with torch.no_grad():
        spread = arl_weights(plain(emb, ids))
    assert float(spread.max() - spread.min()) > 0.1
    cold = Adversary(embedding_dim=16, n_clusters=3, hidden=8, temperature=1e6)
    cold.load_state_dict(plain.state_dict())
    assert torch.allclose(arl_weights(cold(emb, ids)), torch.full((6,), 2.0), atol=1e-5)


def test_pl_temperature_divides_the_logits():
    adv = build_adversary("pl", embedding_dim=4, n_clusters=2, temperature=4.0)
    with torch.no_grad():
        adv.logits.copy_(torch.tensor([2.0, -2.0]))
    scores = adv(None, torch.tensor([0, 1]))
    assert torch.allclose(scores, torch.sigmoid(torch.tensor([0.5, -0.5])))


# ---- penalty toward uniform -----------------------------------------------------------------


def test_divergences_match_hand_values_and_vanish_at_uniform():
    w = torch.tensor([1.0, 3.0])  # p = [1/4, 3/4]
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert math.isclose(float(divergence_from_uniform(w, "kl")), kl, rel_tol=1e-6)
    assert math.isclose(float(divergence_from_uniform(w, "chi2")), 2 * (1 / 16 + 9 / 16) - 1)
    for kind in ("kl", "chi2"):
        assert float(divergence_from_uniform(torch.full((5,), 2.0), kind)) == pytest.approx(
            0, abs=1e-6
        )


@pytest.mark.parametrize("kind", ["kl", "chi2"])
def test_penalty_gradient_points_toward_uniform(kind):
    w = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    divergence_from_uniform(w, kind).backward()
    # Descent raises the smallest weight and lowers the largest.
    assert w.grad[0] < 0 < w.grad[2]


def _detached_batch(n_clusters=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(6, 8, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    pairs = PairwiseSimilarityLoss()(torch.nn.functional.normalize(emb, dim=1), labels)
    loss = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.2, 0.4])
    ids = torch.tensor([0, 0, 1, 1, 2, 2]) % n_clusters
    return Detached(emb, loss, (pairs.detach(),), ids)


@pytest.mark.parametrize("kind", ["kl_penalty", "chi2_penalty"])
def test_adversary_step_with_penalty_moves_weights_toward_uniform(kind):
    batch = _detached_batch()
    loss_cfg = LossConfig(pair_weight=0.0)
    spreads = {}
    for penalty in (0.0, 50.0):
        adv = build_adversary("pl", embedding_dim=8, n_clusters=3)
        with torch.no_grad():
            adv.logits.copy_(torch.tensor([-1.0, 1.0, 0.0]))
        cfg = AdversaryConfig(formulation="pl", **{kind: penalty})
        opt = torch.optim.SGD(adv.parameters(), lr=0.01)
        with torch.no_grad():
            w = adversary_weights(adv, batch.embeddings, batch.cluster_ids, cfg)
            before = float(divergence_from_uniform(w, "chi2"))
        adversary_step(adv, batch, opt, objective=Objective.from_sections(cfg, loss_cfg))
        with torch.no_grad():
            w = adversary_weights(adv, batch.embeddings, batch.cluster_ids, cfg)
        spreads[penalty] = float(divergence_from_uniform(w, "chi2")) - before
    # Without a penalty the adversary concentrates on the high-loss cluster 1; with a large
    # one the divergence falls instead.
    assert spreads[0.0] > 0 > spreads[50.0]


# ---- per-cluster EMA ------------------------------------------------------------------------


def test_weight_ema_matches_a_hand_computation_and_round_trips():
    ema = WeightEMA(n_clusters=3, decay=0.5)
    out = ema(torch.tensor([2.0, 4.0, 1.0]), torch.tensor([0, 0, 1]))
    assert torch.allclose(out, torch.tensor([3.0, 3.0, 1.0]))  # first sight: the batch mean
    out = ema(torch.tensor([6.0, 2.0, 5.0]), torch.tensor([0, 0, 2]))
    # cluster 0: 0.5 * 3 + 0.5 * 4 = 3.5; cluster 1 absent keeps 1; cluster 2 first seen: 5.
    assert torch.allclose(out, torch.tensor([3.5, 3.5, 5.0]))
    assert torch.allclose(ema.value, torch.tensor([3.5, 1.0, 5.0], dtype=torch.float64))
    copy = WeightEMA(3, 0.5)
    copy.load_state_dict(ema.state_dict())
    ids = torch.tensor([1, 2])
    assert torch.equal(copy(torch.tensor([3.0, 1.0]), ids), ema(torch.tensor([3.0, 1.0]), ids))


# ---- GroupDRO -------------------------------------------------------------------------------


def test_group_dro_update_matches_a_hand_computation():
    batch = _detached_batch()
    batch = Detached(
        batch.embeddings, batch.sample_loss, batch.pairs, torch.tensor([0, 0, 1, 1, 1, 0])
    )
    adv = build_adversary("groupdro", embedding_dim=8, n_clusters=3, dro_step_size=0.1)
    assert isinstance(adv, GroupDROWeights) and not list(adv.parameters())
    cfg = AdversaryConfig(formulation="groupdro", dro_step_size=0.1)
    stats = adversary_step(
        adv, batch, None, objective=Objective.from_sections(cfg, LossConfig(pair_weight=0.0))
    )
    # Group losses: g0 = mean(0.5, 1.0, 0.4) = 0.6333, g1 = mean(2, 3, 0.2) = 1.7333, g2
    # absent -> 0. q starts at 1/3 each.
    g = [0.6333333333, 1.7333333333, 0.0]
    e = [math.exp(0.1 * x) for x in g]
    expected = torch.tensor([x / sum(e) for x in e])
    assert torch.allclose(adv.q, expected, atol=1e-6)
    assert stats.objective == pytest.approx((g[0] + g[1]) / 2, rel=1e-5)
    # A second step compounds from the new q.
    adversary_step(
        adv, batch, None, objective=Objective.from_sections(cfg, LossConfig(pair_weight=0.0))
    )
    e2 = [expected[i].item() * math.exp(0.1 * g[i]) for i in range(3)]
    assert torch.allclose(adv.q, torch.tensor([x / sum(e2) for x in e2]), atol=1e-6)
    assert torch.allclose(
        group_dro_update(torch.full((2,), 0.5), torch.tensor([0.0, 0.0]), 1.0),
        torch.full((2,), 0.5),
    )


def test_group_dro_learner_loss_is_the_q_weighted_group_mean():
    batch = _detached_batch()
    adv = build_adversary("groupdro", embedding_dim=8, n_clusters=4)
    with torch.no_grad():
        adv.q.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))  # group 3 absent from the batch
    cfg = AdversaryConfig(formulation="groupdro")
    w = adversary_weights(adv, batch.embeddings, batch.cluster_ids, cfg)
    assert float(w.sum()) == pytest.approx(6.0)
    loss = batch.sample_loss
    means = [loss[batch.cluster_ids == g].mean() for g in range(3)]
    hand = (0.1 * means[0] + 0.2 * means[1] + 0.3 * means[2]) / 0.6
    for normalize in ("sum", "none"):
        objective = Objective.from_sections(
            AdversaryConfig(formulation="groupdro", normalize=normalize),
            LossConfig(pair_weight=0.0),
        )
        got = objective(loss, batch.pairs, w)
        assert float(got) == pytest.approx(float(hand), rel=1e-6)


# ---- monitors -------------------------------------------------------------------------------


def test_weight_statistics_and_point_biserial_match_hand_values():
    w = torch.tensor([1.0, 1.0, 2.0, 4.0])
    stats = weight_statistics(w, torch.tensor([0.1, 0.3, 0.2, 5.0]))
    assert stats["weight_ess"] == pytest.approx(64 / 22)
    assert stats["weight_max"] == 4.0
    # Ranks: w -> [1.5, 1.5, 3, 4], loss -> [1, 3, 2, 4].
    rho = np.corrcoef([1.5, 1.5, 3, 4], [1, 3, 2, 4])[0, 1]
    assert stats["weight_loss_spearman"] == pytest.approx(rho)
    assert (
        weight_statistics(torch.full((4,), 2.0), torch.arange(4.0))["weight_loss_spearman"] is None
    )
    assert weight_statistics(torch.full((4,), 2.0), torch.arange(4.0))["weight_ess"] == 4.0
    members = torch.tensor([False, False, True, True])
    assert point_biserial(w, members) == pytest.approx(
        np.corrcoef(w.numpy(), members.numpy())[0, 1]
    )


# ---- optimizers ----------------------------------------------------------------------------


def test_optimizer_choices_are_the_registry():
    assert CHOICES["adversary.optimizer"] == tuple(OPTIMIZERS) == CHOICES["train.optimizer"]
    cfg = load_config(None, ["adversary.optimizer=adagrad", "train.optimizer=adagrad"])
    opt = build_optimizer(cfg.adversary.optimizer, [torch.nn.Parameter(torch.zeros(2))], 0.1)
    assert isinstance(opt, torch.optim.Adagrad)


# ---- schedule, clusters, fine-tuning -------------------------------------------------------


def test_adversary_due_every_kth_step_after_warmup():
    due = [s for s in range(12) if loop.adversary_due(s, 2, 3)]
    assert due == [2, 5, 8, 11]
    assert [s for s in range(4) if loop.adversary_due(s, 0, 1)] == [0, 1, 2, 3]


@pytest.mark.parametrize("n_clusters", [8, 32, 64])
def test_many_clusters_fit_from_the_bank(n_clusters, rng):
    size = clusters_module.bank_size(n_clusters)
    assert size >= 32 * n_clusters
    bank = clusters_module.EmbeddingBank(size, 16)
    cfg = load_config(None, [f"adversary.n_clusters={n_clusters}", "adversary.formulation=pw"])
    bank.add(torch.from_numpy(rng.standard_normal((4 * n_clusters - 1, 16)).astype("float32")))
    ctx = loop.distributed.DistContext()
    assert clusters_module.refresh_clusters(None, bank, 0, cfg, "cpu", ctx) is None  # too few yet
    bank.add(torch.from_numpy(rng.standard_normal((1, 16)).astype("float32")))
    clusters = clusters_module.refresh_clusters(None, bank, 0, cfg, "cpu", ctx)
    assert isinstance(clusters, ClusterIndex) and clusters.n_clusters == n_clusters
    adv = build_adversary("pw", embedding_dim=16, n_clusters=n_clusters)
    ids = clusters.assign(torch.randn(5, 16))
    assert adv(torch.randn(5, 16), ids).shape == (5,)


def _count_calls(monkeypatch):
    calls = {"learner": [], "adversary": 0}
    real_learner, real_adversary = loop.learner_step, loop.adversary_step

    def learner(*args, **kwargs):
        calls["learner"].append(kwargs["adversary"] is not None)
        return real_learner(*args, **kwargs)

    def adversary(*args, **kwargs):
        calls["adversary"] += 1
        return real_adversary(*args, **kwargs)

    monkeypatch.setattr(loop, "learner_step", learner)
    monkeypatch.setattr(loop, "adversary_step", adversary)
    return calls


def test_fine_tuning_with_warmup_zero_starts_the_adversary_at_once_every_kth_step(
    tiny_manifests, tmp_path, monkeypatch
):
    erm = loop.fit(
        tiny_config(tmp_path / "erm", tiny_manifests[0], "train.steps=2"), progress=False
    )
    calls = _count_calls(monkeypatch)
    loop.fit(
        tiny_config(
            tmp_path / "ft",
            tiny_manifests[0],
            "train.steps=7",
            f"train.init_checkpoint={erm.checkpoint}",
            "adversary.formulation=pw",
            "adversary.warmup_steps=0",
            "adversary.adversary_every=3",
        ),
        progress=False,
    )
    # The learner steps at all 7 steps, with the adversary's weights from step 0 on; the
    # adversary steps at 0, 3 and 6.
    assert calls["learner"] == [True] * 7
    assert calls["adversary"] == 3


@pytest.mark.parametrize(
    "extra",
    [
        (
            "adversary.formulation=pw",
            "adversary.hidden=0",
            "adversary.optimizer=adagrad",
            "adversary.max_weight=3.0",
            "adversary.temperature=2.0",
            "adversary.chi2_penalty=0.1",
            "adversary.weight_ema=0.9",
        ),
        ("adversary.formulation=groupdro", "adversary.dro_step_size=0.5"),
        (
            "adversary.formulation=pw",
            "adversary.hidden=0",
            "adversary.optimizer=adagrad",
            "adversary.max_weight=3.0",
            "adversary.use_crowding=true",
            "adversary.crowding_k=2",
        ),
    ],
)
def test_stabilised_runs_resume_exactly_and_log_the_monitors(tiny_manifests, tmp_path, extra):
    args = [
        "train.steps=10",
        "adversary.warmup_steps=2",
        "adversary.cluster_refresh_steps=4",
        "train.checkpoint_every=100",
        "train.log_every=2",
        *extra,
    ]
    full_cfg = tiny_config(tmp_path / "full", tiny_manifests[0], *args)
    full = loop.fit(full_cfg, progress=False)
    cfg = tiny_config(tmp_path / "cut", tiny_manifests[0], *args)
    loop.fit(cfg, progress=False, stop_after=5)
    second = loop.fit(cfg, resume=True, progress=False)
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(second.checkpoint)
    for key in ("adversary", "weight_ema"):
        if a[key] is not None:
            for name, value in a[key].items():
                assert torch.equal(value, b[key][name]), (key, name)
    for name, value in a["learner"].items():
        assert torch.equal(value, b["learner"][name]), name
    if "adversary.formulation=groupdro" in extra:
        q = a["adversary"]["q"]
        assert float(q.sum()) == pytest.approx(1.0) and not torch.allclose(
            q, torch.full_like(q, q.mean())
        )
    elif "adversary.weight_ema=0.9" in extra:
        assert a["weight_ema"] is not None
    if "adversary.use_crowding=true" in extra:  # one input more than D + C, and it moved
        weight = a["adversary"]["net.0.weight"]
        assert weight.shape[1] == full_cfg.model.embedding_dim + full_cfg.adversary.n_clusters + 1
        assert float(weight[0, -1]) != 0.0
    records = [json.loads(line) for line in (tmp_path / "full" / "history.jsonl").open()]
    late = [r for r in records if r["step"] > 2]
    assert late and all("weight_ess" in r and r["weight_max"] <= 8.0 for r in late)
    assert any(k.startswith("weight_pb/gender=") for r in late for k in r)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("adversary.max_weight=1.5", "max_weight"),
        ("adversary.temperature=0", "temperature"),
        ("adversary.chi2_penalty=-1", "chi2_penalty"),
        ("adversary.weight_ema=1.0", "weight_ema"),
        ("adversary.dro_step_size=-0.1", "dro_step_size"),
    ],
)
def test_bad_stabiliser_settings_fail_before_training(tiny_manifests, tmp_path, override, named):
    cfg = tiny_config(tmp_path, tiny_manifests[0], "adversary.formulation=pw", override)
    with pytest.raises(ValueError, match=named):
        loop.fit(cfg, progress=False)
    assert not list((tmp_path / "checkpoints").glob("*.pt"))


def test_weight_ema_without_clusters_is_refused(tiny_manifests, tmp_path):
    cfg = tiny_config(
        tmp_path,
        tiny_manifests[0],
        "adversary.formulation=aps",
        "adversary.use_cluster=false",
        "adversary.weight_ema=0.9",
    )
    with pytest.raises(ValueError, match="use_cluster"):
        loop.fit(cfg, progress=False)


def test_vrex_weights_give_the_gradient_of_the_vrex_objective():
    """The weighted mean loss with V-REx's detached weights has exactly the gradient of
    mean_c L_c + beta * var_c L_c (autograd on the objective itself), cohorts of unequal
    size, one cohort absent."""
    from arw_sv.models.adversary import VRExWeights

    torch.manual_seed(0)
    theta = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(10, 3, dtype=torch.float64)
    cohort = torch.tensor([0, 0, 0, 0, 1, 1, 3, 3, 3, 1])  # cohort 2 absent
    beta = 0.7

    def per_sample():
        return (x @ theta).exp()  # any smooth per-sample loss

    losses = per_sample()
    cohort_loss = torch.stack([losses[cohort == c].mean() for c in (0, 1, 3)])
    objective = cohort_loss.mean() + beta * cohort_loss.var(unbiased=False)
    (want,) = torch.autograd.grad(objective, theta)
    weights = VRExWeights(4, beta)(per_sample().detach().float(), cohort).double()
    assert weights.sum().item() == pytest.approx(10.0, rel=1e-6)
    (got,) = torch.autograd.grad((weights * per_sample()).mean(), theta)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # beta = 0: each present cohort equally weighted, whatever its size
    flat = VRExWeights(4, 0.0)(losses.detach().float(), cohort)
    assert flat[0].item() == pytest.approx(10 / (3 * 4))
    assert flat[4].item() == pytest.approx(10 / (3 * 3))

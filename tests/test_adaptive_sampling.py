"""Adaptive label-free sampling from the first step (loss-weighted speakers, cohort-balanced
batches) and the per-speaker sample log, against hand computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from arw_sv.data.adaptive import (
    AdaptiveSpeakerSampler,
    cohort_probabilities,
    crowding_probabilities,
    loss_probabilities,
    speaker_cohorts,
)
from arw_sv.train.sample_log import SampleLog, group_shares, read_sample_log


def _speakers(n_speakers=12, per=5):
    return np.repeat(np.arange(n_speakers), per)


def test_loss_probabilities_match_a_hand_computation():
    loss = np.array([1.0, 2.0, 4.0, 0.0])
    seen = np.array([True, True, True, False])
    # The unseen speaker takes the seen mean, 7/3; T = 0.5 squares; floor 0.2 of uniform.
    power = np.array([1.0, 4.0, 16.0, (7 / 3) ** 2])
    expected = 0.2 / 4 + 0.8 * power / power.sum()
    got = loss_probabilities(loss, seen, temperature=0.5, floor=0.2)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got.sum() == pytest.approx(1.0)
    assert got.min() >= 0.2 / 4  # the floor
    # T -> large is uniform; floor 1 is uniform.
    np.testing.assert_allclose(loss_probabilities(loss, seen, 1e9, 0.0), 0.25, rtol=1e-6)
    np.testing.assert_allclose(loss_probabilities(loss, seen, 1.0, 1.0), 0.25)
    # Nothing seen yet: uniform.
    np.testing.assert_allclose(loss_probabilities(loss, np.zeros(4, dtype=bool), 1.0, 0.0), 0.25)


def test_cohort_probabilities_give_every_cohort_an_equal_share():
    # Cohort 0 has 1 speaker, cohort 1 has 3, one speaker unseen (-1).
    cohorts = np.array([0, 1, 1, 1, -1])
    p = cohort_probabilities(cohorts)
    assert p[4] == pytest.approx(1 / 5)  # unseen keeps uniform
    assert p[0] == pytest.approx(0.4)  # the seen mass 4/5 split in two halves of 0.4
    np.testing.assert_allclose(p[1:4], 0.4 / 3)
    assert p.sum() == pytest.approx(1.0)


def test_cohort_balanced_sampler_draws_each_cohort_at_its_share(rng):
    # 2 well-separated speaker clusters of 16 and 4 speakers: balanced, each gets half.
    speakers = _speakers(20, 4)
    sampler = AdaptiveSpeakerSampler(speakers, 4, 2, rule="cohort_balanced", seed=3,
                                     refresh_steps=1, start_step=1, delay=0, n_cohorts=2,
                                     embedding_dim=2, loss_ema=0.0)  # fmt: skip
    centre = np.where(np.arange(20) < 16, 1.0, -1.0)[:, None] * np.array([[1.0, 0.2]])
    emb = centre[speakers] + 0.01 * rng.standard_normal((speakers.size, 2))
    sampler.observe(0, speakers, np.ones(speakers.size), emb)
    small = np.arange(20) >= 16
    assert len(set(sampler.cohorts[small])) == 1 and len(set(sampler.cohorts[~small])) == 1
    counts = np.zeros(20)
    for step in range(1, 2001):
        for utt, _ in sampler.batch(step)[::2]:
            counts[speakers[utt]] += 1
    share = counts[small].sum() / counts.sum()
    # Drawn without replacement 4 at a time: close to the 1/2 asked for (uniform: 1/5).
    assert 0.42 < share < 0.52


def test_loss_weighted_sampler_draws_speakers_in_proportion_and_is_deterministic():
    speakers = _speakers(12, 3)
    make = lambda: AdaptiveSpeakerSampler(speakers, 2, 2, rule="loss_weighted", seed=5,  # noqa: E731
                                          refresh_steps=1, start_step=1, delay=2, floor=0.0,
                                          loss_ema=0.0)  # fmt: skip
    sampler = make()
    losses = np.where(speakers == 0, 11.0, 1.0)  # speaker 0: 11 / (11 + 11) of the mass
    sampler.observe(0, speakers, losses)
    # Computed at the end of step 0, it applies from step 1 + delay = 3; uniform before.
    np.testing.assert_allclose(sampler.distribution_at(2), 1 / 12)
    p = sampler.distribution_at(3)
    assert p[0] == pytest.approx(0.5)
    first = [sampler.batch(s)[0][0] for s in range(3, 3003)]
    # The first of 2 distinct draws is speaker 0 with probability p_0 exactly.
    assert np.mean(speakers[first] == 0) == pytest.approx(0.5, abs=0.03)
    again = make()
    again.observe(0, speakers, losses)
    assert again.batch(10) == sampler.batch(10)


def test_running_losses_follow_the_ema_per_speaker():
    speakers = np.array([0, 0, 1, 1, 2, 2])
    sampler = AdaptiveSpeakerSampler(speakers, 2, 2, rule="loss_weighted", loss_ema=0.5,
                                     start_step=100)  # fmt: skip
    sampler.observe(0, np.array([0, 0, 1, 1]), np.array([2.0, 4.0, 1.0, 1.0]))
    sampler.observe(1, np.array([0, 0]), np.array([1.0, 1.0]))
    # Speaker 0: first seen at mean 3, then 0.5 * 3 + 0.5 * 1 = 2; speaker 1: 1; 2: unseen.
    np.testing.assert_allclose(sampler.mean_loss[:2], [2.0, 1.0])
    assert sampler.seen.tolist() == [True, True, False]


def test_refreshed_cohorts_change_when_the_embeddings_do(rng):
    n = 12
    seen = np.ones(n, dtype=bool)
    a = np.repeat(np.eye(3), 4, axis=0) + 0.01 * rng.standard_normal((n, 3))
    first = speaker_cohorts(a, seen, 3, seed=0)
    same = lambda x, y: (x[:, None] == x[None]) == (y[:, None] == y[None])  # noqa: E731
    # Same partition from a shuffled copy's geometry (labels may be renamed).
    assert same(first, speaker_cohorts(a, seen, 3, seed=1)).all()
    b = np.roll(a, 2, axis=0)  # speakers move to other clusters
    second = speaker_cohorts(b, seen, 3, seed=0)
    assert not same(first, second).all()
    # Through the sampler: re-clustered at every refresh from the running embeddings.
    speakers = np.arange(n)
    sampler = AdaptiveSpeakerSampler(speakers, 2, 1, rule="cohort_balanced", refresh_steps=1,
                                     start_step=1, delay=0, n_cohorts=3, embedding_dim=3,
                                     loss_ema=0.0)  # fmt: skip
    sampler.observe(0, speakers, np.ones(n), a)
    before = sampler.cohorts.copy()
    sampler.observe(1, speakers, np.ones(n), b)
    assert not same(before, sampler.cohorts).all()
    assert same(sampler.cohorts, second).all()


def test_sampler_state_round_trips_and_resumes_the_same_batches():
    speakers = _speakers(10, 4)
    kw = dict(rule="loss_weighted", seed=2, refresh_steps=2, start_step=2, delay=1)
    full = AdaptiveSpeakerSampler(speakers, 3, 2, **kw)
    rng = np.random.default_rng(0)
    feed = [(s, rng.random(speakers.size) * 3) for s in range(6)]
    for step, loss in feed[:3]:
        full.observe(step, speakers, loss)
    state = full.state_dict()
    resumed = AdaptiveSpeakerSampler(speakers, 3, 2, **kw)
    resumed.load_state_dict(state)
    for step, loss in feed[3:]:
        full.observe(step, speakers, loss)
        resumed.observe(step, speakers, loss)
    assert [full.batch(s) for s in range(3, 12)] == [resumed.batch(s) for s in range(3, 12)]
    other = AdaptiveSpeakerSampler(speakers, 3, 2, **{**kw, "rule": "cohort_balanced"})
    with pytest.raises(ValueError, match="rule"):
        other.load_state_dict(state)


def test_heldout_adaptive_flags_the_speakers_nearest_the_worst_heldout_cohort(rng):
    """Held-out speakers in 4 clusters; in one cluster the speakers are barely separable
    (high held-out EER). The training speakers nearest that cluster fill the share asked
    for; the distribution is re-derived from the current held-out embeddings each refresh."""
    d, n_train = 8, 40
    centres = np.eye(d)[:4] * 3.0
    spread = np.array([1.0, 1.0, 1.0, 0.05])  # cluster 3: its speakers nearly coincide

    def speakers_of(cluster_of, per):
        ids = np.repeat(np.arange(len(cluster_of)), per)
        own = rng.standard_normal((len(cluster_of), d)) * spread[cluster_of][:, None]
        noise = 0.3 * rng.standard_normal((ids.size, d))
        return centres[cluster_of][ids] + own[ids] + noise, ids

    held_cluster = np.repeat(np.arange(4), 6)
    held, held_spk = speakers_of(held_cluster, 4)
    train_cluster = np.arange(n_train) % 4
    train_emb, train_ids = speakers_of(train_cluster, 2)
    sampler = AdaptiveSpeakerSampler(np.repeat(np.arange(n_train), 2), 8, 2,
                                     rule="heldout_adaptive", refresh_steps=1, start_step=1,
                                     delay=0, n_cohorts=4, cohort_top=1, cohort_share=0.5,
                                     embedding_dim=d, loss_ema=0.0)  # fmt: skip
    calls = []
    sampler.heldout_embeddings = lambda: calls.append(1) or (held, held_spk)
    sampler.observe(0, train_ids, np.ones(train_ids.size), train_emb)
    assert calls == [1]
    flagged = sampler.flagged
    assert flagged[train_cluster == 3].all() and not flagged[train_cluster != 3].any()
    p = sampler.distribution_at(1)
    np.testing.assert_allclose(p[flagged], 0.5 / flagged.sum())
    np.testing.assert_allclose(p[~flagged], 0.5 / (~flagged).sum())
    assert sampler.discovery["bottom_eer"] > sampler.discovery["rest_eer"]
    state = sampler.state_dict()
    assert torch.equal(state["flagged"], torch.from_numpy(flagged))


def test_crowding_probabilities_by_hand():
    crowd = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.3, 0.7, 0.4, 0.6, 0.8])
    p, flagged = crowding_probabilities(crowd, fraction=0.25, share=0.6)
    # ceil(0.25 * 10) = 3 most crowded: 0.9, 0.9 (ties by index), 0.8.
    assert np.flatnonzero(flagged).tolist() == [1, 3, 9]
    np.testing.assert_allclose(p[flagged], 0.6 / 3)
    np.testing.assert_allclose(p[~flagged], 0.4 / 7)
    assert p.sum() == pytest.approx(1.0)
    # At least the batch slots it must fill; all flagged: uniform.
    assert crowding_probabilities(crowd, 0.1, 0.5, at_least=4)[1].sum() == 4
    np.testing.assert_allclose(crowding_probabilities(crowd, 1.0, 0.5)[0], 0.1)


def test_crowding_adaptive_flags_the_crowded_speakers_and_follows_the_model(rng):
    """Training speakers in 4 clusters, one of them crowded (its speakers nearly coincide):
    that cluster fills the share; when the embeddings change (another cluster crowded),
    the next refresh flags the new one. Crowding is computed from the embedder's current
    vectors (a frozen copy of the model in training), not from running means."""
    d, n = 8, 40
    centres = np.eye(d)[:4] * 3.0
    cluster = np.arange(n) % 4

    def embeddings(crowded: int):
        spread = np.where(np.arange(4) == crowded, 0.02, 1.0)
        own = rng.standard_normal((n, d)) * spread[cluster][:, None]
        ids = np.repeat(np.arange(n), 3)
        return centres[cluster][ids] + own[ids] + 0.01 * rng.standard_normal((ids.size, d)), ids

    sampler = AdaptiveSpeakerSampler(np.repeat(np.arange(n), 3), 8, 2, rule="crowding_adaptive",
                                     refresh_steps=2, start_step=2, delay=1, crowded_fraction=0.25,
                                     cohort_share=0.5, neighbours=3, embedding_dim=d)  # fmt: skip
    current = {"crowded": 3}
    calls = []
    sampler.training_embeddings = lambda: calls.append(1) or embeddings(current["crowded"])
    ids = np.arange(8)
    sampler.observe(0, ids, np.ones(8))  # step 1 done: before start_step, no refresh
    assert calls == []
    sampler.observe(1, ids, np.ones(8))  # 2 steps done: refresh, applies from step 2 + 1
    assert calls == [1]
    assert sampler.flagged.sum() == 10 and sampler.flagged[cluster == 3].all()
    np.testing.assert_allclose(sampler.distribution_at(2), 1 / n)  # the delay
    p = sampler.distribution_at(3)
    np.testing.assert_allclose(p[cluster == 3], 0.5 / 10)
    np.testing.assert_allclose(p[cluster != 3], 0.5 / 30)
    current["crowded"] = 1
    sampler.observe(2, ids, np.ones(8))
    sampler.observe(3, ids, np.ones(8))
    assert calls == [1, 1] and sampler.flagged[cluster == 1].all()
    assert not sampler.flagged[cluster == 3].any()
    assert torch.equal(sampler.state_dict()["flagged"], torch.from_numpy(sampler.flagged))
    sampler.training_embeddings = None
    with pytest.raises(RuntimeError, match="embedder"):
        sampler.probabilities(6)


def test_heldout_speaker_errors_match_a_direct_count(rng):
    """(FNMR_s + FMR_s) / 2 at the EER threshold of the held-out trials, against a loop
    over the same trials that counts each speaker's errors one trial at a time."""
    from arw_sv.data.cohort_sampling import _heldout_pairs, heldout_speaker_errors
    from arw_sv.metrics.rates import eer

    spk = np.repeat(np.arange(6), 4)
    emb = rng.standard_normal((6, 5))[spk] + 0.8 * rng.standard_normal((spk.size, 5))
    errors = heldout_speaker_errors(emb, spk, max_nontargets=150, seed=3)
    a, b, labels = _heldout_pairs(spk, 150, 3)
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scores = (x[a] * x[b]).sum(axis=1)
    threshold = eer(scores, labels)[1]
    for s in range(6):
        rates = []
        for kind in (1, 0):
            wrong = total = 0
            for i in range(len(a)):
                if labels[i] != kind:
                    continue
                touches = int(spk[a[i]] == s) + int(spk[b[i]] == s)
                accepted = scores[i] >= threshold
                total += touches
                wrong += touches * int(accepted != bool(kind))
            rates.append(wrong / total if total else 0.0)
        assert errors[s] == pytest.approx(sum(rates) / 2)
    assert errors.max() > 0


def test_neighbour_errors_average_the_nearest_heldout_speakers():
    from arw_sv.data.cohort_sampling import neighbour_errors

    held = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    errors = np.array([0.1, 0.3, 0.5, 0.2])
    train = np.array([[2.0, 0.1], [0.1, 3.0], [-1.0, -0.2]])
    # nearest 2 by cosine: train 0 -> held 0, 3; train 1 -> held 1, 3; train 2 -> held 2, 1
    np.testing.assert_allclose(neighbour_errors(train, held, errors, 2), [0.15, 0.25, 0.4])
    np.testing.assert_allclose(neighbour_errors(train, held, errors, 1), [0.1, 0.3, 0.5])
    np.testing.assert_allclose(neighbour_errors(train, held, errors, 9), errors.mean())


def test_heldout_knn_flags_the_speakers_nearest_bad_heldout_speakers(rng):
    """Held-out speakers in 4 clusters, one of them barely separable (its speakers nearly
    coincide: high per-speaker error); the training speakers near that cluster (their 6
    nearest held-out speakers: the cluster) are the
    highest-scored and fill the share, from the current embedders at each refresh."""
    d, n_train = 8, 40
    centres = np.eye(d)[:4] * 3.0

    def speakers_of(cluster_of, per, bad):
        spread = np.where(np.arange(4) == bad, 0.02, 1.0 if bad >= 0 else 0.3)
        ids = np.repeat(np.arange(len(cluster_of)), per)
        own = rng.standard_normal((len(cluster_of), d)) * spread[cluster_of][:, None]
        return centres[cluster_of][ids] + own[ids] + 0.3 * rng.standard_normal((ids.size, d)), ids

    held_cluster = np.repeat(np.arange(4), 6)
    train_cluster = np.arange(n_train) % 4
    state = {"bad": 3}
    sampler = AdaptiveSpeakerSampler(np.repeat(np.arange(n_train), 2), 8, 2, rule="heldout_knn",
                                     refresh_steps=1, start_step=1, delay=0, cohort_share=0.5,
                                     crowded_fraction=0.25, neighbours=6, embedding_dim=d)  # fmt: skip
    sampler.heldout_embeddings = lambda: speakers_of(held_cluster, 4, state["bad"])
    sampler.training_embeddings = lambda: speakers_of(train_cluster, 2, -1)
    sampler.observe(0, np.arange(8), np.ones(8))
    assert sampler.flagged.sum() == 10 and sampler.flagged[train_cluster == 3].all()
    p = sampler.distribution_at(1)
    np.testing.assert_allclose(p[train_cluster == 3], 0.5 / 10)
    np.testing.assert_allclose(p[train_cluster != 3], 0.5 / 30)
    state["bad"] = 0  # the model changed: another region of held-out speakers is now bad
    sampler.observe(1, np.arange(8), np.ones(8))
    assert (
        sampler.flagged[train_cluster == 0].all() and not sampler.flagged[train_cluster == 3].any()
    )
    sampler.training_embeddings = None
    with pytest.raises(RuntimeError, match="embedders"):
        sampler.probabilities(3)


def test_crowding_ema_ranks_by_a_running_standardised_score(rng):
    """With crowding_ema = a, the ranking score is a r + (1 - a) z over refreshes (z: this
    refresh's crowding standardised over the speakers), checked against a hand computation
    with the same crowding function; a group crowded at the first refresh stays flagged at
    the second even when another is slightly more crowded then."""
    from arw_sv.data.cohort_sampling import crowding
    from arw_sv.metrics.cohorts import speaker_means

    d, n = 8, 40
    centres = np.eye(d)[:4] * 3.0
    cluster = np.arange(n) % 4
    ids = np.repeat(np.arange(n), 2)
    draws = []
    for spreads in ([1.0, 1.0, 1.0, 0.05], [1.0, 0.3, 1.0, 0.6]):
        own = rng.standard_normal((n, d)) * np.array(spreads)[cluster][:, None]
        draws.append((centres[cluster][ids] + own[ids], ids))
    sampler = AdaptiveSpeakerSampler(ids, 8, 2, rule="crowding_adaptive", refresh_steps=1,
                                     start_step=1, delay=0, crowded_fraction=0.25,
                                     cohort_share=0.5, neighbours=3, crowding_ema=0.6,
                                     embedding_dim=d)  # fmt: skip
    feed = iter(draws)
    sampler.training_embeddings = lambda: next(feed)
    expected = np.zeros(n)
    for k, (emb, spk) in enumerate(draws):
        kappa = crowding(speaker_means(emb, spk, n), 3)
        z = (kappa - kappa.mean()) / kappa.std()
        expected = z if k == 0 else 0.6 * expected + 0.4 * z
        sampler.observe(k, np.arange(8), np.ones(8))
        np.testing.assert_allclose(sampler.crowding_score, expected, rtol=1e-12)
        assert set(np.flatnonzero(sampler.flagged)) == set(np.argsort(-expected)[:10])
    # At the second refresh alone cluster 1 is the most crowded (the plain rule would flag
    # mostly it); the running score keeps cluster 3.
    kappa2 = crowding(speaker_means(*draws[1], n), 3)
    plain = np.zeros(n, dtype=bool)
    plain[np.argsort(-kappa2)[:10]] = True
    assert plain[cluster == 1].sum() >= 7 and plain[cluster == 3].sum() <= 3
    assert sampler.flagged[cluster == 3].sum() >= 8
    state = sampler.state_dict()
    again = AdaptiveSpeakerSampler(ids, 8, 2, rule="crowding_adaptive", crowding_ema=0.6,
                                   embedding_dim=d)  # fmt: skip
    again.load_state_dict(state)
    assert again.crowding_refreshes == 2
    np.testing.assert_array_equal(again.crowding_score, sampler.crowding_score)


def test_sample_log_counts_match_a_direct_count(tmp_path):
    log = SampleLog(tmp_path / "sampling.jsonl", n_speakers=4, every=2)
    log.start(0)
    batches = [np.array([0, 0, 1, 5]), np.array([2, 2, 3, 3]), np.array([1, 1, 1, 1])]
    weights = [np.array([1.0, 2.0, 3.0, 4.0]), None, np.array([0.5, 0.5, 0.5, 0.5])]
    for step, (labels, w) in enumerate(zip(batches, weights, strict=True), start=1):
        log.add(step, labels, w)
    records = read_sample_log(tmp_path / "sampling.jsonl")
    assert len(records) == 1 and records[0]["step"] == 2  # step 3's window is still open
    # Steps 1-2: label 5 is speaker 1's speed class (5 % 4).
    assert records[0]["crops"] == [2, 2, 2, 2]
    assert records[0]["weight"] == [3.0, 7.0, 2.0, 2.0]
    shares = group_shares(records, np.array([False, True, False, False]))
    assert shares[0]["crop_share"] == pytest.approx(2 / 8)
    assert shares[0]["weight_share"] == pytest.approx(7 / 14)
    # The open window is in the checkpoint; a resumed log writes what one run would.
    state = log.state_dict()
    resumed = SampleLog(tmp_path / "sampling.jsonl", n_speakers=4, every=2)
    resumed.load_state_dict(state)
    resumed.start(3)
    resumed.add(4, np.array([0, 0, 0, 0]), None)
    last = read_sample_log(tmp_path / "sampling.jsonl")[-1]
    assert last["step"] == 4 and last["crops"] == [4, 4, 0, 0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampling",
    [
        "loss_weighted",
        "cohort_balanced",
        "heldout_adaptive",
        "crowding_adaptive",
        "heldout_knn",
        "vrex",
    ],
)
def test_adaptive_run_resumes_exactly(tiny_manifests, tmp_path, sampling):
    """Resume mid-run continues the method's state exactly: the running losses and cohorts
    (adaptive samplers), V-REx's clusters; and the sample log with them."""
    from conftest import tiny_config

    from arw_sv.checkpoint import load_checkpoint
    from arw_sv.train.loop import fit

    train, test = tiny_manifests  # the test speakers serve as held-out speakers
    method = (f"data.sampling={sampling}",) if sampling != "vrex" else (
        "adversary.formulation=vrex", "adversary.n_clusters=2", "adversary.vrex_penalty=2",
        "adversary.cluster_refresh_steps=2", "adversary.warmup_steps=1")  # fmt: skip
    args = (
        *method, "data.speakers_per_batch=4", "data.n_cohorts=2",
        "data.adaptive_start_step=1", "data.adaptive_refresh_steps=2", "data.adaptive_delay=1",
        "train.steps=6", "train.checkpoint_every=3", "train.log_every=1",
        "train.sample_log_every=2",
    )  # fmt: skip
    if sampling in ("heldout_adaptive", "heldout_knn"):
        args += (f"data.heldout_manifest={test}", "data.cohort_oversample_top=1",
                 "data.cohort_utterances_per_speaker=2", "data.crowded_fraction=0.25")  # fmt: skip
    if sampling == "crowding_adaptive":
        args += ("data.crowded_fraction=0.25", "data.cohort_utterances_per_speaker=2",
                 "data.crowding_ema=0.5")  # fmt: skip
    full = fit(tiny_config(tmp_path / "full", train, *args), progress=False)
    fit(tiny_config(tmp_path / "cut", train, *args), progress=False, stop_after=3)
    fit(tiny_config(tmp_path / "cut", train, *args), resume=True, progress=False)
    read = lambda p, name: (p / name).read_text().splitlines()  # noqa: E731
    hist = [[json.loads(x)["loss"] for x in read(tmp_path / r, "history.jsonl")]
            for r in ("full", "cut")]  # fmt: skip
    assert hist[0] == hist[1]
    assert read(tmp_path / "full", "sampling.jsonl") == read(tmp_path / "cut", "sampling.jsonl")
    if sampling == "vrex":
        history = [json.loads(x) for x in read(tmp_path / "full", "history.jsonl")]
        assert any(h.get("adversary_objective") for h in history)
        assert any(h.get("weight_std", 0) > 0 for h in history)  # cohorts weighted apart
        return
    state = load_checkpoint(full.checkpoint)["sampler"]
    assert state["rule"] == sampling and bool(state["seen"].any())
    cut = load_checkpoint(tmp_path / "cut" / "checkpoints" / "step_6.pt")["sampler"]
    assert torch.equal(state["mean_loss"], cut["mean_loss"])
    if sampling == "crowding_adaptive":
        assert state["crowding_refreshes"] == cut["crowding_refreshes"] > 1
        assert torch.equal(state["crowding_score"], cut["crowding_score"])
    assert torch.equal(state["schedule"], cut["schedule"])

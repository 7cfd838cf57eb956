"""The P x K sampler: composition, determinism, resume, coverage, group balance."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from arw_sv.data.sampler import SpeakerBatchSampler


def _speakers(rng, n_speakers=12, low=2, high=7):
    counts = rng.integers(low, high, size=n_speakers)
    return np.repeat(np.arange(n_speakers), counts)


@pytest.mark.parametrize(("P", "K"), [(2, 1), (4, 2), (6, 3)])
def test_every_batch_has_p_distinct_speakers_with_k_utterances(rng, P, K):
    speakers = _speakers(rng)
    sampler = SpeakerBatchSampler(speakers, P, K, seed=3)
    for batch in itertools.islice(iter(sampler), 3 * sampler.batches_per_epoch):
        assert len(batch) == P * K
        per_speaker = Counter(int(speakers[i]) for i, _ in batch)
        assert len(per_speaker) == P
        assert set(per_speaker.values()) == {K}


def test_k_larger_than_a_speakers_utterances_repeats_them(rng):
    speakers = np.repeat(np.arange(5), 2)  # two utterances each
    batch = next(iter(SpeakerBatchSampler(speakers, 3, 4, seed=0)))
    assert len(batch) == 12


def test_same_seed_same_batches_and_crop_seeds(rng):
    speakers = _speakers(rng)
    a = list(itertools.islice(iter(SpeakerBatchSampler(speakers, 4, 2, seed=5)), 20))
    b = list(itertools.islice(iter(SpeakerBatchSampler(speakers, 4, 2, seed=5)), 20))
    c = list(itertools.islice(iter(SpeakerBatchSampler(speakers, 4, 2, seed=6)), 20))
    assert a == b
    assert a != c


@pytest.mark.parametrize("resume_at", [1, 7, 13])
def test_resume_continues_the_same_sequence(rng, resume_at):
    speakers = _speakers(rng)
    full = list(itertools.islice(iter(SpeakerBatchSampler(speakers, 4, 2, seed=1)), 25))
    resumed = SpeakerBatchSampler(speakers, 4, 2, seed=1)
    resumed.load_state_dict({"step": resume_at, "seed": 1})
    assert list(itertools.islice(iter(resumed), 25 - resume_at)) == full[resume_at:]


def test_resume_with_another_seed_is_refused(rng):
    sampler = SpeakerBatchSampler(_speakers(rng), 4, 2, seed=1)
    with pytest.raises(ValueError, match="seed"):
        sampler.load_state_dict({"step": 3, "seed": 2})


def test_speakers_are_covered_evenly_within_an_epoch(rng):
    speakers = _speakers(rng, n_speakers=20, low=4, high=5)  # 80 utterances
    sampler = SpeakerBatchSampler(speakers, 4, 2, seed=0)
    assert sampler.batches_per_epoch == 10
    counts = Counter(int(speakers[i]) for batch in sampler.epoch_batches(0) for i, _ in batch)
    # 10 batches x 4 speakers = 40 slots over 20 speakers: each speaker exactly twice.
    assert set(counts.values()) == {4}


def test_group_balanced_sampling_equalises_groups(rng):
    speakers = np.repeat(np.arange(30), 3)
    groups = np.array([0] * 24 + [1] * 6)  # a 20% minority
    balanced = SpeakerBatchSampler(speakers, 4, 1, seed=0, groups=groups)
    plain = SpeakerBatchSampler(speakers, 4, 1, seed=0)

    def minority_share(sampler):
        picked = [int(speakers[i]) for b in sampler.epoch_batches(0) for i, _ in b]
        return np.mean(groups[picked] == 1)

    assert minority_share(balanced) == pytest.approx(0.5)
    assert minority_share(plain) < 0.35


def test_too_few_speakers_is_a_clear_error():
    with pytest.raises(ValueError, match="speakers_per_batch"):
        SpeakerBatchSampler(np.array([0, 0, 1, 1]), 3, 2)


def test_gender_x_nationality_balancing_gives_every_cell_an_equal_share():
    # data.balance_key=gender_nationality: the training loop's speaker groups are the
    # gender x nationality cells; a 4 x 2-speaker minority cell gets 1/6 of the slots.
    from arw_sv.data.manifest import Manifest, Utterance
    from arw_sv.train.loop import _speaker_groups

    cells = {("m", "UK"): 20, ("f", "UK"): 10, ("m", "USA"): 12, ("f", "USA"): 6,
             ("m", "India"): 6, ("f", "India"): 2}  # fmt: skip
    utterances = [
        Utterance(f"{g}{n}{k}/s/{j}.wav", f"{g}{n}{k}/s/{j}.wav", f"{g}{n}{k}", 3.0, g, n, "dev")
        for (g, n), count in cells.items()
        for k in range(count)
        for j in range(4)
    ]
    manifest = Manifest(utterances)
    groups = np.asarray(_speaker_groups(manifest, "gender_nationality"))
    genders, nationalities = (manifest.speaker_attribute(a) for a in ("gender", "nationality"))
    cell_of = [f"{g}/{n}" for g, n in zip(genders, nationalities, strict=True)]
    assert len(set(groups.tolist())) == 6
    assert all(len({cell_of[s] for s in np.flatnonzero(groups == g)}) == 1 for g in range(6))
    speakers = np.array([manifest.speakers.index(u.speaker) for u in manifest])
    balanced = SpeakerBatchSampler(speakers, 6, 2, seed=0, groups=groups)
    plain = SpeakerBatchSampler(speakers, 6, 2, seed=0)

    def cell_shares(sampler):
        picked = Counter(
            cell_of[int(speakers[i])]
            for batch in sampler.epoch_batches(0)
            for i, _ in batch[:: sampler.K]  # one entry per speaker slot
        )
        return {cell: n / sum(picked.values()) for cell, n in picked.items()}

    assert cell_shares(balanced) == pytest.approx(dict.fromkeys(cell_shares(balanced), 1 / 6))
    assert len(cell_shares(balanced)) == 6
    assert cell_shares(plain)["f/India"] < 0.06  # 2 of 56 speakers without balancing

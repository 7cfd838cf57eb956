"""Cohort oversampling and JTT: the targets, the sampler's shares, determinism, resume, cache."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import numpy as np
import pytest

from arw_sv.data.cohort_sampling import (
    cohort_crowding,
    crowding,
    discover_cohorts,
    jtt_errors,
    jtt_repeats,
)
from arw_sv.data.sampler import SpeakerBatchSampler


def _speakers(n_speakers=40, per=6):
    return np.repeat(np.arange(n_speakers), per)


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize("share", [0.5, 0.3])
def test_oversampled_speakers_get_the_batch_share_asked_for(share):
    speakers = _speakers()
    over = np.zeros(40, bool)
    over[:5] = True  # 12.5% of the speakers
    sampler = SpeakerBatchSampler(speakers, 8, 2, seed=1, oversample=over, oversample_share=share)
    batches = _take(sampler, 400)
    slots = [int(speakers[i]) for batch in batches for i, _ in batch[::2]]
    measured = np.mean(over[slots])
    assert measured == pytest.approx(share, abs=0.02)
    for batch in batches:  # still P distinct speakers x K
        assert len({int(speakers[i]) for i, _ in batch}) == 8
    # Without oversampling the same speakers get about their population share.
    plain = _take(SpeakerBatchSampler(speakers, 8, 2, seed=1), 400)
    assert np.mean(over[[int(speakers[i]) for b in plain for i, _ in b[::2]]]) < 0.2


def test_oversampling_is_deterministic_and_resumes_exactly():
    speakers = _speakers()
    over = np.arange(40) % 7 == 0

    def make(seed, start=0):
        return SpeakerBatchSampler(
            speakers, 8, 2, seed=seed, oversample=over, oversample_share=0.5, start_step=start
        )

    full = _take(make(3), 30)
    assert full == _take(make(3), 30)
    assert full != _take(make(4), 30)
    resumed = make(3)
    resumed.load_state_dict({"step": 17, "seed": 3})
    assert _take(resumed, 13) == full[17:]


def test_oversampling_refuses_a_cohort_too_small_for_its_share():
    over = np.zeros(40, bool)
    over[:3] = True
    with pytest.raises(ValueError, match="cannot fill"):
        SpeakerBatchSampler(_speakers(), 8, 2, oversample=over, oversample_share=0.5)


def test_jtt_upsamples_error_utterances_by_the_factor():
    speakers = _speakers(n_speakers=20, per=6)
    errors = np.zeros(len(speakers), bool)
    errors[::5] = True
    repeats = jtt_repeats(errors, 4)
    assert set(repeats[errors]) == {4} and set(repeats[~errors]) == {1}
    sampler = SpeakerBatchSampler(speakers, 4, 2, seed=2, utterance_repeats=repeats)
    batches = _take(sampler, 3000)
    counts = Counter(i for batch in batches for i, _ in batch)
    per_error = np.mean([counts[i] for i in np.flatnonzero(errors)])
    per_right = np.mean([counts[i] for i in np.flatnonzero(~errors)])
    assert per_error / per_right == pytest.approx(4.0, rel=0.1)
    resumed = SpeakerBatchSampler(speakers, 4, 2, seed=2, utterance_repeats=repeats, start_step=9)
    assert _take(resumed, 5) == batches[9:14]


def test_jtt_errors_are_the_utterances_nearer_another_speaker(rng):
    centres = np.eye(4)[:, None, :].repeat(5, axis=1) * 3.0  # 4 speakers x 5 utts, 4-d
    emb = (centres + 0.1 * rng.standard_normal(centres.shape)).reshape(20, 4)
    speakers = np.repeat(np.arange(4), 5)
    assert not jtt_errors(emb, speakers, 4).any()
    emb[7] = emb[0]  # speaker 1's third utterance sounds like speaker 0
    errors = jtt_errors(emb, speakers, 4)
    assert np.flatnonzero(errors).tolist() == [7]
    with pytest.raises(ValueError):
        jtt_repeats(errors, 0)


def test_crowding_and_cohorts_find_the_crowded_speakers(rng):
    # 30 spread-out speakers and 10 crowded ones (close to a common direction).
    spread = rng.standard_normal((30, 16))
    crowd = np.ones(16) + 0.15 * rng.standard_normal((10, 16))
    means = np.concatenate([spread, crowd])
    c = crowding(means, 5)
    assert c[30:].min() > c[:30].max()
    assert cohort_crowding(np.array([0, 0, 1]), np.array([1.0, 3.0, 5.0]), 3)[:2].tolist() == [2, 5]
    # Utterances around each speaker mean: the most crowded cohort is the crowd.
    emb = np.repeat(means, 3, axis=0) + 0.01 * rng.standard_normal((120, 16))
    out = discover_cohorts(emb, np.repeat(np.arange(40), 3), 40, n_cohorts=4, top=1, seed=0)
    flagged = np.flatnonzero(out["oversample"])
    assert set(range(30, 40)) <= set(flagged.tolist())
    assert len(flagged) < 20
    json.dumps(out)  # cacheable as JSON


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["cohort_oversample", "jtt", "cohort_batches"])
def test_prepass_is_cached_and_resume_is_exact(tiny_manifests, tmp_path, sampling, monkeypatch):
    from conftest import tiny_config

    from arw_sv import prepass
    from arw_sv.prepass import PREPASS_FILE
    from arw_sv.train.loop import fit

    train, _ = tiny_manifests
    common = ("data.speakers_per_batch=4", "data.n_cohorts=3", "data.cohort_oversample_top=1")
    common += ("data.cohort_neighbours=2", "train.checkpoint_every=2", "train.log_every=1")
    init = fit(tiny_config(tmp_path / "erm", train, "train.steps=2", *common), progress=False)
    args = (*common, f"data.sampling={sampling}", f"train.init_checkpoint={init.checkpoint}")
    full = fit(tiny_config(tmp_path / "full", train, "train.steps=4", *args), progress=False)
    cache = json.loads((tmp_path / "full" / PREPASS_FILE).read_text())
    assert cache["key"]["sampling"] == sampling
    fit(tiny_config(tmp_path / "cut", train, "train.steps=4", *args), progress=False, stop_after=2)
    assert json.loads((tmp_path / "cut" / PREPASS_FILE).read_text()) == cache  # deterministic

    def no_second_prepass(*args):
        raise AssertionError("the resumed run must read the cached pre-pass")

    monkeypatch.setattr(prepass, "embed_training_set", no_second_prepass)
    resumed = fit(
        tiny_config(tmp_path / "cut", train, "train.steps=4", *args), resume=True, progress=False
    )
    hist = [
        [json.loads(x)["loss"] for x in (p / "history.jsonl").read_text().splitlines()]
        for p in (tmp_path / "full", tmp_path / "cut")
    ]
    assert hist[0] == hist[1]
    assert full.steps == resumed.steps == 4


def test_capped_rows_keep_at_most_cap_utterances_of_every_speaker():
    from arw_sv.prepass import capped_rows

    speakers = np.repeat(np.arange(5), [1, 3, 30, 7, 25])
    rows = capped_rows(speakers, 5, seed=0)
    counts = np.bincount(speakers[rows], minlength=5)
    assert counts.tolist() == [1, 3, 5, 5, 5]  # min(count, cap)
    assert np.all(np.diff(rows) > 0)  # sorted, no repeats
    assert np.array_equal(rows, capped_rows(speakers, 5, seed=0))  # seeded
    assert not np.array_equal(rows, capped_rows(speakers, 5, seed=1))
    assert np.array_equal(capped_rows(speakers, 0, seed=0), np.arange(len(speakers)))  # 0: all


def test_prepass_embeds_the_capped_rows_and_other_ranks_read_rank_0s_cache(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from arw_sv import prepass
    from arw_sv.config import Config, DataConfig, TrainConfig

    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(12), 9)
    utts = [SimpleNamespace(path=f"u{i}.wav") for i in range(len(speakers))]
    manifest = _ListManifest(utts, [f"s{i}" for i in range(12)], speakers)
    cfg = Config(
        data=DataConfig(sampling="cohort_oversample", n_cohorts=3, cohort_oversample_top=1,
                        cohort_neighbours=2, cohort_utterances_per_speaker=4),
        train=TrainConfig(init_checkpoint="erm.pt"),
    )  # fmt: skip
    seen = []

    def fake_embed(checkpoint, manifest, rows, device):
        seen.append((rows, device))
        return rng.standard_normal((len(rows), 8)).astype(np.float32)

    monkeypatch.setattr(prepass, "embed_training_set", fake_embed)
    order = []
    # another rank: waits at the barrier for rank 0, then reads its cache
    with pytest.raises(FileNotFoundError):
        prepass.sampling_targets(cfg, manifest, tmp_path, is_main=False, barrier=lambda: None)
    main = prepass.sampling_targets(
        cfg, manifest, tmp_path, device="cuda:0", barrier=lambda: order.append("barrier")
    )
    ((rows, device),) = seen
    assert device == "cuda:0" and order == ["barrier"]
    assert np.bincount(speakers[rows]).tolist() == [4] * 12  # 4 of each speaker's 9
    other = prepass.sampling_targets(cfg, manifest, tmp_path, is_main=False, barrier=lambda: None)
    assert other == main and len(seen) == 1  # read, not recomputed
    assert main["key"]["cohort_utterances_per_speaker"] == 4


class _ListManifest(list):
    def __init__(self, utts, speakers, indices):
        super().__init__(utts)
        self.speakers = speakers
        self._indices = indices

    def speaker_indices(self):
        return list(self._indices)


def test_cohort_batches_draw_each_batch_from_few_cohorts_and_resume_exactly():
    """Label-free hard negatives: a batch's speakers come from ``cohorts_per_batch`` k-means
    cohorts (more only when those hold fewer than P speakers); the sequence is seeded."""
    from arw_sv.data.sampler import SpeakerBatchSampler

    speakers = np.repeat(np.arange(40), 4)  # 40 speakers, 4 utterances each
    cohort = np.repeat(np.arange(5), 8)  # 5 cohorts of 8 speakers
    sampler = SpeakerBatchSampler(speakers, 8, 2, seed=3, batch_cohorts=cohort,
                                  cohorts_per_batch=2)  # fmt: skip
    batches = sampler.epoch_batches(0) + sampler.epoch_batches(1)
    seen = set()
    for batch in batches:
        spk = speakers[[i for i, *_ in batch]]
        assert len(set(spk)) == 8  # P distinct speakers, K = 2 utterances each
        assert len(set(cohort[spk])) <= 2  # 8 speakers from at most 2 cohorts of 8
        seen |= set(cohort[spk])
    assert seen == set(range(5))  # every cohort takes its turn
    # Small cohorts: P = 8 from cohorts of 3 needs at least 3 of them, never 4 from one.
    small = np.arange(40) // 3  # cohorts of 3 (and one of 1)
    sampler = SpeakerBatchSampler(speakers, 8, 2, seed=0, batch_cohorts=small, cohorts_per_batch=1)
    for batch in sampler.epoch_batches(0):
        spk = speakers[[i for i, *_ in batch]]
        counts = np.bincount(small[np.unique(spk)])
        assert len(set(spk)) == 8 and counts.max() <= 3 and (counts > 0).sum() >= 3
    # Seeded and resumable: a sampler started at step 5 yields what an uninterrupted one does.
    full = SpeakerBatchSampler(speakers, 8, 2, seed=3, batch_cohorts=cohort, cohorts_per_batch=2)
    later = SpeakerBatchSampler(speakers, 8, 2, seed=3, batch_cohorts=cohort,
                                cohorts_per_batch=2, start_step=5)  # fmt: skip
    it_full, it_later = iter(full), iter(later)
    head = [next(it_full) for _ in range(8)]
    assert [next(it_later) for _ in range(3)] == head[5:]
    with pytest.raises(ValueError, match="cohort batches cannot be combined"):
        SpeakerBatchSampler(speakers, 8, 2, groups=np.zeros(40, int), batch_cohorts=cohort)


def test_heldout_pairs_are_every_target_and_distinct_nontargets():
    from arw_sv.data.cohort_sampling import _heldout_pairs

    spk = np.repeat(np.arange(30), 4)
    a, b, labels = _heldout_pairs(spk, 500, seed=0)
    assert int(labels.sum()) == 30 * 6  # every same-speaker pair (4 choose 2 each)
    assert (labels == (spk[a] == spk[b])).all() and (a < b).all()
    non = labels == 0
    assert non.sum() == 500 and len(set(zip(a[non], b[non], strict=True))) == 500
    again = _heldout_pairs(spk, 500, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, labels), again, strict=True))


def test_heldout_cohorts_rank_by_error_on_heldout_speakers_and_flag_the_nearest_trainers():
    """Held-out speakers in a crowded region (close voices: high EER) and a spread one; the
    bottom cohort is in the crowded region, and the training speakers nearest to it are
    the ones oversampled."""
    from arw_sv.data.cohort_sampling import heldout_cohorts

    rng = np.random.default_rng(0)
    dim = 16
    crowd_dir = np.zeros(dim)
    crowd_dir[0] = 1.0

    def speakers(n, crowded):
        if crowded:
            return crowd_dir * 3 + 0.35 * rng.standard_normal((n, dim))
        centres = rng.standard_normal((n, dim)) * 1.5
        centres[:, 0] = -np.abs(centres[:, 0]) - 1.5  # away from the crowd
        return centres

    def utterances(centres, per=6):
        return np.repeat(centres, per, axis=0) + 0.5 * rng.standard_normal(
            (len(centres) * per, dim)
        ), np.repeat(np.arange(len(centres)), per)

    held_centres = np.concatenate([speakers(20, True), speakers(60, False)])
    held_emb, held_spk = utterances(held_centres)
    train_centres = np.concatenate([speakers(10, True), speakers(30, False)])
    train_emb, train_spk = utterances(train_centres, per=3)
    out = heldout_cohorts(train_emb, train_spk, 40, held_emb, held_spk, n_cohorts=4, top=1)
    bottom = out["selected"][0]
    members = np.flatnonzero(np.asarray(out["cohort"]) == bottom)
    assert set(members.tolist()) <= set(range(20))  # the crowded held-out speakers
    assert out["bottom_eer"] > 2 * out["rest_eer"]
    assert out["cohort_eer"][bottom] == max(out["cohort_eer"])
    assert out["bottom_share"] == pytest.approx(len(members) / 80)
    flagged = np.flatnonzero(out["oversample"])
    assert set(flagged.tolist()) <= set(range(10)) and len(flagged) >= 5  # crowded trainers
    assert out["filled"] == 0  # the nearest-centroid rule found enough by itself
    json.dumps(out)
    # A bottom cohort that no training speaker is nearest to: the training speakers most
    # similar to it fill up to the bottom cohorts' share (here of 40 training speakers).
    far = speakers(40, False)
    far_emb, far_spk = utterances(far, per=3)
    out = heldout_cohorts(far_emb, far_spk, 40, held_emb, held_spk, n_cohorts=4, top=1)
    share = out["bottom_share"]
    assert out["filled"] > 0 and sum(out["oversample"]) == round(share * 40)
    means = np.stack([far_emb[far_spk == i].mean(axis=0) for i in range(40)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    toward = means[:, 0]  # the crowd's direction: the filled ones are the closest to it
    flagged = np.asarray(out["oversample"])
    assert toward[flagged].min() >= np.sort(toward)[-flagged.sum() - 3]
    # ... and at least the batch slots the sampler must fill from them
    more = heldout_cohorts(far_emb, far_spk, 40, held_emb, held_spk, n_cohorts=4, top=1,
                           min_flagged=20)  # fmt: skip
    assert sum(more["oversample"]) == 20 and more["selected"] == out["selected"]
    assert set(np.flatnonzero(flagged)) <= set(np.flatnonzero(more["oversample"]))


def test_heldout_speakers_that_are_training_speakers_are_refused(tiny_manifests, tmp_path):
    from conftest import tiny_config

    from arw_sv import prepass
    from arw_sv.data.manifest import read_manifest

    train = tiny_manifests[0]
    cfg = tiny_config(tmp_path, train, "data.sampling=cohort_heldout",
                      f"data.heldout_manifest={train}")  # fmt: skip
    with pytest.raises(ValueError, match="held-out speaker.*training speakers"):
        prepass._heldout(cfg, read_manifest(train), None, None, 0, "cpu")
    cfg = tiny_config(tmp_path, train, "data.sampling=cohort_heldout")
    with pytest.raises(ValueError, match="needs data.heldout_manifest"):
        prepass._heldout(cfg, read_manifest(train), None, None, 0, "cpu")


def test_heldout_speakers_without_a_same_speaker_trial_are_refused(tiny_manifests, tmp_path):
    """Held-out trials need a same-speaker pair: one utterance per speaker (or a cap of 1)
    is refused up front, naming the manifest, not at the first refresh mid-run."""
    from conftest import tiny_config

    from arw_sv import prepass
    from arw_sv.data.manifest import read_manifest

    train, test = tiny_manifests
    for sampling in ("heldout_knn", "heldout_adaptive"):
        ok = tiny_config(
            tmp_path, train, f"data.sampling={sampling}", f"data.heldout_manifest={test}"
        )
        assert len(prepass.heldout_manifest(ok, read_manifest(train)).speakers) > 1
        capped = tiny_config(tmp_path, train, f"data.sampling={sampling}",
                             f"data.heldout_manifest={test}", "data.cohort_utterances_per_speaker=1")  # fmt: skip
        with pytest.raises(ValueError, match=f"{test}.*two utterances"):
            prepass.heldout_manifest(capped, read_manifest(train))


@pytest.mark.slow
def test_heldout_cohort_discovery_trains_from_the_test_speakers_of_another_split(
    tiny_manifests, tmp_path
):
    """End to end on the tiny corpus: its test split stands in for held-out speakers."""
    from conftest import tiny_config

    from arw_sv.prepass import PREPASS_FILE
    from arw_sv.train.loop import fit

    train, held = tiny_manifests
    common = ("data.speakers_per_batch=4", "data.n_cohorts=2", "data.cohort_oversample_top=1")
    init = fit(tiny_config(tmp_path / "erm", train, "train.steps=2", *common), progress=False)
    args = (*common, "data.sampling=cohort_heldout", f"data.heldout_manifest={held}",
            f"train.init_checkpoint={init.checkpoint}")  # fmt: skip
    fit(tiny_config(tmp_path / "ft", train, "train.steps=2", *args), progress=False)
    cache = json.loads((tmp_path / "ft" / PREPASS_FILE).read_text())
    assert cache["key"]["heldout_manifest"] == str(held)
    assert len(cache["oversample"]) == 8 and len(cache["cohort_eer"]) == 2
    assert 0 < cache["bottom_share"] < 1


def test_the_pre_passes_embed_a_segment_not_its_whole_file(monkeypatch):
    """Kaldi segments (two halves of one file) are embedded as themselves by the samplers'
    pre-passes, as `arw-sv embed` does: before, both halves were the whole file."""
    import arw_sv.inference
    from arw_sv.data.manifest import Manifest, Utterance
    from arw_sv.prepass import embed_training_set

    rows = [Utterance("a-0", "/x/a.wav", "a", 2.0, "f", "UK", "dev", start=0.0),
            Utterance("a-1", "/x/a.wav", "a", 1.5, "f", "UK", "dev", start=2.0),
            Utterance("b", "/x/b.wav", "b", 0.0, "m", "UK", "dev")]  # fmt: skip
    seen = {}

    class Encoder:
        def embed_files(self, paths, *, spans=None, progress=False):
            seen["paths"], seen["spans"] = list(paths), spans
            return np.zeros((len(paths), 4))

    monkeypatch.setattr(arw_sv.inference.SpeakerEncoder, "from_checkpoint",
                        classmethod(lambda cls, *a, **k: Encoder()))  # fmt: skip
    embed_training_set("unused.pt", Manifest(rows), np.array([0, 1, 2]))
    assert seen["paths"] == ["/x/a.wav", "/x/a.wav", "/x/b.wav"]
    # The spans as `arw-sv embed` passes them (a 0 duration from the start: the whole file).
    assert seen["spans"] == [(0.0, 2.0), (2.0, 1.5), (0.0, 0.0)]

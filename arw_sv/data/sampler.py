"""Speaker-balanced P x K batch sampling, deterministic and resumable at any step.

Every batch holds ``P`` distinct speakers with ``K`` utterances each (pair losses need
several utterances per speaker). The whole sequence of batches is a pure function of the
seed, so a run resumed at step ``s`` sees exactly the batches an uninterrupted run would,
whatever the number of loader workers. Each entry also carries a crop seed, so random crops
are reproducible too.

Under DDP every rank generates the same *global* batch and keeps its own contiguous slice of
``P / world_size`` whole speakers: the slices never overlap, their union is the
single-process batch, and resuming on another number of ranks only changes the slicing,
because the sampler's state is the global step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

_SPEED_STREAM = 1 << 30  # keys the per-batch speed draws apart from the crop seeds


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def check_batch_shape(n_speakers: int, speakers_per_batch: int, rank: int, world_size: int) -> None:
    """Refuse a batch of more speakers than the data has, or one DDP cannot split whole."""
    if n_speakers < speakers_per_batch:
        raise ValueError(
            f"data.speakers_per_batch={speakers_per_batch} but the training data has only "
            f"{n_speakers} speakers"
        )
    if speakers_per_batch % world_size or not 0 <= rank < world_size:
        raise ValueError(
            f"data.speakers_per_batch={speakers_per_batch} must be a multiple of the "
            f"world size {world_size} (each rank takes whole speakers)"
        )


class _Cycle:
    """Endless reshuffled passes over a list of items, each pass from its own RNG."""

    def __init__(self, items: Sequence[int], rng: np.random.Generator) -> None:
        self.items = np.asarray(items)
        self.rng = rng
        self.queue: list[int] = []

    def take(self, exclude: set[int] | None = None) -> int:
        """Next item not in ``exclude``; skipped items stay queued for later batches."""
        for _ in range(2):
            if not self.queue:
                self.queue = list(self.rng.permutation(self.items))
            for pos in range(len(self.queue) - 1, -1, -1):
                item = int(self.queue[pos])
                if exclude is None or item not in exclude:
                    del self.queue[pos]
                    return item
            # Everything still queued is excluded: queue a fresh pass behind it.
            self.queue = list(self.rng.permutation(self.items)) + self.queue
        raise ValueError(
            f"cannot draw a distinct item: all {len(self.items)} candidates are already in the "
            "batch (too few speakers in a group for data.speakers_per_batch?)"
        )


class SpeakerBatchSampler:
    """Infinite sampler of ``P x K`` batches of ``(utterance index, crop seed)`` pairs.

    An epoch is ``n_utterances // (P * K)`` batches. Within an epoch speakers come from a
    reshuffled queue (each speaker once before any repeats), and each speaker's utterances
    from its own reshuffled queue, so coverage is even. With ``groups``, each batch's
    speaker slots are spread evenly over the groups (a label-aware reference sampler).

    Args:
        speakers: speaker index of every utterance, shape (N,).
        speakers_per_batch: P.
        utterances_per_speaker: K; speakers with fewer utterances repeat them.
        seed: fixes the whole sequence.
        groups: optional group index of every *speaker* (indexed by speaker index).
        start_step: the first batch to yield (resume).
        speed_prob: probability that a speaker slot is speed-perturbed; its K entries then
            carry a third field, the speed index in ``1..n_speeds`` (0: unperturbed).
        n_speeds: number of perturbed speeds to choose from (uniformly).
        rank, world_size: yield only this rank's slice of ``P / world_size`` speakers.
        oversample: optional bool per *speaker*: these speakers fill ``oversample_share`` of
            every batch's speaker slots (cohort oversampling; the rest come from the others).
            The count per batch is ``P * share`` rounded stochastically, so the long-run
            share is exact.
        oversample_share: the batch share of the ``oversample`` speakers.
        utterance_repeats: optional count per *utterance* (JTT up-sampling): an utterance
            is drawn in proportion to its count, as if it were duplicated that many times
            (a speaker's draws in proportion to the sum of its utterances' counts).
        batch_cohorts: optional cohort index per *speaker* (label-free hard negatives):
            each batch draws its speakers from ``cohorts_per_batch`` cohorts chosen at
            random (more when those hold fewer than P speakers), so its different-speaker
            pairs are neighbours in embedding space rather than random strangers.
        cohorts_per_batch: cohorts per batch with ``batch_cohorts``.
    """

    def __init__(
        self,
        speakers: Sequence[int] | np.ndarray,
        speakers_per_batch: int,
        utterances_per_speaker: int,
        seed: int = 0,
        groups: Sequence[int] | np.ndarray | None = None,
        start_step: int = 0,
        speed_prob: float = 0.0,
        n_speeds: int = 0,
        rank: int = 0,
        world_size: int = 1,
        oversample: Sequence[bool] | np.ndarray | None = None,
        oversample_share: float = 0.0,
        utterance_repeats: Sequence[int] | np.ndarray | None = None,
        batch_cohorts: Sequence[int] | np.ndarray | None = None,
        cohorts_per_batch: int = 1,
    ) -> None:
        speakers = np.asarray(speakers, dtype=np.int64)
        n_speakers = int(speakers.max()) + 1 if speakers.size else 0
        if speakers_per_batch < 2:
            raise ValueError("data.speakers_per_batch must be at least 2 for pair losses")
        if utterances_per_speaker < 1:
            raise ValueError("data.utterances_per_speaker must be at least 1")
        check_batch_shape(n_speakers, speakers_per_batch, rank, world_size)
        if speed_prob > 0 and n_speeds < 1:
            raise ValueError("speed_prob > 0 needs n_speeds >= 1")
        self.P, self.K, self.seed = speakers_per_batch, utterances_per_speaker, seed
        self.speed_prob, self.n_speeds = speed_prob, n_speeds
        self.rank, self.world_size = rank, world_size
        self.utts_of = [np.flatnonzero(speakers == s) for s in range(n_speakers)]
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.batches_per_epoch = max(1, len(speakers) // (self.P * self.K))
        self.step = start_step
        if groups is not None and (oversample is not None or utterance_repeats is not None):
            raise ValueError("group-balanced sampling cannot be combined with other samplers")
        self.oversample = None
        self.oversample_share = float(oversample_share)
        if oversample is not None:
            self.oversample = np.asarray(oversample, dtype=bool)
            n_over = int(self.oversample.sum())
            need = int(np.ceil(self.P * self.oversample_share))
            need_rest = self.P - int(np.floor(self.P * self.oversample_share))
            if len(self.oversample) != n_speakers or not 0.0 < self.oversample_share < 1.0:
                raise ValueError("oversample: one flag per speaker and a share in (0, 1)")
            if n_over < need or n_speakers - n_over < need_rest:
                raise ValueError(
                    f"cohort oversampling: {n_over} oversampled and {n_speakers - n_over} other "
                    f"speakers cannot fill {need} and {need_rest} of {self.P} batch slots"
                )
        self.batch_cohorts = None
        self.cohorts_per_batch = int(cohorts_per_batch)
        if batch_cohorts is not None:
            if groups is not None or oversample is not None or utterance_repeats is not None:
                raise ValueError("cohort batches cannot be combined with other samplers")
            cohorts = np.asarray(batch_cohorts, dtype=np.int64)
            if cohorts.shape != (n_speakers,) or (cohorts < 0).any() or cohorts_per_batch < 1:
                raise ValueError("batch_cohorts: one cohort index >= 0 per speaker, and "
                                 "cohorts_per_batch >= 1")  # fmt: skip
            self.batch_cohorts = cohorts
        self.utterance_repeats = None
        if utterance_repeats is not None:
            repeats = np.asarray(utterance_repeats, dtype=np.int64)
            if repeats.shape != speakers.shape or (repeats < 1).any():
                raise ValueError("utterance_repeats: one count >= 1 per utterance")
            self.utterance_repeats = repeats

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, ...]]]:
        """All global batches of one epoch, a pure function of ``(seed, epoch)``."""
        rng = np.random.default_rng(_seed(self.seed, epoch, 0))
        n_speakers = len(self.utts_of)
        if self.utterance_repeats is not None:
            reps = self.utterance_repeats
            utt_cycles = [_Cycle(np.repeat(utts, reps[utts]), rng) for utts in self.utts_of]
            weight = [int(reps[utts].sum()) for utts in self.utts_of]
            pools = [_Cycle(np.repeat(np.arange(n_speakers), weight), rng)]
        elif self.oversample is not None:
            over = np.flatnonzero(self.oversample)
            pools = [_Cycle(over, rng), _Cycle(np.flatnonzero(~self.oversample), rng)]
        elif self.batch_cohorts is not None:
            members = [
                np.flatnonzero(self.batch_cohorts == c) for c in range(self.batch_cohorts.max() + 1)
            ]
            pools = [_Cycle(m, rng) for m in members]
            sizes = np.array([m.size for m in members])
        elif self.groups is None:
            pools = [_Cycle(range(n_speakers), rng)]
        else:
            pools = [_Cycle(np.flatnonzero(self.groups == g), rng) for g in np.unique(self.groups)]
        if self.utterance_repeats is None:
            utt_cycles = [_Cycle(utts, rng) for utts in self.utts_of]
        batches = []
        for b in range(self.batches_per_epoch):
            chosen: set[int] = set()
            batch = []
            n_over = 0
            if self.oversample is not None:
                exact = self.P * self.oversample_share
                n_over = int(np.floor(exact)) + int(rng.random() < exact - np.floor(exact))
            if self.batch_cohorts is not None:
                slot_pools = self._cohort_slots(rng, sizes)
            for slot in range(self.P):
                if self.oversample is not None:
                    pool = pools[0 if slot < n_over else 1]
                elif self.batch_cohorts is not None:
                    pool = pools[slot_pools[slot]]
                else:
                    pool = pools[(b * self.P + slot) % len(pools)]
                speaker = pool.take(exclude=chosen)
                chosen.add(speaker)
                utts = utt_cycles[speaker]
                picked = [utts.take() for _ in range(self.K)]
                batch.extend(picked)
            seeds = [_seed(self.seed, epoch, b + 1, j) for j in range(len(batch))]
            if self.speed_prob > 0:
                # Own stream: switching speed perturbation on changes no crop or speaker draw.
                srng = np.random.default_rng(_seed(self.seed, epoch, b + 1, _SPEED_STREAM))
                speeds = [
                    int(srng.integers(1, self.n_speeds + 1))
                    if srng.random() < self.speed_prob
                    else 0
                    for _ in range(self.P)
                ]
                per_item = np.repeat(speeds, self.K).tolist()
                batches.append(list(zip(batch, seeds, per_item, strict=True)))
            else:
                batches.append(list(zip(batch, seeds, strict=True)))
        return batches

    def _cohort_slots(self, rng: np.random.Generator, sizes: np.ndarray) -> list[int]:
        """The cohort each of a batch's P speaker slots draws from: ``cohorts_per_batch``
        cohorts in a random order (more while they hold fewer than P speakers), filled in
        turn, none beyond its size.
        """
        chosen, total = [], 0
        for c in rng.permutation(len(sizes)):
            if sizes[c] == 0:
                continue
            chosen.append(int(c))
            total += int(sizes[c])
            if len(chosen) >= self.cohorts_per_batch and total >= self.P:
                break
        left = {c: int(sizes[c]) for c in chosen}
        slots, i = [], 0
        while len(slots) < self.P:
            c = chosen[i % len(chosen)]
            i += 1
            if left[c] > 0:
                slots.append(c)
                left[c] -= 1
        return slots

    def state_dict(self) -> dict[str, int]:
        """The first step and the seed, which fix the sequence from there on.

        Iterating does not advance ``step``: the trainer saves its own step in this form.
        """
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Start the next iteration at ``state["step"]``.

        Raises:
            ValueError: the state's seed is not this sampler's (the batches would differ).
        """
        if state["seed"] != self.seed:
            raise ValueError(f"sampler seed {state['seed']} in checkpoint, {self.seed} now")
        self.step = state["step"]

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        """Yield (this rank's slice of) batches from ``self.step`` on, forever (the trainer
        counts steps).
        """
        step = self.step
        epoch, offset = divmod(step, self.batches_per_epoch)
        size = self.P * self.K // self.world_size
        lo, hi = self.rank * size, (self.rank + 1) * size
        while True:
            for batch in self.epoch_batches(epoch)[offset:]:
                yield batch if self.world_size == 1 else batch[lo:hi]
            epoch, offset = epoch + 1, 0

"""Speaker-balanced P x K batch sampling, deterministic and resumable at any step.

Every batch holds ``P`` distinct speakers with ``K`` utterances each (pair losses need
several utterances per speaker). The whole sequence of batches is a pure function of the
seed, so a run resumed at step ``s`` sees exactly the batches an uninterrupted run would,
whatever the number of loader workers. Each entry also carries a crop seed, so random crops
are reproducible too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


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
    """

    def __init__(
        self,
        speakers: Sequence[int] | np.ndarray,
        speakers_per_batch: int,
        utterances_per_speaker: int,
        seed: int = 0,
        groups: Sequence[int] | np.ndarray | None = None,
        start_step: int = 0,
    ) -> None:
        speakers = np.asarray(speakers, dtype=np.int64)
        n_speakers = int(speakers.max()) + 1 if speakers.size else 0
        if speakers_per_batch < 2:
            raise ValueError("data.speakers_per_batch must be at least 2 for pair losses")
        if utterances_per_speaker < 1:
            raise ValueError("data.utterances_per_speaker must be at least 1")
        if n_speakers < speakers_per_batch:
            raise ValueError(
                f"data.speakers_per_batch={speakers_per_batch} but the training data has only "
                f"{n_speakers} speakers"
            )
        self.P, self.K, self.seed = speakers_per_batch, utterances_per_speaker, seed
        self.utts_of = [np.flatnonzero(speakers == s) for s in range(n_speakers)]
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)
        self.batches_per_epoch = max(1, len(speakers) // (self.P * self.K))
        self.step = start_step

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """All batches of one epoch, a pure function of ``(seed, epoch)``."""
        rng = np.random.default_rng(_seed(self.seed, epoch, 0))
        if self.groups is None:
            pools = [_Cycle(range(len(self.utts_of)), rng)]
        else:
            pools = [_Cycle(np.flatnonzero(self.groups == g), rng) for g in np.unique(self.groups)]
        utt_cycles = [_Cycle(utts, rng) for utts in self.utts_of]
        batches = []
        for b in range(self.batches_per_epoch):
            chosen: set[int] = set()
            batch = []
            for slot in range(self.P):
                pool = pools[(b * self.P + slot) % len(pools)]
                speaker = pool.take(exclude=chosen)
                chosen.add(speaker)
                utts = utt_cycles[speaker]
                picked = [utts.take() for _ in range(self.K)]
                batch.extend(picked)
            seeds = [_seed(self.seed, epoch, b + 1, j) for j in range(len(batch))]
            batches.append(list(zip(batch, seeds, strict=True)))
        return batches

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler seed {state['seed']} in checkpoint, {self.seed} now")
        self.step = state["step"]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        """Yield batches from ``self.step`` on, forever (the trainer counts steps)."""
        step = self.step
        epoch, offset = divmod(step, self.batches_per_epoch)
        while True:
            for batch in self.epoch_batches(epoch)[offset:]:
                yield batch
            epoch, offset = epoch + 1, 0

"""Label-free speaker sampling that adapts during training (from the first step on).

Two rules turn what training has seen so far into a probability per training speaker:

- ``loss_weighted`` (speaker-level hardness sampling): speaker ``s`` is drawn with
  probability ``p_s`` proportional to ``max(Lbar_s, eps) ** (1 / T)``, mixed with the
  uniform distribution so that no speaker falls below ``floor / n``::

      p = floor / n + (1 - floor) * q,   q_s = Lbar_s^(1/T) / sum_t Lbar_t^(1/T)

  where ``Lbar_s`` is a running (exponential) mean of the per-sample training loss of
  ``s``'s crops, updated each time ``s`` is in a batch. A speaker not yet seen takes the
  mean of the seen ones. Speaker identity is not a sensitive attribute; a minority that the
  representation serves badly starts with a higher loss, so its speakers are drawn more.
- ``cohort_balanced``: k-means cohorts (``n_cohorts``) of the speakers' running mean
  embeddings (L2-normalised), refitted every ``refresh_steps``; each cohort gets an equal
  share of the draws, uniform within it: ``p_s = 1 / (C' n_{c(s)})`` over the ``C'`` non-empty
  cohorts. A speaker not yet seen keeps the uniform ``1 / n`` (and the rest is renormalised).

- ``heldout_adaptive`` (held-out cohort discovery, refreshed): at each refresh the trainer
  embeds the held-out speakers (disjoint from training and test) with the *current* model;
  their k-means cohorts are ranked by EER on held-out trials, and the training speakers
  whose running mean embedding is nearest a bottom cohort fill ``cohort_share`` of the
  draws (:func:`arw_sv.data.cohort_sampling.heldout_cohorts`), the others the rest:
  ``p_s = share / n_flagged`` or ``(1 - share) / n_other``. The one-shot form
  (``cohort_heldout``) needs a trained model first; this one follows the representation
  as it forms, from the held-out error that training loss cannot show.

- ``crowding_adaptive`` (ours, issue 29): at each refresh the trainer embeds a few
  utterances of every training speaker with the *current* model; a speaker's crowding is
  its mean cosine to its ``neighbours`` nearest other speakers
  (:func:`arw_sv.data.cohort_sampling.crowding`), and the ``crowded_fraction`` most crowded
  speakers fill ``cohort_share`` of the draws, the others the rest:
  ``p_s = share / n_flagged`` or ``(1 - share) / n_other``. Speakers the representation
  cannot yet tell apart are the ones verification confuses; a minority whose identity
  rests on cues the model has not learned is crowded early (fairness-log S7). It is the
  speaker-level, refreshed form of cohort oversampling (Dheram et al.'s crowded cohorts),
  and needs neither a trained model nor held-out speakers. With ``crowding_ema`` = a > 0 the
  ranking uses a running score instead, ``r <- a r + (1 - a) z`` with ``z`` the crowding
  standardised over the speakers at this refresh (so that scores of successive models
  compare): oversampling a crowded group spreads it out, and the plain rule then drops it
  at the next refresh and oscillates (fairness-log S7); the running score keeps a group
  that has been crowded for several refreshes.

- ``heldout_knn`` (ours, issue 29, fairness-log D3): at each refresh the held-out speakers
  *and* a few utterances of every training speaker are embedded with the current model;
  each held-out speaker's error ``e_h = (FNMR_h + FMR_h) / 2`` at the EER threshold of the
  held-out trials (:func:`arw_sv.data.cohort_sampling.heldout_speaker_errors`); a training
  speaker's score is the mean ``e_h`` of its ``neighbours`` most similar held-out speakers,
  and the ``crowded_fraction`` highest-scored fill ``cohort_share`` of the draws, as in
  ``crowding_adaptive``. A soft, per-speaker form of ``heldout_adaptive``: no k-means cut
  decides which training speakers a bad held-out region stands for. Held-out speakers are
  never trained on, so oversampling a group lowers its score only by helping the
  representation generalise for it (crowding of *training* speakers falls as soon as they
  are fitted, S7).

Before ``start_step`` every rule is uniform. A new distribution computed at the end of step
``r`` takes effect at step ``r + 1 + delay``, so a loader that prefetches up to ``delay``
batches still draws every batch from the distribution an uninterrupted run with no
prefetching would use: the batches are a pure function of (seed, step, the statistics),
and the statistics are in the checkpoint, so a resumed run continues exactly.

Each batch draws ``P`` distinct speakers without replacement from ``p`` (numpy's
sequential rule) and ``K`` utterances of each uniformly (with replacement only when the
speaker has fewer than ``K``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from arw_sv.data.sampler import _seed, check_batch_shape

#: The rules whose state is a set of flagged speakers (``flagged`` in the checkpoint).
FLAGGING_RULES = ("heldout_adaptive", "crowding_adaptive", "heldout_knn")
RULES = ("loss_weighted", "cohort_balanced", *FLAGGING_RULES)


def loss_probabilities(
    mean_loss: np.ndarray, seen: np.ndarray, temperature: float, floor: float
) -> np.ndarray:
    """Speaker probabilities of ``loss_weighted`` (see the module docstring).

    Shape:
        mean_loss (n,), seen (n,) bool -> (n,), summing to 1.
    """
    n = mean_loss.shape[0]
    if not seen.any():
        return np.full(n, 1.0 / n)
    loss = np.where(seen, mean_loss, mean_loss[seen].mean())
    power = np.maximum(loss, 1e-6) ** (1.0 / temperature)
    q = power / power.sum()
    return floor / n + (1.0 - floor) * q


def cohort_probabilities(cohorts: np.ndarray) -> np.ndarray:
    """Speaker probabilities of ``cohort_balanced``: each non-empty cohort an equal share of
    the seen speakers' mass, uniform within; unseen speakers (cohort -1) keep ``1 / n``.

    Shape:
        cohorts (n,) int, -1 for unseen -> (n,), summing to 1.
    """
    n = cohorts.shape[0]
    p = np.full(n, 1.0 / n)
    seen = cohorts >= 0
    if not seen.any():
        return p
    labels, counts = np.unique(cohorts[seen], return_counts=True)
    size = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    mass = seen.sum() / n  # the seen speakers' total under the uniform distribution
    p[seen] = mass / (len(labels) * np.array([size[c] for c in cohorts[seen]]))
    return p


def crowding_probabilities(
    crowding: np.ndarray, fraction: float, share: float, at_least: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Speaker probabilities of ``crowding_adaptive`` and the flagged speakers: the
    ``ceil(fraction * n)`` (at least ``at_least``) most crowded fill ``share`` of the draws,
    uniform within; the rest share ``1 - share``. Ties break by speaker index (a stable sort).

    Shape:
        crowding (n,) -> probabilities (n,) summing to 1, flagged (n,) bool.
    """
    n = crowding.shape[0]
    n_flag = min(n, max(int(np.ceil(fraction * n)), at_least))
    flagged = np.zeros(n, dtype=bool)
    flagged[np.argsort(-crowding, kind="stable")[:n_flag]] = True
    if n_flag in (0, n):
        return np.full(n, 1.0 / n), flagged
    return np.where(flagged, share / n_flag, (1 - share) / (n - n_flag)), flagged


def speaker_cohorts(
    embeddings: np.ndarray, seen: np.ndarray, n_cohorts: int, seed: int
) -> np.ndarray:
    """k-means cohorts of the seen speakers' (L2-normalised) embeddings; -1 for the unseen.

    Shape:
        embeddings (n, D), seen (n,) -> (n,) int.
    """
    from sklearn.cluster import KMeans

    cohorts = np.full(embeddings.shape[0], -1, dtype=np.int64)
    rows = np.flatnonzero(seen)
    k = min(n_cohorts, rows.size)
    if k < 1:
        return cohorts
    x = embeddings[rows].astype(np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    fitted = KMeans(n_clusters=k, n_init=3, random_state=seed % (2**31)).fit(x)
    cohorts[rows] = fitted.labels_
    return cohorts


class AdaptiveSpeakerSampler:
    """Infinite sampler of ``P x K`` batches of ``(utterance index, crop seed)`` whose
    speaker distribution the trainer updates from training statistics (:meth:`observe`).

    Args:
        speakers: speaker index of every utterance, shape (N,).
        speakers_per_batch, utterances_per_speaker: P and K.
        rule: ``loss_weighted`` or ``cohort_balanced``.
        seed: fixes the draws (with the statistics).
        refresh_steps: a new distribution every this many steps (from ``start_step``).
        start_step: uniform before it.
        delay: steps between computing a distribution and drawing from it (>= the loader's
            prefetch depth).
        loss_ema: decay of each speaker's running mean loss (0: the last batch only).
        temperature, floor: of ``loss_weighted``.
        n_cohorts: of ``cohort_balanced`` and ``heldout_adaptive``.
        cohort_top, cohort_share: ``heldout_adaptive``'s bottom cohorts and their share
            (``cohort_share``: also the share of ``crowding_adaptive``'s crowded speakers).
        crowded_fraction, neighbours: ``crowding_adaptive``'s (``heldout_knn``'s) flagged
            fraction of the speakers and the nearest speakers (held-out speakers) its
            score averages over.
        crowding_ema: decay of ``crowding_adaptive``'s running score (0: this refresh's).
        embedding_dim: D of the running mean embeddings (``cohort_balanced``).
        rank, world_size: this rank's slice of whole speakers under DDP.
    """

    def __init__(
        self,
        speakers: Sequence[int] | np.ndarray,
        speakers_per_batch: int,
        utterances_per_speaker: int,
        *,
        rule: str,
        seed: int = 0,
        refresh_steps: int = 100,
        start_step: int = 100,
        delay: int = 8,
        loss_ema: float = 0.9,
        temperature: float = 1.0,
        floor: float = 0.2,
        n_cohorts: int = 8,
        cohort_top: int = 2,
        cohort_share: float = 0.5,
        crowded_fraction: float = 0.1,
        neighbours: int = 5,
        crowding_ema: float = 0.0,
        embedding_dim: int = 192,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        speakers = np.asarray(speakers, dtype=np.int64)
        n = int(speakers.max()) + 1 if speakers.size else 0
        if rule not in RULES:
            raise ValueError(f"adaptive sampling rule {rule!r}: choose one of {', '.join(RULES)}")
        check_batch_shape(n, speakers_per_batch, rank, world_size)
        self.P, self.K, self.seed, self.rule = (
            speakers_per_batch,
            utterances_per_speaker,
            seed,
            rule,
        )
        self.refresh_steps, self.start_step, self.delay = refresh_steps, start_step, delay
        self.loss_ema, self.temperature, self.floor = loss_ema, temperature, floor
        self.n_cohorts, self.cohort_top, self.cohort_share = n_cohorts, cohort_top, cohort_share
        #: ``heldout_adaptive``: returns (held-out embeddings (U', D), their speaker index
        #: (U',)) under the current model; set by the trainer.
        self.heldout_embeddings: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
        #: ``crowding_adaptive``, ``heldout_knn``: returns (embeddings (U', D) of a fixed subset of the
        #: training utterances, their speaker index (U',)) under the current model.
        self.training_embeddings: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
        self.crowded_fraction, self.neighbours = crowded_fraction, neighbours
        self.crowding_ema = crowding_ema
        self.discovery: dict[str, Any] = {}
        self.rank, self.world_size = rank, world_size
        self.utts_of = [np.flatnonzero(speakers == s) for s in range(n)]
        self.n_speakers = n
        self.step = 0
        # The statistics (all in the checkpoint).
        self.mean_loss = np.zeros(n)
        self.mean_embedding = np.zeros((n, embedding_dim))
        self.seen = np.zeros(n, dtype=bool)
        self.cohorts = np.full(n, -1, dtype=np.int64)
        self.flagged = np.zeros(n, dtype=bool)
        self.crowding_score = np.zeros(n)  # crowding_adaptive's running score
        self.crowding_refreshes = 0
        # (first step it applies to, probabilities), oldest first; uniform from step 0.
        self.schedule: list[tuple[int, np.ndarray]] = [(0, np.full(n, 1.0 / n))]

    # ---- statistics ---------------------------------------------------------------------
    def observe(self, step: int, speakers: np.ndarray, losses: np.ndarray,
                embeddings: np.ndarray | None = None) -> None:  # fmt: skip
        """Fold the global batch of (completed) step ``step`` into the statistics, and at a
        refresh point compute the distribution that applies from ``step + 1 + delay``.

        Shape:
            speakers (B,) speaker index per crop, losses (B,), embeddings (B, D) or None.
        """
        for s in np.unique(speakers):
            rows = speakers == s
            loss = float(losses[rows].mean())
            first = not self.seen[s]
            a = 0.0 if first else self.loss_ema
            self.mean_loss[s] = a * self.mean_loss[s] + (1 - a) * loss
            if embeddings is not None:
                emb = embeddings[rows].mean(axis=0)
                self.mean_embedding[s] = a * self.mean_embedding[s] + (1 - a) * emb
            self.seen[s] = True
        done = step + 1
        if done >= self.start_step and (done - self.start_step) % self.refresh_steps == 0:
            self.schedule.append((done + self.delay, self.probabilities(done)))
            self.schedule = self.schedule[-(self.delay // self.refresh_steps + 2) :]

    def probabilities(self, step: int) -> np.ndarray:
        """The distribution the current statistics give (refits the cohorts)."""
        if self.rule == "loss_weighted":
            return loss_probabilities(self.mean_loss, self.seen, self.temperature, self.floor)
        if self.rule == "heldout_adaptive":
            return self._heldout_probabilities(step)
        if self.rule == "crowding_adaptive":
            return self._crowding_probabilities()
        if self.rule == "heldout_knn":
            return self._heldout_knn_probabilities(step)
        self.cohorts = speaker_cohorts(
            self.mean_embedding, self.seen, self.n_cohorts, _seed(self.seed, step, 11)
        )
        return cohort_probabilities(self.cohorts)

    def _heldout_probabilities(self, step: int) -> np.ndarray:
        from arw_sv.data.cohort_sampling import heldout_cohorts

        if self.heldout_embeddings is None:
            raise RuntimeError("heldout_adaptive sampling needs the trainer's held-out embedder")
        held, held_speaker = self.heldout_embeddings()
        train = self.mean_embedding.copy()
        if self.seen.any():  # an unseen speaker sits at the mean of the seen ones
            train[~self.seen] = train[self.seen].mean(axis=0)
        slots = int(np.ceil(self.P * self.cohort_share))
        found = heldout_cohorts(train, np.arange(self.n_speakers), self.n_speakers, held,
                                held_speaker, self.n_cohorts, self.cohort_top,
                                seed=_seed(self.seed, step, 13) % (2**31),
                                min_flagged=slots)  # fmt: skip
        self.flagged = np.asarray(found["oversample"], dtype=bool)
        self.discovery = {k: found[k] for k in ("bottom_eer", "rest_eer", "bottom_share")}
        n_flag = int(self.flagged.sum())
        if n_flag in (0, self.n_speakers):
            return np.full(self.n_speakers, 1.0 / self.n_speakers)
        return np.where(self.flagged, self.cohort_share / n_flag,
                        (1 - self.cohort_share) / (self.n_speakers - n_flag))  # fmt: skip

    def _crowding_probabilities(self) -> np.ndarray:
        from arw_sv.data.cohort_sampling import crowding
        from arw_sv.metrics.cohorts import speaker_means

        if self.training_embeddings is None:
            raise RuntimeError("crowding_adaptive sampling needs the trainer's speaker embedder")
        emb, speaker = self.training_embeddings()
        means = speaker_means(emb, speaker, self.n_speakers)
        # A speaker without an embedded utterance (none, when every speaker has one) is
        # never flagged.
        score = crowding(means, min(self.neighbours, self.n_speakers - 1))
        missing = np.bincount(speaker, minlength=self.n_speakers) == 0
        if self.crowding_ema > 0:
            z = (score - score[~missing].mean()) / max(float(score[~missing].std()), 1e-12)
            a = self.crowding_ema if self.crowding_refreshes else 0.0
            self.crowding_score = a * self.crowding_score + (1 - a) * np.where(missing, 0.0, z)
            score = self.crowding_score.copy()
        self.crowding_refreshes += 1
        return self._flag_highest(score, missing)

    def _flag_highest(self, score: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """The ``crowded_fraction`` highest-scored speakers (never one in ``missing``: no
        embedded utterance) fill ``cohort_share`` of the draws; sets ``flagged``.
        """
        score = np.where(missing, -np.inf, score)
        slots = int(np.ceil(self.P * self.cohort_share))
        p, self.flagged = crowding_probabilities(score, self.crowded_fraction,
                                                 self.cohort_share, at_least=slots)  # fmt: skip
        return p

    def _heldout_knn_probabilities(self, step: int) -> np.ndarray:
        from arw_sv.data.cohort_sampling import heldout_speaker_errors, neighbour_errors
        from arw_sv.metrics.cohorts import speaker_means

        if self.heldout_embeddings is None or self.training_embeddings is None:
            raise RuntimeError("heldout_knn sampling needs the trainer's held-out and speaker "
                               "embedders")  # fmt: skip
        held, held_speaker = self.heldout_embeddings()
        emb, speaker = self.training_embeddings()
        errors = heldout_speaker_errors(
            held, held_speaker, seed=_seed(self.seed, step, 13) % (2**31)
        )
        held_means = speaker_means(held, held_speaker, errors.shape[0])
        means = speaker_means(emb, speaker, self.n_speakers)
        score = neighbour_errors(means, held_means, errors, self.neighbours)
        return self._flag_highest(score, np.bincount(speaker, minlength=self.n_speakers) == 0)

    def distribution_at(self, step: int) -> np.ndarray:
        """The speaker distribution batch ``step`` is drawn from."""
        current = self.schedule[0][1]
        for first, p in self.schedule:
            if first <= step:
                current = p
        return current

    # ---- batches ------------------------------------------------------------------------
    def batch(self, step: int) -> list[tuple[int, int]]:
        """The global batch of ``step``: a pure function of the seed, the step and the
        distribution in force at it.
        """
        rng = np.random.default_rng(_seed(self.seed, step, 3))
        p = self.distribution_at(step)
        chosen = rng.choice(self.n_speakers, size=self.P, replace=False, p=p)
        batch = []
        for s in chosen:
            utts = self.utts_of[s]
            batch.extend(rng.choice(utts, size=self.K, replace=utts.size < self.K).tolist())
        seeds = [_seed(self.seed, step, 5, j) for j in range(len(batch))]
        return list(zip(batch, seeds, strict=True))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.step
        size = self.P * self.K // self.world_size
        lo, hi = self.rank * size, (self.rank + 1) * size
        while True:
            batch = self.batch(step)
            yield batch if self.world_size == 1 else batch[lo:hi]
            step += 1

    # ---- checkpoint ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The position and every statistic (plain arrays; loads with ``weights_only``)."""
        import torch

        return {
            "step": self.step,
            "seed": self.seed,
            "rule": self.rule,
            "mean_loss": torch.from_numpy(self.mean_loss.copy()),
            "mean_embedding": torch.from_numpy(self.mean_embedding.copy()),
            "seen": torch.from_numpy(self.seen.copy()),
            "cohorts": torch.from_numpy(self.cohorts.copy()),
            "flagged": torch.from_numpy(self.flagged.copy()),
            "crowding_score": torch.from_numpy(self.crowding_score.copy()),
            "crowding_refreshes": self.crowding_refreshes,
            "schedule_steps": [int(s) for s, _ in self.schedule],
            "schedule": torch.from_numpy(np.stack([p for _, p in self.schedule])),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (the seed and rule must match)."""
        if state["seed"] != self.seed:
            raise ValueError(f"sampler seed {state['seed']} in checkpoint, {self.seed} now")
        self.step = int(state["step"])
        if "mean_loss" not in state:  # a run that started with another sampler
            raise ValueError("the checkpoint has no adaptive-sampler statistics (data.sampling "
                             "changed since it was written)")  # fmt: skip
        if state.get("rule") != self.rule:
            raise ValueError(f"sampler rule {state.get('rule')} in checkpoint, {self.rule} now")
        self.mean_loss = np.asarray(state["mean_loss"], dtype=np.float64).copy()
        self.mean_embedding = np.asarray(state["mean_embedding"], dtype=np.float64).copy()
        self.seen = np.asarray(state["seen"], dtype=bool).copy()
        self.cohorts = np.asarray(state["cohorts"], dtype=np.int64).copy()
        if "flagged" in state:
            self.flagged = np.asarray(state["flagged"], dtype=bool).copy()
        if "crowding_score" in state:
            self.crowding_score = np.asarray(state["crowding_score"], dtype=np.float64).copy()
            self.crowding_refreshes = int(state["crowding_refreshes"])
        table = np.asarray(state["schedule"], dtype=np.float64)
        self.schedule = [(int(s), table[i].copy()) for i, s in enumerate(state["schedule_steps"])]

"""The trial list over the test speakers, built per (nationality, gender) cell.

Lines are in the cleaned VoxCeleb1 format, ``<1|0> <spk>/<session>/<utt>.wav
<spk>/<session>/<utt>.wav``, paths relative to the corpus's ``wav/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from arw_sv.synth.config import SynthConfig
    from arw_sv.synth.corpus import Speaker

TRIALS_STREAM = 5  # the random stream of trial sampling (see corpus.py for the others)


def build_trials(cfg: SynthConfig, speakers: list[Speaker]) -> list[tuple[int, str, str]]:
    """Trials over the test speakers, built per speaker and per (nationality, gender) cell.

    For each test speaker: ``target_trials_per_speaker`` same-speaker pairs from different
    sessions; ``nontarget_cell_trials_per_speaker`` pairs with another speaker of the same
    gender and nationality (the hard negatives of VoxCeleb1-H); and
    ``nontarget_cross_trials_per_speaker`` pairs with a speaker of another cell. The first
    utterance of every trial belongs to that speaker. Duplicate pairs are dropped.
    """
    test = [s for s in speakers if s.split == "test"]
    cells: dict[tuple[str, str], list[Speaker]] = {}
    for s in test:
        cells.setdefault((s.nationality, s.gender), []).append(s)
    trials: list[tuple[int, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for spk in test:
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, TRIALS_STREAM, spk.index]))
        utts = spk.utterances()
        per_sess = [u.split("/")[1] for u in utts]
        pairs = [
            (a, b)
            for a in range(len(utts))
            for b in range(a + 1, len(utts))
            if per_sess[a] != per_sess[b]
        ]
        chosen = rng.permutation(len(pairs))[: cfg.target_trials_per_speaker]
        candidates = [(1, utts[pairs[i][0]], utts[pairs[i][1]]) for i in sorted(chosen)]
        same_cell = [o for o in cells[(spk.nationality, spk.gender)] if o is not spk]
        other_cells = [
            o for o in test if (o.nationality, o.gender) != (spk.nationality, spk.gender)
        ]
        for pool, count in (
            (same_cell, cfg.nontarget_cell_trials_per_speaker),
            (other_cells, cfg.nontarget_cross_trials_per_speaker),
        ):
            for _ in range(count if pool else 0):
                other = pool[int(rng.integers(len(pool)))]
                other_utts = other.utterances()
                enroll = utts[int(rng.integers(len(utts)))]
                candidates.append((0, enroll, other_utts[int(rng.integers(len(other_utts)))]))
        for label, a, b in candidates:
            key = (min(a, b), max(a, b))
            if key not in seen:
                seen.add(key)
                trials.append((label, a, b))
    return trials

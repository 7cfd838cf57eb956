"""The trial list over the test speakers, built per (nationality, gender) cell.

Lines are in the cleaned VoxCeleb1 format, ``<1|0> <spk>/<session>/<utt>.wav
<spk>/<session>/<utt>.wav``, paths relative to the corpus's ``wav/``. The sampling is
``arw_sv.data.trial_gen`` (the same generator as ``arw-sv trials``), without a cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from arw_sv.data.trial_gen import TRIALS_STREAM, TrialPlan, TrialSpeaker
from arw_sv.data.trial_gen import build_trials as _generate

if TYPE_CHECKING:
    from arw_sv.synth.config import SynthConfig
    from arw_sv.synth.corpus import Speaker

__all__ = ["TRIALS_STREAM", "build_trials"]


def build_trials(cfg: SynthConfig, speakers: list[Speaker]) -> list[tuple[int, str, str]]:
    """Trials over the test speakers, built per speaker and per (nationality, gender) cell.

    For each test speaker: ``target_trials_per_speaker`` same-speaker pairs from different
    sessions; ``nontarget_cell_trials_per_speaker`` pairs with another speaker of the same
    gender and nationality (the hard negatives of VoxCeleb1-H); and
    ``nontarget_cross_trials_per_speaker`` pairs with a speaker of another cell. The first
    utterance of every trial belongs to that speaker. Duplicate pairs are dropped.
    """
    test = []
    for s in speakers:
        if s.split == "test":
            utts = s.utterances()
            sessions = [u.split("/")[1] for u in utts]
            test.append(
                TrialSpeaker(s.speaker_id, s.index, utts, sessions, (s.nationality, s.gender))
            )
    plan = TrialPlan(
        cfg.target_trials_per_speaker,
        cfg.nontarget_cell_trials_per_speaker,
        cfg.nontarget_cross_trials_per_speaker,
    )
    return _generate(test, plan, cfg.seed, TRIALS_STREAM, cap=None)

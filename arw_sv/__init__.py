"""arw-sv: fair speaker verification with adversarial reweighting.

The names below are the public API, imported on first use (PEP 562), so ``import arw_sv``
stays cheap (no torch, no numpy) and each name costs only what its module needs::

    import arw_sv
    cfg = arw_sv.load_config("arw_sv/configs/demo.yaml", ["train.steps=100"])
    result = arw_sv.fit(cfg)
    enc = arw_sv.SpeakerEncoder.from_checkpoint(result.checkpoint)
    trials, scores = arw_sv.read_scores("scores.txt")
    report = arw_sv.evaluate_scores(scores, trials.labels, trials.enroll, trials.test,
                                    arw_sv.read_speaker_meta("vox1_meta.csv"))
    arw_sv.write_report(report, "eval")

Shape legend, the same letters in every module's docstrings and error messages:
B batch items, S samples of audio, T frames, F mel (or frequency) bins, H channels,
D embedding size, N rows of a list (trials, bank rows), U utterances, P speakers,
K crops per speaker, G groups (demographic), C clusters (k-means: the adversary's and
GroupDRO's groups, speaker cohorts), E cohort embeddings (AS-norm), M classes (training
speakers of the AAM head), R resamples, O operating points (thresholds, target priors),
J chunks of a batch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_config": "arw_sv.config",
    "Config": "arw_sv.config",
    "fit": "arw_sv.train.loop",
    "SpeakerEncoder": "arw_sv.inference",
    "embed_utterances": "arw_sv.inference",
    "load_exported": "arw_sv.export",
    "read_trials": "arw_sv.data.trials",
    "read_scores": "arw_sv.data.trials",
    "write_scores": "arw_sv.data.trials",
    "read_embeddings": "arw_sv.data.trials",
    "score_trials": "arw_sv.data.trials",
    "read_speaker_meta": "arw_sv.data.meta",
    "evaluate_scores": "arw_sv.evaluate",
    "write_report": "arw_sv.evaluate",
    "eer": "arw_sv.metrics",
    "min_dcf": "arw_sv.metrics",
    "generate_corpus": "arw_sv.synth",
}

__all__ = [  # the names of _API (a test checks they agree)
    "__version__",
    "load_config",
    "Config",
    "fit",
    "SpeakerEncoder",
    "embed_utterances",
    "load_exported",
    "read_trials",
    "read_scores",
    "write_scores",
    "read_embeddings",
    "score_trials",
    "read_speaker_meta",
    "evaluate_scores",
    "write_report",
    "eer",
    "min_dcf",
    "generate_corpus",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from arw_sv.config import Config, load_config
    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import (
        read_embeddings,
        read_scores,
        read_trials,
        score_trials,
        write_scores,
    )
    from arw_sv.evaluate import evaluate_scores, write_report
    from arw_sv.export import load_exported
    from arw_sv.inference import SpeakerEncoder, embed_utterances
    from arw_sv.metrics import eer, min_dcf
    from arw_sv.synth import generate_corpus
    from arw_sv.train.loop import fit


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'arw_sv' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

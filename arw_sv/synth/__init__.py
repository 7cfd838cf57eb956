"""The built-in synthetic speaker corpus, laid out like VoxCeleb1 (``arw-sv synth``:
:mod:`arw_sv.cli.synth`).

Real VoxCeleb audio cannot be fetched everywhere, so the project ships a deterministic
generator of speech-like audio: source-filter voices with per-speaker identity and
per-nationality accents (:mod:`.voice`), a per-session recording channel
(:mod:`.channel`), and the VoxCeleb1 folder layout, metadata and trial list
(:mod:`.corpus`). See ``docs/synth.md``.

Example:
    >>> from arw_sv.synth import generate_corpus, preset
    >>> info = generate_corpus("data/tiny", preset("tiny"), progress=False)  # doctest: +SKIP
    >>> info.meta_path.name, info.trials_path.name  # doctest: +SKIP
    ('vox1_meta.csv', 'trials.txt')
"""

from arw_sv.synth.config import PRESETS, SynthConfig, apply_overrides, preset
from arw_sv.synth.corpus import CorpusInfo, generate_corpus, load_corpus

__all__ = [
    "PRESETS",
    "CorpusInfo",
    "SynthConfig",
    "apply_overrides",
    "generate_corpus",
    "load_corpus",
    "preset",
]

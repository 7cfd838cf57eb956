"""The names of a manifest's columns that say what a speaker is (its attributes).

Here, below both ``arw_sv.data.manifest`` and ``arw_sv.data.meta``, so that each can use
them without importing the other.
"""

from __future__ import annotations

import re

# A further attribute's name: a column name, a ``--group-by`` word and part of a plot's
# file name, so lower-case letters, digits and ``_`` only.
ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9_]*")
# What is not a speaker attribute: an utterance's own columns (a manifest's, see
# ``arw_sv.data.manifest.COLUMNS``; a test keeps the two in step).
NOT_ATTRIBUTES = frozenset({"utt_id", "path", "speaker", "duration", "split", "session", "start"})
MISSING = "unknown"  # an attribute the corpus does not give (as gender and nationality)

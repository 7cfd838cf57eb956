"""Reading CSV tables so that a malformed one is one line naming the file and line.

Python's ``csv`` module raises ``csv.Error`` for a field over its size limit (131,072
characters) or a NUL byte, with no file or line; these wrappers turn it into the caller's
own error class (``ManifestError``, ``MetadataError``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path


def csv_rows(reader, path: str | Path, error: type[ValueError]) -> Iterator:
    """The rows of a ``csv.reader`` or ``csv.DictReader``; a ``csv.Error`` becomes one
    ``error`` naming file and line.
    """
    try:
        yield from reader
    except csv.Error as exc:
        raise error(f"{path}:{reader.line_num + 1}: not valid CSV ({exc})") from None


def csv_header(reader: csv.DictReader, path: str | Path, error: type[ValueError]) -> list[str]:
    """A ``DictReader``'s column names (read on first use), stripped; see :func:`csv_rows`."""
    try:
        return [c.strip() for c in (reader.fieldnames or [])]
    except csv.Error as exc:
        raise error(f"{path}:{reader.line_num + 1}: not valid CSV ({exc})") from None

"""One shape legend for the package: every module's letters mean what the package's do."""

from __future__ import annotations

import re
from pathlib import Path

import arw_sv

PACKAGE = Path(arw_sv.__file__).parent
PAIR = re.compile(r"\b([A-Z]) ([a-z][a-z-]*)")


def _pairs(text: str) -> dict[str, str]:
    return {letter: word for letter, word in PAIR.findall(text)}


def _legend(doc: str, start: str) -> str:
    """The legend's text: from ``start`` to the end of its paragraph."""
    text = doc[doc.index(start) + len(start) :]
    return " ".join(text.split("\n\n", 1)[0].split())


def _phrases(text: str) -> dict[str, str]:
    """Letter -> its whole description (up to the next comma outside parentheses)."""
    parts = re.split(r",\s*(?![^()]*\))", text.rstrip("."))
    return {p.split(" ", 1)[0]: p.split(" ", 1)[1] for p in parts if re.match(r"[A-Z] ", p)}


def test_every_module_legend_uses_the_package_letters():
    package = _phrases(_legend(arw_sv.__doc__, "error messages:"))
    assert set("BSTFHDNUPKGCEMROJ") <= set(package)
    checked = 0
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if "Shape legend (the package one" not in text:
            own = "Shape legend" in text or "Legend for ``Shape:``" in text
            assert not own or path.name == "__init__.py", f"{path}: a legend of its own"
            continue
        legend = _legend(text, "Shape legend (the package one, :mod:`arw_sv`):")
        for letter, word in _pairs(legend).items():
            assert letter in package, f"{path}: {letter} is not in the package legend"
            assert word in re.findall(r"[a-z-]+", package[letter]), (
                f"{path}: {letter} means {word!r} here but {package[letter]!r} in the package"
            )
        checked += 1
    assert checked >= 10

"""One bounded YAML loader for configs, command-line overrides and SpeechBrain folders.

PyYAML's ``safe_load`` builds no objects, but it is not bounded: a ten-fold nested alias
("billion laughs") stands for 10^9 values that the first walk over them (a type check, a
``repr`` in an error message) expands, and a file of a million list items takes minutes
and gigabytes to build. :class:`BoundedLoader` counts every node as it is *composed*,
an alias counting as the whole value it stands for, and stops at :data:`MAX_NODES`: the
cap is hit after a few hundred kilobytes of any input, whatever its shape. The text itself
is capped at :data:`MAX_BYTES`. Every refusal is one :class:`YamlError` line naming where
the text came from, and :func:`shorten` cuts the values an error message shows.
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

MAX_NODES = 20_000  # after alias expansion (the public SpeechBrain ECAPA: ~150; configs: ~100)
MAX_BYTES = 1_000_000  # of YAML text (the shipped configs are a few kilobytes)
SHOWN = 100  # characters of a value that a message shows

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = SHOWN
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 10
_repr.maxlevel = 3


class YamlError(ValueError):
    """YAML text that is malformed or over a limit; one line naming where it came from."""


class _OverLimit(yaml.YAMLError):
    """Raised while composing: the document is over the node cap (or aliases itself)."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


def shorten(value: Any, limit: int = SHOWN) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without expanding a huge value."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BoundedLoader(yaml.SafeLoader):
    """A ``SafeLoader`` that refuses documents of more than ``max_nodes`` nodes once
    aliases are expanded, counting while it parses (so a bomb is never built), and aliases
    that refer to the value they are inside of.
    """

    max_nodes = MAX_NODES

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}  # id(node) -> its size with aliases expanded
        self._nodes = 0
        self._aliases = False

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """PyYAML's ``compose_node``, counting the node (an alias: what it stands for)."""
        is_alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        if is_alias:
            self._aliases = True
            size = self._sizes.get(id(node))
            if size is None:  # its anchor is still being composed
                raise _OverLimit("a YAML alias refers to the value it is inside of", mark)
        else:
            kids: list[yaml.Node] = []
            if isinstance(node, yaml.SequenceNode):
                kids = node.value
            elif isinstance(node, yaml.MappingNode):
                kids = [n for pair in node.value for n in pair]
            size = 1 + sum(self._sizes.get(id(k), 1) for k in kids)
            self._sizes[id(node)] = size
            size = 1  # its children were counted as they were composed
        self._nodes += size
        if self._nodes > self.max_nodes:
            expanded = " once aliases are expanded" if self._aliases else ""
            raise _OverLimit(f"over {self.max_nodes} values{expanded} (the limit)", mark)
        return node


def load_yaml(
    text: str | bytes,
    where: str,
    loader: type[BoundedLoader] = BoundedLoader,
    lines: bool = True,
) -> Any:
    """Parse one YAML document within the limits.

    Args:
        text: the document (bytes are read as UTF-8, a byte-order mark allowed).
        where: what the text is (a file, ``override 'train.lr'``), named by every error.
        loader: :class:`BoundedLoader` or a subclass (more tags, another cap).
        lines: name the line of a syntax error (``where:LINE``); off for one-line texts.

    Raises:
        YamlError: not UTF-8, over :data:`MAX_BYTES`, invalid YAML (with its line), over
            the node cap, an alias inside itself, or nested too deeply.
    """
    if len(text) > MAX_BYTES:
        raise YamlError(f"{where}: {len(text)} bytes of YAML (at most {MAX_BYTES})")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise YamlError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    parser = None
    try:
        parser = loader(text)  # checks the characters already
        return parser.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f":{mark.line + 1}" if mark is not None and lines else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problem = " ".join(str(problem).split())[:200]
        if isinstance(exc, _OverLimit):
            raise YamlError(f"{where}{at}: {problem}") from None
        raise YamlError(f"{where}{at}: invalid YAML ({problem})") from None
    except RecursionError:
        raise YamlError(f"{where}: YAML nested too deeply") from None
    finally:
        if parser is not None:
            parser.dispose()

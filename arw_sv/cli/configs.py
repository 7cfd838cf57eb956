"""``arw-sv configs``: list the shipped configs, or copy one out to edit.

``arw-sv train demo_arw_pw ...`` works from any folder: a config argument that is not an
existing file is looked up among ``arw_sv/configs/*.yaml`` by name (with or without
``.yaml``). A path that exists always wins, so ``arw-sv train my/demo.yaml`` keeps working.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_subparser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``configs`` on the ``arw-sv`` sub-parsers (sets ``func=run``)."""
    p = subparsers.add_parser(
        "configs",
        help="list the shipped configs, or copy one out to edit (--copy NAME DIR)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--copy", nargs=2, metavar=("NAME", "DIR"), help="write config NAME into DIR")
    p.set_defaults(func=run)
    return p


def _description(path: Path) -> str:
    """The first comment line of a config file (what it is for)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def run(args: argparse.Namespace) -> int:
    """List the shipped configs, or copy one."""
    from arw_sv.shipped import copy_config, shipped_configs

    if args.copy:
        target = copy_config(*args.copy)
        print(f"wrote {target}; train with: arw-sv train {target}")
        return 0
    shipped = shipped_configs()
    width = max(map(len, shipped))
    for name, path in shipped.items():
        print(f"{name:<{width}}  {_description(path)}")
    return 0

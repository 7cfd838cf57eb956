"""Shipped configs by name: ``arw-sv configs`` (:mod:`arw_sv.cli.configs`) lists them,
``--copy`` writes one out to edit.

``arw-sv train demo_arw_pw ...`` works from any folder: a config argument that is not an
existing file is looked up among ``arw_sv/configs/*.yaml`` by name (with or without
``.yaml``). A path that exists always wins, so ``arw-sv train my/demo.yaml`` keeps working.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from arw_sv.config import ConfigError


def configs_dir() -> Path:
    """The folder of the shipped YAML configs."""
    return Path(str(resources.files("arw_sv") / "configs"))


def shipped_configs() -> dict[str, Path]:
    """Name -> path of every shipped config, sorted by name."""
    return {p.stem: p for p in sorted(configs_dir().glob("*.yaml"))}


def resolve_config(config: str | Path) -> Path:
    """An existing file as given, else the shipped config of that name.

    Raises:
        ConfigError: neither, naming the argument and the shipped names.
    """
    path = Path(config)
    if path.is_file():
        return path
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    shipped = shipped_configs()
    if path.parent == Path(".") and name in shipped:
        return shipped[name]
    raise ConfigError(
        f"config file not found: {config} (and no shipped config of that name; "
        f"shipped: {', '.join(shipped)}; see `arw-sv configs`)"
    )


def copy_config(name: str, folder: str | Path) -> Path:
    """Write the shipped config ``name`` into ``folder`` (refuses to overwrite)."""
    shipped = shipped_configs()
    key = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if key not in shipped:
        raise ConfigError(f"no shipped config named {name!r}; shipped: {', '.join(shipped)}")
    folder = Path(folder)
    target = folder / shipped[key].name if folder.is_dir() or not folder.suffix else folder
    if target.exists():
        raise FileExistsError(f"{target} exists; not overwriting it")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped[key], target)
    return target

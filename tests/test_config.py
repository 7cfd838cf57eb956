"""Configuration: shipped YAMLs load and build; bad keys, types and choices are named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from arw_sv.config import Config, ConfigError, config_to_dict, load_config, parse_overrides

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIRS = [REPO / "arw_sv" / "configs", REPO / "bench" / "conf"]
RECIPE_CONF = Path(__file__).resolve().parents[1] / "recipes" / "voxceleb" / "conf"
SHIPPED = sorted(p for d in [*CONFIG_DIRS, RECIPE_CONF] for p in d.glob("*.yaml"))


def test_every_config_folder_is_there_with_the_configs_the_code_names():
    # A folder that moved or emptied would leave the parametrised test below with fewer (or
    # no) cases, which pytest skips instead of failing: this test fails instead.
    from arw_sv.shipped import shipped_configs
    from bench.fairness.cli import METHODS

    for folder in (*CONFIG_DIRS, RECIPE_CONF):
        assert folder.is_dir() and any(folder.glob("*.yaml")), folder
    names = {p.stem for p in SHIPPED}
    assert {"demo", "demo_arw_aps", "demo_arw_pl", "demo_arw_pw", "tiny"} <= names
    assert set(METHODS.values()) <= names
    assert set(shipped_configs()) == {p.stem for p in CONFIG_DIRS[0].glob("*.yaml")}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_builds(path):
    from arw_sv.models.adversary import build_adversary
    from arw_sv.train.build import build_learner

    cfg = load_config(path)
    learner = build_learner(cfg, n_speakers=10)
    assert learner.extractor.embedding_dim == cfg.model.embedding_dim
    adversary = build_adversary(
        cfg.adversary.formulation,
        embedding_dim=cfg.model.embedding_dim,
        n_clusters=cfg.adversary.n_clusters,
        hidden=cfg.adversary.hidden,
    )
    assert (adversary is None) == (cfg.adversary.formulation == "erm")


def test_overrides_apply_with_types():
    cfg = load_config(None, ["train.lr=0.01", "model.channels=[64,64,64,64,192]", "train.steps=7"])
    assert cfg.train.lr == 0.01 and isinstance(cfg.train.lr, float)
    assert cfg.model.channels == (64, 64, 64, 64, 192)
    assert cfg.train.steps == 7
    # Integers are accepted where floats are expected, and become floats.
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.lrr=0.1", "train.lrr"),
        ("trian.lr=0.1", "trian"),
        ("train.steps=1.5", "train.steps"),
        ("train.steps=many", "train.steps"),
        ("adversary.formulation=xyz", "adversary.formulation"),
        ("adversary.use_cluster=1", "adversary.use_cluster"),
        ("lr=0.1", "lr"),
        ("train.lr", "train.lr"),
    ],
)
def test_bad_override_names_the_key(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: 10\n  warmup: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "bad.yaml" in str(info.value) and "train.warmup" in str(info.value)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["adversary.formulation=pw", "model.channels=[64,64,64,64,192]"])
    dumped = tmp_path / "c.yaml"
    dumped.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert load_config(dumped) == cfg


def test_erm_and_arw_demo_configs_differ_only_in_adversary():
    from arw_sv.demo import config_path

    erm = load_config(config_path("demo"))
    for name in ("demo_arw_aps", "demo_arw_pl", "demo_arw_pw"):
        arw = load_config(config_path(name))  # a missing shipped config fails, not skips
        for field in dataclasses.fields(Config):
            if field.name == "adversary":
                assert getattr(arw, field.name) != getattr(erm, field.name)
            elif field.name == "train":
                assert dataclasses.replace(arw.train, out_dir="") == dataclasses.replace(
                    erm.train, out_dir=""
                )
            else:
                assert getattr(arw, field.name) == getattr(erm, field.name), field.name


def test_parse_overrides_nests():
    assert parse_overrides(["a.b=1", "a.c=x", "d.e=[1, 2]"]) == {
        "a": {"b": 1, "c": "x"},
        "d": {"e": [1, 2]},
    }

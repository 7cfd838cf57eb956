"""Shipped configs by name (`arw-sv configs`, `arw-sv train NAME`), `python -m arw_sv`, packaging."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arw_sv.cli import main
from arw_sv.config import ConfigError, load_config
from arw_sv.shipped import resolve_config, shipped_configs

REPO = Path(__file__).resolve().parents[1]


def test_names_resolve_from_any_folder_and_paths_still_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = REPO / "arw_sv" / "configs" / "demo_arw_pw.yaml"
    assert resolve_config("demo_arw_pw") == resolve_config("demo_arw_pw.yaml")
    assert resolve_config("demo_arw_pw").read_text() == shipped.read_text()
    assert (
        load_config(resolve_config("tiny")).model.preset
        == load_config(REPO / "arw_sv" / "configs" / "tiny.yaml").model.preset
    )
    (tmp_path / "demo.yaml").write_text("train:\n  lr: 0.5\n")  # a user's own file wins
    assert resolve_config("demo.yaml") == Path("demo.yaml")
    with pytest.raises(ConfigError, match=r"config file not found: nope.*shipped: .*demo_arw_pw"):
        resolve_config("nope")
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config("elsewhere/demo.yaml")  # a path that is not there is not a name


def test_train_with_an_unknown_config_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "demo_nope"]) == 2
    assert "config file not found: demo_nope" in capsys.readouterr().err


def test_configs_lists_and_copies(tmp_path, capsys):
    assert main(["configs"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == sorted(shipped_configs()) and "demo_arw_pw" in listed
    assert main(["configs", "--copy", "demo_arw_pw", str(tmp_path / "mine")]) == 0
    copy = tmp_path / "mine" / "demo_arw_pw.yaml"
    assert copy.read_text() == shipped_configs()["demo_arw_pw"].read_text()
    assert main(["configs", "--copy", "demo_arw_pw", str(tmp_path / "mine")]) == 2  # no overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["configs", "--copy", "nope", str(tmp_path)]) == 2


def test_python_dash_m_runs_the_command(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "arw_sv", "configs"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "demo_arw_pw" in done.stdout


def test_license_is_an_spdx_string():
    # tomllib is 3.11+; the two lines are simple enough to check as text.
    lines = (REPO / "pyproject.toml").read_text().splitlines()
    assert 'license = "Apache-2.0"' in lines
    backend = next(line for line in lines if line.startswith("requires = ["))
    assert int(backend.split("setuptools>=")[1].split('"')[0]) >= 77

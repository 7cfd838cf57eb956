"""Start-up cost and layering: no import cycles, no torch where it isn't needed, a lazy API.

The torch checks run in a fresh interpreter (``subprocess``): the test process has
imported torch long before.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import arw_sv
from arw_sv import cli

REPO = Path(__file__).resolve().parents[1]


def _module_graph(root: Path) -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in its body (TYPE_CHECKING ignored)."""
    files = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = path
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in files else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), leaving out a
    package with its own submodules (``pkg/__init__`` re-exporting ``pkg.x``)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            package = min(component, key=len)
            if len(component) > 1 and not all(c.startswith(package) for c in component):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from pkg.a import x\n")
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub.c import g\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text(
        "from typing import TYPE_CHECKING\nimport pkg.b\nif TYPE_CHECKING:\n    import pkg.a\n"
    )
    assert _cycles(_module_graph(pkg)) == [["pkg.b", "pkg.sub.c"]]


def test_arw_sv_has_no_import_cycles():
    graph = _module_graph(REPO / "arw_sv")
    assert "arw_sv.evaluate" in graph and "arw_sv.data.trials" in graph["arw_sv.evaluate"]
    assert _cycles(graph) == []


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others (``start`` left out)."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        for module in graph[stack.pop()] - seen:
            seen.add(module)
            stack.append(module)
    return seen


def test_reachable_follows_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "train").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "train" / "__init__.py").write_text("")
    (pkg / "train" / "loop.py").write_text("x = 1\n")
    (pkg / "helper.py").write_text("def f():\n    from pkg.train.loop import x\n")
    (pkg / "user.py").write_text("import pkg.helper\n")
    assert _reachable(_module_graph(pkg), "pkg.user") == {"pkg.helper", "pkg.train.loop"}


# The users of the layers below that never need training: a checkpoint is read through
# arw_sv.checkpoint, the model built through arw_sv.models (STYLE.md, "Layers").
NOT_TRAINING = [
    "arw_sv.inference",
    "arw_sv.export",
    "arw_sv.evaluate",
    "arw_sv.cli.eval",
    "arw_sv.cli.score",
    "arw_sv.cli.embed",
    "arw_sv.cli.export",
]


@pytest.mark.parametrize("user", NOT_TRAINING)
def test_inference_export_and_evaluation_never_import_training(user):
    reached = _reachable(_module_graph(REPO / "arw_sv"), user)
    assert sorted(m for m in reached if m == "arw_sv.train" or m.startswith("arw_sv.train.")) == []


def test_inference_and_export_do_not_import_each_other():
    graph = _module_graph(REPO / "arw_sv")
    assert "arw_sv.checkpoint" in _reachable(graph, "arw_sv.export")  # the finder sees them
    assert "arw_sv.export" not in _reachable(graph, "arw_sv.inference")
    assert "arw_sv.inference" not in _reachable(graph, "arw_sv.export")


def test_eval_and_score_commands_load_no_training_module(tmp_path):
    # At run time too (the graph above is static): the commands and the three modules.
    np = pytest.importorskip("numpy")
    embeddings, trial_list = tmp_path / "emb.npz", tmp_path / "trials.txt"
    np.savez(embeddings, **{f"id{k}/s/{j}.wav": np.eye(4)[k] + j for k in range(3) for j in (1, 2)})
    trial_list.write_text("1 id1/s/1.wav id1/s/2.wav\n0 id1/s/1.wav id2/s/2.wav\n")
    out = _fresh_python(
        f"""
        import contextlib, io, json, sys
        from arw_sv import cli
        with contextlib.redirect_stdout(io.StringIO()):
            scored = cli.main(["score", "--embeddings", {str(embeddings)!r},
                               "--trials", {str(trial_list)!r}, "--out", {str(tmp_path / "s.txt")!r}])
            code = cli.main(["eval", "--scores", {str(tmp_path / "s.txt")!r},
                             "--out", {str(tmp_path / "e")!r}, "--no-plots"])
        import arw_sv.evaluate, arw_sv.export, arw_sv.inference
        print(json.dumps({{"codes": [scored, code], "torch": "torch" in sys.modules,
                          "train": sorted(m for m in sys.modules if m.startswith("arw_sv.train"))}}))
        """
    )
    assert out == {"codes": [0, 0], "torch": True, "train": []}


def _imported_names(path: Path) -> set[str]:
    """Every module name an ``import`` or absolute ``from ... import`` in ``path`` names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_library_never_imports_the_benchmarks():
    # Dependencies point one way: bench/ is a client of arw_sv, never the reverse.
    offenders = {
        str(path.relative_to(REPO)): sorted(
            n for n in _imported_names(path) if n == "bench" or n.startswith("bench.")
        )
        for path in (REPO / "arw_sv").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert "bench.fairness.runs" in _imported_names(
        REPO / "bench" / "fairness" / "cli.py"
    )  # the finder finds


def _fresh_python(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON line, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_eval_and_score_run_without_torch(tmp_path):
    import numpy as np

    embeddings, trial_list = tmp_path / "emb.npz", tmp_path / "trials.txt"
    np.savez(embeddings, **{f"id{k}/s/{j}.wav": np.eye(4)[k] + j for k in range(3) for j in (1, 2)})
    trial_list.write_text("1 id1/s/1.wav id1/s/2.wav\n0 id1/s/1.wav id2/s/2.wav\n")
    scores = tmp_path / "scores.txt"
    lines = [
        f"{int(e == t)} {e}/s/1.wav {t}/s/2.wav {0.1 * k - 0.3!r}"
        for k, (e, t) in enumerate(
            [("id1", "id1"), ("id1", "id2"), ("id2", "id2"), ("id2", "id3"), ("id3", "id3")] * 4
        )
    ]
    scores.write_text("\n".join(lines) + "\n")
    out = _fresh_python(
        f"""
        import contextlib, io, json, sys
        from arw_sv import cli
        parser = cli.build_parser()
        help_text = parser.format_help()
        with contextlib.redirect_stdout(io.StringIO()) as eval_help:
            try:
                parser.parse_args(["eval", "--help"])
            except SystemExit:
                pass
        after_help = "torch" in sys.modules
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            code = cli.main(["eval", "--scores", {str(scores)!r}, "--out", {str(tmp_path / "e")!r},
                             "--no-plots"])
            scipy_after_eval = "scipy" in sys.modules  # the DET probit is numpy's own
            scored = cli.main(["score", "--embeddings", {str(embeddings)!r},
                               "--trials", {str(trial_list)!r}, "--out", {str(tmp_path / "s.txt")!r}])
        print(json.dumps({{
            "help": help_text, "eval_help": eval_help.getvalue(), "code": code, "scored": scored,
            "printed": printed.getvalue(), "torch_after_help": after_help,
            "torch": "torch" in sys.modules, "matplotlib": "matplotlib" in sys.modules,
            "scipy_after_eval": scipy_after_eval,
        }}))
        """
    )
    assert "eval" in out["help"] and "export" in out["help"]
    assert "--no-plots" in out["eval_help"] and "--scores" in out["eval_help"]
    assert out["code"] == 0 and "on 20 trials" in out["printed"]
    assert out["scored"] == 0 and "2 trials scored" in out["printed"]
    assert len((tmp_path / "s.txt").read_text().splitlines()) == 2
    assert (tmp_path / "e" / "report.json").is_file()
    assert not out["torch_after_help"] and not out["torch"] and not out["matplotlib"]
    assert not out["scipy_after_eval"]


def test_every_subcommand_help_runs_without_torch():
    out = _fresh_python(
        """
        import contextlib, io, json, sys
        from arw_sv import cli
        names = list(cli._MODULE_COMMANDS)
        helps, torch_after = {}, {}
        for name in names:
            with contextlib.redirect_stdout(io.StringIO()) as printed:
                try:
                    cli.main([name, "--help"])
                except SystemExit:
                    pass
            helps[name] = printed.getvalue()
            torch_after[name] = "torch" in sys.modules
        print(json.dumps({"helps": helps, "torch": torch_after}))
        """
    )
    assert all(f"usage: arw-sv {name}" in text for name, text in out["helps"].items())
    assert "train" in out["torch"] and "export" in out["torch"]
    assert not any(out["torch"].values()), out["torch"]


def test_argparse_lives_in_the_cli_package():
    users = {
        str(path.relative_to(REPO))
        for path in (REPO / "arw_sv").rglob("*.py")
        if "argparse" in _imported_names(path)
    }
    assert users == {p for p in users if p.startswith("arw_sv/cli/")}
    assert "arw_sv/cli/eval.py" in users


def test_the_clis_format_lists_are_the_librarys():
    from arw_sv import export, inference
    from arw_sv.cli import embed as embed_cli
    from arw_sv.cli import eval as eval_cli
    from arw_sv.cli import export as export_cli
    from arw_sv.data.trials import SCORE_FORMATS

    assert embed_cli.BACKENDS == inference.BACKENDS
    assert eval_cli.SCORE_FORMATS == SCORE_FORMATS
    assert export_cli.FORMATS == export.FORMATS
    lazy_sub = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    choices = next(a.choices for a in lazy_sub.load("score")._actions if a.dest == "format")
    assert tuple(choices) == SCORE_FORMATS


def test_choosing_a_torch_command_imports_torch():
    # The counterpart of the test above: laziness is per command, not a lost import.
    out = _fresh_python(
        """
        import json, sys
        from arw_sv import cli
        args = cli.build_parser().parse_args(["average", "runs/x", "--num", "3"])
        before = "torch" in sys.modules
        try:
            args.func(args)
        except Exception as exc:
            error = type(exc).__name__
        print(json.dumps({"before": before, "torch": "torch" in sys.modules, "num": args.num,
                          "func": f"{args.func.__module__}.{args.func.__name__}",
                          "error": error}))
        """
    )
    # parsing imports nothing heavy; running the command does (and fails: no such run)
    assert out == {
        "before": False,
        "torch": True,
        "num": 3,
        "func": "arw_sv.cli.average.run",
        "error": out["error"],
    }
    assert out["error"] in ("ValueError", "CheckpointError", "FileNotFoundError")


@pytest.mark.parametrize("name", sorted(cli._MODULE_COMMANDS))
def test_lazy_subcommand_equals_its_module_parser(name):
    module = importlib.import_module(cli._MODULE_COMMANDS[name][0])
    eager = argparse.ArgumentParser(prog="arw-sv")
    eager_sub = eager.add_subparsers(dest="command")
    module.add_subparser(eager_sub)
    lazy_sub = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    helps = {a.dest: a.help for a in eager_sub._choices_actions}
    lazy_helps = {a.dest: a.help for a in lazy_sub._choices_actions}
    assert lazy_helps[name] == helps[name]  # the table in cli.py has not drifted
    assert lazy_sub.load(name).format_help() == eager_sub.choices[name].format_help()


def test_unknown_subcommand_still_fails():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["frobnicate"])


def test_import_arw_sv_is_cheap_and_names_resolve():
    out = _fresh_python(
        """
        import json, sys
        import arw_sv
        cheap = not any(m in sys.modules for m in ("torch", "numpy", "scipy"))
        read = arw_sv.read_scores
        print(json.dumps({"cheap": cheap, "torch": "torch" in sys.modules,
                          "read": read.__module__, "all": sorted(arw_sv.__all__)}))
        """
    )
    assert out["cheap"] and not out["torch"] and out["read"] == "arw_sv.data.trials"
    assert set(out["all"]) == {"__version__", *arw_sv._API}


def test_public_names_are_the_modules_objects():
    for name, module in arw_sv._API.items():
        assert getattr(arw_sv, name) is getattr(importlib.import_module(module), name)
        assert name in dir(arw_sv)
    from arw_sv.evaluate import evaluate_scores
    from arw_sv.inference import SpeakerEncoder

    assert arw_sv.SpeakerEncoder is SpeakerEncoder
    assert arw_sv.evaluate_scores is evaluate_scores
    with pytest.raises(AttributeError, match="no_such_name"):
        arw_sv.no_such_name  # noqa: B018


def test_score_with_an_asnorm_calibrator_imports_no_torch(tmp_path, monkeypatch):
    # AS-norm's statistics are numpy's (issue 28): importing torch alone took 2-4 s.
    np = pytest.importorskip("numpy")
    from arw_sv.calibration import fit_on_speakers, save_calibrator

    rng = np.random.default_rng(0)
    speakers = [f"c{k // 4}" for k in range(80)]
    cal, _, _ = fit_on_speakers(speakers, rng.normal(size=(80, 4)), method="quantile",
                                clusters=2, top_n=5, max_pairs=2_000)  # fmt: skip
    assert cal.cohort is not None
    save_calibrator(cal, tmp_path / "cal.json")
    embeddings, trial_list = tmp_path / "emb.npz", tmp_path / "trials.txt"
    np.savez(embeddings, ids=np.array([f"id{k}/s/{j}.wav" for k in range(3) for j in (1, 2)]),
             embeddings=rng.normal(size=(6, 4)))  # fmt: skip
    trial_list.write_text("1 id1/s/1.wav id1/s/2.wav\n0 id1/s/1.wav id2/s/2.wav\n")
    out = _fresh_python(
        f"""
        import contextlib, io, json, os, sys
        os.environ["ARW_SV_CACHE"] = {str(tmp_path / "cache")!r}
        from arw_sv import cli
        with contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(["score", "--embeddings", {str(embeddings)!r}, "--trials",
                             {str(trial_list)!r}, "--calibration", {str(tmp_path / "cal.json")!r},
                             "--out", {str(tmp_path / "llr.txt")!r}, "--no-model-check"])
        print(json.dumps({{"code": code, "torch": "torch" in sys.modules}}))
        """
    )
    assert out == {"code": 0, "torch": False}

"""Issue #27, items 1-3: bounded configs and overrides (one YAML loader, limits named), a
calibrator file checked field by field like a checkpoint, and a model check that does not
switch itself off. Every hostile input is built here; each failure is one line, exit 2,
and writes nothing.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from arw_sv.calibration import CalibrationError, fit_on_speakers, load_calibrator, save_calibrator
from arw_sv.cli import main
from arw_sv.config import ConfigError, load_config
from arw_sv.demo import config_path
from arw_sv.synth.config import apply_overrides, preset
from tests.test_calibration import embedded  # noqa: F401 (a fixture)

TINY = config_path("tiny")


def _bomb(levels: int = 9) -> str:
    """A YAML flow list that stands for 10**levels strings through nested aliases."""
    parts = ["&l0 [a, a, a, a, a, a, a, a, a, a]"]
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def _one_line_exit_2(argv: list[str], capsys, *names: str) -> str:
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and len(err) < 400, err[:1000]
    for name in names:
        assert name in err, err
    return err


# ---- 1. configs and overrides -------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "data.crop_seconds=1e9",
        "adversary.hidden=100000000",
        "model.channels=[65536,65536,65536,65536,65536]",
        "model.embedding_dim=100000000",
        "adversary.n_clusters=1000000",
        "loss.aam_scale=-30",
        "loss.aam_weight=-1",
        "loss.aam_margin=100",
        "loss.margin_warmup_steps=-5",
        "train.seed=-1",
        "features.n_mels=100000",
    ],
)
def test_an_unbounded_setting_is_refused_naming_the_key_and_the_limit(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: .* outside \[.*\] \(the limit\)"):
        load_config(TINY, [override])


def test_train_refuses_a_huge_crop_before_allocating(tmp_path, capsys):
    _one_line_exit_2(
        ["train", str(TINY), f"train.out_dir={tmp_path / 'run'}", "data.crop_seconds=1e9"],
        capsys,
        "data.crop_seconds",
        "limit",
    )
    assert not (tmp_path / "run").exists()


def test_an_alias_bomb_override_is_refused_quickly_in_one_short_line(capsys, tmp_path):
    start = time.monotonic()
    err = _one_line_exit_2(
        ["train", str(TINY), f"train.out_dir={_bomb()}"], capsys, "train.out_dir", "20000"
    )
    assert time.monotonic() - start < 3 and "alias" in err


def test_an_alias_bomb_or_a_long_list_in_a_config_file_is_refused_quickly(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(f"train:\n  out_dir: {_bomb()}\n")
    big = tmp_path / "big.yaml"  # 600 kB, no alias: the cap is hit while parsing
    big.write_text("train:\n  lr: [" + "1, " * 200_000 + "1]\n")
    for path, alias in ((bomb, True), (big, False)):
        start = time.monotonic()
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert time.monotonic() - start < 3
        message = str(info.value)
        assert message.startswith(f"{path}:") and "(the limit)" in message and len(message) < 300
        assert (
            "alias" in message[len(str(path)) :]
        ) is alias  # no blame on aliases a file does not have


def test_a_long_list_in_hyperparams_is_refused_while_parsing(tmp_path):
    from arw_sv.speechbrain_folder import SpeechBrainFolderError, read_hparams

    (tmp_path / "hyperparams.yaml").write_text("channels: [" + "1, " * 200_000 + "1]\n")
    start = time.monotonic()
    with pytest.raises(SpeechBrainFolderError, match=r"hyperparams\.yaml:1: over 20000 values"):
        read_hparams(tmp_path)
    assert time.monotonic() - start < 3


def test_a_yaml_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("# " + "x" * 2_000_000 + "\n")
    with pytest.raises(ConfigError, match=r"huge\.yaml: \d+ bytes of YAML \(at most"):
        load_config(path)


def test_an_alias_that_contains_itself_is_refused(tmp_path):
    path = tmp_path / "self.yaml"
    path.write_text("train: &a {out_dir: *a}\n")
    with pytest.raises(ConfigError, match=r"self\.yaml:1: a YAML alias refers to the value"):
        load_config(path)


def test_a_long_bad_value_is_cut_in_the_message():
    with pytest.raises(ConfigError) as info:
        load_config(TINY, ["model.preset=" + "x" * 100_000])
    assert "model.preset" in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(
    "override, names",
    [
        ("test_utterances_per_session=1000000", ["test_utterances_per_session", "1000"]),
        ("dev_sessions=100000", ["dev_sessions", "1000"]),
        ("num_dev_speakers=80000;dev_sessions=100", ["2000000 utterances", "GB"]),
        ("calibration_speakers_per_cell=10000000", ["calibration_speakers_per_cell"]),
        ("snr_db=[1e308,1e308]", ["snr_db", "[-20, 100]"]),
        (f"nationality_spread={_bomb()}", ["nationality_spread", "20000"]),
    ],
)
def test_synth_overrides_are_bounded_and_blame_the_right_key(override, names):
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        apply_overrides(preset("tiny"), override.split(";"))
    message = str(info.value)
    assert len(message) < 400 and "\n" not in message and time.monotonic() - start < 3
    for name in names:
        assert name in message, message


def test_eval_refuses_a_billion_bootstrap_resamples(tmp_path, capsys):
    argv = ["eval", "--scores", str(tmp_path / "s.txt"), "--bootstrap", "1000000000",
            "--out", str(tmp_path / "e")]  # fmt: skip
    _one_line_exit_2(argv, capsys, "--bootstrap", "100000")
    assert not (tmp_path / "e").exists()


# ---- 2. the calibrator file ---------------------------------------------------------------


def _population(seed: int = 0):
    rng = np.random.default_rng(seed)
    speakers = np.repeat(np.arange(60), 6)
    emb = rng.normal(size=(60, 8))[speakers] + 0.5 * rng.normal(size=(speakers.size, 8))
    return [f"s{s}" for s in speakers], emb


@pytest.fixture(scope="module")
def calibrators(tmp_path_factory):
    """Fitted calibrators (fsn with and without an AS-norm cohort, faircal, softcal) as JSON."""
    folder = tmp_path_factory.mktemp("calibrators")
    speakers, emb = _population()
    docs = {}
    for name, kwargs in (
        ("softcal", dict(method="softcal", clusters=2, score_norm="none")),
        ("fsn_asnorm", dict(method="fsn", clusters=2, target_fmr=0.1, top_n=20)),
        ("fsn", dict(method="fsn", clusters=2, target_fmr=0.1, score_norm="none")),
        ("faircal", dict(method="faircal", clusters=2, score_norm="none")),
    ):
        cal, _, _ = fit_on_speakers(speakers, emb, fingerprint="0123abcd0123abcd", **kwargs)
        save_calibrator(cal, folder / f"{name}.json")
        docs[name] = json.loads((folder / f"{name}.json").read_text())
    return docs


def _mutations():
    zero_cohort = {"dtype": "<f4", "shape": [4, 8], "base64": base64.b64encode(bytes(128)).decode()}
    return [
        ("fsn", lambda d: d.update(fallback=[]), "fallback"),
        ("fsn", lambda d: d.update(fallback=[1.0]), "fallback"),
        ("faircal", lambda d: d.update(fallback=[1.0, 2.0]), "fallback"),
        ("softcal", lambda d: d["settings"].update(top=10**9), "settings.top"),
        ("softcal", lambda d: d.update(centroids=[[0.1] * 8] * 50_000, maps=[]), "centroids"),
        ("fsn", lambda d: d.update(centroids=[[0.1] * 8] * 3), "centroids"),
        ("faircal", lambda d: d.update(counts=[-5.0, 100.0]), "counts"),
        ("fsn_asnorm", lambda d: d.update(cohort=None), "cohort"),
        ("fsn_asnorm", lambda d: d["cohort"].update(zero_cohort), "cohort"),
        ("fsn_asnorm", lambda d: d["settings"].update(top_n=0), "settings.top_n"),
        ("fsn", lambda d: d.update(speakers="id10009"), "speakers"),
        ("fsn", lambda d: d.update(speakers=[["id10009"]]), "speakers"),
        (
            "fsn",
            lambda d: d.update(settings={"seed": 0, "top": 4, "temperature": 0.05}),
            "settings.",
        ),  # fmt: skip
        ("softcal", lambda d: d.update(method="faircal"), "settings.te"),
        ("fsn", lambda d: d.update(maps=[[0.0, 1.0, 2.0]] * 2), "maps"),
        ("fsn", lambda d: d.update(maps=[["0.1"], [0.2]]), "maps"),
        ("fsn", lambda d: d.update(dim=True), "dim"),
        ("fsn", lambda d: d.update(fingerprint=["x"]), "fingerprint"),
        ("fsn", lambda d: d.update(extra=1), "extra"),
        ("fsn", lambda d: d.pop("counts"), "counts"),
        ("fsn", lambda d: d.update(groups=["a", "b"]), "groups"),
    ]


@pytest.mark.parametrize("base, mutate, field", _mutations())
def test_a_malformed_calibrator_field_is_named_in_one_line(
    calibrators, tmp_path, base, mutate, field
):
    doc = json.loads(json.dumps(calibrators[base]))
    mutate(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError) as info:
        load_calibrator(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and f"'{field}" in message, message
    assert "\n" not in message and len(message) < 400


def test_every_fitted_calibrator_passes_the_schema(calibrators, tmp_path):
    for name, doc in calibrators.items():
        (tmp_path / "c.json").write_text(json.dumps(doc))
        assert load_calibrator(tmp_path / "c.json").method == name.split("_")[0]


def test_a_calibrator_with_a_key_given_twice_is_refused(calibrators, tmp_path):
    text = json.dumps(calibrators["fsn"])
    path = tmp_path / "dup.json"
    path.write_text(text[:-1] + ', "method": "global"}')
    with pytest.raises(CalibrationError, match=r"dup\.json: key 'method' is given twice"):
        load_calibrator(path)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--top", "0"),
        ("--top", "-1"),
        ("--temperature", "-1"),
        ("--temperature", "0"),
        ("--temperature", "nan"),
        ("--temperature", "inf"),
    ],  # fmt: skip
)
def test_softcal_settings_are_refused_before_the_fit(tmp_path, capsys, flag, value):
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--embeddings", str(tmp_path / "absent.npz"), "--method", "softcal",
            flag, value, "--out", str(out)]  # fmt: skip
    _one_line_exit_2(argv, capsys, flag)  # before the embeddings are even read
    assert not out.exists()


# ---- 3. the model check -------------------------------------------------------------------


def _without_sidecar(src: Path, folder: Path) -> Path:
    dst = folder / src.name
    shutil.copy(src, dst)
    return dst


def test_calibrate_refuses_embeddings_that_name_no_model(embedded, tmp_path, capsys):  # noqa: F811
    bare = _without_sidecar(embedded / "cal.npz", tmp_path)
    out = tmp_path / "cal.json"
    argv = ["calibrate", "--embeddings", str(bare), "--method", "global", "--score-norm", "none",
            "--out", str(out)]  # fmt: skip
    _one_line_exit_2(argv, capsys, "cal.npz.model.json", "--no-model-check")
    assert not out.exists()
    (tmp_path / "cal.npz.model.json").write_text("{broken")
    _one_line_exit_2(argv, capsys, "cal.npz.model.json")
    assert main([*argv, "--no-model-check"]) == 0
    assert load_calibrator(out).fingerprint is None


def test_score_and_eval_refuse_a_calibrator_or_embeddings_without_a_model(
    embedded,  # noqa: F811
    tmp_path,
    capsys,
):
    from dataclasses import replace

    assert main(["calibrate", "--embeddings", str(embedded / "cal.npz"), "--method", "global",
                 "--score-norm", "none", "--out", str(tmp_path / "c.json")]) == 0  # fmt: skip
    cal = load_calibrator(tmp_path / "c.json")

    nameless = tmp_path / "nameless.json"
    save_calibrator(replace(cal, fingerprint=None), nameless)
    fitted = tmp_path / "fitted.json"
    save_calibrator(cal, fitted)
    bare = _without_sidecar(embedded / "eval.npz", tmp_path)
    trials = str(embedded / "trials.txt")
    capsys.readouterr()
    for calibration, embeddings, name in (
        (nameless, embedded / "eval.npz", "nameless.json"),
        (fitted, bare, "eval.npz.model.json"),
    ):
        out = tmp_path / "llr.txt"
        score = ["score", "--embeddings", str(embeddings), "--trials", trials,
                 "--calibration", str(calibration), "--out", str(out)]  # fmt: skip
        _one_line_exit_2(score, capsys, name, "--no-model-check")
        assert not out.exists()
        ev = ["eval", "--embeddings", str(embeddings), "--trials", trials, "--calibration",
              str(calibration), "--no-plots", "--out", str(tmp_path / "e")]  # fmt: skip
        _one_line_exit_2(ev, capsys, name)
        assert main([*score, "--no-model-check"]) == 0 and out.exists()
        out.unlink()

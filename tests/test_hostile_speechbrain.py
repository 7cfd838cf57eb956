"""Issue #21, SpeechBrain folders: every hostile or broken file is one line naming it
(exit 2 from the CLI), nothing is run or allocated beyond a bound, and a valid folder that
SpeechBrain itself loads loads here too.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import torch

from arw_sv.cli import main
from arw_sv.speechbrain_folder import (
    SpeechBrainFolderError,
    head_for,
    load_extractor,
    read_classifier,
    read_hparams,
    read_labels,
)
from tests.test_speechbrain import PUBLIC_HPARAMS, make_speechbrain_folder

SPEAKERS = ["id10001", "id10002", "id10003"]


@pytest.fixture(scope="module")
def valid_folder(tmp_path_factory) -> Path:
    return make_speechbrain_folder(tmp_path_factory.mktemp("sb") / "valid", 64, SPEAKERS)


@pytest.fixture
def folder(valid_folder, tmp_path) -> Path:
    copy = tmp_path / "sb"
    shutil.copytree(valid_folder, copy)
    return copy


def _embed(folder: Path, tiny_manifests, tmp_path) -> list[str]:
    return [
        "embed",
        f"speechbrain:{folder}",
        "--manifest",
        str(tiny_manifests[1]),
        "--out",
        str(tmp_path / "x.npz"),
        "--quiet",
    ]


def _one_line_exit_2(argv: list[str], capsys, *names: str) -> str:
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1, err
    for name in names:
        assert name in err, err
    return err


def _public_text(width: int = 64) -> str:
    return PUBLIC_HPARAMS.format(folder="x", classes=3, c=width, c3=3 * width)


BROKEN_HPARAMS = {
    "empty": "",
    "a list": "- 1\n- 2\n",
    "a scalar": "42\n",
    "modules a list": "modules:\n  - 1\n  - 2\n",
    "name tag as a width": _public_text().replace(
        "attention_channels: 128", "attention_channels: !name:os.system"
    ),
    "division by zero": _public_text().replace(
        "lin_neurons: 192", "lin_neurons: !ref <n_mels> / 0"
    ),
    "overflow": _public_text().replace(
        "lin_neurons: 192", "lin_neurons: !ref <n_mels> * 1e308 * 1e308"
    ),
    "negative width": _public_text().replace("channels: [64,", "channels: [-64,"),
    "width 1e7": _public_text().replace("channels: [64,", "channels: [10000000,"),
    "lin_neurons 1e9": _public_text().replace("lin_neurons: 192", "lin_neurons: 1000000000"),
    "parse error": "a: [1, 2\nb: }\n",
    "unresolved ref": _public_text().replace(
        "input_size: !ref <n_mels>", "input_size: !ref <nope>"
    ),
    "string width": _public_text().replace("channels: [64,", "channels: [wide,"),
    "four widths": _public_text().replace(
        "channels: [64, 64, 64, 64, 192]", "channels: [64, 64, 64, 192]"
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_HPARAMS))
def test_a_broken_hyperparams_yaml_is_one_line_naming_it(
    case, folder, tiny_manifests, tmp_path, capsys
):
    (folder / "hyperparams.yaml").write_text(BROKEN_HPARAMS[case])
    with pytest.raises(SpeechBrainFolderError, match="hyperparams.yaml"):
        read_hparams(folder)
    _one_line_exit_2(_embed(folder, tiny_manifests, tmp_path), capsys, "hyperparams.yaml")
    assert not (tmp_path / "x.npz").exists()


def test_huge_sizes_are_refused_before_anything_is_allocated(folder):
    # Every width in range, but together far too many weights: refused from the YAML alone.
    text = _public_text().replace(
        "channels: [64, 64, 64, 64, 192]", "channels: [4096, 4096, 4096, 4096, 4096]"
    )
    (folder / "hyperparams.yaml").write_text(text)
    with pytest.raises(SpeechBrainFolderError, match="weights"):
        read_hparams(folder)


def test_a_yaml_alias_bomb_is_refused_quickly(folder):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        levels.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = (
        "\n".join(levels)
        + "\n"
        + _public_text().replace("lin_neurons: 192", "lin_neurons: 192\n    bomb: *a9")
    )
    (folder / "hyperparams.yaml").write_text(text)
    start = time.monotonic()
    with pytest.raises(SpeechBrainFolderError, match="alias"):
        read_hparams(folder)
    assert time.monotonic() - start < 5


def test_a_ref_bomb_is_refused_quickly(folder):
    levels = ["r0: 1"]
    for i in range(1, 10):
        levels.append(f"r{i}: [" + ", ".join([f"!ref <r{i - 1}>"] * 10) + "]")
    text = (
        "\n".join(levels)
        + "\n"
        + _public_text().replace("lin_neurons: 192", "lin_neurons: 192\n    bomb: !ref <r9>")
    )
    (folder / "hyperparams.yaml").write_text(text)
    start = time.monotonic()
    with pytest.raises(SpeechBrainFolderError, match="!ref"):
        read_hparams(folder)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("name", ["hyperparams.yaml", "label_encoder.txt"])
def test_a_file_that_is_not_utf8_is_named(name, folder, capsys):
    (folder / name).write_bytes(b"n_mels: 80\n\xff\xfe\x00 bad\n")
    with pytest.raises(SpeechBrainFolderError, match=f"{name}: not UTF-8"):
        read_hparams(folder) if name == "hyperparams.yaml" else read_labels(folder)


@pytest.mark.parametrize("payload", [[1, 2], torch.zeros(3), 7, None], ids=repr)
def test_an_embedding_model_that_is_not_a_state_dict_is_one_line(
    payload, folder, tiny_manifests, tmp_path, capsys
):
    torch.save(payload, folder / "embedding_model.ckpt")
    with pytest.raises(SpeechBrainFolderError, match="expected a state dict"):
        load_extractor(folder)
    _one_line_exit_2(_embed(folder, tiny_manifests, tmp_path), capsys, "embedding_model.ckpt")


def test_a_state_dict_of_another_model_is_one_line_with_counts(
    folder, valid_folder, tiny_manifests, tmp_path, capsys
):
    other = make_speechbrain_folder(tmp_path / "other", 32, SPEAKERS)
    shutil.copy(other / "embedding_model.ckpt", folder / "embedding_model.ckpt")
    err = _one_line_exit_2(_embed(folder, tiny_manifests, tmp_path), capsys, "embedding_model.ckpt")
    assert "of another shape" in err


def test_a_pickle_refused_by_weights_only_is_one_line(folder, tiny_manifests, tmp_path, capsys):
    torch.save({"x": object()}, folder / "embedding_model.ckpt")
    _one_line_exit_2(_embed(folder, tiny_manifests, tmp_path), capsys, "embedding_model.ckpt")


@pytest.mark.parametrize(
    "line", ["foo bar => 0", "'a' => zero", "'a' => 0\n'b' => 0", "'a' => 1", "((( => 0"]
)
def test_a_bad_label_encoder_line_is_named(line, folder):
    (folder / "label_encoder.txt").write_text(line + "\n")
    with pytest.raises(SpeechBrainFolderError, match="label_encoder.txt"):
        read_labels(folder)


@pytest.mark.parametrize(
    ("weight", "match"),
    [("a string", "not a tensor"), (torch.zeros(3, 100), "100 wide"), (torch.zeros(3), "float")],
    ids=["string", "wrong width", "1-d"],
)
def test_a_bad_classifier_is_named(weight, match, folder):
    torch.save({"weight": weight}, folder / "classifier.ckpt")
    with pytest.raises(SpeechBrainFolderError, match=match):
        head_for(folder, SPEAKERS, 3, dim=192)


def test_classifier_rows_that_disagree_with_the_labels_are_named(folder):
    torch.save({"weight": torch.zeros(5, 192)}, folder / "classifier.ckpt")
    with pytest.raises(SpeechBrainFolderError, match="5 rows, label_encoder.txt 3 labels"):
        head_for(folder, SPEAKERS, 3, dim=192)
    assert read_classifier(folder).shape == (5, 192)  # read alone, it is a valid classifier


def test_a_folder_with_attention_wider_than_the_last_layer_loads(tmp_path):
    """Width 32: the last layer has 96 channels, the attention 128 (as SpeechBrain's
    defaults give); SpeechBrain loads it, and so must arw-sv, with SpeechBrain's numbers."""
    from tests.test_speechbrain import speechbrain_embeddings

    folder = make_speechbrain_folder(tmp_path / "w32", 32, SPEAKERS)
    extractor = load_extractor(folder)
    assert extractor.ecapa.asp.tdnn.conv.conv.out_channels == 128
    audio = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        ours = torch.nn.functional.normalize(extractor(audio), dim=-1)
    theirs = torch.nn.functional.normalize(
        speechbrain_embeddings(folder, audio, tmp_path / "c"), dim=-1
    )
    assert float((ours * theirs).sum(-1).min()) > 0.99999


def test_a_width_64_folder_can_be_fine_tuned_with_model_se_channels(
    valid_folder, tiny_manifests, tmp_path
):
    from arw_sv.config import ConfigError
    from arw_sv.train.loop import fit
    from tests.conftest import tiny_config

    common = ("model.channels=[64,64,64,64,192]", "features.n_mels=80", "train.steps=1")
    spec = f"train.init_checkpoint=speechbrain:{valid_folder}"
    cfg = tiny_config(tmp_path / "a", tiny_manifests[0], *common, spec)
    with pytest.raises(ConfigError, match="'se'"):  # derived SE width 64, the folder's 128
        fit(cfg)
    cfg = tiny_config(
        tmp_path / "b",
        tiny_manifests[0],
        *common,
        spec,
        "model.se_channels=128",
        "model.res2net_scale=8",
    )
    fit(cfg)
    assert (tmp_path / "b" / "checkpoints" / "step_1.pt").is_file()

"""SpeechBrain pretrained folders: import (embed), fine-tune from, and export to.

No hub here: the tests build the folder themselves, a randomly initialised SpeechBrain
ECAPA saved in the ``speechbrain/spkrec-ecapa-voxceleb`` layout (hyperparams.yaml as
published, ``!new:`` tags and all), and compare with SpeechBrain's own
``EncoderClassifier.encode_batch``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config

from arw_sv.config import ConfigError
from arw_sv.data.manifest import read_manifest
from arw_sv.inference import SpeakerEncoder
from arw_sv.speechbrain_folder import (
    SpeechBrainFolderError,
    read_classifier,
    read_hparams,
    read_labels,
    write_folder,
)
from arw_sv.train.loop import fit

# The published spkrec-ecapa-voxceleb hyperparams.yaml, with the width and the number of
# classes as parameters and pretrained_path pointing at the folder.
PUBLIC_HPARAMS = """\
# ############################################################################
# Model: ECAPA big for Speaker verification
# ############################################################################

# Feature parameters
n_mels: 80

# Pretrain folder (HuggingFace)
pretrained_path: {folder}

# Output parameters
out_n_neurons: {classes}

# Model params
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [{c}, {c}, {c}, {c}, {c3}]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 128
    lin_neurons: 192

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: !ref <out_n_neurons>

mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
    classifier: !ref <classifier>

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder


pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def make_speechbrain_folder(folder: Path, width: int, speakers: list[str], seed: int = 0) -> Path:
    """A randomly initialised SpeechBrain ECAPA saved as the public model is.

    Batch-norm statistics and the embedding statistics are randomised too, so a loader
    that skipped a buffer (or applied mean_var_norm_emb when SpeechBrain does not) fails.
    """
    from hyperpyyaml import load_hyperpyyaml

    folder.mkdir(parents=True, exist_ok=True)
    text = PUBLIC_HPARAMS.format(folder=folder, classes=len(speakers), c=width, c3=3 * width)
    (folder / "hyperparams.yaml").write_text(text)
    torch.manual_seed(seed)
    hparams = load_hyperpyyaml(text)
    model = hparams["embedding_model"]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    torch.save(hparams["classifier"].state_dict(), folder / "classifier.ckpt")
    norm = hparams["mean_var_norm_emb"]
    norm.count, norm.glob_mean, norm.glob_std = 10, torch.randn(192), torch.ones(192)
    norm._save(folder / "mean_var_norm_emb.ckpt")
    encoder = hparams["label_encoder"]
    encoder.update_from_iterable(speakers)
    encoder.save(folder / "label_encoder.txt")
    return folder


def speechbrain_embeddings(folder: Path, waveforms: torch.Tensor, savedir: Path) -> torch.Tensor:
    """SpeechBrain's own encode_batch on the folder, one item at a time. Shape (B, D)."""
    from speechbrain.inference.speaker import EncoderClassifier

    model = EncoderClassifier.from_hparams(source=str(folder), savedir=str(savedir))
    with torch.no_grad():
        return torch.cat([model.encode_batch(w[None]).reshape(1, -1) for w in waveforms])


def _speech_like(batch: int, seconds: float, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    rows = [
        0.3 * torch.sin(2 * math.pi * (110 + 37 * i) * t * (1 + 0.1 * torch.sin(3 * t)))
        + 0.05 * torch.randn(n, generator=g)
        for i in range(batch)
    ]
    return torch.stack(rows)


SPEAKERS = ["id10003", "id10001", "id10002"]


def _parity_both_ways(tmp_path: Path, width: int, jit: bool) -> tuple[float, float]:
    """Lowest cosines: arw-sv's import vs SpeechBrain, and SpeechBrain on arw-sv's export vs
    the import."""
    folder = make_speechbrain_folder(tmp_path / "sb", width, SPEAKERS)
    audio = _speech_like(2, 1.5)
    raw = speechbrain_embeddings(folder, audio, tmp_path / "cache")
    reference = F.normalize(raw, dim=-1)

    encoder = SpeakerEncoder.from_speechbrain(folder, jit=jit)
    assert encoder.dim == 192 and encoder._extractor.ecapa.channels[0] == width
    imported = encoder(audio)
    forward = float((imported * reference).sum(-1).min())
    # The comparison can fail: an untrained model of the same shape is far off.
    untrained = SpeakerEncoder(read_hparams(folder).build(), jit=False)
    assert float((untrained(audio) * reference).sum(-1).max()) < 0.99

    exported = write_folder(
        encoder._extractor,
        tmp_path / "exported",
        speakers=read_labels(folder),
        class_vectors=read_classifier(folder),
    )
    back = speechbrain_embeddings(exported, audio, tmp_path / "cache2")
    backward = float((F.normalize(back, dim=-1) * imported).sum(-1).min())
    assert torch.allclose(back, raw, atol=1e-5)  # SpeechBrain on both folders: the same
    assert read_labels(exported) == SPEAKERS
    assert torch.equal(read_classifier(exported), read_classifier(folder))
    return forward, backward


def test_speechbrain_parity_both_ways_c512(tmp_path):
    forward, backward = _parity_both_ways(tmp_path, 512, jit=False)
    assert forward > 0.9999 and backward > 0.9999, (forward, backward)


@pytest.mark.slow
def test_speechbrain_parity_both_ways_c1024(tmp_path):
    # The default CPU path (frozen TorchScript trace) at the published width.
    forward, backward = _parity_both_ways(tmp_path, 1024, jit=True)
    assert forward > 0.9999 and backward > 0.9999, (forward, backward)


def test_speechbrain_embeddings_skip_mean_var_norm_emb_as_speechbrain_does(tmp_path):
    """encode_batch applies mean_var_norm_emb only with normalize=True; neither does arw-sv."""
    from speechbrain.inference.speaker import EncoderClassifier

    folder = make_speechbrain_folder(tmp_path / "sb", 128, SPEAKERS)
    audio = _speech_like(1, 1.0)
    model = EncoderClassifier.from_hparams(source=str(folder), savedir=str(tmp_path / "c"))
    with torch.no_grad():
        plain = F.normalize(model.encode_batch(audio).reshape(1, -1), dim=-1)
        centred = F.normalize(model.encode_batch(audio, normalize=True).reshape(1, -1), dim=-1)
    ours = SpeakerEncoder.from_speechbrain(folder, jit=False)(audio)
    assert float((ours * plain).sum()) > 0.9999
    assert float((ours * centred).sum()) < 0.99  # the random glob_mean matters


def test_head_for_matches_speakers_by_name_and_tiles_speed_classes(tmp_path):
    from arw_sv.speechbrain_folder import head_for

    extractor = read_hparams(make_speechbrain_folder(tmp_path / "sb", 128, SPEAKERS)).build()
    vectors = torch.randn(3, 192)
    folder = write_folder(extractor, tmp_path / "w", speakers=SPEAKERS, class_vectors=vectors)
    # A subset, in another order, with two speed-perturbed copies of each class.
    head = head_for(folder, ["id10002", "id10003"], n_classes=6)
    expected = vectors[[2, 0]]
    assert torch.equal(head, torch.cat([expected, expected, expected]))
    assert head_for(folder, ["id10002", "id99999"], n_classes=2) is None
    assert head_for(folder, ["id10002", "id10003"], n_classes=3) is None


# ---- fine-tuning from a SpeechBrain folder ------------------------------------------------

WIDTH = 128  # the smallest width whose SpeechBrain defaults equal arw-sv's (scale 8, SE 128)
CHANNELS = f"model.channels=[{WIDTH},{WIDTH},{WIDTH},{WIDTH},{3 * WIDTH}]"


def _first_step(monkeypatch) -> dict:
    """Capture the learner as the first training step receives it."""
    import copy

    from arw_sv.train import loop

    seen: dict = {}
    real = loop.learner_step

    def spy(model, *args, **kwargs):
        if not seen:
            learner = getattr(model, "module", model)
            seen["extractor"] = copy.deepcopy(learner.extractor).eval()
            seen["aam"] = learner.aam.weight.detach().clone()
        return real(model, *args, **kwargs)

    monkeypatch.setattr(loop, "learner_step", spy)
    return seen


def test_fine_tuning_from_a_speechbrain_folder_starts_from_its_model(
    tiny_manifests, tmp_path, monkeypatch
):

    speakers = list(read_manifest(tiny_manifests[0]).speakers)
    # The label encoder in another order: the head's rows must be matched by name.
    folder = make_speechbrain_folder(tmp_path / "sb", WIDTH, speakers[::-1])
    seen = _first_step(monkeypatch)
    cfg = tiny_config(
        tmp_path / "run", tiny_manifests[0], CHANNELS, "train.steps=1", "data.speakers_per_batch=2",
        f"train.init_checkpoint=speechbrain:{folder}", "adversary.formulation=pw",
    )  # fmt: skip
    fit(cfg, progress=False)

    audio = _speech_like(2, 1.2)
    imported = SpeakerEncoder.from_speechbrain(folder, jit=False)(audio)
    first = SpeakerEncoder(seen["extractor"], jit=False)(audio)
    cosine = float((first * imported).sum(-1).min())
    assert cosine > 0.9999 and torch.allclose(first, imported, atol=1e-6), cosine
    classifier = read_classifier(folder)
    assert torch.equal(seen["aam"], classifier.flip(0))  # row i: speaker i


def test_fine_tuning_on_other_speakers_gets_a_fresh_head(tiny_manifests, tmp_path, monkeypatch):

    folder = make_speechbrain_folder(tmp_path / "sb", WIDTH, SPEAKERS)
    seen = _first_step(monkeypatch)
    cfg = tiny_config(
        tmp_path / "run", tiny_manifests[0], CHANNELS, "train.steps=1", "data.speakers_per_batch=2",
        f"train.init_checkpoint=speechbrain:{folder}",
    )  # fmt: skip
    fit(cfg, progress=False)
    n_speakers = len(read_manifest(tiny_manifests[0]).speakers)
    assert seen["aam"].shape[0] == n_speakers != read_classifier(folder).shape[0]
    audio = _speech_like(1, 1.0)
    imported = SpeakerEncoder.from_speechbrain(folder, jit=False)(audio)
    assert float((SpeakerEncoder(seen["extractor"], jit=False)(audio) * imported).sum()) > 0.9999


def test_fine_tuning_from_a_folder_of_another_architecture_names_the_difference(
    tiny_manifests, tmp_path
):

    folder = make_speechbrain_folder(tmp_path / "sb", WIDTH, SPEAKERS)
    cfg = tiny_config(
        tmp_path / "run", tiny_manifests[0], f"train.init_checkpoint=speechbrain:{folder}"
    )
    with pytest.raises(ConfigError, match="channels"):
        fit(cfg, progress=False)


def test_hparams_are_read_without_running_them(tmp_path):
    folder = tmp_path / "sb"
    folder.mkdir()
    text = PUBLIC_HPARAMS.format(folder="x/y", classes=7, c=64, c3=192)
    (folder / "hyperparams.yaml").write_text(text)
    hp = read_hparams(folder)
    assert hp.channels == (64, 64, 64, 64, 192) and hp.n_mels == 80 and hp.lin_neurons == 192
    assert hp.kernel_sizes == (5, 3, 3, 3, 1) and hp.dilations == (1, 2, 3, 4, 1)
    (folder / "hyperparams.yaml").write_text(
        text.replace("std_norm: False\n\nemb", "std_norm: True\n\nemb")
    )
    with pytest.raises(SpeechBrainFolderError, match="sentence mean normalisation"):
        read_hparams(folder)
    (folder / "hyperparams.yaml").write_text(
        text.replace(
            "    n_mels: !ref <n_mels>\n\nmean",
            "    n_mels: !ref <n_mels>\n    deltas: True\n\nmean",
        )
    )
    with pytest.raises(SpeechBrainFolderError, match="deltas"):
        read_hparams(folder)


def test_missing_folder_and_offline_hub_id_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpeechBrainFolderError, match="hyperparams.yaml"):
        SpeakerEncoder.from_speechbrain(tmp_path)
    with pytest.raises(SpeechBrainFolderError, match="hub"):
        SpeakerEncoder.from_speechbrain("nobody/no-such-model")


# ---- the command line ----------------------------------------------------------------------


def test_cli_export_speechbrain_then_embed_speechbrain_folder(tiny_manifests, tmp_path, capsys):
    """A trained checkpoint -> `arw-sv export --format speechbrain` -> SpeechBrain loads it
    and agrees; `arw-sv embed speechbrain:FOLDER` gives the checkpoint's embeddings."""
    import numpy as np
    import soundfile as sf

    from arw_sv.checkpoint import load_checkpoint
    from arw_sv.cli import main

    cfg = tiny_config(tmp_path / "run", tiny_manifests[0], "train.steps=2")
    checkpoint = fit(cfg, progress=False).checkpoint
    out = tmp_path / "sb_export"
    assert main(["export", str(checkpoint), "--format", "speechbrain", "--out", str(out)]) == 0
    assert "SpeechBrain's EncoderClassifier vs arw-sv" in capsys.readouterr().out
    state = load_checkpoint(checkpoint)
    assert read_labels(out) == state["speakers"]
    assert torch.equal(read_classifier(out), state["learner"]["aam.weight"])

    audio = _speech_like(2, 1.3)
    reference = SpeakerEncoder.from_checkpoint(checkpoint, jit=False)(audio)
    ours = F.normalize(speechbrain_embeddings(out, audio, tmp_path / "cache"), dim=-1)
    assert float((ours * reference).sum(-1).min()) > 0.9999

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    for i, wav in enumerate(audio):
        sf.write(wavs / f"u{i}.wav", wav.numpy(), 16000, subtype="FLOAT")
    npz = tmp_path / "emb.npz"
    argv = ["embed", f"speechbrain:{out}", "--folder", str(wavs), "--out", str(npz), "--quiet"]
    assert main(argv) == 0
    from arw_sv.data.trials import read_embeddings

    embedded = dict(zip(*read_embeddings(npz), strict=True))
    got = torch.from_numpy(np.stack([embedded["u0.wav"], embedded["u1.wav"]]))
    assert torch.allclose(got, reference, atol=1e-4)
    assert main(["embed", f"speechbrain:{tmp_path / 'nothing'}", "--folder", str(wavs),
                 "--out", str(npz)]) == 2  # fmt: skip
    assert "not a folder" in capsys.readouterr().err

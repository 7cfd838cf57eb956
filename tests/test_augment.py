"""On-the-fly augmentation: SNRs, reverberation, speed perturbation, determinism, folders."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tiny_config

from arw_sv.augment import (
    Augmenter,
    AugmentError,
    add_noise,
    reverberate,
    scan_musan,
    speed_classes,
    speed_perturb,
)
from arw_sv.checkpoint import load_checkpoint
from arw_sv.config import AugmentConfig, ConfigError, load_config
from arw_sv.data.dataset import CropDataset
from arw_sv.data.manifest import read_manifest
from arw_sv.train.loop import fit

SR = 16000


def make_fake_noise_folders(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Small ``musan/`` and ``RIRS_NOISES/`` folders in the standard layouts.

    Returns:
        ``(musan_dir, rirs_dir)``.
    """
    rng = np.random.default_rng(seed)
    musan, rirs = root / "musan", root / "RIRS_NOISES"
    t = np.arange(3 * SR) / SR
    for kind, sub in (("noise", "free-sound"), ("music", "fma"), ("speech", "librivox")):
        folder = musan / kind / sub
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            if kind == "noise":
                audio = rng.normal(0, 0.1, t.size)
            elif kind == "music":
                audio = 0.1 * np.sin(2 * np.pi * (220 * (i + 1)) * t) * (1 + np.sin(t))
            else:  # syllable-rate modulated noise, speech-like enough for a test
                audio = rng.normal(0, 0.1, t.size) * (np.sin(2 * np.pi * 4 * t) > 0)
            sf.write(folder / f"{kind}-{sub}-{i:04d}.wav", audio.astype(np.float32), SR)
    for room in ("smallroom/Room001", "mediumroom/Room002"):
        folder = rirs / "simulated_rirs" / room
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            n = int(0.3 * SR)
            rir = rng.normal(0, 1, n) * np.exp(-np.arange(n) / (0.05 * SR))
            rir[:40] = 0
            rir[40] = 5.0  # direct path
            sf.write(folder / f"{room.split('/')[1]}-{i + 1:05d}.wav", rir.astype(np.float32), SR)
    return musan, rirs


@pytest.fixture(scope="module")
def noise_folders(tmp_path_factory):
    return make_fake_noise_folders(tmp_path_factory.mktemp("noise"))


def _tone(seconds=1.0, freq=300.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("snr", [0.0, 7.5, 20.0])
def test_add_noise_hits_the_snr(rng, snr):
    clean = _tone()
    noise = rng.normal(0, 1, clean.size).astype(np.float32)
    noisy = add_noise(clean, noise, snr)
    measured = 10 * np.log10(np.mean(clean**2) / np.mean((noisy - clean).astype(np.float64) ** 2))
    assert measured == pytest.approx(snr, abs=1e-3)
    silent = np.zeros(10, np.float32)
    assert add_noise(silent, noise[:10], snr) is silent  # nothing to scale the noise to


def test_reverb_keeps_length_and_alignment():
    clean = _tone()
    delta = np.zeros(800, np.float32)
    delta[123] = 2.0  # a pure delay: after alignment and unit energy, the identity
    assert np.allclose(reverberate(clean, delta), clean, atol=1e-6)
    rir = np.exp(-np.arange(4000) / 400.0).astype(np.float32)
    out = reverberate(clean, rir)
    assert out.shape == clean.shape and out.dtype == np.float32 and not np.allclose(out, clean)


@pytest.mark.parametrize("speed", [0.9, 1.1])
def test_speed_perturbation_scales_duration_and_pitch(speed):
    clean = _tone(2.0, 400.0)
    fast = speed_perturb(clean, speed, SR)
    assert abs(fast.shape[0] - clean.shape[0] / speed) <= 2
    spectrum = np.abs(np.fft.rfft(fast))
    peak = np.argmax(spectrum) * SR / fast.shape[0]
    assert peak == pytest.approx(400.0 * speed, rel=0.01)


def test_config_checks_probabilities_and_ranges():
    with pytest.raises(ConfigError, match="at most 1"):
        load_config(None, ["augment.noise_prob=0.6", "augment.reverb_prob=0.6"])
    with pytest.raises(ConfigError, match="augment.music_snr"):
        load_config(None, ["augment.music_snr=[15, 5]"])
    with pytest.raises(ConfigError, match="augment.speeds"):
        load_config(None, ["augment.speeds=[1.0, 1.1]"])
    assert speed_classes(AugmentConfig()) == 1
    assert speed_classes(AugmentConfig(speed_prob=0.5)) == 3


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(AugmentError, match="musan_dir"):
        Augmenter(AugmentConfig(noise_prob=0.5))
    with pytest.raises(AugmentError, match="simulated_rirs"):
        Augmenter(AugmentConfig(reverb_prob=0.5, rirs_dir=str(tmp_path)))
    (tmp_path / "musan" / "noise").mkdir(parents=True)
    with pytest.raises(AugmentError, match="speech"):
        scan_musan(tmp_path / "musan", ("babble",))


def test_augmenter_is_deterministic_and_follows_the_probabilities(noise_folders):
    musan, rirs = noise_folders
    cfg = AugmentConfig(
        musan_dir=str(musan),
        rirs_dir=str(rirs),
        reverb_prob=0.2,
        noise_prob=0.2,
        music_prob=0.2,
        babble_prob=0.2,
    )
    aug = Augmenter(cfg, SR)
    clean = _tone()
    a = aug(clean, np.random.default_rng(5))
    b = aug(clean, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == clean.shape
    kinds = Counter(aug.choose(np.random.default_rng(i)) for i in range(4000))
    for kind in ("reverb", "noise", "music", "babble", None):
        assert kinds[kind] / 4000 == pytest.approx(0.2, abs=0.03)
    outputs = {aug(clean, np.random.default_rng(i)).tobytes() for i in range(30)}
    assert len(outputs) > 20  # clean ones coincide, corrupted ones all differ
    off = Augmenter(AugmentConfig(), SR)
    assert not off.enabled and off(clean, np.random.default_rng(0)) is clean


def test_crop_dataset_speed_classes_and_augmentation(tiny_manifests, noise_folders):
    manifest = read_manifest(tiny_manifests[0])
    plain = CropDataset(manifest, crop_seconds=0.5)
    sped = CropDataset(manifest, crop_seconds=0.5, speeds=(0.9, 1.1))
    wav0, label0, _ = sped[(3, 42, 0)]
    assert torch.equal(wav0, plain[(3, 42)][0]) and label0 == plain.labels[3]
    for k in (1, 2):
        wav, label, index = sped[(3, 42, k)]
        assert wav.shape == (8000,) and index == 3
        assert label == plain.labels[3] + k * len(manifest.speakers)
        assert not torch.equal(wav, wav0)
    musan, rirs = noise_folders
    aug = Augmenter(AugmentConfig(musan_dir=str(musan), noise_prob=1.0), SR)
    noisy = CropDataset(manifest, crop_seconds=0.5, augmenter=aug)
    a, _, _ = noisy[(3, 42)]
    assert torch.equal(a, noisy[(3, 42)][0]) and not torch.equal(a, plain[(3, 42)][0])


def test_training_with_augmentation_and_speed_classes(tiny_manifests, noise_folders, tmp_path):
    musan, rirs = noise_folders
    cfg = tiny_config(
        tmp_path / "aug",
        tiny_manifests[0],
        "train.steps=2",
        f"augment.musan_dir={musan}",
        f"augment.rirs_dir={rirs}",
        "augment.reverb_prob=0.25",
        "augment.noise_prob=0.25",
        "augment.music_prob=0.25",
        "augment.babble_prob=0.25",
        "augment.speed_prob=0.66",
    )
    result = fit(cfg, progress=False)
    state = load_checkpoint(result.checkpoint)
    n_speakers = len(read_manifest(tiny_manifests[0]).speakers)
    assert state["learner"]["aam.weight"].shape[0] == 3 * n_speakers
    assert np.isfinite(result.last_loss)

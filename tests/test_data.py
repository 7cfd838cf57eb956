"""Audio reading, crops, fbank, manifests: layout, columns and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from arw_sv.audio import AudioError, FbankFrontend, crop_or_repeat, read_audio
from arw_sv.data.dataset import CropDataset, collate_crops
from arw_sv.data.manifest import (
    COLUMNS,
    ManifestError,
    build_manifest,
    read_manifest,
    write_manifest,
)


def test_read_audio_downmixes_stereo_and_resamples(tmp_path, rng):
    stereo = rng.uniform(-0.5, 0.5, size=(8000, 2)).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 8000, subtype="FLOAT")
    wav = read_audio(tmp_path / "s.wav", 16000)
    assert wav.ndim == 1 and wav.shape[0] == 16000
    # Down-mix then resample: compare at the original rate by reading without resampling.
    mono = read_audio(tmp_path / "s.wav", 8000)
    np.testing.assert_allclose(mono, stereo.mean(axis=1), atol=1e-6)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00garbage", b"not audio at all" * 10])
def test_corrupt_audio_names_the_file(tmp_path, content):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(content)
    with pytest.raises(AudioError, match="broken.wav"):
        read_audio(bad)


def test_crop_or_repeat_pads_short_clips_by_repetition(rng):
    wav = np.arange(5, dtype=np.float32)
    out = crop_or_repeat(wav, 12, rng)
    assert out.shape == (12,)
    # A window of the tiled signal: consecutive values cycle through 0..4.
    assert all((out[i + 1] - out[i]) % 5 == 1 for i in range(11))
    long = np.arange(100, dtype=np.float32)
    crop = crop_or_repeat(long, 10, rng)
    assert np.all(np.diff(crop) == 1)


def test_fbank_is_80_dim_mean_normalised_and_padding_blind():
    fe = FbankFrontend()
    audio = torch.randn(1, 24000)
    padded = torch.cat([audio, torch.zeros(1, 8000)], dim=1)
    feats, frames = fe(audio)
    feats_p, frames_p = fe(padded, torch.tensor([24000]))
    assert feats.shape[-1] == 80
    assert frames.item() == frames_p.item() == feats.shape[1]
    torch.testing.assert_close(feats.mean(dim=1), torch.zeros(1, 80), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats_p[:, : frames_p.item()], feats, atol=1e-4, rtol=1e-4)
    assert torch.all(feats_p[:, frames_p.item() :] == 0)


def test_manifest_from_voxceleb_layout(tiny_corpus):
    manifest = build_manifest(tiny_corpus.root, tiny_corpus.meta_path)
    files = sorted(tiny_corpus.wav_dir.glob("*/*/*.wav"))
    assert len(manifest) == len(files) == tiny_corpus.num_utterances
    first = manifest[0]
    assert first.utt_id == "/".join(files[0].parts[-3:])
    assert first.speaker == files[0].parts[-3]
    assert first.duration == pytest.approx(sf.info(files[0]).duration)
    assert {u.split for u in manifest} == {"dev", "test"}
    assert len(manifest.subset("dev").speakers) == tiny_corpus.num_dev_speakers
    meta = {
        line.split("\t")[0]: line.split("\t")
        for line in tiny_corpus.meta_path.read_text().splitlines()[1:]
    }
    for u in manifest:
        assert (u.gender, u.nationality, u.split) == tuple(meta[u.speaker][2:5])


def test_manifest_round_trip_and_relative_paths(tiny_corpus, tmp_path):
    manifest = build_manifest(tiny_corpus.root, tiny_corpus.meta_path, splits=("test",))
    path = tmp_path / "m.csv"
    write_manifest(manifest, path)
    again = read_manifest(path)
    assert [u.utt_id for u in again] == [u.utt_id for u in manifest]
    assert again[0].duration == pytest.approx(manifest[0].duration, abs=1e-3)
    # A relative path is resolved against the manifest's folder.
    rel = tmp_path / "rel.csv"
    rel.write_text(",".join(COLUMNS) + "\nspk/u1,audio/a.wav,spk,1.0,m,USA,dev\n")
    assert read_manifest(rel)[0].path == str(tmp_path / "audio" / "a.wav")


def test_manifest_missing_column_and_bad_row_are_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("utt_id,path,speaker,duration\nu,p,s,1.0\n")
    with pytest.raises(ManifestError, match=r"m\.csv.*gender"):
        read_manifest(path)
    path.write_text(",".join(COLUMNS) + "\nu,p,s,1.0,m,UK,dev\nv,p,s,long,m,UK,dev\n")
    with pytest.raises(ManifestError, match=r"m\.csv:3"):
        read_manifest(path)


def test_speakers_missing_from_metadata_are_counted(tiny_corpus, tmp_path):
    lines = tiny_corpus.meta_path.read_text().splitlines()
    short = tmp_path / "meta.csv"
    short.write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(ManifestError, match="2 speaker"):
        build_manifest(tiny_corpus.root, short)


def test_crop_dataset_is_deterministic_per_seed(tiny_manifests):
    ds = CropDataset(read_manifest(tiny_manifests[0]), crop_seconds=0.5)
    a, label, index = ds[(3, 42)]
    b, _, _ = ds[(3, 42)]
    c, _, _ = ds[(3, 43)]
    assert a.shape == (8000,) and index == 3 and label == ds.labels[3]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # A crop longer than the (1 s) clip is tiled, not zero-padded.
    long = CropDataset(read_manifest(tiny_manifests[0]), crop_seconds=2.5)
    wav, _, _ = long[(0, 1)]
    assert wav.shape == (40000,) and (wav[-4000:] != 0).any()
    wavs, labels, indices = collate_crops([ds[(i, i)] for i in range(4)])
    assert (
        wavs.shape == (4, 8000) and labels.dtype == torch.long and indices.tolist() == [0, 1, 2, 3]
    )


def test_resample_is_torchaudios_exactly(rng):
    # arw_sv.audio.resample caches torchaudio's kernel per pair of rates: same samples.
    import torch
    import torchaudio.functional as taf

    from arw_sv.audio import resample

    for rate in (8000, 22050, 44100, 48000):
        wav = rng.standard_normal(int(rate * 0.37)).astype(np.float32)
        for _ in range(2):  # built, then cached
            expected = taf.resample(torch.from_numpy(wav), rate, 16000).numpy()
            np.testing.assert_array_equal(resample(wav, rate, 16000), expected)

"""`arw-sv manifest --format hf`: a Hugging Face dataset (save_to_disk, parquet) to a manifest."""

from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as taf

from arw_sv.audio import read_audio
from arw_sv.cli import main
from arw_sv.data.manifest import read_manifest

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()

SPEAKERS = ["spk1", "spk1", "spk2", "spk3", "spk3"]
GENDERS = ["female", "female", "male", "female", "female"]
AGES = [34, 34, 8, 71, 71]
ACCENTS = ["scottish", "scottish", "", "welsh", "welsh"]
RATES = [16000, 16000, 8000, 16000, 22050]  # two rows to resample


def _clip(rng, rate: int, seconds: float = 0.5) -> tuple[bytes, np.ndarray]:
    """WAV bytes (16-bit) and the samples soundfile reads back from them."""
    buffer = io.BytesIO()
    sf.write(buffer, 0.1 * rng.standard_normal(int(rate * seconds)), rate, format="WAV")
    return buffer.getvalue(), sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")[0]


def _dataset(rng, audio_entries, **columns):
    data = {"audio": audio_entries, "speaker_id": SPEAKERS, "gender": GENDERS, "age": AGES}
    data |= {"accent": ACCENTS} | columns
    ds = datasets.Dataset.from_dict(data)
    # Cast, not features=: datasets 5 imports torchcodec to encode even undecoded audio.
    return ds.cast_column("audio", datasets.Audio(decode=False))


@pytest.fixture
def embedded(rng):
    clips = [_clip(rng, r) for r in RATES]
    entries = [{"bytes": b, "path": f"clip{i}.wav"} for i, (b, _) in enumerate(clips)]
    return _dataset(rng, entries), [samples for _, samples in clips]


@pytest.mark.parametrize("layout", ["save_to_disk", "parquet"])
def test_dataset_to_manifest_with_attributes_and_audio(tmp_path, embedded, layout, capsys):
    ds, samples = embedded
    source = tmp_path / "ds"
    if layout == "save_to_disk":
        ds.save_to_disk(str(source))
    else:
        ds.to_parquet(str(source / "train-00000-of-00001.parquet"))
    out = tmp_path / "m.csv"
    rc = main(["manifest", str(source), "--format", "hf", "--attributes", "gender,age",
               "--attributes", "accent", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    manifest = read_manifest(out)
    assert [u.utt_id for u in manifest] == [f"{s}/{i:07d}" for i, s in enumerate(SPEAKERS)]
    assert manifest.speakers == ["spk1", "spk2", "spk3"]
    assert manifest.speaker_attribute("gender") == ["f", "m", "f"]
    assert manifest.speaker_attribute("age") == ["34", "8", "71"]
    assert manifest.speaker_attribute("accent") == ["scottish", "unknown", "welsh"]
    assert all(u.start == 0.0 and u.split == "dev" for u in manifest)
    for u, original, rate in zip(manifest, samples, RATES, strict=True):
        assert u.path.startswith(str(tmp_path / "m_audio"))
        assert u.duration == pytest.approx(0.5, abs=1e-3)
        got = read_audio(u.path)
        if rate == 16000:  # written byte for byte
            np.testing.assert_array_equal(got, original)
        else:  # resampled to 16 kHz as read_audio would have
            assert sf.info(u.path).samplerate == 16000
            expected = taf.resample(torch.from_numpy(original), rate, 16000).numpy()
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_linked_paths_are_used_in_place(tmp_path, rng, monkeypatch):
    monkeypatch.chdir(tmp_path)  # datasets sizes the files it is given from here
    files = []
    for i in range(len(SPEAKERS)):
        files.append(tmp_path / f"c{i}.flac")
        sf.write(files[-1], 0.1 * rng.standard_normal(4000), 16000)
    ds = _dataset(rng, [{"bytes": None, "path": f.name} for f in files])
    ds.to_parquet(str(tmp_path / "data.parquet"))
    rc = main(["manifest", str(tmp_path / "data.parquet"), "--out", str(tmp_path / "m.csv")])
    assert rc == 0
    manifest = read_manifest(tmp_path / "m.csv")
    assert [u.path for u in manifest] == [str(f.resolve()) for f in files]
    assert manifest.speaker_attribute("gender") == ["unknown"] * 3  # not asked for
    assert not (tmp_path / "m_audio").exists()


def _refused(tmp_path, capsys, args, message):
    out = tmp_path / "m.csv"
    capsys.readouterr()
    rc = main(["manifest", "--format", "hf", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob("*m_audio*"))  # nor a temporary one


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speaker-column", "client_id"], "no column 'client_id' (columns: audio, "),
        (["--attributes", "height"], "no column 'height'"),
        (["--audio-column", "accent"], "column 'accent' is not audio (string)"),
    ],
)
def test_missing_or_wrong_columns_are_named(tmp_path, embedded, capsys, args, message):
    embedded[0].save_to_disk(str(tmp_path / "ds"))
    _refused(tmp_path, capsys, [str(tmp_path / "ds"), *args], "data-00000-of-00001.arrow: ")
    _refused(tmp_path, capsys, [str(tmp_path / "ds"), *args], message)


def test_undecodable_audio_and_low_rates_are_named_by_row(tmp_path, rng, capsys):
    low, _ = _clip(rng, 4000)
    entries = [{"bytes": _clip(rng, 16000)[0], "path": None} for _ in SPEAKERS]
    entries[2] = {"bytes": low, "path": None}
    parquet = pytest.importorskip("pyarrow.parquet")
    # pyarrow writes them: datasets' to_parquet would fetch the URL to size it.
    parquet.write_table(_dataset(rng, entries).data.table, tmp_path / "low.parquet")
    entries[2] = {"bytes": b"RIFF not a wav at all", "path": None}
    parquet.write_table(_dataset(rng, entries).data.table, tmp_path / "bad.parquet")
    entries[2] = {"bytes": None, "path": "https://example.org/a.wav"}
    parquet.write_table(_dataset(rng, entries).data.table, tmp_path / "url.parquet")
    _refused(tmp_path, capsys, [str(tmp_path / "low.parquet")],
             "low.parquet: row 2, column 'audio': sample rate 4000 Hz cannot be read")  # fmt: skip
    _refused(tmp_path, capsys, [str(tmp_path / "bad.parquet")],
             "bad.parquet: row 2, column 'audio': cannot decode the audio bytes")  # fmt: skip
    _refused(tmp_path, capsys, [str(tmp_path / "url.parquet")], "row 2, column 'audio': audio path")


def test_a_missing_extra_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "x.parquet").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    _refused(tmp_path, capsys, [str(tmp_path / "x.parquet")], "pip install 'arw-sv[hf]'")

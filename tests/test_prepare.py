"""recipes/voxceleb/prepare.py: real metadata files, m4a conversion (PyAV, and the system
ffmpeg where there is one), idempotence, resume, corrupt files, the leak check, and a
missing decoder. The m4a (AAC) files are written with PyAV, so none of this needs ffmpeg."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import REPO, SHARED_VOXCELEB

from arw_sv.data.manifest import read_manifest

HAVE_FFMPEG = shutil.which("ffmpeg") is not None
# The conversion tests run with PyAV everywhere, and with the system ffmpeg where it exists.
DECODERS = [
    "pyav",
    pytest.param("ffmpeg", marks=pytest.mark.skipif(not HAVE_FFMPEG, reason="no ffmpeg")),
]
needs_shared = pytest.mark.skipif(
    not (SHARED_VOXCELEB / "vox1_meta.csv").is_file(), reason="shared VoxCeleb files absent"
)

# Real ids: VoxCeleb1 dev id10001 (m, Ireland), id10002 (m, India); test id10270 (m, Germany
# in vox1_meta.csv), id10271; VoxCeleb2 dev id00012 (m), id00015 (m); test id00017.
VOX1 = {"id10001": "dev", "id10002": "dev", "id10270": "test", "id10271": "test"}
VOX2 = {"id00012": "dev", "id00015": "dev", "id00017": "test"}


def _load_prepare():
    spec = importlib.util.spec_from_file_location(
        "voxceleb_prepare", REPO / "recipes" / "voxceleb" / "prepare.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


prepare = _load_prepare()


def _wav(path: Path, seed: int, seconds: float = 0.4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)


def write_m4a(path: Path, audio: np.ndarray, rate: int, channels: int = 1) -> None:
    """An AAC-in-MP4 file as VoxCeleb2 ships them, written with PyAV.

    Shape: audio (S,) or (channels, S) float32.
    """
    import av

    planar = np.ascontiguousarray(np.broadcast_to(audio, (channels, audio.shape[-1])))
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(planar.astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)


def _corpus(root: Path, with_vox2: bool) -> dict[str, Path]:
    """VoxCeleb-layout folders with the real speaker ids (2 videos x 2 utterances each)."""
    n = 0
    for spk in VOX1:
        for video in ("aaaaaaaaaaa", "bbbbbbbbbbb"):
            for utt in (1, 2):
                n += 1
                _wav(root / "vox1" / "wav" / spk / video / f"{utt:05d}.wav", n)
    if with_vox2:
        for spk, split in VOX2.items():
            for video in ("ccccccccccc", "ddddddddddd"):
                for utt in (1, 2):
                    n += 1
                    m4a = root / "vox2" / split / "aac" / spk / video / f"{utt:05d}.m4a"
                    m4a.parent.mkdir(parents=True, exist_ok=True)
                    audio = 0.1 * np.random.default_rng(n).standard_normal(6400)
                    write_m4a(m4a, audio.astype(np.float32), 16000)
    return {"vox1": root / "vox1", "vox2": root / "vox2"}


def _args(root: Path, *extra: str, vox2: bool = True) -> list[str]:
    args = [
        "--out", str(root / "data"), "--vox1", str(root / "vox1"),
        "--vox1-meta", str(SHARED_VOXCELEB / "vox1_meta.csv"), "--jobs", "2", "--quiet",
        "--trials", str(SHARED_VOXCELEB / "veri_test2.txt"),
    ]  # fmt: skip
    if vox2:
        args += [
            "--vox2",
            str(root / "vox2"),
            "--vox2-meta",
            str(SHARED_VOXCELEB / "vox2_meta.csv"),
        ]
    return args + list(extra)


def _report(root: Path) -> dict:
    return json.loads((root / "data" / "prepare.json").read_text())


@needs_shared
@pytest.mark.parametrize("decoder", DECODERS)
def test_real_metadata_conversion_and_idempotence(tmp_path, decoder):
    _corpus(tmp_path, with_vox2=True)
    assert (
        prepare.main(_args(tmp_path, "--train-set", "vox1_dev+vox2_dev", "--decoder", decoder)) == 0
    )
    data = tmp_path / "data"
    train, vox1 = read_manifest(data / "train.csv"), read_manifest(data / "vox1.csv")
    # Training: the dev speakers only (real vox1_meta / vox2_meta Set column).
    assert sorted(train.speakers) == ["id00012", "id00015", "id10001", "id10002"]
    by_speaker = {u.speaker: u for u in train}
    assert (by_speaker["id10001"].gender, by_speaker["id10001"].nationality) == ("m", "Ireland")
    assert by_speaker["id10002"].nationality == "India"
    assert (by_speaker["id00012"].gender, by_speaker["id00012"].nationality) == ("m", "unknown")
    assert {u.split for u in vox1} == {"dev", "test"} and len(vox1) == 16
    assert all(Path(u.path).suffix == ".wav" for u in train)
    report = _report(tmp_path)
    assert report["inputs"]["vox2"]["converted"] == 8  # dev/aac only: 2 speakers x 4
    assert report["leak_check"]["overlap"] == 0 and report["skipped"]["count"] == 0
    first = (data / "train.csv").read_bytes(), (data / "vox1.csv").read_bytes()

    # Idempotent: nothing converted again, byte-identical manifests.
    assert (
        prepare.main(_args(tmp_path, "--train-set", "vox1_dev+vox2_dev", "--decoder", decoder)) == 0
    )
    again = _report(tmp_path)["inputs"]["vox2"]
    assert (again.get("converted", 0), again.get("kept")) == (0, 8)
    assert ((data / "train.csv").read_bytes(), (data / "vox1.csv").read_bytes()) == first

    # Resumable: a missing wav, a broken wav and a stale partial file: exactly two redone.
    wavs = sorted((data / "vox2_wav").rglob("*.wav"))
    wavs[0].unlink()
    wavs[1].write_bytes(b"RIFF\x00\x00")
    (wavs[2].parent / f".{wavs[2].name}.partial").write_bytes(b"junk")
    assert (
        prepare.main(_args(tmp_path, "--train-set", "vox1_dev+vox2_dev", "--decoder", decoder)) == 0
    )
    counts = _report(tmp_path)["inputs"]["vox2"]
    assert (counts.get("converted"), counts.get("kept")) == (2, 6)
    assert ((data / "train.csv").read_bytes(), (data / "vox1.csv").read_bytes()) == first


@needs_shared
@pytest.mark.parametrize("decoder", DECODERS)
def test_corrupt_files_are_reported_and_skipped_with_a_count(tmp_path, capsys, decoder):
    _corpus(tmp_path, with_vox2=True)
    bad_m4a = tmp_path / "vox2" / "dev" / "aac" / "id00012" / "ccccccccccc" / "00003.m4a"
    bad_m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    bad_wav = tmp_path / "vox1" / "wav" / "id10001" / "aaaaaaaaaaa" / "00003.wav"
    bad_wav.write_bytes(b"not a wav file at all")
    assert prepare.main(_args(tmp_path, "--max-skipped-fraction", "0.2", "--decoder", decoder)) == 0
    out = capsys.readouterr().out
    assert "skipped 2 file(s)" in out
    report = _report(tmp_path)
    assert report["skipped"]["count"] == 2 and report["inputs"]["vox2"]["failed"] == 1
    listed = (tmp_path / "data" / "skipped.txt").read_text()
    assert str(bad_m4a) in listed and str(bad_wav) in listed and "could not decode" in listed
    ids = {u.utt_id for u in read_manifest(tmp_path / "data" / "vox1.csv")}
    assert "id10001/aaaaaaaaaaa/00003.wav" not in ids and len(ids) == 16
    assert "id00012/ccccccccccc/00003.wav" not in {
        u.utt_id for u in read_manifest(tmp_path / "data" / "train.csv")
    }
    # Calibration speakers: VoxCeleb2-test, and the VoxCeleb1 speakers that are neither
    # trained on (vox2_dev) nor in VoxCeleb1-O; none of them with a training or test speaker.
    cal = read_manifest(tmp_path / "data" / "cal.csv")
    assert set(cal.speakers) == {"id00017", "id10001", "id10002"}
    assert {u.split for u in cal} == {"cal"} and len(cal) == 3 * 4  # the bad wav left out
    assert report["counts"]["calibration_speakers"] == 3
    # Too many bad files stop the run, with the count, and leave no manifest behind.
    assert prepare.main(_args(tmp_path, "--decoder", decoder)) == 2
    err = capsys.readouterr().err
    assert "2 of 30 audio files were skipped" in err  # VoxCeleb2-test's 4 m4a counted too
    assert not (tmp_path / "data" / "train.csv").exists()


@needs_shared
def test_vox1_only_and_the_leak_check(tmp_path, capsys):
    _corpus(tmp_path, with_vox2=False)
    assert prepare.main(_args(tmp_path, "--train-set", "vox1_dev", vox2=False)) == 0
    assert sorted(read_manifest(tmp_path / "data" / "train.csv").speakers) == [
        "id10001",
        "id10002",
    ]
    # An E/H-style list names VoxCeleb1-dev speakers: training on them is refused.
    listed = tmp_path / "list_test_all2.txt"
    listed.write_bytes(
        b"1 id10001/aaaaaaaaaaa/00001.wav id10001/bbbbbbbbbbb/00001.wav\r\n"
        b"0 id10001/aaaaaaaaaaa/00001.wav id10270/aaaaaaaaaaa/00001.wav\r\n"
    )
    args = _args(tmp_path, "--train-set", "vox1_dev", "--trials", str(listed), vox2=False)
    assert prepare.main(args) == 2
    err = capsys.readouterr().err
    assert "1 training speaker(s) appear in the trial lists" in err and "vox2_dev" in err
    assert not (tmp_path / "data" / "train.csv").exists()


@pytest.mark.parametrize(
    "decoder, have_pyav, message",
    [
        ("ffmpeg", True, "apt-get install ffmpeg"),
        ("auto", False, "pip install av"),
        ("pyav", False, "PyAV is needed"),
    ],
)
def test_missing_decoder_gives_a_clear_message(
    tmp_path, monkeypatch, capsys, decoder, have_pyav, message
):
    (tmp_path / "vox1" / "wav").mkdir(parents=True)
    _wav(tmp_path / "vox1" / "wav" / "id10001" / "aaaaaaaaaaa" / "00001.wav", 0)
    aac = tmp_path / "vox2" / "dev" / "aac" / "id00012" / "ccccccccccc"
    aac.mkdir(parents=True)
    (aac / "00001.m4a").write_bytes(b"x")
    meta1 = tmp_path / "vox1_meta.csv"
    meta1.write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\nid10001\tA\tm\tUSA\tdev\n"
    )
    meta2 = tmp_path / "vox2_meta.csv"
    meta2.write_bytes(
        "\ufeffVoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \r\nid00012 ,n1 ,m ,dev ".encode()
    )
    monkeypatch.setattr(prepare.shutil, "which", lambda name: None)
    if not have_pyav:
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == "av" else find_spec(name)
        )
    args = ["--out", str(tmp_path / "data"), "--vox1", str(tmp_path / "vox1"),
            "--vox1-meta", str(meta1), "--vox2", str(tmp_path / "vox2"),
            "--vox2-meta", str(meta2), "--quiet", "--decoder", decoder]  # fmt: skip
    assert prepare.main(args) == 2
    err = capsys.readouterr().err
    assert message in err


def test_pyav_decodes_stereo_44k_aac_to_16k_mono_wav(tmp_path):
    """What VoxCeleb2 needs of the decoder: AAC in, 16 kHz mono 16-bit wav of the same
    sound and length out (a 440 Hz tone stays at 440 Hz)."""
    rate, seconds = 44100, 1.5
    t = np.arange(int(rate * seconds)) / rate
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)])
    m4a, wav = tmp_path / "x.m4a", tmp_path / "x.wav"
    write_m4a(m4a, stereo.astype(np.float32), rate, channels=2)
    assert prepare.convert_one("pyav", m4a, wav) == "converted"
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(info.frames / 16000 - seconds) < 0.1  # AAC priming/padding: a few ms
    audio, _ = sf.read(str(wav))
    spectrum = np.abs(np.fft.rfft(audio[2000:-2000]))
    peak = np.fft.rfftfreq(len(audio) - 4000, 1 / 16000)[spectrum.argmax()]
    assert abs(peak - 440) < 5 and 0.2 < np.abs(audio).max() < 0.45  # the down-mix: ~0.3
    assert prepare.convert_one("pyav", m4a, wav) == "kept"
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    result = prepare.convert_one("pyav", bad, tmp_path / "bad.wav")
    assert result.startswith("error: PyAV") and not (tmp_path / "bad.wav").exists()
    assert not list(tmp_path.glob(".*.partial"))

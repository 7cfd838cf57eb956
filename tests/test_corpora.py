"""Corpus formats (LibriSpeech, Kaldi, CSV) to one manifest, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from arw_sv.cli import main
from arw_sv.data.corpora import detect_format, read_corpus_csv, read_kaldi, read_librispeech
from arw_sv.data.dataset import CropDataset
from arw_sv.data.manifest import ManifestError, read_manifest, write_manifest

SPEAKERS = {"103": "F", "1034": "M", "2000": "F"}
CHAPTERS = {"103": ["1240", "1241"], "1034": ["121119"], "2000": ["5", "6"]}


def _libri(root: Path, rng: np.random.Generator) -> list[Path]:
    """FLAC files in LibriSpeech layout, and a SPEAKERS.TXT one folder up."""
    subset = root / "LibriSpeech" / "dev-clean"
    files = []
    for spk, chapters in CHAPTERS.items():
        for chapter in chapters:
            for utt in range(2):
                f = subset / spk / chapter / f"{spk}-{chapter}-{utt:04d}.flac"
                f.parent.mkdir(parents=True, exist_ok=True)
                n = int(rng.integers(8000, 24000))
                sf.write(f, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
                files.append(f)
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text(
        "; LibriSpeech speakers\n;ID  |SEX| SUBSET    |MINUTES| NAME\n"
        + "".join(f"{s:<5}| {g} | dev-clean | 8.0 | Reader {s}\n" for s, g in SPEAKERS.items())
    )
    return files


def _kaldi(root: Path, files: list[Path]) -> Path:
    data = root / "kaldi"
    data.mkdir()
    ids = [f.stem for f in files]
    (data / "wav.scp").write_text("".join(f"{u} {f}\n" for u, f in zip(ids, files, strict=True)))
    (data / "utt2spk").write_text(
        "".join(f"{u} {f.parts[-3]}\n" for u, f in zip(ids, files, strict=True))
    )
    (data / "spk2gender").write_text("".join(f"{s} {g.lower()}\n" for s, g in SPEAKERS.items()))
    (data / "utt2session").write_text(
        "".join(f"{u} {f.parts[-2]}\n" for u, f in zip(ids, files, strict=True))
    )
    return data


def _csv(root: Path, files: list[Path]) -> Path:
    path = root / "corpus.csv"
    rows = [
        f"{f.relative_to(root)},{f.parts[-3]},{SPEAKERS[f.parts[-3]].lower()},{f.parts[-2]}"
        for f in files
    ]
    path.write_text("path,speaker,gender,session\n" + "\n".join(rows) + "\n")
    return path


def _rows(manifest):
    """Everything but the utt_id (whose form is per format), sorted by path."""
    return sorted(
        (u.path, u.speaker, round(u.duration, 3), u.gender, u.nationality, u.split, u.session)
        for u in manifest
    )


def test_each_format_gives_the_same_manifest_for_the_same_audio(tmp_path, rng):
    files = _libri(tmp_path, rng)
    libri = read_librispeech(tmp_path / "LibriSpeech" / "dev-clean")
    kaldi = read_kaldi(_kaldi(tmp_path, files), split="test")
    table = read_corpus_csv(_csv(tmp_path, files), split="test")
    assert len(libri) == len(files) == 10
    assert _rows(libri) == _rows(kaldi) == _rows(table)
    first = sorted(libri, key=lambda u: u.path)[0]
    assert first.gender == "f" and first.session == "1240" and first.split == "test"
    assert first.duration == pytest.approx(sf.info(first.path).duration)
    # Every utt_id names its speaker first, as trial lists and `arw-sv eval` expect.
    for manifest in (libri, kaldi, table):
        assert all(u.utt_id.split("/")[0] == u.speaker for u in manifest)
    assert first.utt_id == "103/1240/103-1240-0000.flac"
    # Written and read back, the optional session column survives.
    write_manifest(kaldi, tmp_path / "m.csv")
    assert _rows(read_manifest(tmp_path / "m.csv")) == _rows(kaldi)


def test_detection_and_cli(tmp_path, rng, capsys):
    files = _libri(tmp_path, rng)
    data = _kaldi(tmp_path, files)
    assert detect_format(data) == "kaldi"
    assert detect_format(tmp_path / "LibriSpeech" / "dev-clean") == "librispeech"
    assert detect_format(_csv(tmp_path, files)) == "csv"
    with pytest.raises(ManifestError, match="cannot tell"):
        detect_format(tmp_path)
    assert main(["manifest", str(data), "--out", str(tmp_path / "k.csv")]) == 0
    assert "kaldi: 10 utterances of 3 speakers" in capsys.readouterr().out
    assert {u.gender for u in read_manifest(tmp_path / "k.csv")} == {"f", "m"}


def test_speaker_table_adds_nationality(tmp_path, rng):
    _libri(tmp_path, rng)
    table = tmp_path / "speakers.csv"
    table.write_text("speaker,nationality\n103,UK\n1034,USA\n")
    manifest = read_librispeech(tmp_path / "LibriSpeech", speakers=table)
    nat = {u.speaker: u.nationality for u in manifest}
    assert nat == {"103": "UK", "1034": "USA", "2000": "unknown"}


def test_kaldi_pipes_are_refused_unless_allowed(tmp_path, rng):
    files = _libri(tmp_path, rng)
    data = _kaldi(tmp_path, files)
    lines = (data / "wav.scp").read_text().splitlines()
    lines[2] = f"{files[2].stem} cat {files[2]} |"
    (data / "wav.scp").write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match=r"wav\.scp:3: .*pipe command.*--allow-pipes"):
        read_kaldi(data)
    manifest = read_kaldi(data, allow_pipes=True, pipe_dir=tmp_path / "piped")
    piped = next(u for u in manifest if u.utt_id.endswith(files[2].stem))
    assert Path(piped.path).parent == (tmp_path / "piped").resolve()
    assert piped.duration == pytest.approx(sf.info(files[2]).duration)


def test_kaldi_segments_and_utt2dur(tmp_path, rng):
    rec = tmp_path / "rec.flac"
    wav = (0.1 * rng.standard_normal(48000)).astype(np.float32)
    sf.write(rec, wav, 16000)
    data = tmp_path / "seg"
    data.mkdir()
    (data / "wav.scp").write_text(f"r1 {rec}\n")
    (data / "segments").write_text("a-1 r1 0.0 1.0\na-2 r1 1.5 3.0\n")
    (data / "utt2spk").write_text("a-1 a\na-2 a\n")
    manifest = read_kaldi(data)
    assert [(u.utt_id, u.start, u.duration, u.session) for u in manifest] == [
        ("a/a-1", 0.0, 1.0, "r1"),
        ("a/a-2", 1.5, 1.5, "r1"),
    ]
    write_manifest(manifest, tmp_path / "m.csv")
    back = read_manifest(tmp_path / "m.csv")
    assert [u.start for u in back] == [0.0, 1.5]
    # A crop of a segment comes from inside it.
    ds = CropDataset(back, crop_seconds=0.5)
    ref = sf.read(rec, dtype="float32")[0]
    for seed in range(5):
        crop = ds[(1, seed)][0].numpy()
        first = np.flatnonzero(ref == crop[0])
        at = [i for i in first if np.array_equal(ref[i : i + crop.size], crop)]
        assert at and all(24000 <= i and i + crop.size <= 48000 for i in at)
    (data / "segments").write_text("a-1 r1 0.0 1.0\na-2 r9 1.5 3.0\n")
    with pytest.raises(ManifestError, match=r"segments:2: recording r9 is not in wav\.scp"):
        read_kaldi(data)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("utt2spk", "u1 spk\nu2\n", r"utt2spk:2: expected 2 fields"),
        ("utt2spk", "u1 spk\nu9 spk\n", r"utt2spk:2: utterance u9 is not in wav\.scp"),
        ("spk2gender", "spk x\n", r"spk2gender:1: gender 'x'"),
        ("wav.scp", "u1 missing.wav\nu2 b.wav\n", r"wav\.scp:1: audio file not found"),
        ("utt2dur", "u1 1.0\nu2 long\n", r"utt2dur:2: duration 'long' is not a number"),
    ],
)
def test_kaldi_errors_name_file_and_line(tmp_path, rng, name, text, match):
    data = tmp_path / "k"
    data.mkdir()
    for u in ("a", "b"):
        sf.write(data / f"{u}.wav", np.zeros(1600, np.float32), 16000)
    (data / "wav.scp").write_text("u1 a.wav\nu2 b.wav\n")
    (data / "utt2spk").write_text("u1 spk\nu2 spk\n")
    (data / name).write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_kaldi(data)


def test_csv_errors_name_file_and_line(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    path = tmp_path / "c.csv"
    path.write_text("path,speaker\na.wav,s1\nb.wav,s1\n")
    with pytest.raises(ManifestError, match=r"c\.csv:3: audio file not found: b\.wav"):
        read_corpus_csv(path)
    path.write_text("path,gender\na.wav,m\n")
    with pytest.raises(ManifestError, match=r"c\.csv:1: missing column\(s\) speaker"):
        read_corpus_csv(path)
    assert main(["manifest", str(path), "--out", str(tmp_path / "o.csv")]) == 2


def test_voxceleb_session_is_the_youtube_id_folder(tiny_corpus):
    from arw_sv.data.manifest import build_manifest

    manifest = build_manifest(tiny_corpus.root, tiny_corpus.meta_path, splits=("test",))
    assert all(u.session == u.utt_id.split("/")[1] for u in manifest)
    assert len({u.session for u in manifest}) > len(manifest.speakers)

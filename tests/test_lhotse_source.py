"""`arw-sv manifest --format lhotse`: recordings + supervisions, or cuts, to a manifest."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soundfile as sf

from arw_sv.audio import read_audio
from arw_sv.cli import main
from arw_sv.data.manifest import read_manifest

lhotse = pytest.importorskip("lhotse")
from lhotse.audio import AudioSource  # noqa: E402

# (supervision, recording, start, duration, speaker, gender, custom)
SUPERVISIONS = [
    ("u1", "rec1", 0.0, 0.8, "alice", "F", {"age": 34, "nationality": "UK"}),
    ("u2", "rec1", 1.0, 0.6, "bob", "M", {"age": 8}),
    ("u3", "rec2", 0.25, 1.0, "alice", "F", {"age": 34, "nationality": "UK"}),
]


@pytest.fixture
def corpus(tmp_path, rng):
    audio = {}
    recordings = []
    for rec, seconds in (("rec1", 2.0), ("rec2", 1.5)):
        samples = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
        sf.write(tmp_path / f"{rec}.wav", samples, 16000, subtype="FLOAT")
        audio[rec] = samples
        recordings.append(lhotse.Recording.from_file(tmp_path / f"{rec}.wav", recording_id=rec))
    return tmp_path, audio, lhotse.RecordingSet.from_recordings(recordings)


def _supervisions(rows=SUPERVISIONS):
    return lhotse.SupervisionSet.from_segments(
        lhotse.SupervisionSegment(
            id=u,
            recording_id=r,
            start=s,
            duration=d,
            speaker=spk,
            gender=g,
            language="en",
            custom=c,
        )  # fmt: skip
        for u, r, s, d, spk, g, c in rows
    )


def _check(manifest, audio):
    assert [u.utt_id for u in manifest] == ["alice/u1", "bob/u2", "alice/u3"]
    assert manifest.speakers == ["alice", "bob"]
    assert manifest.speaker_attribute("gender") == ["f", "m"]
    assert manifest.speaker_attribute("nationality") == ["UK", "unknown"]
    assert manifest.speaker_attribute("age") == ["34", "8"]
    assert manifest.speaker_attribute("language") == ["en", "en"]
    for u, (_, rec, start, seconds, *_) in zip(manifest, SUPERVISIONS, strict=True):
        assert (u.session, u.start, u.duration) == (rec, pytest.approx(start), seconds)
        first = int(round(start * 16000))
        got = read_audio(u.path, start=first, frames=int(round(seconds * 16000)))
        np.testing.assert_array_equal(got, audio[rec][first : first + got.size])


def test_recordings_and_supervisions(corpus, capsys):
    root, audio, recordings = corpus
    recordings.to_file(root / "recordings.jsonl.gz")
    _supervisions().to_file(root / "supervisions.jsonl.gz")
    rc = main(["manifest", str(root), "--format", "lhotse", "--out", str(root / "m.csv")])
    assert rc == 0, capsys.readouterr().err
    _check(read_manifest(root / "m.csv"), audio)


def test_cuts_offsets_add_to_the_cut(corpus, capsys):
    root, audio, recordings = corpus
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=_supervisions())
    cuts = cuts.trim_to_supervisions(keep_overlapping=False)  # cuts that start mid-recording
    assert any(c.start > 0 for c in cuts)
    cuts.to_file(root / "cuts.jsonl.gz")
    out = root / "m.csv"
    assert main(["manifest", str(root / "cuts.jsonl.gz"), "--out", str(out)]) == 0  # detected
    _check(read_manifest(out), audio)


def _refused(root, capsys, args, message):
    out = root / "m.csv"
    rc = main(["manifest", "--format", "lhotse", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_cut_without_a_speaker_is_refused(corpus, capsys):
    root, _, recordings = corpus
    rows = [SUPERVISIONS[0], ("u9", "rec2", 0.0, 1.0, None, None, None)]
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=_supervisions(rows))
    cuts.to_file(root / "cuts.jsonl.gz")
    _refused(root, capsys, [str(root)], "cuts.jsonl.gz: cut rec2-")
    _refused(root, capsys, [str(root)], "supervision u9 has no speaker")
    lhotse.CutSet.from_manifests(recordings=recordings).to_file(root / "cuts.jsonl.gz")
    _refused(root, capsys, [str(root)], "has no supervision, so no speaker")


def test_overlapping_speakers_are_refused_unless_allowed(corpus, capsys):
    root, _, recordings = corpus
    rows = [*SUPERVISIONS, ("u4", "rec1", 0.5, 0.8, "carol", "F", {})]
    cuts = lhotse.CutSet.from_manifests(recordings=recordings, supervisions=_supervisions(rows))
    cuts.to_file(root / "cuts.jsonl.gz")
    _refused(root, capsys, [str(root)],
             "supervisions u1 (alice, 0.00-0.80 s) and u4 (carol, 0.50-1.30 s) overlap")  # fmt: skip
    args = ["manifest", "--format", "lhotse", str(root), "--allow-overlap", "--out"]
    assert main([*args, str(root / "m.csv")]) == 0
    assert len(read_manifest(root / "m.csv")) == 4


@pytest.mark.parametrize(
    ("kind", "source", "message"),
    [
        ("url", "https://example.org/rec3.wav", "source is a URL ('https://example.org"),
        ("command", "sox rec1.wav -t wav -", "source is a command ('sox rec1.wav"),
    ],
)
def test_url_and_command_sources_are_refused(corpus, capsys, kind, source, message):
    root, _, recordings = corpus
    remote = lhotse.Recording(
        id="rec3",
        sources=[AudioSource(type=kind, channels=[0], source=source)],
        sampling_rate=16000,
        num_samples=16000,
        duration=1.0,
    )
    lhotse.RecordingSet.from_recordings([*recordings, remote]).to_file(root / "recordings.jsonl")
    rows = [*SUPERVISIONS, ("u5", "rec3", 0.0, 1.0, "dave", "M", {})]
    _supervisions(rows).to_file(root / "supervisions.jsonl")
    _refused(root, capsys, [str(root)], f"recordings.jsonl: recording rec3: {message}")


def test_a_missing_extra_is_one_line(corpus, capsys, monkeypatch):
    root, _, recordings = corpus
    recordings.to_file(root / "recordings.jsonl.gz")
    _supervisions().to_file(root / "supervisions.jsonl.gz")
    monkeypatch.setitem(sys.modules, "lhotse", None)
    _refused(root, capsys, [str(root)], "needs lhotse: pip install 'arw-sv[lhotse]'")

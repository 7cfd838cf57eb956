"""SpeakerEncoder: shapes, unit norm, padding and batch invariance, checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from arw_sv.inference import SpeakerEncoder
from arw_sv.models.ecapa import build_extractor


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return SpeakerEncoder(build_extractor("tiny", embedding_dim=32))


def test_properties(encoder):
    assert (encoder.sample_rate, encoder.dim, encoder.metric) == (16000, 32, "cosine")
    with pytest.raises(AttributeError):
        encoder.foo = 1


@pytest.mark.parametrize("batch", [1, 4])
def test_output_is_unit_norm_b_by_d(encoder, batch):
    emb = encoder(torch.randn(batch, 12000))
    assert emb.shape == (batch, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(batch))


def test_padded_item_equals_unpadded(encoder):
    torch.manual_seed(3)
    short, long = torch.randn(7000), torch.randn(16000)
    batch = torch.zeros(2, 16000)
    batch[0, :7000], batch[1] = short, long
    emb = encoder(batch, lengths=torch.tensor([7000, 16000]))
    torch.testing.assert_close(emb[0], encoder(short[None])[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(emb[1], encoder(long[None])[0], atol=1e-5, rtol=1e-5)


def test_batch_equals_items(encoder):
    torch.manual_seed(4)
    audio = torch.randn(5, 9000)
    together = encoder(audio)
    one_by_one = torch.cat([encoder(audio[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-5)


def test_distinct_inputs_give_distinct_embeddings(encoder):
    emb = encoder(torch.randn(3, 8000))
    assert (emb @ emb.T - torch.eye(3)).abs().max() > 1e-3


def test_bad_shapes_and_lengths(encoder):
    with pytest.raises(ValueError, match="lengths"):
        encoder(torch.randn(2, 100), lengths=[100, 200])
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        encoder(torch.randn(1, 2, 100))


def test_embed_file_matches_call_and_from_checkpoint(tiny_manifests, tmp_path):
    from conftest import tiny_config

    from arw_sv.train.loop import fit

    cfg = tiny_config(tmp_path / "run", tiny_manifests[0], "train.steps=2")
    result = fit(cfg, progress=False)
    enc = SpeakerEncoder.from_checkpoint(result.checkpoint)
    assert enc.dim == cfg.model.embedding_dim
    wav = (np.random.default_rng(0).uniform(-0.3, 0.3, 12345)).astype(np.float32)
    sf.write(tmp_path / "x.wav", wav, 16000, subtype="PCM_16")
    from_file = enc.embed_file(tmp_path / "x.wav")
    from_call = enc(torch.from_numpy(sf.read(tmp_path / "x.wav", dtype="float32")[0])[None])[0]
    torch.testing.assert_close(from_file, from_call)
    # The encoder carries the extractor only: no AAM head, no adversary.
    names = [n for n, _ in enc._extractor.named_parameters()]
    assert names and not any(n.startswith(("aam", "pair", "adversary")) for n in names)


def test_windows_read_a_span_of_unknown_duration_from_the_start_as_the_whole_file(tmp_path):
    """A manifest row without a duration (0) from the start is the whole file, in `arw-sv
    embed` and the samplers' pre-passes alike; a segment is its own part; past the end fails."""
    from arw_sv.audio import AudioError
    from arw_sv.inference import _windows

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(16000 * 3, dtype=np.float32), 16000)
    paths = [str(path)] * 4
    spans = [(0.0, 0.0), (0.0, 3.0), (1.0, 1.5), (0.0, 2.0)]
    assert _windows(paths, spans) == [(-1, 48000), (-1, 48000), (16000, 24000), (0, 32000)]
    assert _windows(paths[:1], None) == [(-1, 48000)]
    with pytest.raises(AudioError, match="runs past"):
        _windows(paths[:1], [(2.0, 2.0)])

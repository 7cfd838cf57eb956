"""ONNX and TorchScript exports: parity with PyTorch at real lengths, dynamic batch and length,
the STFT-free fbank, the CLI, and the CPU-optimised SpeakerEncoder path."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from arw_sv.audio import FbankFrontend
from arw_sv.cli.export import add_subparser, run
from arw_sv.export import DftFbank, ExportableEncoder, OnnxEncoder, TorchScriptEncoder
from arw_sv.inference import SpeakerEncoder


def _speechlike(seconds: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    f0 = 100 + 30 * seed
    voice = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6))
    return 0.1 * voice + 0.01 * torch.randn(n, generator=generator)


def _padded(seconds: list[float]) -> tuple[torch.Tensor, list[int]]:
    items = [_speechlike(s, i) for i, s in enumerate(seconds)]
    lengths = [len(x) for x in items]
    batch = torch.zeros(len(items), max(lengths))
    for i, x in enumerate(items):
        batch[i, : len(x)] = x
    return batch, lengths


@pytest.fixture(scope="module")
def exported(tiny_manifests, tmp_path_factory):
    """A tiny model trained 2 steps, exported to both formats by ``arw-sv export``'s ``run``."""
    from conftest import tiny_config

    from arw_sv.train.loop import fit

    folder = tmp_path_factory.mktemp("export")
    cfg = tiny_config(folder / "run", tiny_manifests[0], "train.steps=2")
    checkpoint = fit(cfg, progress=False).checkpoint
    paths = {}
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.ts.pt")):
        args = argparse.Namespace(checkpoint=str(checkpoint), format=fmt, out=str(folder / name))
        assert run(args) == 0  # run() itself fails below cosine 0.9999
        paths[fmt] = folder / name
    reference = SpeakerEncoder.from_checkpoint(checkpoint, jit=False)
    return reference, paths


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(
    "seconds",
    [[2.7], [1.0, 1.0, 1.0], [4.3, 0.9, 2.05, 2.05]],
    ids=["one", "batch3-equal", "mixed-lengths"],
)
def test_exported_matches_pytorch_at_other_shapes(exported, fmt, seconds):
    reference, paths = exported
    runner = OnnxEncoder(paths["onnx"]) if fmt == "onnx" else TorchScriptEncoder(paths[fmt])
    audio, lengths = _padded(seconds)
    got, want = runner(audio, lengths), reference(audio, lengths)
    assert got.shape == want.shape == (len(seconds), reference.dim)
    assert (got * want).sum(dim=-1).min() > 0.9999


def test_onnx_graph_has_dynamic_batch_and_length(exported):
    import onnx

    model = onnx.load(str(exported[1]["onnx"]))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, True]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["sample_rate"] == "16000" and meta["metric"] == "cosine"
    # One session call with a batch and length the export never saw.
    session = OnnxEncoder(exported[1]["onnx"]).session
    out = session.run(None, {"waveforms": 0.1 * torch.randn(5, 12345).numpy()})[0]
    assert out.shape == (5, exported[0].dim)


def test_dft_fbank_equals_speechbrain_fbank():
    frontend = FbankFrontend()
    audio = torch.stack([_speechlike(1.3, 0), _speechlike(1.3, 1)])
    want, _ = frontend(audio)
    got = DftFbank(frontend)(audio)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-3, rtol=0)


def test_exportable_encoder_equals_eager_extractor():
    from arw_sv.models.ecapa import build_extractor

    extractor = build_extractor("tiny", embedding_dim=32).eval()
    audio = torch.stack([_speechlike(1.1, 2), _speechlike(1.1, 3)])
    with torch.no_grad():
        want = torch.nn.functional.normalize(extractor(audio), dim=-1)
        got = ExportableEncoder(extractor)(audio)
    assert (got * want).sum(dim=-1).min() > 0.99999


def test_jit_encoder_equals_eager_and_keeps_padding_invariance():
    from arw_sv.models.ecapa import build_extractor

    extractor = build_extractor("tiny", embedding_dim=32).eval()
    fast, eager = SpeakerEncoder(extractor, jit=True), SpeakerEncoder(extractor, jit=False)
    audio, lengths = _padded([1.7, 0.8, 1.7])
    got = fast(audio, lengths)
    assert (got * eager(audio, lengths)).sum(dim=-1).min() > 0.99999
    torch.testing.assert_close(got[1], fast(audio[1:2, : lengths[1]])[0], atol=1e-5, rtol=1e-5)


def test_embed_files_sorted_batches_are_exact(tmp_path):
    import numpy as np
    import soundfile as sf

    from arw_sv.models.ecapa import build_extractor

    encoder = SpeakerEncoder(build_extractor("tiny", embedding_dim=32))
    paths = []
    for i, seconds in enumerate([1.2, 0.7, 1.2, 0.9, 0.7]):
        path = tmp_path / f"{i}.wav"
        sf.write(path, _speechlike(seconds, i).numpy(), 16000, subtype="FLOAT")
        paths.append(path)
    one_by_one = np.stack([encoder.embed_file(p).numpy() for p in paths])
    np.testing.assert_allclose(encoder.embed_files(paths), one_by_one, atol=1e-5)
    approx = encoder.embed_files(paths, max_padding=0.5)
    assert (approx * one_by_one).sum(axis=1).min() > 0.99
    with pytest.raises(ValueError, match="max_padding"):
        encoder.embed_files(paths, max_padding=1.0)


def test_cli_registers_export():
    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "ckpt.pt", "--format", "onnx", "--out", "m.onnx"])
    assert (args.func, args.format, args.out) == (run, "onnx", "m.onnx")
    with pytest.raises(SystemExit):
        parser.parse_args(["export", "ckpt.pt", "--format", "tflite"])

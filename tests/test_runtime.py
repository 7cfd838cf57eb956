"""The automatic ONNX Runtime path of SpeakerEncoder: agreement, the export cache, when
"auto" switches, and every fallback to the TorchScript trace (missing, failing, mismatched).

One real export per module (a tiny model, seconds); the failure cases replace the exporter.
"""

from __future__ import annotations

import copy
import shutil
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from arw_sv import runtime
from arw_sv.inference import SpeakerEncoder
from arw_sv.models.ecapa import build_extractor


def _tiny(seed: int):
    torch.manual_seed(seed)
    return build_extractor("tiny", embedding_dim=32).eval()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("onnx_cache")
        patch.setenv("ARW_SV_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def model(cache):
    return _tiny(11)


@pytest.fixture(scope="module")
def onnx_encoder(model):
    return SpeakerEncoder(model, backend="onnx")  # exports into the module's cache


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wavs")
    generator = np.random.default_rng(5)
    paths = []
    for i, seconds in enumerate([1.3, 0.9, 1.3, 2.1]):
        t = np.arange(int(seconds * 16000)) / 16000
        audio = 0.2 * np.sin(2 * np.pi * (110 + 35 * i) * t) + 0.02 * generator.standard_normal(
            len(t)
        )
        paths.append(folder / f"{i}.wav")
        sf.write(paths[-1], audio.astype(np.float32), 16000, subtype="FLOAT")
    return paths


def _cosines(a, b) -> np.ndarray:
    return (np.asarray(a) * np.asarray(b)).sum(axis=-1)


def test_onnx_backend_agrees_with_the_trace_and_eager(onnx_encoder, model):
    assert onnx_encoder.backend == "onnx"
    assert runtime.cached_path(model).is_file()
    generator = torch.Generator().manual_seed(2)
    # the last item is shorter than the graph's minimum (0.1 s): it runs on the trace
    lengths = [27200, 12800, 27200, 1200]
    audio = 0.1 * torch.randn(4, 27200, generator=generator)
    got = onnx_encoder(audio, lengths)
    for other in (SpeakerEncoder(model, backend="jit"), SpeakerEncoder(model, backend="eager")):
        assert other.backend in ("jit", "eager")
        assert _cosines(got, other(audio, lengths)).min() > 0.9999
    # the grouping by length still holds: a padded item equals itself unpadded
    torch.testing.assert_close(got[1], onnx_encoder(audio[1:2, :12800])[0], atol=1e-5, rtol=0)


def test_a_cached_export_is_used_without_exporting_again(onnx_encoder, model, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(runtime, "export_onnx", no_export)
    assert SpeakerEncoder(copy.deepcopy(model), backend="onnx").backend == "onnx"


def test_auto_uses_a_cached_model_at_any_job_size(onnx_encoder, model, wavs):
    encoder = SpeakerEncoder(model)  # "auto", threshold an hour of audio
    assert encoder.backend == "jit"
    got = encoder.embed_files(wavs)
    assert encoder.backend == "onnx"
    want = SpeakerEncoder(model, backend="jit").embed_files(wavs)
    assert _cosines(got, want).min() > 0.9999


def test_auto_exports_only_for_a_large_job(onnx_encoder, model, wavs, monkeypatch, tmp_path):
    # Move the cached file away; the stand-in exporter puts it back and counts its calls.
    cached = runtime.cached_path(model)
    shutil.move(cached, tmp_path / "saved.onnx")
    calls = []

    def restore(extractor, path, **kwargs):
        calls.append(path)
        shutil.copy(tmp_path / "saved.onnx", path)
        return path

    monkeypatch.setattr(runtime, "export_onnx", restore)
    try:
        small = SpeakerEncoder(model, onnx_min_seconds=60.0)  # the job is 5.6 s of audio
        small.embed_files(wavs)
        assert (small.backend, calls) == ("jit", [])
        large = SpeakerEncoder(model, onnx_min_seconds=5.0)
        large.embed_files(wavs)
        assert (large.backend, calls) == ("onnx", [cached])
    finally:
        if not cached.is_file():
            shutil.copy(tmp_path / "saved.onnx", cached)


def _fallback(model, wavs) -> tuple[SpeakerEncoder, np.ndarray, list[str]]:
    encoder = SpeakerEncoder(model, onnx_min_seconds=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = encoder.embed_files(wavs)
        again = encoder.embed_files(wavs)  # tried once: no second attempt, no second warning
    np.testing.assert_array_equal(got, again)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    return encoder, got, messages


def _trace(model, wavs) -> np.ndarray:
    return SpeakerEncoder(model, backend="jit").embed_files(wavs)


def test_falls_back_to_the_trace_when_onnxruntime_is_missing(cache, wavs, monkeypatch):
    monkeypatch.setattr(runtime, "onnx_available", lambda: False)
    model = _tiny(12)
    encoder, got, messages = _fallback(model, wavs)
    assert encoder.backend == "jit"
    assert len(messages) == 1 and "not installed" in messages[0]
    np.testing.assert_array_equal(got, _trace(model, wavs))
    with pytest.raises(runtime.OnnxUnavailable, match="not installed"):
        SpeakerEncoder(model, backend="onnx")


def test_falls_back_to_the_trace_when_the_export_fails(cache, wavs, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke\nwith a long traceback-like tail")

    monkeypatch.setattr(runtime, "export_onnx", broken)
    model = _tiny(13)
    encoder, got, messages = _fallback(model, wavs)
    assert encoder.backend == "jit"
    assert len(messages) == 1 and "RuntimeError: exporter broke" in messages[0]
    assert "\n" not in messages[0]
    np.testing.assert_array_equal(got, _trace(model, wavs))
    assert not runtime.cached_path(model).exists()


def test_falls_back_to_the_trace_when_the_export_disagrees(onnx_encoder, model, wavs, monkeypatch):
    # A graph of another model under this model's name: the probe's cosine gives it away.
    other = _tiny(14)
    shutil.copy(runtime.cached_path(model), runtime.cached_path(other))
    encoder, got, messages = _fallback(other, wavs)
    assert encoder.backend == "jit"
    assert len(messages) == 1 and "below 0.9999" in messages[0]
    np.testing.assert_array_equal(got, _trace(other, wavs))
    with pytest.raises(runtime.OnnxUnavailable, match="below 0.9999"):
        SpeakerEncoder(other, backend="onnx")


def test_fingerprint_follows_the_weights(model):
    same = copy.deepcopy(model)
    assert runtime.fingerprint(same) == runtime.fingerprint(model)
    with torch.no_grad():
        next(same.parameters()).view(-1)[0] += 1e-6
    assert runtime.fingerprint(same) != runtime.fingerprint(model)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("ARW_SV_CACHE", str(tmp_path / "a"))
    assert runtime.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("ARW_SV_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_dir() == tmp_path / "xdg" / "arw_sv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runtime.cache_dir() == tmp_path / "home" / ".cache" / "arw_sv"


def test_backend_arguments_are_checked(model):
    with pytest.raises(ValueError, match="not one of"):
        SpeakerEncoder(model, backend="tensorrt")
    with pytest.raises(ValueError, match="CPU only"):
        SpeakerEncoder(model, device="meta", backend="onnx")
    assert SpeakerEncoder(model, jit=False).backend == "eager"
    assert SpeakerEncoder(model, jit=True).backend == "jit"

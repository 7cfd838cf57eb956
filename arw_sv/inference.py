"""``SpeakerEncoder``: the public inference surface (waveforms in, unit-norm embeddings out).

Shape legend (the package one, :mod:`arw_sv`): B batch, S samples, D embedding.

Example:
    >>> enc = SpeakerEncoder.from_checkpoint("runs/demo/erm/checkpoints/step_800.pt")
    >>> enc.sample_rate, enc.dim, enc.metric
    (16000, 192, 'cosine')
    >>> emb = enc(torch.randn(2, 32000))          # (2, 192), L2-normalised
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from arw_sv.atomic import atomic_path
from arw_sv.audio import audio_info, check_usable, read_audio
from arw_sv.checkpoint import load_extractor
from arw_sv.models.ecapa import EcapaTdnn
from arw_sv.models.exportable import MIN_SECONDS
from arw_sv.models.traceable import TraceableEcapa

BACKENDS = ("auto", "onnx", "jit", "eager")
# "auto" runs a job through ONNX Runtime from this much audio on (seconds): the export costs
# about 7 s once per model (then cached), ONNX Runtime saves about 40% of the trace's time
# (bench/speed/extract.py), and the trace runs at about 126x real time per core, so an hour
# of audio wins back the export; a model already in the cache is used at any size.
ONNX_MIN_SECONDS = 3600.0


class SpeakerEncoder:
    """Immutable speaker-embedding extractor; never holds the training head or adversary.

    Items are embedded at their own length: a batch is split into groups of equal length,
    so no item ever sees another's padding and a padded item's embedding equals its
    unpadded one.

    Backends (``backend``; :attr:`backend` says which one runs now):

    - ``"jit"``: the fbank in PyTorch (SpeechBrain's own), the ECAPA as a frozen TorchScript
      trace of the same blocks (``torch.jit.freeze`` + ``optimize_for_inference``:
      oneDNN-packed convolutions, folded constants); 1.16x faster than eager on 16 x 8 s
      clips with 30% less peak memory; built in about 0.3 s. Cosine > 0.99999 to eager.
    - ``"onnx"``: the whole graph (fbank inside, :mod:`arw_sv.models.exportable`) in ONNX
      Runtime, from a cached export (:mod:`arw_sv.runtime`), used only after its embeddings
      of a probe agree with the trace's to cosine >= 0.9999; CPU only.
    - ``"eager"``: plain PyTorch (the reference; what runs on a GPU).
    - ``"auto"`` (the default): ``"eager"`` off the CPU; on CPU the trace, switching to ONNX
      Runtime for an :meth:`embed_files` job of at least ``onnx_min_seconds`` of audio or
      when the model's export is already cached. If ONNX Runtime is missing or its export
      fails or disagrees, the job runs on the trace after a one-line warning.

    Args:
        extractor: a trained :class:`~arw_sv.models.ecapa.EcapaTdnn`.
        device: where to run it.
        max_batch: largest number of equal-length items per forward pass.
        jit: the older spelling of ``backend``: True is ``"jit"``, False ``"eager"``.
        backend: one of :data:`BACKENDS`.
        onnx_min_seconds: ``"auto"``'s threshold (default :data:`ONNX_MIN_SECONDS`).

    Raises:
        ValueError: an unknown backend, or ``"onnx"`` off the CPU.
        arw_sv.runtime.OnnxUnavailable: ``backend="onnx"`` and ONNX Runtime cannot be used.
    """

    metric = "cosine"

    def __init__(
        self,
        extractor: EcapaTdnn,
        device: str | torch.device = "cpu",
        max_batch: int = 64,
        *,
        jit: bool | None = None,
        backend: str = "auto",
        onnx_min_seconds: float = ONNX_MIN_SECONDS,
    ):
        if jit is not None:
            backend = "jit" if jit else "eager"
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self._device = torch.device(device)
        if backend == "onnx" and self._device.type != "cpu":
            raise ValueError(f"backend 'onnx' runs on CPU only, not {self._device}")
        self._extractor = extractor.to(self._device).eval()
        for p in self._extractor.parameters():
            p.requires_grad_(False)
        if backend == "auto":
            backend = "auto" if self._device.type == "cpu" else "eager"
        self._ecapa = _frozen_ecapa(self._extractor) if backend != "eager" else None
        # The one mutable part: the ONNX Runtime session once a job switches to it.
        self._onnx = {"runner": None, "allowed": backend in ("auto", "onnx")}
        self._onnx_min_seconds = float(onnx_min_seconds)
        self._max_batch = max_batch  # the last attribute: the encoder is immutable from here
        if backend == "onnx":
            self._switch_to_onnx(strict=True, export=True)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        jit: bool | None = None,
        backend: str = "auto",
    ) -> SpeakerEncoder:
        """Rebuild the extractor a training checkpoint describes and load its weights."""
        extractor, _, _ = load_extractor(path)
        return cls(extractor, device=device, jit=jit, backend=backend)

    @classmethod
    def from_speechbrain(
        cls,
        folder_or_hub_id: str | Path,
        device: str | torch.device = "cpu",
        *,
        jit: bool | None = None,
        backend: str = "auto",
    ) -> SpeakerEncoder:
        """SpeechBrain's pretrained ECAPA (``spkrec-ecapa-voxceleb`` layout) as an encoder.

        Architecture and features come from the folder's ``hyperparams.yaml``; embeddings
        equal ``EncoderClassifier.encode_batch`` on the same folder (up to the L2 norm).
        A name that is not a folder is fetched as a hub id (``huggingface_hub``).

        Example:
            >>> enc = SpeakerEncoder.from_speechbrain("pretrained/spkrec-ecapa-voxceleb")
        """
        from arw_sv.speechbrain_folder import load_extractor, resolve

        extractor = load_extractor(resolve(folder_or_hub_id))
        return cls(extractor, device=device, jit=jit, backend=backend)

    @classmethod
    def load(
        cls, spec: str | Path, device: str | torch.device = "cpu", *, backend: str = "auto"
    ) -> SpeakerEncoder:
        """A training checkpoint, or ``speechbrain:FOLDER_OR_HUB_ID``."""
        from arw_sv.speechbrain_folder import split_spec

        folder = split_spec(spec)
        if folder is not None:
            return cls.from_speechbrain(folder, device=device, backend=backend)
        return cls.from_checkpoint(spec, device=device, backend=backend)

    @property
    def sample_rate(self) -> int:
        """The sample rate (Hz) of the audio the extractor was built for."""
        return self._extractor.sample_rate

    @property
    def dim(self) -> int:
        """D, the size of the embeddings."""
        return self._extractor.embedding_dim

    @property
    def device(self) -> torch.device:
        """Where the extractor runs (fixed at construction)."""
        return self._device

    @property
    def backend(self) -> str:
        """What runs the model now: ``"onnx"``, ``"jit"`` or ``"eager"``."""
        if self._onnx["runner"] is not None:
            return "onnx"
        return "jit" if self._ecapa is not None else "eager"

    def __setattr__(self, name: str, value) -> None:
        if hasattr(self, "_max_batch"):
            raise AttributeError("SpeakerEncoder is immutable")
        super().__setattr__(name, value)

    def _switch_to_onnx(self, *, strict: bool, export: bool) -> None:
        """Start running through ONNX Runtime if its export agrees with the trace.

        Tried at most once per encoder; a failure raises (``strict``) or warns once and
        leaves the trace in charge.
        """
        from arw_sv.runtime import OnnxUnavailable, cached_path, onnx_available, verified_onnx

        if not self._onnx["allowed"] or self._onnx["runner"] is not None:
            return
        if not export and not (onnx_available() and cached_path(self._extractor).is_file()):
            return  # a small job and nothing cached: the trace; a larger job may export
        self._onnx["allowed"] = False
        try:
            self._onnx["runner"] = verified_onnx(
                self._extractor, self.__call__, threads=torch.get_num_threads()
            )
        except OnnxUnavailable as err:
            if strict:
                raise
            warnings.warn(
                f"ONNX Runtime not used ({err}); extracting with the TorchScript trace",
                RuntimeWarning,
                stacklevel=3,
            )

    @torch.inference_mode()
    def __call__(
        self,
        waveforms: torch.Tensor | np.ndarray,
        lengths: torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Embed a batch of waveforms at ``sample_rate``.

        Args:
            waveforms: float audio, zero-padded on the right.
            lengths: absolute lengths in samples (None: all ``S``).

        Shape:
            waveforms (B, S), lengths (B,) -> (B, D), L2-normalised, on CPU.
        """
        waveforms = torch.as_tensor(waveforms, dtype=torch.float32)
        if waveforms.ndim == 1:
            waveforms = waveforms[None]
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be (B, S), got shape {tuple(waveforms.shape)}")
        batch, samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.shape != (batch,) or (lengths < 1).any() or (lengths > samples).any():
            raise ValueError(f"lengths must be (B,) in [1, {samples}], got {lengths.tolist()}")
        out = torch.empty(batch, self.dim)
        for length in lengths.unique().tolist():
            rows = torch.nonzero(lengths == length).squeeze(1)
            for chunk in rows.split(self._max_batch):
                out[chunk] = self._embed_equal(waveforms[chunk, :length])
        return F.normalize(out, dim=-1)

    def _embed_equal(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings of unpadded, equal-length items. Shape: (B, S) -> (B, D)."""
        runner = self._onnx["runner"]
        if runner is not None and waveforms.shape[1] >= MIN_SECONDS * self.sample_rate:
            return torch.from_numpy(runner._run(np.ascontiguousarray(waveforms.numpy())))
        audio = waveforms.to(self._device)
        if self._ecapa is None:
            return self._extractor(audio).float().cpu()
        feats, _ = self._extractor.frontend(audio)
        return self._ecapa(feats).float().cpu()

    def _embed_padded(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One padded forward pass with masked statistics (approximate; see embed_files)."""
        audio, lengths = waveforms.to(self._device), lengths.to(self._device)
        return F.normalize(self._extractor(audio, lengths).float().cpu(), dim=-1)

    def embed_file(self, path: str | Path) -> torch.Tensor:
        """Embed a whole file (read with soundfile, down-mixed and resampled if needed).

        Shape:
            -> (D,)
        """
        wav = check_usable(read_audio(path, self.sample_rate), path, self.sample_rate)
        return self(torch.from_numpy(wav))[0]

    def embed_files(
        self,
        paths: Iterable[str | Path],
        *,
        progress: bool = False,
        max_padding: float = 0.0,
        batch_seconds: float = 256.0,
        spans: Sequence[tuple[float, float]] | None = None,
    ) -> np.ndarray:
        """Embed many whole files or segments of them (no crops), batched by length.

        Files are sorted by their length (from the headers, without decoding) and read in
        that order, so files of equal length meet and share one forward pass; memory stays
        bounded by one batch (``batch_seconds`` of audio, at most ``max_batch`` files).

        The trade-off: with ``max_padding=0`` (the default) only files of *exactly* equal
        length share a batch, so every embedding equals the one ``embed_file`` gives; a
        corpus with few equal lengths then runs file by file. On CPU that is also the fast
        way: one 8 s utterance per call runs at 126x real time, 16 per call at 83x (larger
        activations fall out of cache; ``bench/speed/extract.py``), and SpeechBrain's padded
        batches of 16 were 3.4x slower than this on 36 utterances of 3-12 s.
        ``max_padding > 0`` also batches
        near-equal lengths, padding each to the longest of its batch (at most that
        fraction of it) with masked mean-normalisation and pooling, as SpeechBrain's
        ``encode_batch`` does: fewer, larger passes (what a GPU wants), but the convolutions
        near a padded item's end see zeros instead of SpeechBrain's reflect padding, so its
        embedding is close to, not equal to, the unpadded one.

        Args:
            paths: audio files (anything ``read_audio`` reads).
            progress: show a tqdm bar.
            max_padding: largest padding per batch, as a fraction of its longest file.
            batch_seconds: most audio per forward pass.
            spans: per path ``(start, duration)`` in seconds (a Kaldi segment: what the
                manifest's ``start`` and ``duration`` say), or None for whole files. A span
                that starts at 0 and reaches the file's last 0.05 s reads the whole file.

        Shape:
            -> (N, D) float32, in the order of ``paths``.

        Raises:
            AudioError: a file cannot be read or is shorter than ``audio.MIN_SECONDS``
                (names it); a silent or truncated one is embedded with a warning.
        """
        from tqdm import tqdm

        if not 0.0 <= max_padding < 1.0:
            raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
        paths = list(paths)
        out = np.empty((len(paths), self.dim), dtype=np.float32)
        windows = _windows(paths, spans)  # (first sample, samples) in each file's own rate
        frames = [n for _, n in windows]
        budget = int(batch_seconds * self.sample_rate)
        if self._onnx["allowed"]:
            large = sum(frames) >= self._onnx_min_seconds * self.sample_rate
            self._switch_to_onnx(strict=False, export=large)
        rows: list[int] = []
        audio: list[np.ndarray] = []

        def flush() -> None:
            lengths = torch.tensor([a.shape[0] for a in audio])
            padded = torch.zeros(len(audio), int(lengths.max()))
            for i, a in enumerate(audio):
                padded[i, : a.shape[0]] = torch.from_numpy(a)
            if max_padding == 0 or bool((lengths == lengths[0]).all()):
                out[rows] = self(padded, lengths).numpy()
            else:
                with torch.inference_mode():
                    out[rows] = self._embed_padded(padded, lengths).numpy()
            rows.clear()
            audio.clear()

        order = sorted(range(len(paths)), key=lambda i: frames[i])
        for i in tqdm(order, desc="embed", unit="utt", disable=not progress):
            first, count = windows[i]
            if first < 0:
                wav = read_audio(paths[i], self.sample_rate)
            else:
                wav = read_audio(paths[i], self.sample_rate, start=first, frames=count)
            where = paths[i] if first < 0 else f"{paths[i]} (segment from {spans[i][0]:g} s)"
            wav = check_usable(wav, where, self.sample_rate)
            n = wav.shape[0]
            if audio:
                shortest = min(a.shape[0] for a in audio)
                longest = max(n, max(a.shape[0] for a in audio))
                if (
                    longest - shortest > max_padding * longest
                    or (len(audio) + 1) * longest > budget
                    or len(audio) >= self._max_batch
                ):
                    flush()
            rows.append(i)
            audio.append(wav)
        if audio:
            flush()
        return out


def _windows(paths: list, spans: Sequence[tuple[float, float]] | None) -> list[tuple[int, int]]:
    """Each file's window as (first sample, samples) in its own rate; first -1: the whole
    file, also for a span of unknown duration (0) from the start, as a manifest row without
    a duration has. A segment that starts inside the file and runs past its end is refused,
    naming the file (0.05 s is forgiven, as the Kaldi reader forgives it).
    """
    from arw_sv.audio import AudioError

    if spans is not None and len(spans) != len(paths):
        raise ValueError(f"{len(spans)} spans for {len(paths)} files")
    out = []
    for i, path in enumerate(paths):
        frames, rate, _ = audio_info(path)
        if spans is None:
            out.append((-1, frames))
            continue
        start, duration = spans[i]
        first, count = int(round(start * rate)), int(round(duration * rate))
        slack = int(0.05 * rate)
        if first == 0 and (count == 0 or count >= frames - slack):  # a whole file
            out.append((-1, frames))
        elif first + count > frames + slack:
            raise AudioError(
                f"{path}: segment {start:g}-{start + duration:g} s runs past the file's end "
                f"({frames / rate:g} s)"
            )
        else:
            out.append((first, min(count, frames - first)))
    return out


def _frozen_ecapa(extractor: EcapaTdnn) -> torch.jit.ScriptModule:
    """The extractor's ECAPA as a frozen, inference-optimised trace (dynamic batch and length).

    Shape:
        feats (B, T, F) -> (B, D)
    """
    import warnings

    n_mels = extractor.frontend.fbank.compute_fbanks.n_mels
    example = torch.randn(2, 150, n_mels, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        traced = torch.jit.trace(
            TraceableEcapa(extractor.ecapa).eval(),
            example.to(next(extractor.parameters()).device),
            check_trace=False,
        )
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def embed_utterances(
    checkpoint: str | Path,
    ids: list[str],
    paths: list[str],
    out: str | Path,
    *,
    progress: bool,
    backend: str = "auto",
    spans: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """Embed ``paths`` (or their ``spans``, see :meth:`SpeakerEncoder.embed_files`) and write
    them to an ``.npz`` atomically in the matrix layout (``ids``, U strings, and
    ``embeddings``, U x D float32; :func:`arw_sv.data.trials.read_embeddings` reads it and
    the older one-array-per-utterance layout), and beside it ``<out>.model.json`` (the
    model's weight fingerprint, dimension and source), which calibration checks against.
    One zip member per utterance made reading 145,000 utterances take seconds
    (docs/performance.md).
    """
    import json

    from arw_sv.atomic import atomic_write_text
    from arw_sv.checkpoint import model_fingerprint
    from arw_sv.data.trials import model_sidecar

    encoder = SpeakerEncoder.load(checkpoint, backend=backend)  # or speechbrain:FOLDER
    vectors = encoder.embed_files(paths, progress=progress, spans=spans)
    bad = [utt for utt, vec in zip(ids, vectors, strict=True) if not np.isfinite(vec).all()]
    if bad:  # NaN weights (a broken folder or checkpoint) give NaN for every utterance
        raise ValueError(
            f"{checkpoint}: {len(bad)} of {len(ids)} embeddings are NaN or infinite (e.g. "
            f"{bad[0]}); the model's weights or features are broken; nothing written"
        )
    out = Path(out)
    model = {
        "fingerprint": model_fingerprint(encoder._extractor),
        "dim": int(encoder.dim),
        "source": str(checkpoint),
    }
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(ids), int(encoder.dim))
        np.savez(handle, ids=np.asarray(ids, dtype=str), embeddings=matrix)
    atomic_write_text(model_sidecar(out), json.dumps(model) + "\n")
    return out

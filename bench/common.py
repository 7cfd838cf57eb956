"""Shared pieces of the benchmarks (``python -m bench.<name>`` from the repository root).

- the benchmark configs (``bench/conf/*.yaml``), found by name before the shipped ones;
- thread control (the one setting that decides CPU timings on a shared 2-core machine);
- interleaved timing: variants run round-robin, so a slow minute of the machine hits all
  of them alike, and the median over rounds is reported;
- the SpeechBrain peers, built from SpeechBrain 1.1's own classes with *our* weights:
  a plain training loop (``Fbank`` + ``InputNormalization`` + ``ECAPA_TDNN`` + ``Classifier``
  + ``AdditiveAngularMargin`` in ``LogSoftmaxWrapper`` + Adam) and an ``EncoderClassifier``
  constructed from modules and hparams (no hub download);
- a synthetic VoxCeleb-like wav corpus (lengths 4-12 s) for the loader benchmarks;
- peak-memory runs in child processes (each variant gets a fresh process, so one
  variant's allocator high-water mark does not hide another's).
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
N_SPEAKERS = 5994  # VoxCeleb2 dev: the size of the AAM head in SpeechBrain's recipe
CONF = REPO / "bench" / "conf"


def config_path(name: str) -> Path:
    """The benchmark config ``bench/conf/<name>.yaml``, else the shipped config ``name``."""
    path = CONF / f"{name}.yaml"
    if path.is_file():
        return path
    from arw_sv.demo import config_path as shipped_config_path

    return shipped_config_path(name)


def setup_threads(threads: int) -> None:
    """Fix torch's intra-op threads (and one inter-op thread) before any parallel work."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (or parallel work already ran)
        pass


def machine_line() -> str:
    """One line saying what produced the numbers."""
    import speechbrain

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; torch {torch.__version__} "
        f"(threads {torch.get_num_threads()}, inter-op {torch.get_num_interop_threads()}); "
        f"speechbrain {speechbrain.__version__}; python {platform.python_version()}"
    )


def time_interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each function, ``rounds`` times, round-robin after ``warmup``."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def time_until_stable(
    fns: dict[str, Callable[[], Any]],
    rounds: int,
    max_rounds: int,
    tol: float = 0.05,
    warmup: int = 1,
) -> tuple[dict[str, list[float]], bool]:
    """Interleaved timings, extended round by round until every function's median is within
    ``tol`` of its minimum (or ``max_rounds`` is reached).

    On a noisy machine the minimum is the least disturbed run and the median the typical
    one; when they agree the ratio does not depend on which is quoted. Returns the
    timings and whether they agree.
    """
    times = time_interleaved(fns, rounds=rounds, warmup=warmup)
    while not stable(times, tol) and len(next(iter(times.values()))) < max_rounds:
        for name, values in time_interleaved(fns, rounds=1, warmup=0).items():
            times[name] += values
    return times, stable(times, tol)


def stable(times: dict[str, list[float]], tol: float = 0.05) -> bool:
    """Whether every median is within ``tol`` of its minimum."""
    return all(med(v) <= (1 + tol) * min(v) for v in times.values())


def med(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """``median (min-max)`` in seconds, 3 decimals."""
    return f"{med(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def peak_rss_mib() -> float:
    """This process's peak resident memory since start or the last :func:`reset_peak_rss`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mib() -> float:
    """This process's current resident memory."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_child(module: str, args: Sequence[str]) -> dict[str, Any]:
    """Run ``python -m bench.<module> --child ...`` in a fresh interpreter; it prints one
    JSON line last."""
    cmd = [sys.executable, "-m", f"bench.{module}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- audio ------------------------------------------------------------------------------


def speechlike(samples: int, rng: np.random.Generator, rate: int = 16000) -> np.ndarray:
    """A voiced-like test signal: a gliding harmonic tone with syllable-rate bursts and noise."""
    t = np.arange(samples) / rate
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)))
    wav = 0.1 * voice * envelope + 0.01 * rng.standard_normal(samples)
    return wav.astype(np.float32)


def make_corpus(
    folder: Path,
    n_speakers: int = 48,
    per_speaker: int = 8,
    seconds: tuple[float, float] = (4.0, 12.0),
    seed: int = 0,
) -> Path:
    """A VoxCeleb-like corpus of 16-bit wav files and its manifest (reused if present)."""
    import soundfile as sf

    from arw_sv.data.manifest import Utterance, write_manifest

    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_speakers):
        for u in range(per_speaker):
            n = int(rng.uniform(*seconds) * 16000)
            path = folder / "wav" / f"id{s:05d}" / f"{u:05d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, speechlike(n, rng), 16000, subtype="PCM_16")
            rows.append(
                Utterance(
                    f"id{s:05d}/{u:05d}.wav",
                    str(path),
                    f"id{s:05d}",
                    n / 16000,
                    "m" if s % 2 else "f",
                    "USA",
                    "dev",
                )
            )
    write_manifest(rows, manifest)
    return manifest


# ---- SpeechBrain peers ------------------------------------------------------------------


def speechbrain_ecapa(extractor) -> torch.nn.Module:
    """SpeechBrain's ``ECAPA_TDNN`` with the architecture and weights of ``extractor.ecapa``."""
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    ours = extractor.ecapa
    channels = list(ours.channels)
    scale = 8 if min(channels[:4]) >= 64 else 4
    model = ECAPA_TDNN(
        input_size=80,
        lin_neurons=extractor.embedding_dim,
        channels=channels,
        kernel_sizes=[5, 3, 3, 3, 1],
        dilations=[1, 2, 3, 4, 1],
        attention_channels=ours.asp.tdnn.conv.conv.out_channels,
        res2net_scale=scale,
        se_channels=min(128, channels[0]),
        global_context=True,
    )
    model.load_state_dict(ours.state_dict(), strict=True)
    return model


class SpeechBrainTrainer:
    """A plain SpeechBrain 1.1 training step, as its VoxCeleb recipe composes it.

    ``Fbank(n_mels=80)`` -> ``InputNormalization("sentence", std_norm=False)`` ->
    ``ECAPA_TDNN`` -> ``Classifier`` (cosine layer) -> ``LogSoftmaxWrapper(
    AdditiveAngularMargin(0.2, 30))`` -> backward -> ``Adam``. No gradient clipping, no
    non-finite checks (SpeechBrain's ``Brain`` would add both).
    """

    def __init__(
        self,
        extractor,
        n_speakers: int = N_SPEAKERS,
        lr: float = 1e-3,
        device: str = "cpu",
        autocast_dtype: torch.dtype | None = None,
    ) -> None:
        from speechbrain.lobes.features import Fbank
        from speechbrain.lobes.models.ECAPA_TDNN import Classifier
        from speechbrain.nnet.losses import AdditiveAngularMargin, LogSoftmaxWrapper
        from speechbrain.processing.features import InputNormalization

        self.fbank = Fbank(n_mels=80)
        self.norm = InputNormalization(norm_type="sentence", std_norm=False)
        self.model = speechbrain_ecapa(extractor)
        self.classifier = Classifier(input_size=extractor.embedding_dim, out_neurons=n_speakers)
        self.loss = LogSoftmaxWrapper(AdditiveAngularMargin(margin=0.2, scale=30))
        self.modules = torch.nn.ModuleList(
            [self.fbank, self.norm, self.model, self.classifier, self.loss]
        )
        self.modules.to(device)
        self.optimizer = torch.optim.Adam(
            list(self.model.parameters()) + list(self.classifier.parameters()),
            lr=lr,
            weight_decay=2e-5,
        )
        # SpeechBrain's Brain: autocast around the forward, a GradScaler for fp16.
        self.autocast_dtype = autocast_dtype
        self.scaler = torch.amp.GradScaler(
            torch.device(device).type, enabled=autocast_dtype == torch.float16
        )

    def step(self, waveforms: torch.Tensor, labels: torch.Tensor) -> float:
        self.modules.train()
        lens = torch.ones(waveforms.shape[0], device=waveforms.device)
        with torch.autocast(
            waveforms.device.type,
            dtype=self.autocast_dtype,
            enabled=self.autocast_dtype is not None,
        ):
            feats = self.fbank(waveforms)
            feats = self.norm(feats, lens)
            embeddings = self.model(feats)
            logits = self.classifier(embeddings)
        loss = self.loss(logits.float(), labels.unsqueeze(1), lens)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())


def speechbrain_encoder(extractor):
    """SpeechBrain's ``EncoderClassifier`` built from modules (our weights), no download.

    Modules and hparams as in ``speechbrain/spkrec-ecapa-voxceleb``'s hyperparams.yaml:
    ``Fbank(n_mels=80)``, ``InputNormalization(norm_type="sentence", std_norm=False)``,
    ``ECAPA_TDNN``; its ``encode_batch`` is what we time.
    """
    from speechbrain.inference.classifiers import EncoderClassifier
    from speechbrain.lobes.features import Fbank
    from speechbrain.lobes.models.ECAPA_TDNN import Classifier
    from speechbrain.processing.features import InputNormalization

    modules = {
        "compute_features": Fbank(n_mels=80),
        "mean_var_norm": InputNormalization(norm_type="sentence", std_norm=False),
        "embedding_model": speechbrain_ecapa(extractor),
        "classifier": Classifier(input_size=extractor.embedding_dim, out_neurons=8),
    }
    return EncoderClassifier(modules=modules, hparams={"device": "cpu"}, freeze_params=True)


def relative_lengths(lengths: Sequence[int]) -> torch.Tensor:
    """SpeechBrain's relative lengths (longest = 1.0)."""
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    return lengths / lengths.max()


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine. Shape: (B, D), (B, D) -> (B,)."""
    a = torch.nn.functional.normalize(a.reshape(a.shape[0], -1).float(), dim=-1)
    b = torch.nn.functional.normalize(b.reshape(b.shape[0], -1).float(), dim=-1)
    return (a * b).sum(dim=-1)


def fmt_ratio(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3f}"

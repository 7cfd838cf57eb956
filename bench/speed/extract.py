"""Extraction speed and agreement: arw-sv ``SpeakerEncoder`` vs SpeechBrain's
``EncoderClassifier.encode_batch`` on the same weights, plus the ONNX Runtime and TorchScript
exports; batched variable-length extraction; scaling with length; peak memory.

One ECAPA (random init, seed 0) is shared by every variant:

- ``speechbrain``: ``EncoderClassifier`` built from SpeechBrain's modules with our weights
  (``bench.common.speechbrain_encoder``), ``encode_batch``;
- ``arw-sv eager``: ``SpeakerEncoder(..., jit=False)`` (SpeechBrain's ECAPA in eager PyTorch);
- ``arw-sv, backend jit``: ``SpeakerEncoder(backend="jit")``, what the default (``"auto"``)
  runs on CPU for small jobs: frozen, inference-optimised TorchScript trace of the ECAPA,
  SpeechBrain fbank;
- ``arw-sv, backend onnx``: ``SpeakerEncoder(backend="onnx")``, what ``"auto"`` switches to
  for jobs of at least an hour of audio or a model already in the export cache: the cached,
  parity-checked ONNX Runtime graph (fbank inside); its one-off cost (export, session,
  parity probe) is reported;
- ``onnxruntime``: ``arw-sv export --format onnx`` run by onnxruntime (fbank inside);
- ``torchscript``: ``arw-sv export --format torchscript`` (fbank inside);
- ``torch.compile`` (``--compile``): ``SpeakerEncoder(jit=False)`` with its ECAPA compiled
  (dynamic shapes); compile time reported separately.

Agreement is the lowest cosine to SpeechBrain's embedding over the batch.

Usage::

    .venv/bin/python -m bench.speed.extract --threads 2          # everything (~3 min)
    .venv/bin/python -m bench.speed.extract --quick              # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from arw_sv.export import OnnxEncoder, TorchScriptEncoder, export
from arw_sv.inference import SpeakerEncoder
from arw_sv.models.ecapa import build_extractor
from bench import common as sc


def clips(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([sc.speechlike(int(seconds * 16000), rng) for _ in range(n)]))


class Variants:
    """Every extractor under test, built once."""

    def __init__(self, preset: str, threads: int, workdir: Path, use_compile: bool) -> None:
        torch.manual_seed(0)
        self.extractor = build_extractor(preset).eval()
        self.speechbrain = sc.speechbrain_encoder(self.extractor)
        self.eager = SpeakerEncoder(self.extractor, jit=False)
        start = time.perf_counter()
        self.jit = SpeakerEncoder(self.extractor, backend="jit")
        self.jit_build_s = time.perf_counter() - start
        os.environ["ARW_SV_CACHE"] = str(workdir / "cache")  # a cold export cache
        start = time.perf_counter()
        self.auto = SpeakerEncoder(self.extractor, backend="onnx")
        self.auto_build_s = time.perf_counter() - start
        start = time.perf_counter()
        export(self.extractor, workdir / "model.onnx", "onnx")
        self.onnx_export_s = time.perf_counter() - start
        self.onnx = OnnxEncoder(workdir / "model.onnx", threads=threads)
        start = time.perf_counter()
        export(self.extractor, workdir / "model.ts.pt", "torchscript")
        self.ts_export_s = time.perf_counter() - start
        self.ts = TorchScriptEncoder(workdir / "model.ts.pt")
        self.compiled = None
        if use_compile:
            self.compiled = SpeakerEncoder(build_extractor(preset).eval(), jit=False)
            ext = self.compiled._extractor
            ext.load_state_dict(self.extractor.state_dict())
            ext.ecapa = torch.compile(ext.ecapa, dynamic=True)

    def sb(self, audio: torch.Tensor, lengths=None) -> torch.Tensor:
        with torch.inference_mode():
            rel = None if lengths is None else sc.relative_lengths(lengths)
            return self.speechbrain.encode_batch(audio, rel).squeeze(1)

    def fixed(self) -> dict:
        fns = {
            "SpeechBrain encode_batch": self.sb,
            "arw-sv SpeakerEncoder, eager": self.eager,
            "arw-sv SpeakerEncoder, backend jit (auto: small jobs)": self.jit,
            "arw-sv SpeakerEncoder, backend onnx (auto: large jobs)": self.auto,
            "ONNX Runtime (fbank inside)": self.onnx,
            "TorchScript export (fbank inside)": self.ts,
        }
        if self.compiled is not None:
            fns["arw-sv eager + torch.compile"] = self.compiled
        return fns


def section_fixed(v: Variants, args, out: dict) -> str:
    audio = clips(args.n, args.seconds)
    fns = v.fixed()
    compile_s = None
    if v.compiled is not None:
        start = time.perf_counter()
        v.compiled(audio)
        compile_s = time.perf_counter() - start
    reference = v.sb(audio)
    agreement = {
        name: float(sc.cosine_rows(fn(audio), reference).min()) for name, fn in fns.items()
    }
    times = sc.time_interleaved(
        {name: (lambda fn=fn: fn(audio)) for name, fn in fns.items()}, rounds=args.rounds, warmup=1
    )
    base = sc.med(times["SpeechBrain encode_batch"])
    total_audio = args.n * args.seconds
    rows = []
    for name in fns:
        t = sc.med(times[name])
        rows.append(
            [
                name,
                sc.spread(times[name]),
                f"{total_audio / t:.0f}x",
                f"{base / t:.2f}",
                f"{agreement[name]:.6f}",
            ]
        )
    out["fixed"] = {"times": times, "cosine": agreement, "compile_s": compile_s}
    notes = [
        f"One-off costs: building `SpeakerEncoder(backend='jit')` (trace + freeze) "
        f"{v.jit_build_s:.1f} s; `SpeakerEncoder(backend='onnx')` with a cold cache (trace, "
        f"export, session, parity probe) {v.auto_build_s:.1f} s; "
        f"ONNX export {v.onnx_export_s:.1f} s; TorchScript export {v.ts_export_s:.1f} s"
        + (f"; torch.compile first call {compile_s:.0f} s" if compile_s is not None else "")
        + "."
    ]
    return "\n".join(
        [
            "### Extraction: arw-sv vs SpeechBrain on the same weights",
            "",
            f"{args.preset}, {args.n} clips x {args.seconds:g} s in one call, median (min-max) of "
            f"{args.rounds} interleaved rounds after 1 warm-up. Real-time factor = audio seconds / "
            "wall seconds. Cosine: lowest over the clips, against SpeechBrain's embedding.",
            "",
            sc.table(
                [
                    "extractor",
                    "s / call",
                    "x real time",
                    "speed vs SpeechBrain",
                    "min cosine vs SpeechBrain",
                ],
                rows,
            ),
            "",
            *notes,
        ]
    )


def section_variable(v: Variants, args, out: dict, workdir: Path) -> str:
    """Many utterances of different lengths: padded batches vs sorted exact batching."""
    import soundfile as sf

    rng = np.random.default_rng(1)
    lengths = (rng.uniform(*args.var_seconds, size=args.var_n) * 16000).astype(int)
    # Real corpora repeat lengths (fixed-length segments, clips cut on frame boundaries):
    # a third of these utterances share a length with another one.
    lengths[: args.var_n // 3] = lengths[args.var_n // 3 : 2 * (args.var_n // 3)]
    rng.shuffle(lengths)
    wavs = [sc.speechlike(int(n), rng) for n in lengths]
    paths = []
    for i, wav in enumerate(wavs):
        path = workdir / f"utt{i:03d}.wav"
        sf.write(path, wav, 16000, subtype="FLOAT")
        paths.append(path)

    def padded(items):
        batch = torch.zeros(len(items), max(len(w) for w in items))
        for i, w in enumerate(items):
            batch[i, : len(w)] = torch.from_numpy(w)
        return batch, [len(w) for w in items]

    def sb_batches(order):
        out_ = torch.empty(len(wavs), v.extractor.embedding_dim)
        for start in range(0, len(order), args.var_batch):
            rows = order[start : start + args.var_batch]
            audio, lens = padded([wavs[i] for i in rows])
            out_[rows] = v.sb(audio, lens)
        return out_

    arrival = list(range(len(wavs)))
    by_length = sorted(arrival, key=lambda i: lengths[i])
    fns = {
        f"SpeechBrain encode_batch, padded batches of {args.var_batch} in arrival order": lambda: (
            sb_batches(arrival)
        ),
        f"SpeechBrain encode_batch, sorted by length, batches of {args.var_batch}": lambda: (
            sb_batches(by_length)
        ),
        "arw-sv SpeakerEncoder per file (embed_file loop)": lambda: torch.stack(
            [v.jit.embed_file(p) for p in paths]
        ),
        "arw-sv embed_files: sorted, equal lengths batched (exact)": lambda: torch.from_numpy(
            v.jit.embed_files(paths)
        ),
        "arw-sv embed_files: sorted, max_padding=0.05 (approximate)": lambda: torch.from_numpy(
            v.jit.embed_files(paths, max_padding=0.05)
        ),
        "ONNX Runtime, grouped by length (exact)": lambda: v.onnx(*padded(wavs)),
        "arw-sv embed_files, auto with the model cached (ONNX Runtime, exact)": lambda: (
            torch.from_numpy(SpeakerEncoder(v.extractor).embed_files(paths))
        ),
    }
    exact = torch.stack([v.eager.embed_file(p) for p in paths])
    agreement = {name: float(sc.cosine_rows(fn(), exact).min()) for name, fn in fns.items()}
    times = sc.time_interleaved(
        {name: fn for name, fn in fns.items()}, rounds=args.var_rounds, warmup=1
    )
    base = sc.med(times[next(iter(fns))])
    total_audio = float(lengths.sum()) / 16000
    distinct = len(set(lengths.tolist()))
    rows = []
    for name in fns:
        t = sc.med(times[name])
        rows.append(
            [
                name,
                sc.spread(times[name]),
                f"{total_audio / t:.0f}x",
                f"{base / t:.2f}",
                f"{agreement[name]:.6f}",
            ]
        )
    out["variable"] = {"times": times, "cosine": agreement, "lengths": lengths.tolist()}
    return "\n".join(
        [
            "### Batched variable-length extraction",
            "",
            f"{args.var_n} utterances of {args.var_seconds[0]:g}-{args.var_seconds[1]:g} s "
            f"({total_audio:.0f} s of audio, {distinct} distinct lengths), {args.preset}; median "
            f"(min-max) of {args.var_rounds} rounds. Cosine: lowest against each utterance "
            "embedded alone at its own length (eager), which is what padding can perturb.",
            "",
            sc.table(
                ["method", "s", "x real time", "speed vs first row", "min cosine vs alone"], rows
            ),
        ]
    )


def section_scaling(v: Variants, args, out: dict) -> str:
    fns = {
        "SpeechBrain": v.sb,
        "arw-sv (jit)": v.jit,
        "ONNX Runtime": v.onnx,
    }
    rows = []
    out["scaling"] = {}
    for seconds in args.scale_seconds:
        audio = clips(1, seconds, seed=2)
        times = sc.time_interleaved(
            {name: (lambda fn=fn, a=audio: fn(a)) for name, fn in fns.items()},
            rounds=args.scale_rounds,
            warmup=1,
        )
        out["scaling"][seconds] = times
        row = [f"{seconds:g}"]
        for name in fns:
            t = sc.med(times[name])
            row += [f"{t * 1e3:.0f}", f"{seconds / t:.0f}x"]
        rows.append(row)
    headers = ["utterance (s)"]
    for name in fns:
        headers += [f"{name} ms", "x RT"]
    return "\n".join(
        [
            "### Extraction time vs utterance length (one utterance per call)",
            "",
            f"{args.preset}; median of {args.scale_rounds} interleaved rounds after 1 warm-up.",
            "",
            sc.table(headers, rows),
        ]
    )


def child(args) -> None:
    """One extractor on n x seconds clips in this fresh process; peak memory as JSON."""
    warm = build_extractor("tiny", embedding_dim=32).eval()
    SpeakerEncoder(warm, jit=False)(clips(1, 1.0))
    SpeakerEncoder(warm)(clips(1, 1.0))
    before = sc.rss_mib()
    sc.reset_peak_rss()
    torch.manual_seed(0)
    extractor = build_extractor(args.preset).eval()
    audio = clips(args.n, args.seconds)
    if args.child == "speechbrain":
        encoder = sc.speechbrain_encoder(extractor)

        def fn(a):
            with torch.inference_mode():
                return encoder.encode_batch(a)
    elif args.child == "eager":
        fn = SpeakerEncoder(extractor, jit=False)
    elif args.child == "jit":
        fn = SpeakerEncoder(extractor)
    else:
        fn = OnnxEncoder(args.model, threads=args.threads)
        del extractor
    built = sc.rss_mib()
    for _ in range(2):
        fn(audio)
    print(json.dumps({"before": before, "built": built, "peak": sc.peak_rss_mib()}))


def section_memory(v: Variants, args, out: dict, workdir: Path) -> str:
    rows = []
    common = [
        "--preset",
        args.preset,
        "--n",
        str(args.n),
        "--seconds",
        str(args.seconds),
        "--threads",
        str(args.threads),
        "--model",
        str(workdir / "model.onnx"),
    ]
    names = {
        "speechbrain": "SpeechBrain encode_batch",
        "eager": "arw-sv eager",
        "jit": "arw-sv (shipped: jit)",
        "onnx": "ONNX Runtime",
    }
    for variant, label in names.items():
        got = sc.run_child("speed.extract", ["--child", variant, *common])
        out[f"memory_{variant}"] = got
        rows.append([label, f"{got['peak']:.0f}", f"{got['peak'] - got['before']:.0f}"])
    return "\n".join(
        [
            "### Peak memory of extraction (fresh process per variant)",
            "",
            f"{args.preset}, {args.n} x {args.seconds:g} s in one call, twice. Peak RSS; and its "
            "rise over the RSS after imports and a throw-away tiny extraction (model, its optimised "
            "copy where there is one, activations).",
            "",
            sc.table(["extractor", "peak RSS (MiB)", "rise (MiB)"], rows),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="c512")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--var-n", type=int, default=48)
    p.add_argument("--var-seconds", type=float, nargs=2, default=[3.0, 12.0])
    p.add_argument("--var-batch", type=int, default=16)
    p.add_argument("--var-rounds", type=int, default=2)
    p.add_argument("--scale-seconds", type=float, nargs="+", default=[2, 4, 8, 16, 32, 64])
    p.add_argument("--scale-rounds", type=int, default=3)
    p.add_argument("--sections", nargs="+", default=["fixed", "variable", "scaling", "memory"])
    p.add_argument("--compile", action="store_true", help="add a torch.compile variant")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.preset, args.n, args.seconds, args.rounds = "tiny", 4, 2.0, 2
        args.var_n, args.var_rounds, args.var_seconds = 9, 1, [1.0, 3.0]
        args.scale_seconds, args.scale_rounds = [1, 2], 1
    sc.setup_threads(args.threads)
    if args.child:
        child(args)
        return 0
    print(f"<!-- python -m bench.speed.extract {' '.join(argv or sys.argv[1:])} -->")
    print(f"Machine: {sc.machine_line()}; onnxruntime threads {args.threads}\n")
    out: dict = {"machine": sc.machine_line(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="arw_extract_") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        v = Variants(args.preset, args.threads, workdir, args.compile)
        print(f"(set-up: {time.perf_counter() - start:.0f} s)\n")
        for name in args.sections:
            start = time.perf_counter()
            if name == "fixed":
                text = section_fixed(v, args, out)
            elif name == "variable":
                text = section_variable(v, args, out, workdir)
            elif name == "scaling":
                text = section_scaling(v, args, out)
            else:
                text = section_memory(v, args, out, workdir)
            print(text)
            print(f"\n({name}: {time.perf_counter() - start:.0f} s)\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

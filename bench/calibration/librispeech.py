"""Decision-threshold fairness on real speech: calibration on ``librispeech-mini``.

``../shared/data/librispeech-mini`` holds 251 ``train-clean-100`` speakers (one clip each,
1.6-17 s) and 10 ``test-other`` speakers (10 clips each), with their genders. This script:

1. cuts every clip into 2-s segments (a last piece of at least 1 s is kept) and writes them
   as a manifest of Kaldi-style segments (``start``/``duration``; no audio is copied);
2. splits the speakers by a seeded, gender-stratified draw: the 10 ``test-other`` speakers
   plus 51 ``train-clean-100`` ones are the **test** speakers (61), 60 more (30 women, 30
   men) the **calibration** speakers, the rest (140) the training speakers;
3. trains the demo's narrow ECAPA on the training speakers (``arw-sv train demo``,
   ``--steps``), embeds the test and calibration segments;
4. scores every pair of test segments (``arw-sv trials`` with quotas above the supply);
5. runs ``bench.calibration.experiment`` (every method, the gender oracle, speaker-bootstrap
   intervals) and writes ``summary.md`` and ``gender_rates.png``: per-gender FMR and FNMR
   at the global EER and FMR-1% thresholds, raw cosine against each calibration method.

Every step is skipped when its output exists, so a rerun resumes where it stopped (the
training resumes from its last checkpoint). The limits of the corpus (one chapter per
speaker, so every target trial is same-session; 30 calibration speakers per gender) are in
its README; the numbers show that the pipeline works on real speech, not a tuned result.

Usage::

    python -m bench.calibration.librispeech --out runs/librispeech-cal [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / ".." / "shared" / "data" / "librispeech-mini" / "LibriSpeech"
SEGMENT_S, MIN_LAST_S = 2.0, 1.0
THRESHOLDS = {"0.001": "FMR 0.1%", "0.01": "FMR 1%", "eer": "global EER"}
N_TEST_EXTRA, N_CAL_PER_GENDER = 51, 30


def segments(manifest) -> list:
    """Each clip cut into ``SEGMENT_S`` pieces (a last piece of at least ``MIN_LAST_S``)."""
    out = []
    for u in manifest:
        n_full = int(u.duration // SEGMENT_S)
        pieces = [(k * SEGMENT_S, SEGMENT_S) for k in range(n_full)]
        rest = u.duration - n_full * SEGMENT_S
        if rest >= MIN_LAST_S or not pieces:
            pieces.append((n_full * SEGMENT_S, rest if pieces else u.duration))
        stem = u.utt_id.rsplit(".", 1)[0]
        for k, (start, duration) in enumerate(pieces):
            out.append(replace(u, utt_id=f"{stem}-{k:03d}", start=start, duration=duration))
    return out


def assign_splits(utts: list, seed: int) -> list:
    """test-other speakers and ``N_TEST_EXTRA`` others -> test; ``N_CAL_PER_GENDER`` per
    gender -> cal; the rest -> dev. Gender-stratified, seeded."""
    rng = np.random.default_rng(seed)
    gender = {u.speaker: u.gender for u in utts}
    test = {u.speaker for u in utts if u.split == "test"}
    pool = sorted({u.speaker for u in utts} - test)
    by_gender = {g: [s for s in pool if gender[s] == g] for g in ("f", "m")}
    for g in by_gender:
        by_gender[g] = list(rng.permutation(by_gender[g]))
    cal = set(by_gender["f"][:N_CAL_PER_GENDER] + by_gender["m"][:N_CAL_PER_GENDER])
    rest = [s for g in ("f", "m") for s in by_gender[g][N_CAL_PER_GENDER:]]
    extra = rng.permutation(sorted(rest))[:N_TEST_EXTRA]
    test |= set(extra)
    split = {s: "test" if s in test else "cal" if s in cal else "dev" for s in gender}
    return [replace(u, split=split[u.speaker]) for u in utts]


def run(*argv: str) -> None:
    print("+ arw-sv", " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "arw_sv", *argv], check=True, cwd=ROOT)


def _bounds(entry: dict, key: str) -> tuple[float, float]:
    """The bootstrap interval of a rate, or the rate itself twice when there is none."""
    b = (entry.get("ci") or {}).get(key) or {}
    if b.get("low") is None:
        return entry[key], entry[key]
    return b["low"], b["high"]


def plot_rates(results: dict, methods: list[str], path: Path) -> None:
    """Per-gender FMR and FNMR at the two global thresholds, raw and after each method,
    with speaker-bootstrap intervals as error bars."""
    from matplotlib.figure import Figure

    panels = [("eer", "fmr"), ("eer", "fnmr"), ("0.01", "fmr"), ("0.01", "fnmr")]
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, len(panels))
    width = 0.8 / len(methods)
    for ax, (thr, rate) in zip(axes, panels, strict=True):
        genders = sorted(results["raw"][f"gender@{thr}"]["rates"])
        for j, name in enumerate(methods):
            rates = results[name][f"gender@{thr}"]["rates"]
            ys = [100 * rates[g][rate] for g in genders]
            lo = [100 * _bounds(rates[g], rate)[0] for g in genders]
            hi = [100 * _bounds(rates[g], rate)[1] for g in genders]
            err = np.array([np.subtract(ys, lo), np.subtract(hi, ys)]).clip(min=0)
            xs = np.arange(len(genders)) + (j - (len(methods) - 1) / 2) * width
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=name)
        ax.set_xticks(range(len(genders)), genders)
        label = "global EER" if thr == "eer" else "overall FMR 1%"
        ax.set_title(f"{rate.upper()} at the {label} threshold", fontsize=9)
        ax.set_ylabel("%")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def prepare(out: Path, corpus: Path, seed: int) -> tuple[Path, dict]:
    """``out/all.csv``, the segments with their splits (made once), and per split the
    number of speakers and segments."""
    from arw_sv.data.corpora import read_librispeech
    from arw_sv.data.manifest import read_manifest, write_manifest

    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "all.csv"
    if not manifest.is_file():
        write_manifest(assign_splits(segments(read_librispeech(corpus)), seed), manifest)
    utts = read_manifest(manifest)
    counts = {
        split: (len({u.speaker for u in utts if u.split == split}),
                sum(u.split == split for u in utts))
        for split in ("dev", "cal", "test")
    }  # fmt: skip
    print("speakers, segments per split:", counts, flush=True)
    return manifest, counts


def train_model(folder: Path, manifest: Path, steps: int, threads: int, seed: int,
                overrides: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """The demo's narrow ECAPA trained ``steps`` on the dev split (resumed when stopped);
    returns its last checkpoint."""
    last = folder / "checkpoints" / f"step_{steps}.pt"
    if not last.is_file():
        resume = ["--resume"] if any((folder / "checkpoints").glob("step_*.pt")) else []
        run("train", "demo", f"data.train_manifest={manifest}", f"train.out_dir={folder}",
            f"train.steps={steps}", f"train.threads={threads}", f"train.seed={seed}",
            *overrides, "--quiet", *resume)  # fmt: skip
    return last


def test_trials(out: Path, manifest: Path) -> Path:
    """Every pair of test segments as a trial (``out/trials.txt``, made once)."""
    trials = out / "trials.txt"
    if not trials.is_file():
        run("trials", str(manifest), "--split", "test", "--targets", "100000", "--within",
            "100000", "--across", "100000", "--max-per-speaker", "0", "--out", str(trials))  # fmt: skip
    return trials


def parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options every librispeech-mini driver takes (``out``: the default ``--out``)."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=200)
    return p


def main() -> None:
    args = parser(__doc__, "runs/librispeech-cal").parse_args()

    out = args.out.resolve()
    manifest, counts = prepare(out, args.corpus, args.seed)
    last = train_model(out / "train", manifest, args.steps, args.threads, args.seed)
    for split in ("test", "cal"):
        npz = out / f"{split}.npz"
        if not npz.is_file():
            run("embed", str(last), "--manifest", str(manifest), "--split", split,
                "--out", str(npz), "--quiet")  # fmt: skip
    trials = test_trials(out, manifest)
    cal_out = out / "calibration"
    subprocess.run(
        [sys.executable, "-m", "bench.calibration.experiment", "--test", str(out / "test.npz"), "--cal",
         str(out / "cal.npz"), "--trials", str(trials), "--meta", str(manifest), "--out",
         str(cal_out), "--clusters", "4", "16", "--oracle-key", "gender", "--bootstrap",
         str(args.bootstrap), "--plot-fmr", "asnorm_half_fsn_k16", "asnorm_half_quantile_k16"],
        check=True, cwd=ROOT,
    )  # fmt: skip
    results = json.loads((cal_out / "results.json").read_text())
    methods = [m for m in ("raw", "default", "default_quantile", "asnorm_half_fsn_k16",
                           "asnorm_half_quantile_k16", "asnorm_half", "fsn_k4", "oracle")
               if m in results and "error" not in results[m]]  # fmt: skip
    lines = [
        f"librispeech-mini: {counts['test'][0]} test speakers ({counts['test'][1]} segments), "
        f"{counts['cal'][0]} calibration speakers, {counts['dev'][0]} training speakers; "
        f"{args.steps} training steps. Rates in %, speaker-bootstrap 95% intervals.",
        "",
        "| method | EER % | minDCF | Cllr | threshold | FMR f | FMR m | FNMR f | FNMR m "
        "| FMR max/min | FNMR max/min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def rate(entry, key):
        lo, hi = _bounds(entry, key)
        return f"{100 * entry[key]:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"

    for name in methods:
        r = results[name]
        for thr in ("0.001", "0.01", "eer"):
            if f"gender@{thr}" not in r:
                continue
            d = r[f"gender@{thr}"]
            rates = d["rates"]
            lines.append(
                f"| {name} | {100 * r['eer']:.2f} | {r['min_dcf']:.3f} | {r['cllr']:.3f} | "
                f"{THRESHOLDS[thr]} | {rate(rates['f'], 'fmr')} | "
                f"{rate(rates['m'], 'fmr')} | {rate(rates['f'], 'fnmr')} | "
                f"{rate(rates['m'], 'fnmr')} | {d['fmr_ratio']:.2f} | {d['fnmr_ratio']:.2f} |"
            )
    errors = {m: results[m]["error"] for m in results if "error" in results[m]}
    if errors:
        lines += ["", "Methods refused on this calibration set:", ""]
        lines += [f"- {m}: {e}" for m, e in errors.items()]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "summary.md", text)
    print(text)
    plot_rates(results, methods, out / "gender_rates.png")


if __name__ == "__main__":
    main()

"""Calibration proxy for the synthetic corpus: a model-free baseline EER, overall and per group.

Features are the mean and standard deviation over frames of 30 MFCCs (from 40 log-mel
bands), projected by an LDA trained on the dev speakers, scored by cosine on
``trials.txt``. No neural network: if this baseline is near 0% the corpus is trivial, if
it is near 50% the speakers are indistinguishable. Also reports same-session targets
against the cross-session targets of the trial list, which shows how much the channel
matters.

    python -m bench.fairness.synth_proxy data/synth          # a corpus from `arw-sv synth`
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.fft import dct
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import roc_curve

SR, N_FFT, HOP, N_MELS, N_MFCC = 16000, 512, 160, 40, 30


def mel_filterbank() -> np.ndarray:
    """Triangular mel filters. Shape: (40, 257)."""
    mel = np.linspace(0, 2595 * np.log10(1 + 8000 / 700), N_MELS + 2)
    hz = 700 * (10 ** (mel / 2595) - 1)
    bins = np.fft.rfftfreq(N_FFT, 1 / SR)
    fb = np.zeros((N_MELS, len(bins)))
    for m in range(N_MELS):
        lo, mid, hi = hz[m : m + 3]
        fb[m] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)
    return fb


def utterance_features(path: Path, fb: np.ndarray) -> np.ndarray:
    """Mean and sd of MFCCs over the frames. Shape: (60,)."""
    x = sf.read(path, dtype="float32")[0]
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * np.hamming(N_FFT)
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    mfcc = dct(np.log(power @ fb.T + 1e-8), norm="ortho", axis=-1)[:, :N_MFCC]
    return np.concatenate([mfcc.mean(0), mfcc.std(0)])


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate from the ROC curve."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    return float((fpr[i] + fnr[i]) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    args = parser.parse_args()
    root = args.corpus
    meta = [line.split("\t") for line in (root / "vox1_meta.csv").read_text().splitlines()[1:]]
    spk_info = {m[0]: (m[2], m[3], m[4]) for m in meta}
    wavs = sorted((root / "wav").rglob("*.wav"))
    rel = [str(p.relative_to(root / "wav")) for p in wavs]
    start = time.perf_counter()
    fb = mel_filterbank()
    feats = np.stack([utterance_features(p, fb) for p in wavs])
    print(f"features: {len(wavs)} utterances in {time.perf_counter() - start:.0f} s")
    spk = np.array([r.split("/")[0] for r in rel])
    is_dev = np.array([spk_info[s][2] == "dev" for s in spk])
    mu, sd = feats[is_dev].mean(0), feats[is_dev].std(0) + 1e-8
    z = (feats - mu) / sd
    lda = LinearDiscriminantAnalysis(n_components=min(z.shape[1], len(set(spk[is_dev])) - 1))
    emb = lda.fit(z[is_dev], spk[is_dev]).transform(z)
    emb -= emb[is_dev].mean(0)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = {r: i for i, r in enumerate(rel)}

    trials = [line.split() for line in (root / "trials.txt").read_text().splitlines()]
    labels = np.array([int(t[0]) for t in trials])
    a = np.array([index[t[1]] for t in trials])
    b = np.array([index[t[2]] for t in trials])
    scores = np.sum(emb[a] * emb[b], axis=1)
    print(
        f"overall EER {100 * eer(labels, scores):.1f}% on {len(trials)} trials ({labels.sum()} targets)"
    )
    enroll = [spk_info[t[1].split("/")[0]] for t in trials]
    other = [spk_info[t[2].split("/")[0]] for t in trials]
    same_cell = np.array([e[:2] == o[:2] for e, o in zip(enroll, other, strict=True)])
    print(
        f"  hard (within-cell non-targets only) EER {100 * eer(labels[same_cell], scores[same_cell]):.1f}%"
    )
    enroll_spk = np.array([t[1].split("/")[0] for t in trials])
    boot = np.random.default_rng(0)
    for col, name in ((1, "nationality"), (0, "gender")):
        for group in sorted({e[col] for e in enroll}):
            mask = np.array([e[col] == group for e in enroll])
            # 95% interval from resampling the group's enrollment speakers with replacement.
            spks = np.unique(enroll_spk[mask])
            rows = {s: np.flatnonzero(mask & (enroll_spk == s)) for s in spks}
            draws = []
            for _ in range(200):
                pick = np.concatenate([rows[s] for s in boot.choice(spks, len(spks))])
                draws.append(eer(labels[pick], scores[pick]))
            lo, hi = np.percentile(draws, [2.5, 97.5])
            print(
                f"  {name} {group:>6}: EER {100 * eer(labels[mask], scores[mask]):.1f}% "
                f"[{100 * lo:.1f}, {100 * hi:.1f}] ({len(spks)} speakers)"
            )

    # Same-session targets vs the (cross-session) targets of the trial list, same non-targets.
    sess = np.array([r.split("/")[1] for r in rel])
    test_idx = np.flatnonzero(~is_dev)
    same = [(i, j) for i in test_idx for j in test_idx if i < j and sess[i] == sess[j]]
    same_scores = np.array([emb[i] @ emb[j] for i, j in same])
    non = scores[labels == 0]
    both = np.concatenate([np.ones(len(same_scores)), np.zeros(len(non))])
    print(
        f"  same-session targets EER {100 * eer(both, np.concatenate([same_scores, non])):.1f}% "
        f"(cross-session: {100 * eer(labels, scores):.1f}%)"
    )


if __name__ == "__main__":
    main()

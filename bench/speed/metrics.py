"""Speed of the evaluation against SpeechBrain and scikit-learn (a benchmark, not a test).

Synthesises a VoxCeleb1-H-sized trial list: 550,894 trials over the VoxCeleb1 speakers
(real genders and nationalities from vox1_meta.csv), both sides of every trial in the same
gender x nationality cell with at least 5 speakers (as in VoxCeleb1-H), about half target,
about 145,000 utterances, with cosine scores of synthetic 192-dim embeddings that carry
speaker and cell structure. Then times:

- SpeechBrain 1.1 ``EER`` and ``minDCF`` on a 37,611-trial subset (the size of
  VoxCeleb1-O); with ``--full`` also SpeechBrain's EER on all 550,894 trials (minutes;
  its minDCF is not run there: it materialises a thresholds x trials matrix and runs out
  of memory);
- scikit-learn ``roc_curve`` EER on both sizes;
- ours: ``eer``, ``min_dcf``, the full report without plots (overall EER, both minDCFs,
  gender / nationality / gender x nationality groups, disparity, FaDR, GARBE), the same
  with 1,000 speaker resamples, cosine scoring, and AS-norm against a 5,000-embedding cohort.

Usage::

    .venv/bin/python -m bench.speed.metrics            # --quick (default), about a minute
    .venv/bin/python -m bench.speed.metrics --full     # adds SpeechBrain EER on 550k
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from arw_sv.data.meta import read_speaker_meta
from arw_sv.data.trials import Trials, read_scores, score_trial_list, write_scores
from arw_sv.evaluate import evaluate_scores
from arw_sv.metrics import as_norm, eer, min_dcf

N_TRIALS_H = 550_894
N_TRIALS_O = 37_611
META = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "voxceleb" / "vox1_meta.csv"


def synthesise(meta_path: Path, seed: int = 0, n_trials: int = N_TRIALS_H, dim: int = 192):
    """A VoxCeleb1-H-like trial list with embeddings; returns (trials, ids, matrix, meta)."""
    rng = np.random.default_rng(seed)
    meta = read_speaker_meta(meta_path)
    speakers = list(meta)
    cell_of = [f"{meta[s].gender}/{meta[s].nationality}" for s in speakers]
    cells, cell_idx = np.unique(cell_of, return_inverse=True)
    sizes = np.bincount(cell_idx)
    keep = sizes[cell_idx] >= 5
    speakers = [s for s, k in zip(speakers, keep, strict=True) if k]
    cell_idx = np.unique(cell_idx[keep], return_inverse=True)[1]
    n_spk = len(speakers)
    n_utts = np.clip(rng.poisson(120, n_spk), 20, None)
    first = np.concatenate(([0], np.cumsum(n_utts)))
    owner = np.repeat(np.arange(n_spk), n_utts)
    ids = [
        f"{speakers[s]}/v{j // 8:04d}/{j % 8 + 1:05d}.wav"
        for s, j in zip(
            owner.tolist(), (np.arange(owner.size) - first[owner]).tolist(), strict=True
        )
    ]
    # Embeddings: cell direction + speaker direction + utterance noise, with a per-speaker
    # noise level so that some speakers (and cells) are harder than others.
    cell_dir = rng.normal(size=(cells.size, dim))
    spk_dir = 0.6 * cell_dir[cell_idx] + rng.normal(size=(n_spk, dim))
    noise = rng.uniform(1.0, 1.7, n_spk)[owner, None]
    matrix = (spk_dir[owner] + noise * rng.normal(size=(owner.size, dim))).astype(np.float32)

    n_tar = n_trials // 2
    spk_t = rng.integers(0, n_spk, n_tar)
    u1 = first[spk_t] + rng.integers(0, n_utts[spk_t])
    u2 = first[spk_t] + (u1 - first[spk_t] + 1 + rng.integers(0, n_utts[spk_t] - 1)) % n_utts[spk_t]
    n_non = n_trials - n_tar
    members = [np.flatnonzero(cell_idx == c) for c in range(cells.size)]
    spk_a = rng.integers(0, n_spk, n_non)
    pos = rng.integers(0, sizes.max(), n_non)
    spk_b = np.array(
        [
            members[cell_idx[a]][p % members[cell_idx[a]].size]
            for a, p in zip(spk_a, pos, strict=True)
        ]
    )
    clash = spk_b == spk_a
    spk_b[clash] = [
        members[cell_idx[a]][
            (np.flatnonzero(members[cell_idx[a]] == a)[0] + 1) % members[cell_idx[a]].size
        ]
        for a in spk_a[clash]
    ]
    v1 = first[spk_a] + rng.integers(0, n_utts[spk_a])
    v2 = first[spk_b] + rng.integers(0, n_utts[spk_b])
    enroll = np.concatenate([u1, v1])
    test = np.concatenate([u2, v2])
    labels = np.concatenate([np.ones(n_tar, np.int8), np.zeros(n_non, np.int8)])
    order = rng.permutation(n_trials)
    trials = Trials(labels[order], [ids[i] for i in enroll[order]], [ids[i] for i in test[order]])
    return trials, ids, matrix, meta


def timed(fn, repeat: int = 1):
    """Best wall time of ``repeat`` calls, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def sklearn_eer(scores, labels) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1 - tpr
    k = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[k] + fnr[k]) / 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick", action="store_true", help="SpeechBrain on 37,611 trials only (default)"
    )
    mode.add_argument(
        "--full", action="store_true", help="also SpeechBrain EER on 550,894 trials (minutes)"
    )
    parser.add_argument("--meta", type=Path, default=META)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    from speechbrain.utils.metric_stats import EER as sb_eer
    from speechbrain.utils.metric_stats import minDCF as sb_min_dcf

    t0 = time.perf_counter()
    trials, ids, matrix, meta = synthesise(args.meta)
    print(
        f"synthesised {len(trials):,} trials, {len(ids):,} utterances in {time.perf_counter() - t0:.1f} s"
    )
    t_score, (trials, scores, _) = timed(lambda: score_trial_list(trials, (ids, matrix)))
    labels = trials.labels
    rng = np.random.default_rng(1)
    small = np.sort(rng.choice(len(trials), N_TRIALS_O, replace=False))
    s_small, l_small = scores[small], labels[small]
    rows: list[tuple[str, str, float, float | None]] = []  # (what, size, seconds, peer seconds)

    def torch_split(s, lab):
        s = torch.as_tensor(s, dtype=torch.float32)
        return s[torch.as_tensor(lab == 1)], s[torch.as_tensor(lab == 0)]

    pos, neg = torch_split(s_small, l_small)
    t_sb_eer, sb_val = timed(lambda: sb_eer(pos, neg))
    t_sb_dcf, sb_dcf = timed(lambda: sb_min_dcf(pos, neg, p_target=0.01))
    t_sk_small, sk_small = timed(lambda: sklearn_eer(s_small, l_small), 3)
    t_our_small, our_small = timed(lambda: eer(s_small, l_small), 3)
    t_our_dcf_small, our_dcf_small = timed(lambda: min_dcf(s_small, l_small, 0.01), 3)
    print(
        f"37,611: EER ours {our_small[0]:.6f} sklearn {sk_small:.6f} SpeechBrain {sb_val[0]:.6f}; "
        f"minDCF ours x 0.01 {our_dcf_small[0] * 0.01:.6f} SpeechBrain {sb_dcf[0]:.6f}"
    )
    rows += [
        ("EER", "37,611", t_our_small, t_sb_eer),
        ("minDCF (p 0.01)", "37,611", t_our_dcf_small, t_sb_dcf),
    ]

    t_sk, sk_val = timed(lambda: sklearn_eer(scores, labels), 3)
    t_our, our_val = timed(lambda: eer(scores, labels), 3)
    t_dcf, _ = timed(lambda: min_dcf(scores, labels, 0.01), 3)
    print(f"550,894: EER ours {our_val[0]:.6f} sklearn {sk_val:.6f}")
    t_sb_full = None
    if args.full:
        pos, neg = torch_split(scores, labels)
        t_sb_full, sb_full = timed(lambda: sb_eer(pos, neg))
        print(f"550,894: SpeechBrain EER {sb_full[0]:.6f} in {t_sb_full:.1f} s")
    rows += [("EER", "550,894", t_our, t_sb_full), ("minDCF (p 0.01)", "550,894", t_dcf, None)]

    # The report runs on the trials as read back from a score file: freshly parsed id
    # strings, as in real use (the synthetic lists share string objects, which is faster).
    with tempfile.TemporaryDirectory() as tmp:
        write_scores(Path(tmp) / "scores.txt", trials, scores)
        t_read, (parsed, parsed_scores) = timed(lambda: read_scores(Path(tmp) / "scores.txt"))

    def report(n_boot):
        return evaluate_scores(
            parsed_scores, parsed.labels, parsed.enroll, parsed.test, meta, bootstrap=n_boot
        )

    t_report, rep = timed(lambda: report(0), 3)
    t_boot, rep_b = timed(lambda: report(args.bootstrap))
    n_groups = sum(len(s["groups"]) for s in rep["groups"].values())
    rows += [
        (f"full report, no plots ({n_groups} groups)", "550,894", t_report, None),
        (f"  + bootstrap {args.bootstrap} speaker resamples", "550,894", t_boot - t_report, None),
        ("read_scores (parse the score file)", "550,894", t_read, None),
        ("cosine scoring from embeddings", "550,894", t_score, None),
    ]
    cohort = np.random.default_rng(2).normal(size=(5000, matrix.shape[1])).astype(np.float32)
    row = {u: i for i, u in enumerate(ids)}
    e_idx = np.array([row[u] for u in trials.enroll])
    t_idx = np.array([row[u] for u in trials.test])
    t_as, _ = timed(lambda: as_norm(scores, e_idx, t_idx, matrix, cohort, top_n=300))
    n_used = np.unique(np.concatenate([e_idx, t_idx])).size
    rows.append((f"AS-norm, cohort 5,000, top 300 ({n_used:,} utterances)", "550,894", t_as, None))

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"overall EER {100 * rep['overall']['eer']:.3f} %, bootstrap CI {rep_b['overall']['ci']['eer']}"
    )
    print(
        "\n| what | trials | ours (s) | SpeechBrain (s) | speed-up | scikit-learn roc_curve (s) |"
    )
    print("|---|---|---|---|---|---|")
    sk = {"37,611": t_sk_small, "550,894": t_sk}
    for what, size, ours, peer in rows:
        peer_s = "n/a" if peer is None else f"{peer:.3f}"
        ratio = "n/a" if peer is None else f"{peer / ours:,.0f}x"
        sk_s = f"{sk[size]:.3f}" if what == "EER" else ""
        print(f"| {what} | {size} | {ours:.3f} | {peer_s} | {ratio} | {sk_s} |")


if __name__ == "__main__":
    main()

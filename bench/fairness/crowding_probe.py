"""Does speaker-level crowding in an early ERM model's embedding space flag the minority?
(issue 29, fairness-log S7; the labels only judge).

For one scratch-protocol corpus and one kept ERM checkpoint: every training utterance is
embedded, each speaker's crowding (mean cosine of its mean embedding to its k nearest other
speakers, k = 3, 5, 10) computed, and India's share of the 5, 10, 20 and 33% most crowded
speakers printed, with India's mean crowding rank (0: most crowded).

    python -m bench.fairness.crowding_probe runs/scratch/representation/corpus100 300
"""

import argparse
import json

import numpy as np

from arw_sv.data.cohort_sampling import crowding
from arw_sv.data.manifest import read_manifest
from arw_sv.metrics.cohorts import speaker_means
from arw_sv.prepass import embed_training_set


def crowding_shares(corpus: str, step: int, minority: str = "India") -> dict:
    """The minority's share of the most crowded training speakers at ERM's ``step``."""
    m = read_manifest(f"{corpus}/manifests/train.csv")
    spk = np.asarray(m.speaker_indices())
    ck = f"{corpus}/runs/erm/seed0/train/checkpoints/step_{step}.pt"
    means = speaker_means(embed_training_set(ck, m), spk, len(m.speakers))
    nat = {u.speaker: u.nationality for u in m}
    is_minority = np.array([nat[s] == minority for s in m.speakers])
    out = {"share_of_speakers": round(float(is_minority.mean()), 3)}
    for k in (3, 5, 10):
        c = crowding(means, k)
        order = np.argsort(-c)
        row = {f"top{q}%": round(float(is_minority[order[: int(len(c) * q / 100)]].mean()), 3)
               for q in (5, 10, 20, 33)}  # fmt: skip
        rank = np.empty(len(c))
        rank[order] = np.arange(len(c)) / len(c)  # 0: the most crowded
        row["mean_rank"] = round(float(rank[is_minority].mean()), 3)
        out[f"k={k}"] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("corpus", help="a scratch-protocol corpus folder")
    p.add_argument("step", type=int, help="a kept ERM checkpoint's step")
    p.add_argument("--minority", default="India", help="the nationality judged")
    args = p.parse_args()
    shares = crowding_shares(args.corpus, args.step, args.minority)
    print(args.corpus, "step", args.step, json.dumps(shares))


if __name__ == "__main__":
    main()

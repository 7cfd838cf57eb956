"""Does the ranking of methods survive fewer test speakers? A check of a cheaper benchmark.

For one benchmark corpus, every finished run's ``scores.txt`` is evaluated on the trials of
all test speakers and on those of a random ``--fraction`` of them (drawn per nationality x
gender cell, trials kept when both speakers are drawn), ``--draws`` times. Printed per
draw: each method's overall and worst-nationality EER on the subset, and Kendall's tau
between the methods' order on the full set and on the subset (1 = the same ranking).

    python -m bench.fairness.subsample --corpus runs/ft/crowding/corpus100 --fraction 0.5 --draws 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _metrics(scores, trials, meta, keep=None) -> tuple[float, float]:
    from arw_sv.evaluate import evaluate_scores

    if keep is not None:
        scores = scores[keep]
        labels = np.asarray(trials.labels)[keep]
        enroll = [trials.enroll[i] for i in np.flatnonzero(keep)]
        test = [trials.test[i] for i in np.flatnonzero(keep)]
    else:
        labels, enroll, test = np.asarray(trials.labels), trials.enroll, trials.test
    report = evaluate_scores(scores, labels, enroll, test, meta, min_speakers=5)
    groups = report["groups"]["nationality"]["groups"].values()
    worst = max(g["eer"] for g in groups if g.get("eer") is not None)
    return float(report["overall"]["eer"]), float(worst)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.fairness.subsample``."""
    from scipy.stats import kendalltau

    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import read_scores

    p = argparse.ArgumentParser(prog="python -m bench.fairness.subsample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--corpus", required=True, help="a corpus folder of the benchmark")
    p.add_argument("--seed", type=int, default=0, help="training seed of the runs")
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--draws", type=int, default=5)
    args = p.parse_args(argv)
    corpus = Path(args.corpus)
    meta = read_speaker_meta(corpus / "corpus" / "vox1_meta.csv")
    runs = {
        path.parents[1].name: read_scores(path)
        for path in sorted(corpus.glob(f"runs/*/seed{args.seed}/scores.txt"))
    }
    if len(runs) < 3:
        raise SystemExit(f"{corpus}: fewer than 3 finished runs")
    trials = next(iter(runs.values()))[0]
    speakers = sorted({u.split("/")[0] for u in (*trials.enroll, *trials.test)})
    cells: dict[tuple, list[str]] = {}
    for s in speakers:
        info = meta[s]
        cells.setdefault((info.nationality, info.gender), []).append(s)
    enroll = np.array([u.split("/")[0] for u in trials.enroll])
    test = np.array([u.split("/")[0] for u in trials.test])
    full = {m: _metrics(sc, tr, meta) for m, (tr, sc) in runs.items()}
    names = list(full)
    print(f"{len(names)} methods, {len(speakers)} test speakers, {len(enroll)} trials")
    print("full: " + ", ".join(f"{m} {100 * e:.2f}/{100 * w:.2f}" for m, (e, w) in full.items()))
    rng = np.random.default_rng(0)
    taus = {"eer": [], "worst": []}
    for draw in range(args.draws):
        chosen = set()
        for members in cells.values():
            k = max(1, round(args.fraction * len(members)))
            chosen.update(rng.choice(members, size=k, replace=False).tolist())
        keep = np.isin(enroll, list(chosen)) & np.isin(test, list(chosen))
        sub = {m: _metrics(sc, tr, meta, keep) for m, (tr, sc) in runs.items()}
        for i, key in enumerate(taus):
            tau = kendalltau([full[m][i] for m in names], [sub[m][i] for m in names])[0]
            taus[key].append(float(tau))
        print(f"draw {draw}: {keep.sum()} trials; tau overall {taus['eer'][-1]:+.2f}, "
              f"worst nationality {taus['worst'][-1]:+.2f}")  # fmt: skip
    print(f"mean Kendall tau over {args.draws} draws: overall EER "
          f"{np.mean(taus['eer']):+.2f}, worst-nationality EER {np.mean(taus['worst']):+.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

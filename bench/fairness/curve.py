"""The learning curve of finished runs: every kept checkpoint evaluated on the corpus's test
trials (issue 29: the budget at which the oracle's gain appears).

    python -m bench.fairness.curve runs/scratch/representation/corpus100 \\
        --methods erm erm_balanced --seed 0

For each method's ``runs/<method>/seed<k>/train/checkpoints/step_*.pt`` (a run keeps them all
with ``train.keep_checkpoints=0``): embed the test set, score the trials, evaluate, and write
``curve.json`` in the run folder (resumable: a step already there is not recomputed), then
``curve.md`` and ``curve.png`` in the corpus folder: the worst group's EER per step per method,
and each method's change against ERM at the same step. The point at step s is the model s
steps into the run's own schedule, not a run trained for s steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from arw_sv.atomic import atomic_write_text
from bench.fairness.criterion import BASELINE, worst_and_spread


def _corpus_file(corpus: Path, kind: str) -> Path:
    """The generated corpus's trial list or speaker table (``CorpusInfo``'s names)."""
    return corpus / "corpus" / {"trials": "trials.txt", "meta": "vox1_meta.csv"}[kind]


def evaluate_checkpoint(checkpoint: Path, corpus: Path, work: Path) -> dict:
    """The benchmark's metrics (:func:`bench.fairness.runs.run_metrics`) of one checkpoint."""
    from arw_sv.data.manifest import read_manifest
    from arw_sv.data.meta import read_speaker_meta
    from arw_sv.data.trials import read_embeddings, read_trials, score_trials
    from arw_sv.evaluate import evaluate_scores
    from arw_sv.inference import embed_utterances
    from bench.fairness.runs import run_metrics

    test = read_manifest(corpus / "manifests" / "test.csv").subset("test")
    npz = work / f"embeddings_{checkpoint.stem}.npz"
    if not npz.is_file():
        embed_utterances(checkpoint, [u.utt_id for u in test], [u.path for u in test], npz,
                         progress=False)  # fmt: skip
    trials = read_trials(_corpus_file(corpus, "trials"))
    scores = np.asarray(score_trials(trials, read_embeddings(npz)))
    meta = read_speaker_meta(_corpus_file(corpus, "meta"))
    report = evaluate_scores(scores, trials.labels, trials.enroll, trials.test, meta,
                             min_speakers=5, group_rule="both")  # fmt: skip
    npz.unlink()  # the curve keeps the numbers, not the embeddings
    return run_metrics(report)


def run_curve(run_dir: Path, corpus: Path) -> dict[int, dict]:
    """Step -> metrics for every kept checkpoint of one run (cached in ``curve.json``)."""
    path = run_dir / "curve.json"
    done = {int(k): v for k, v in json.loads(path.read_text()).items()} if path.is_file() else {}
    for ckpt in sorted((run_dir / "train" / "checkpoints").glob("step_*.pt"),
                       key=lambda p: int(p.stem.split("_")[1])):  # fmt: skip
        step = int(ckpt.stem.split("_")[1])
        if step not in done:
            done[step] = evaluate_checkpoint(ckpt, corpus, run_dir)
            atomic_write_text(path, json.dumps(done, indent=1))
            print(f"{run_dir}: step {step} EER {100 * done[step]['eer']:.2f}%", flush=True)
    return done


def write_curves(corpus: Path, curves: dict[str, dict[int, dict]], mechanism: str) -> str:
    """``curve.md`` and ``curve.png``: the worst group's EER per step and the change against
    ERM at the same step."""
    steps = sorted(set.intersection(*(set(c) for c in curves.values())))
    lines = [f"# Learning curve ({corpus.name}, {mechanism})", "",
             "Worst group's EER % at each kept checkpoint (overall EER %), and the change "
             f"against {BASELINE} at the same step.", "",
             "| step | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]  # fmt: skip
    for s in steps:
        base = worst_and_spread(curves[BASELINE][s], mechanism)[0] if BASELINE in curves else None
        cells = []
        for m in curves:
            worst = worst_and_spread(curves[m][s], mechanism)[0]
            text = f"{100 * worst:.2f} ({100 * curves[m][s]['eer']:.2f})"
            if base and m != BASELINE:
                text += f", {100 * (worst / base - 1):+.1f}%"
            cells.append(text)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    atomic_write_text(corpus / "curve.md", text)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for m, curve in curves.items():
        ax.plot(steps, [100 * worst_and_spread(curve[s], mechanism)[0] for s in steps], "o-",
                label=f"{m}, worst group")  # fmt: skip
        ax.plot(steps, [100 * curve[s]["eer"] for s in steps], "x--", label=f"{m}, overall")
    ax.set_xlabel("training step")
    ax.set_ylabel("EER (%)")
    ax.set_title(f"Learning curve, {corpus.name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(corpus / "curve.png", dpi=120)
    plt.close(fig)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fairness.curve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("corpus", type=Path, help="a protocol's <mechanism>/corpus<c> folder")
    p.add_argument("--methods", nargs="+", default=[BASELINE, "erm_balanced"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mechanism", default=None, help="default: the corpus's parent folder")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    mechanism = args.mechanism or args.corpus.resolve().parent.name
    curves = {}
    for m in args.methods:
        run_dir = args.corpus / "runs" / m / f"seed{args.seed}"
        if not (run_dir / "train" / "checkpoints").is_dir():
            print(f"error: {run_dir} has no checkpoints", file=sys.stderr)
            return 2
        curves[m] = run_curve(run_dir, args.corpus)
    print(write_curves(args.corpus, curves, mechanism))
    return 0


if __name__ == "__main__":
    sys.exit(main())

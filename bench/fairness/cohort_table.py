"""The seed's held-out cohort table (Dheram et al.) for one ERM model, before any training.

Runs the product's own pre-pass (``data.sampling: cohort_heldout``, arw_sv/prepass.py) on a
benchmark corpus's ERM checkpoint, for each ``--cohorts`` count, and judges what it found
with the labels it never saw (:func:`bench.fairness.runs.cohort_report`): the bottom cohorts' EER
against the rest's, their share of the held-out speakers, and each nationality's share of
the bottom held-out cohorts and of the training speakers they flag for oversampling.

    python -m bench.fairness.cohort_table --corpus runs/ft/representation/corpus100 \\
        --checkpoint runs/ft/representation/corpus100/seed0/erm_pretrain/train/checkpoints/final.pt

Trailing ``k=v`` arguments override the method's config as in its run (the flagged set is
at least the batch slots it fills: ``data.speakers_per_batch`` x ``data.cohort_share``).
Writes ``cohort_table.md`` and ``cohort_table.json`` into ``--out`` (default: the corpus
folder); the pre-pass caches go to ``--out/cohort_table/k<N>/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cohort_table(corpus: Path, checkpoint: Path, cohorts: list[int], top: int, out: Path,
                 seed: int = 0, overrides: tuple[str, ...] = ()) -> list[dict]:  # fmt: skip
    """One row per cohort count: :func:`bench.fairness.runs.cohort_report` of the pre-pass."""
    from arw_sv.config import load_config
    from arw_sv.data.manifest import read_manifest
    from arw_sv.prepass import PREPASS_FILE, sampling_targets
    from bench.common import config_path
    from bench.fairness.runs import cohort_report

    train, held = corpus / "manifests" / "train.csv", corpus / "manifests" / "heldout.csv"
    if not held.is_file():
        raise SystemExit(f"{held}: no held-out speakers (generate the corpus with a cal split)")
    rows = []
    for k in cohorts:
        folder = out / "cohort_table" / f"k{k}"
        folder.mkdir(parents=True, exist_ok=True)
        cfg = load_config(
            config_path("bench_cohort_oversample"),
            [
                f"data.train_manifest={train}",
                "data.sampling=cohort_heldout",
                f"data.heldout_manifest={held}",
                f"data.n_cohorts={k}",
                f"data.cohort_oversample_top={top}",
                f"train.init_checkpoint={checkpoint}",
                f"train.seed={seed}",
                *overrides,
            ],
        )
        sampling_targets(cfg, read_manifest(train), folder)
        rows.append({"cohorts": k, "top": top,
                     **cohort_report(folder / PREPASS_FILE, str(train), str(held))})  # fmt: skip
    return rows


def render(rows: list[dict], minority: str) -> str:
    """The table as markdown, ``minority``'s shares beside the bottom cohorts' numbers."""
    lines = [
        f"| cohorts | bottom | bottom EER % | rest EER % | gap (points) | bottom share of "
        f"held-out speakers | {minority} in the bottom held-out cohorts (of all held-out) | "
        f"{minority} among the flagged training speakers (of all training) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        nat = r["groups"]["nationality"]
        gap = 100 * (r["bottom_eer"] - r["rest_eer"])
        lines.append(
            f"| {r['cohorts']} | {r['top']} | {100 * r['bottom_eer']:.2f} | "
            f"{100 * r['rest_eer']:.2f} | {gap:+.2f} | {r['bottom_share']:.2f} | "
            f"{nat['bottom_heldout'].get(minority, 0):.2f} ({nat['heldout'].get(minority, 0):.2f})"
            f" | {nat['oversampled'].get(minority, 0):.2f} "
            f"({nat['training'].get(minority, 0):.2f}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench.fairness.cohort_table``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--corpus", type=Path, required=True, help="a benchmark corpus folder")
    p.add_argument("--checkpoint", type=Path, required=True, help="the ERM model")
    p.add_argument("--cohorts", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--top", type=int, default=1, help="bottom cohorts flagged")
    p.add_argument("--minority", default="India", help="the nationality to follow")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("overrides", nargs="*", help="config overrides of the method's run (k=v), "
                   "e.g. data.speakers_per_batch=8: the flagged set fills its batch slots")  # fmt: skip
    args = p.parse_args(argv)
    import torch

    from arw_sv.atomic import atomic_write_text

    torch.set_num_threads(args.threads)
    out = args.out or args.corpus
    rows = cohort_table(args.corpus, args.checkpoint, args.cohorts, args.top, out, args.seed,
                        tuple(args.overrides))  # fmt: skip
    text = render(rows, args.minority)
    atomic_write_text(out / "cohort_table.md", text)
    atomic_write_text(out / "cohort_table.json", json.dumps(rows, indent=1))
    print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""EER and fairness evaluation of trial scores: a thin wrapper over ``arw-sv eval``
(``arw_sv.cli.eval``).

Same options as ``arw-sv eval``, e.g.::

    python eval/evaluate.py --scores scores.txt --meta ../shared/data/voxceleb/vox1_meta.csv \
        --bootstrap 1000 --out runs/eval
"""

from arw_sv.cli.eval import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env bash
# H1: the calibration methods on held-out crowding corpus 0, fine-tuning protocol models.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=.
A="$PY -m arw_sv"
OUT=runs/h1
date
$PY -m bench.fairness --protocol finetune --mechanisms crowding --test-corpora 0 --val-seeds \
  --methods erm arw_pw_paironly --synth calibration_speakers_per_cell=50 --jobs 1 --threads 2 \
  --out $OUT --quiet
date
C=$OUT/crowding/corpus0
[ -f $C/manifests/all.csv ] || $A manifest $C/corpus --meta $C/corpus/vox1_meta.csv --splits dev test cal --out $C/manifests/all.csv
[ -f $C/trials_cal.txt ] || $A trials $C/manifests/all.csv --split test --targets 36 --within 500 --across 500 --max-per-speaker 0 --out $C/trials_cal.txt
for m in erm arw_pw_paironly; do for s in 0 1 2; do
  R=$C/runs/$m/seed$s; CK=$(ls $R/train/checkpoints/step_*.pt | sort -V | tail -1)
  [ -f $R/cal_test.npz ] || $A embed $CK --manifest $C/manifests/all.csv --split test --out $R/cal_test.npz --quiet
  [ -f $R/cal_cal.npz ] || $A embed $CK --manifest $C/manifests/all.csv --split cal --out $R/cal_cal.npz --quiet
  $PY -m bench.calibration --test $R/cal_test.npz --cal $R/cal_cal.npz --trials $C/trials_cal.txt \
    --meta $C/manifests/all.csv --out $R/calibration --clusters 16 > $R/calibration.log 2>&1
  date; echo "$m seed$s done"
done; done

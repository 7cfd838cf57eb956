#!/usr/bin/env bash
# The calibration methods on one held-out corpus of one disparity mechanism, with the
# fine-tuning protocol's models (ERM continued and the recommended method, seeds 0-2).
#   [METHODS="erm arw_pw_paironly"] bench/calibration/heldout.sh MECHANISM [CORPUS] [OUT] [THREADS]
# e.g. bench/calibration/heldout.sh crowding 0 runs/h1   (H1 in docs/calibration-log.md)
# Every step is skipped when its output exists, so a rerun resumes where it stopped.
set -euo pipefail
MECH=${1:?mechanism: crowding underrep acoustics gender}
CORPUS=${2:-0}
OUT=${3:-runs/calibration-heldout}
THREADS=${4:-2}
METHODS=${METHODS:-erm arw_pw_paironly}
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=. OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
A="$PY -m arw_sv"
KEY=nationality
[ "$MECH" = gender ] && KEY=gender
date
$PY -m bench.fairness --protocol finetune --mechanisms "$MECH" --test-corpora "$CORPUS" --val-seeds \
  --methods $METHODS --synth calibration_speakers_per_cell=50 --jobs 1 --threads "$THREADS" \
  --out "$OUT" --quiet
date
C=$OUT/$MECH/corpus$CORPUS
[ -f "$C/manifests/all.csv" ] || $A manifest "$C/corpus" --meta "$C/corpus/vox1_meta.csv" --splits dev test cal --out "$C/manifests/all.csv"
[ -f "$C/trials_cal.txt" ] || $A trials "$C/manifests/all.csv" --split test --targets 36 --within 500 --across 500 --max-per-speaker 0 --out "$C/trials_cal.txt"
for m in $METHODS; do for s in 0 1 2; do
  R=$C/runs/$m/seed$s; CK=$(ls "$R"/train/checkpoints/step_*.pt | sort -V | tail -1)
  [ -f "$R/cal_test.npz" ] || $A embed "$CK" --manifest "$C/manifests/all.csv" --split test --out "$R/cal_test.npz" --quiet
  [ -f "$R/cal_cal.npz" ] || $A embed "$CK" --manifest "$C/manifests/all.csv" --split cal --out "$R/cal_cal.npz" --quiet
  $PY -m bench.calibration.experiment --test "$R/cal_test.npz" --cal "$R/cal_cal.npz" --trials "$C/trials_cal.txt" \
    --meta "$C/manifests/all.csv" --out "$R/calibration" --clusters 16 --oracle-key "$KEY" > "$R/calibration.log" 2>&1
  date; echo "$m seed$s done"
done; done
$PY -m bench.calibration.summary "$C"/runs/*/seed*/calibration --grouping "$KEY" --out "$C/calibration_summary.md"

#!/usr/bin/env bash
# C5 (docs/calibration-log.md): the learning curve of the oracle, FSN and the recommended
# back-end against the number of calibration speakers (50 to 1,020), on validation corpus
# seed 100 with C1's model. The corpus is regenerated with 170 calibration speakers per cell;
# every other speaker is drawn as in C1, so C1's model, test embeddings and trials hold.
#   bench/calibration/curve.sh C1_RUN_DIR OUT [THREADS]
# C1_RUN_DIR holds erm/checkpoints/step_600.pt, test.npz and trials_all.txt (C1's commands).
set -euo pipefail
C1=${1:?C1 run folder}
OUT=${2:?output folder}
THREADS=${3:-1}
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=. OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
A="$PY -m arw_sv"
mkdir -p "$OUT"
date
$A synth --out "$OUT/c100big" --preset demo --seed 100 --workers 1 --quiet calibration_speakers_per_cell=170
[ -f "$OUT/all.csv" ] || $A manifest "$OUT/c100big" --meta "$OUT/c100big/vox1_meta.csv" --splits dev test cal --out "$OUT/all.csv"
[ -f "$OUT/cal.npz" ] || $A embed "$C1/erm/checkpoints/step_600.pt" --manifest "$OUT/all.csv" --split cal --out "$OUT/cal.npz" --quiet
date
$PY -m bench.calibration.experiment --test "$C1/test.npz" --cal "$OUT/cal.npz" --trials "$C1/trials_all.txt" \
  --meta "$OUT/all.csv" --out "$OUT/cal" --clusters 16 --curve 50 100 240 500 1020
date

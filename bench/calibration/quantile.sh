#!/usr/bin/env bash
# Issue 28 on one validation corpus (C1's set-up, docs/calibration-log.md): raw cosine vs
# the default back-end (AS-norm + FSN) vs AS-norm + per-region quantile matching, FMR ratio
# at FMR 0.1%, 1% and the EER threshold, fmr_vs_threshold.png, and the learning curve down
# to 30 calibration speakers.
#   [STEPS=600] bench/calibration/quantile.sh [SEED] [OUT] [THREADS]      e.g. bench/calibration/quantile.sh 100 runs/q1
# Every step is skipped when its output exists, so a rerun resumes where it stopped.
set -euo pipefail
SEED=${1:-100}
OUT=${2:-runs/calibration-quantile}
THREADS=${3:-2}
STEPS=${STEPS:-600}  # C1: 600; fewer on a loaded machine (the results must say so)
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=. OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
A="$PY -m arw_sv"
D=$OUT/data
date
[ -f "$D/vox1_meta.csv" ] || $A synth --out "$D" --preset demo --seed "$SEED" calibration_speakers_per_cell=40
[ -f "$OUT/all.csv" ] || $A manifest "$D" --meta "$D/vox1_meta.csv" --splits dev test cal --out "$OUT/all.csv"
CK=$OUT/erm/checkpoints/step_$STEPS.pt
[ -f "$CK" ] || $A train demo data.train_manifest="$OUT/all.csv" train.out_dir="$OUT/erm" train.threads="$THREADS" train.steps="$STEPS"
date
[ -f "$OUT/test.npz" ] || $A embed "$CK" --manifest "$OUT/all.csv" --split test --out "$OUT/test.npz" --quiet
[ -f "$OUT/cal.npz" ] || $A embed "$CK" --manifest "$OUT/all.csv" --split cal --out "$OUT/cal.npz" --quiet
[ -f "$OUT/trials_all.txt" ] || $A trials "$OUT/all.csv" --split test --targets 100000 --within 1000000 \
  --across 1000000 --max-per-speaker 0 --out "$OUT/trials_all.txt"
$PY -m bench.calibration.experiment --test "$OUT/test.npz" --cal "$OUT/cal.npz" --trials "$OUT/trials_all.txt" \
  --meta "$OUT/all.csv" --out "$OUT/cal" --clusters 16 --curve 30 60 120 240 \
  --plot-fmr asnorm_half_fsn_k16 asnorm_half_quantile_k16
date

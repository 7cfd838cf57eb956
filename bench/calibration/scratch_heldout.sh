#!/usr/bin/env bash
# Issue 28 on the from-scratch protocol's ERM models (issue 29's held-out corpora, seeds
# 0-2): raw cosine vs the default back-end vs AS-norm + quantile matching at FMR 0.1%, 1%
# and the EER threshold, and the learning curve down to 30 calibration speakers. The corpus
# is regenerated with 50 calibration speakers per cell (300 in all); every training and test
# speaker is drawn as in the protocol's corpus, so its models and test split hold.
#   bench/calibration/scratch_heldout.sh SCRATCH_OUT MECHANISM CORPUS OUT [THREADS] [SEEDS...]
#   e.g. bench/calibration/scratch_heldout.sh runs/scratch representation 0 runs/q2 1 0 1 2
# Every step is skipped when its output exists, so a rerun resumes where it stopped; a seed
# whose ERM run has not finished is skipped (rerun later).
set -euo pipefail
SCRATCH=$(realpath "${1:?the scratch protocol --out folder}")
MECH=${2:?mechanism}
CORPUS=${3:?corpus seed}
OUT=$(realpath -m "${4:?output folder}")
THREADS=${5:-1}
shift $(($# < 5 ? $# : 5))
SEEDS=${*:-0 1 2}
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH=. OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
A="$PY -m arw_sv"
KEY=nationality
[ "$MECH" = gender ] && KEY=gender
C=$OUT/$MECH/corpus$CORPUS
D=$C/data
mkdir -p "$C"
date
[ -f "$D/vox1_meta.csv" ] || $A synth --out "$D" --preset "bench_$MECH" --seed "$CORPUS" --workers 1 --quiet \
  test_speakers_per_cell=50 calibration_speakers_per_cell=50  # the protocol's test speakers
# The test split must be the protocol corpus's, file for file (the models were scored on it).
P=$SCRATCH/$MECH/corpus$CORPUS/corpus
if [ -d "$P/wav" ]; then
  for f in $(awk -F'\t' '$5=="dev" || $5=="test"' "$P/vox1_meta.csv" | awk '{print $1}' | sed -n '1p;2p;481p;482p;$p'); do
    cmp -s <(cd "$P/wav/$f" && find . -type f | sort | head -5 | xargs md5sum) \
      <(cd "$D/wav/$f" && find . -type f | sort | head -5 | xargs md5sum) \
      || { echo "$D differs from $P ($f)"; exit 1; }
  done
  cmp -s <(awk -F'\t' '$5!="cal"' "$P/vox1_meta.csv") <(awk -F'\t' '$5!="cal"' "$D/vox1_meta.csv") \
    || { echo "$D: training or test speakers differ from $P"; exit 1; }
fi
[ -f "$C/all.csv" ] || $A manifest "$D" --meta "$D/vox1_meta.csv" --splits dev test cal --out "$C/all.csv"
[ -f "$C/trials.txt" ] || $A trials "$C/all.csv" --split test --targets 36 --within 500 --across 500 \
  --max-per-speaker 0 --out "$C/trials.txt"
for s in $SEEDS; do
  RUN=$SCRATCH/$MECH/corpus$CORPUS/runs/erm/seed$s
  if [ ! -f "$RUN/result.json" ]; then echo "seed $s: $RUN not finished, skipped"; continue; fi
  CK=$(ls "$RUN"/train/checkpoints/step_*.pt | sort -V | tail -1)
  R=$C/erm/seed$s
  mkdir -p "$R"
  [ -f "$R/test.npz" ] || $A embed "$CK" --manifest "$C/all.csv" --split test --out "$R/test.npz" --quiet
  [ -f "$R/cal.npz" ] || $A embed "$CK" --manifest "$C/all.csv" --split cal --out "$R/cal.npz" --quiet
  [ -f "$R/calibration/fmr_vs_threshold.png" ] || $PY -m bench.calibration.experiment --test "$R/test.npz" --cal "$R/cal.npz" --trials "$C/trials.txt" \
    --meta "$C/all.csv" --out "$R/calibration" --clusters 16 --oracle-key "$KEY" --curve 30 60 120 200 300 \
    --plot-fmr asnorm_half_fsn_k16 asnorm_half_quantile_k16 --paired 200 > "$R/calibration.log" 2>&1
  date; echo "seed $s done"
done
if ls "$C"/erm/seed*/calibration/results.json > /dev/null 2>&1; then
  $PY -m bench.calibration.summary "$C"/erm/seed*/calibration --grouping "$KEY" --out "$C/calibration_summary.md"
fi

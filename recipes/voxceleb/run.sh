#!/usr/bin/env bash
# VoxCeleb recipe for arw-sv: ECAPA-TDNN, ERM or ARW-PW, evaluated on VoxCeleb1-O/E/H with
# the EER and fairness report. Numbered stages as in WeSpeaker; README.md explains each one.
#
#   bash run.sh --vox1 /data/VoxCeleb1 --vox2 /data/VoxCeleb2 \
#       --vox1_meta /data/vox1_meta.csv --vox2_meta /data/vox2_meta.csv \
#       --musan /data/musan --rirs /data/RIRS_NOISES \
#       --trials_O /data/veri_test2.txt --trials_E /data/list_test_all2.txt \
#       --trials_H /data/list_test_hard2.txt \
#       --config conf/ecapa_c512_arw_pw.yaml --exp exp/ecapa_c512_arw_pw \
#       --nproc_per_node 8 [--stage 2 --stop_stage 6] [train.lr=0.05 ...]
#
# Stages: 1 prepare, 2 train, 3 average, 4 extract, 5 score (and calibrate), 6 evaluate,
#         7 large-margin fine-tuning (with --lm_config), 8 stages 3-6 for the fine-tuned run.
# Arguments of the form section.key=value are config overrides, passed to every training.
# Options accept --name value, --name=value, and - or _ in names (--stop-stage, --stop_stage).
set -euo pipefail

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

stage=1
stop_stage=6
config=$recipe/conf/ecapa_c512_erm.yaml
exp=                      # default: exp/<config name>
data=data
vox1=                     # holds wav/idXXXXX/<video>/<nnnnn>.wav
vox2=                     # holds dev/aac/idXXXXX/<video>/<nnnnn>.m4a
vox1_meta=
vox2_meta=
vox2_wav=                 # converted VoxCeleb2 wavs (default: $data/vox2_wav)
train_set=vox2_dev        # or vox1_dev+vox2_dev (then VoxCeleb1-E/H cannot be evaluated)
musan=                    # the musan/ folder (noise, music, speech)
rirs=                     # the RIRS_NOISES/ folder
trials_O=                 # veri_test2.txt
trials_E=                 # list_test_all2.txt
trials_H=                 # list_test_hard2.txt
jobs=$(nproc 2>/dev/null || echo 4)
nproc_per_node=1          # processes (GPUs) per node
nnodes=1
node_rank=0
master_addr=127.0.0.1
master_port=29500
asnorm=true               # also score with AS-norm (cohort: training speaker means)
asnorm_top_n=300
cohort_per_speaker=3      # training utterances per speaker for the AS-norm cohort
calibrate=true            # fit the recommended calibration (AS-norm + FSN) on data/cal.csv
cal_manifest=             # calibration speakers (default: $data/cal.csv from stage 1)
cal_per_speaker=20        # utterances per calibration speaker
cal_clusters=16           # FSN's k-means clusters
bootstrap=0               # speaker bootstrap resamples for confidence intervals in the report
plots=true                # DET and group-EER plots in the reports
lm_config=                # e.g. conf/ecapa_c512_arw_pw_lm.yaml (stages 7-8)
python=${PYTHON:-python}
overrides=()

while [ $# -gt 0 ]; do
  case "$1" in
    --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
    --*) name=$1; [ $# -ge 2 ] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
         value=$2; shift 2 ;;
    *=*) overrides+=("$1"); shift; continue ;;
    *) echo "run.sh: unexpected argument '$1'" >&2; exit 2 ;;
  esac
  name=${name#--}; name=${name//-/_}
  case "$name" in
    stage|stop_stage|config|exp|data|vox1|vox2|vox1_meta|vox2_meta|vox2_wav|train_set|musan|rirs|\
    trials_O|trials_E|trials_H|jobs|nproc_per_node|nnodes|node_rank|master_addr|master_port|\
    asnorm|asnorm_top_n|cohort_per_speaker|calibrate|cal_manifest|cal_per_speaker|cal_clusters|\
    bootstrap|plots|lm_config|python)
      printf -v "$name" '%s' "$value" ;;
    *) echo "run.sh: unknown option --$name" >&2; exit 2 ;;
  esac
done

[ -n "$exp" ] || exp=exp/$(basename "$config" .yaml)
[ -n "$cal_manifest" ] || cal_manifest=$data/cal.csv
lm_exp=${exp}_lm
declare -A trials=()
[ -n "$trials_O" ] && trials[O]=$trials_O
[ -n "$trials_E" ] && trials[E]=$trials_E
[ -n "$trials_H" ] && trials[H]=$trials_H
trial_names=""
for name in O E H; do [ -z "${trials[$name]:-}" ] || trial_names+="$name "; done

log() { echo "run.sh [$(date +%H:%M:%S)] $*" >&2; }
in_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
need() { [ -n "${!1}" ] || { echo "run.sh: stage $2 needs --$1" >&2; exit 2; }; }
if [ "$stop_stage" -ge 4 ] && [ -z "$trial_names" ]; then
  echo "run.sh: stages 4-8 need at least one of --trials_O, --trials_E, --trials_H" >&2; exit 2
fi

# A command under torchrun when more than one process is asked for, else a plain one.
launch() {
  if [ "$nnodes" -gt 1 ]; then
    "$python" -m torch.distributed.run --nnodes "$nnodes" --node_rank "$node_rank" \
      --master_addr "$master_addr" --master_port "$master_port" \
      --nproc_per_node "$nproc_per_node" "$@"
  elif [ "$nproc_per_node" -gt 1 ]; then
    "$python" -m torch.distributed.run --standalone --nproc_per_node "$nproc_per_node" "$@"
  else
    "$python" "$@"
  fi
}

train() {  # train <config> <exp> [extra overrides...]
  local conf=$1 out=$2; shift 2
  local extra=("data.train_manifest=$data/train.csv" "train.out_dir=$out")
  [ -n "$musan" ] && extra+=("augment.musan_dir=$musan")
  [ -n "$rirs" ] && extra+=("augment.rirs_dir=$rirs")
  launch -m arw_sv.cli train "$conf" "${extra[@]}" "$@" ${overrides[@]+"${overrides[@]}"} \
    --resume --quiet
}

average() {  # average <exp>: the last train.average_last checkpoints -> <exp>/avg.pt
  "$python" -m arw_sv.cli average "$1" --out "$1/avg.pt"
}

extract() {  # extract <exp>: embeddings of the trial lists' utterances and of the cohort
  local lists=() cohort=()
  for name in $trial_names; do lists+=("${trials[$name]}"); done
  if [ "$asnorm" = true ]; then
    cohort=(--cohort-manifest "$data/train.csv" --cohort-per-speaker "$cohort_per_speaker"
            --cohort-out "$1/embeddings/cohort.npz")
  fi
  local cal=()
  if [ "$calibrate" = true ] && [ -f "$cal_manifest" ]; then
    cal=(--cal-manifest "$cal_manifest" --cal-per-speaker "$cal_per_speaker"
         --cal-out "$1/embeddings/cal.npz")
  fi
  launch "$recipe/local/extract.py" --checkpoint "$1/avg.pt" --manifest "$data/vox1.csv" \
    --trials "${lists[@]}" --out "$1/embeddings/vox1.npz" ${cohort[@]+"${cohort[@]}"} \
    ${cal[@]+"${cal[@]}"}
}

calibrate_run() {  # calibrate_run <exp>: the recommended calibrator from the calibration speakers
  rm -f "$1/calibration.json"
  [ "$calibrate" = true ] || return 0
  if [ ! -f "$1/embeddings/cal.npz" ]; then
    log "no calibration speakers ($cal_manifest): reports without calibration"; return 0
  fi
  local excl=(--exclude "$data/train.csv")
  for name in $trial_names; do excl+=(--exclude "${trials[$name]}"); done
  "$python" -m arw_sv.cli calibrate --embeddings "$1/embeddings/cal.npz" \
    --clusters "$cal_clusters" "${excl[@]}" --out "$1/calibration.json" \
    || log "calibration failed (see above): reports without calibration"
}

named_trials() { for name in $trial_names; do printf -- '--trials\n%s=%s\n' "$name" "${trials[$name]}"; done; }

score() {  # score <exp>: cosine (and AS-norm) scores of every trial list
  local cohort=()
  [ "$asnorm" = true ] && cohort=(--cohort "$1/embeddings/cohort.npz" --top-n "$asnorm_top_n")
  mapfile -t lists < <(named_trials)
  "$python" "$recipe/local/score.py" --embeddings "$1/embeddings/vox1.npz" \
    --out-dir "$1/scores" "${lists[@]}" ${cohort[@]+"${cohort[@]}"}
  calibrate_run "$1"
}

evaluate() {  # evaluate <exp>: EER, minDCF and the fairness report of every score file
  local extra=()
  [ "$plots" = true ] || extra=(--no-plots)
  [ -f "$1/calibration.json" ] && extra+=(--calibration "$1/calibration.json")
  mapfile -t lists < <(named_trials)
  "$python" "$recipe/local/evaluate.py" "$1" --meta "$vox1_meta" --bootstrap "$bootstrap" \
    "${lists[@]}" ${extra[@]+"${extra[@]}"}
  "$python" "$recipe/local/results.py" "$1" | tee "$1/results.md"
}

if in_stage 1; then
  log "stage 1: prepare ($train_set)"
  need vox1 1; need vox1_meta 1
  args=(--out "$data" --vox1 "$vox1" --vox1-meta "$vox1_meta" --train-set "$train_set" --jobs "$jobs")
  [ -n "$vox2" ] && args+=(--vox2 "$vox2")
  [ -n "$vox2_meta" ] && args+=(--vox2-meta "$vox2_meta")
  [ -n "$vox2_wav" ] && args+=(--vox2-wav "$vox2_wav")
  for name in $trial_names; do args+=(--trials "${trials[$name]}"); done
  "$python" "$recipe/prepare.py" "${args[@]}"
fi

if in_stage 2; then
  log "stage 2: train $config -> $exp ($nnodes node(s) x $nproc_per_node process(es))"
  train "$config" "$exp"
fi

if in_stage 3; then log "stage 3: average checkpoints of $exp"; average "$exp"; fi
if in_stage 4; then log "stage 4: extract embeddings ($trial_names)"; extract "$exp"; fi
if in_stage 5; then log "stage 5: score ($trial_names)"; score "$exp"; fi
if in_stage 6; then log "stage 6: evaluate"; need vox1_meta 6; evaluate "$exp"; fi

if [ -n "$lm_config" ]; then
  if in_stage 7; then
    log "stage 7: large-margin fine-tuning $lm_config from $exp/avg.pt -> $lm_exp"
    train "$lm_config" "$lm_exp" "train.init_checkpoint=$exp/avg.pt"
  fi
  if in_stage 8; then
    log "stage 8: average, extract, score, evaluate $lm_exp"; need vox1_meta 8
    average "$lm_exp"; extract "$lm_exp"; score "$lm_exp"; evaluate "$lm_exp"
  fi
fi
log "done (stages $stage-$stop_stage)"

#!/usr/bin/env bash
# Train the shipped SynthFaces models on a 2-core CPU, step by step, and copy the finished ones into pretrained/.
# Every step resumes an interrupted run (the run folders in runs/ hold exact resume points) and skips what is done,
# so it can be re-run after any interruption, e.g. in the background:
#
#     OMP_WAIT_POLICY=PASSIVE nohup scripts/ship_synthfaces.sh all > runs/ship.log 2>&1 &
#
# Steps, in dependency order (`all` runs them in this order):
#   generator    continue runs/synthfaces64 (or start it from pretrained/training/) to $KIMG kimg, then write
#                pretrained/synthfaces64_generator.pt (g_ema), its Fréchet report and docs/ sample grid
#   directions   InterFaceGAN directions for the shipped generator: pretrained/synthfaces64_directions/*.pt
#   encoders     two one-thread lanes side by side: CLCAE stage 1 (contrastive alignment) then stage 2 in one,
#                pSp then e4e in the other (logs RUNS/clcae.log, RUNS/baselines.log)
#   ship         copy each finished encoder's best model into pretrained/
# The model cards (pretrained/*.md) are written by hand from the run folders' logs and the reports.
# Sized from benchmarks/bench_encoder_training.py (docs/PERFORMANCE.md): two one-thread jobs side by side keep
# nearly their one-thread speed, so lanes beat running the jobs one after the other on two threads; the encoders
# step fits in one ~3 h session of the 2-core machine (configs/synthfaces64.yaml has the sizes).
set -euo pipefail
cd "$(dirname "$0")/.."

KIMG="${KIMG:-100}"
THREADS="${THREADS:-1}"      # per job of a side-by-side pair
RUNS="${RUNS:-runs}"
PRE=pretrained
G="$PRE/synthfaces64_generator.pt"
PY="${PYTHON:-python}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

log() { echo "[$(date -u +%FT%TZ)] $*"; }

# train_encoder THREADS RUN_DIR ARGS...: resume RUN_DIR when it holds a checkpoint, else start it; a finished run is a no-op.
train_encoder() {
  local threads="$1" dir="$2"; shift 2
  if [ -f "$dir/checkpoints/latest.pt" ]; then
    log "resume $dir"
    "$PY" scripts/train.py --resume "$dir" --threads "$threads"
  else
    log "start $dir: train.py $*"
    "$PY" scripts/train.py --config synthfaces64 "$@" --threads "$threads" --out "$dir"
  fi
}

# side_by_side NAME1 "CMD1" NAME2 "CMD2": run two commands at once, logs in RUNS/NAME.log; fail if either fails.
side_by_side() {
  log "side by side: $1 and $3 (logs $RUNS/$1.log, $RUNS/$3.log)"
  ( eval "$2" ) > "$RUNS/$1.log" 2>&1 &
  local a=$!
  ( eval "$4" ) > "$RUNS/$3.log" 2>&1 &
  local b=$!
  local rc=0
  wait "$a" || rc=$?
  wait "$b" || rc=$?
  return "$rc"
}

step_generator() {
  if [ -f "$G" ] && [ -f "$PRE/synthfaces64_generator_fd.json" ]; then log "generator already shipped: $G"; return 0; fi
  if [ -f "$RUNS/synthfaces64/checkpoints/latest.pt" ]; then
    "$PY" scripts/train_generator.py --resume "$RUNS/synthfaces64" --kimg "$KIMG"
  else
    "$PY" scripts/train_generator.py --resume "$PRE/training/synthfaces64_generator_latest.pt" \
      --out "$RUNS/synthfaces64" --kimg "$KIMG"
  fi
  log "ship the generator's g_ema"
  "$PY" scripts/convert_checkpoint.py "$RUNS/synthfaces64/checkpoints/latest.pt" "$G" --to clcae
  "$PY" scripts/eval_generator.py --generator "$G" --domain-net "$PRE/synthfaces64_domain_net.pt" --n 5000 \
    --json "$PRE/synthfaces64_generator_fd.json"
  "$PY" scripts/generate.py --generator "$G" --seeds 0-63 --truncation 1.0 --out "$RUNS/generator_samples"
  cp "$RUNS/generator_samples/grid.png" docs/synthfaces64_generator_samples.png
}

step_directions() {
  mkdir -p "$PRE/synthfaces64_directions"
  for a in smile age yaw glasses; do
    if [ -f "$PRE/synthfaces64_directions/$a.pt" ]; then continue; fi
    "$PY" scripts/find_directions.py --generator "$G" --attribute "$a" --n 20000 --no-raw --no-progress \
      --cache "$RUNS/directions_samples.pt" --out "$PRE/synthfaces64_directions/$a.pt"
  done
}

step_encoders() {
  side_by_side clcae "train_encoder $THREADS $RUNS/sf64-align --stage align &&
                      train_encoder $THREADS $RUNS/sf64-clcae --method clcae --contrastive-image $RUNS/sf64-align" \
               baselines "train_encoder $THREADS $RUNS/sf64-psp --method psp &&
                          train_encoder $THREADS $RUNS/sf64-e4e --method e4e"
}

step_ship() {
  for m in clcae psp e4e; do
    cp "$RUNS/sf64-$m/checkpoints/best_model.pt" "$PRE/synthfaces64_$m.pt"
  done
  mkdir -p "$PRE/synthfaces64_clcae_stage1"
  cp "$RUNS/sf64-align/checkpoints/best_model_image.pt" "$RUNS/sf64-align/checkpoints/best_model_latent.pt" \
    "$PRE/synthfaces64_clcae_stage1/"
}

mkdir -p "$RUNS"
case "${1:-}" in
  generator) step_generator ;;
  directions) step_directions ;;
  encoders) step_encoders ;;
  ship) step_ship ;;
  all) step_generator; step_directions; step_encoders; step_ship ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
log "done: ${1}"

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
#   encoders     two one-thread lanes side by side: CLCAE stage 1 (contrastive alignment), stage 2 and its
#                adversarial fine-tune (200 steps, $SHARPEN) in one, pSp then e4e in the other (logs RUNS/clcae.log, RUNS/baselines.log)
#   ship         copy each finished encoder's best model into pretrained/
#   table        the first reconstruction and editing table (docs/RESULTS.md): eval.py on the shipped encoders
#                (RUNS/table-encoders: TABLE_N test images, editing metrics; RUNS/table-encoders-PROJ_N: the first
#                PROJ_N of them), then table-projection unless done
#   table-projection  optimisation-based projection in W and W+ (PROJ_STEPS steps) on the first PROJ_N test images
#                (RUNS/table-projection); needs only the generator, so it can run while the encoders train
# The model cards (pretrained/*.md) are written by hand from the run folders' logs and the reports.
# Sized from benchmarks/bench_encoder_training.py (docs/PERFORMANCE.md): two one-thread jobs side by side keep
# nearly their one-thread speed, so lanes beat running the jobs one after the other on two threads; the encoders
# step fits in one ~3 h session of the 2-core machine (configs/synthfaces64.yaml has the sizes).
set -euo pipefail
cd "$(dirname "$0")/.."

KIMG="${KIMG:-100}"
TABLE_N="${TABLE_N:-500}"
PROJ_N="${PROJ_N:-64}"
PROJ_STEPS="${PROJ_STEPS:-200}"
THREADS="${THREADS:-1}"      # per job of a side-by-side pair
RUNS="${RUNS:-runs}"
PRE=pretrained
G="$PRE/synthfaces64_generator.pt"
PY="${PYTHON:-python}"
# CLCAE version 4 (issue 18, docs/RESULTS.md): 200 more steps from the 1,200-step model with an image discriminator
# (started from the generator's own training-state D) at weight 0.05 and attribute consistency through the domain
# network at weight 1, lr 1e-4, the F blend at 1 throughout
SHARPEN="--adv-lambda 0.05 --attr-lambda 1.0 --adv-d $PRE/training/synthfaces64_generator_latest.pt --lr 0.0001"
SHARPEN="$SHARPEN --feature-ramp none"
SHARPEN="$SHARPEN --steps 200 --val-interval 100 --save-interval 100"
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
                      train_encoder $THREADS $RUNS/sf64-clcae --method clcae --contrastive-image $RUNS/sf64-align &&
                      train_encoder $THREADS $RUNS/sf64-clcae-sharpen --method clcae --contrastive-image $RUNS/sf64-align \
                        $SHARPEN --init-weights $RUNS/sf64-clcae/checkpoints/best_model.pt" \
               baselines "train_encoder $THREADS $RUNS/sf64-psp --method psp &&
                          train_encoder $THREADS $RUNS/sf64-e4e --method e4e"
}

step_ship() {
  for m in psp e4e; do
    cp "$RUNS/sf64-$m/checkpoints/best_model.pt" "$PRE/synthfaces64_$m.pt"
  done
  cp "$RUNS/sf64-clcae-sharpen/checkpoints/best_model.pt" "$PRE/synthfaces64_clcae.pt"
  mkdir -p "$PRE/synthfaces64_clcae_stage1"
  cp "$RUNS/sf64-align/checkpoints/best_model_image.pt" "$RUNS/sf64-align/checkpoints/best_model_latent.pt" \
    "$PRE/synthfaces64_clcae_stage1/"
}

# encoder_args: --method NAME=FILE for the three shipped encoders
encoder_args() { local m; for m in clcae psp e4e; do printf -- '--method\n%s\n' "$m=$PRE/synthfaces64_$m.pt"; done; }

step_table_projection() {  # needs only the generator, so it can run while the encoders train
  "$PY" scripts/eval.py --projection "proj_w=$G:w:$PROJ_STEPS" --projection "proj_wplus=$G:wplus:$PROJ_STEPS" \
    --data synthfaces --n "$PROJ_N" --batch 16 --no-progress --title "SynthFaces 64 px: projection" \
    --out "$RUNS/table-projection" --overwrite
}

step_table() {
  local enc edits=() a
  mapfile -t enc < <(encoder_args)
  for a in smile age yaw glasses; do edits+=(--edit "$a=$PRE/synthfaces64_directions/$a.pt"); done
  "$PY" scripts/eval.py "${enc[@]}" "${edits[@]}" --data synthfaces --n "$TABLE_N" --no-progress \
    --title "SynthFaces 64 px: shipped encoders" --out "$RUNS/table-encoders" --overwrite
  # the same first PROJ_N images as the projection run, for rows side by side with it
  "$PY" scripts/eval.py "${enc[@]}" --data synthfaces --n "$PROJ_N" --no-progress \
    --title "SynthFaces 64 px: shipped encoders, first $PROJ_N images" --out "$RUNS/table-encoders-$PROJ_N" --overwrite
  [ -f "$RUNS/table-projection/results.md" ] || step_table_projection
}

mkdir -p "$RUNS"
case "${1:-}" in
  generator) step_generator ;;
  directions) step_directions ;;
  encoders) step_encoders ;;
  ship) step_ship ;;
  table-projection) step_table_projection ;;
  table) step_table ;;
  all) step_generator; step_directions; step_encoders; step_ship; step_table ;;
  *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 2 ;;
esac
log "done: ${1}"

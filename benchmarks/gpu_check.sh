#!/usr/bin/env bash
# The GPU check of issue 20, in one command and one report file. Run it whenever a GPU is lent:
#
#     bash benchmarks/gpu_check.sh [--out gpu_check_report.md] [--dry-run]
#
# Steps (budgeted to finish in under 9 minutes on one H100; each has its own timeout and the report says which passed):
#   1. machine: nvidia-smi, torch and CUDA versions
#   2. CUDA ops vs the reference: forward, first and second order gradients, fp16/bf16, non-contiguous
#      (tests/test_ops.py -m "gpu or cuda_build"; builds the kernels first)
#   3. official-checkpoint parity on CUDA: CLCAE and pSp FFHQ-1024 against the official-code fixtures
#      (CLCAE_TEST_DEVICE=cuda, TF32 off)
#   4. bench_inversion.py on CUDA: ffhq1024, ref / fast / bf16, batch 1 and 32 (the targets: >= 500 img/s W+F at the
#      best batch, <= 8 ms at batch 1, >= 25x the ref row)
#
# --dry-run (for machines without a GPU, and the test): checks every step's command on the CPU instead: the test
# selections are collected (not run) and the benchmark runs on the shipped 64 px CLCAE model on the CPU with one
# round; the report is written the same way and says DRY RUN.
set -u
cd "$(dirname "$0")/.."
OUT=gpu_check_report.md
DRY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n 2,20p "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python}
FAILED=0
START=$(date +%s)

{
  echo "# GPU check ($( [ $DRY = 1 ] && echo 'DRY RUN on the CPU' || echo 'CUDA'))"
  echo
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
} > "$OUT"

step() {  # step TITLE TIMEOUT_S COMMAND...
  local title="$1" limit="$2"; shift 2
  local t0 rc
  t0=$(date +%s)
  { echo "## $title"; echo; echo '```'; echo "\$ $*"; } >> "$OUT"
  timeout "$limit" "$@" >> "$OUT" 2>&1
  rc=$?
  { echo '```'; echo; echo "-> exit status $rc in $(( $(date +%s) - t0 )) s (limit $limit s)"; echo; } >> "$OUT"
  [ $rc -eq 0 ] || FAILED=$((FAILED + 1))
  echo "gpu_check: $title: exit status $rc"
}

if [ $DRY = 1 ]; then
  step "1. machine" 60 $PY -c "import torch, platform; print(platform.processor() or platform.machine(), 'torch', torch.__version__, 'cuda available:', torch.cuda.is_available())"
  step "2. CUDA ops vs reference (collected only)" 120 $PY -m pytest -q -n 0 --collect-only tests/test_ops.py -m "gpu or cuda_build"
  step "3. official-checkpoint parity on CUDA (collected only)" 120 env CLCAE_TEST_DEVICE=cpu $PY -m pytest -q -n 0 --collect-only tests/test_official_encoders.py -k "matches_official"
  step "4. bench_inversion (CPU stand-in: shipped 64 px CLCAE, one round)" 300 $PY benchmarks/bench_inversion.py --device cpu --models clcae64 --batches 1 --configs ref,fast,bf16 --reps 1 --threads 1
else
  step "1. machine" 60 bash -c "nvidia-smi; $PY -c \"import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))\""
  step "2. CUDA ops vs reference" 240 env CLCAE_OPS_STRICT=1 $PY -m pytest -q -n 0 tests/test_ops.py -m "gpu or cuda_build"
  step "3. official-checkpoint parity on CUDA" 150 env CLCAE_TEST_DEVICE=cuda $PY -m pytest -q -n 0 -s tests/test_official_encoders.py -k "matches_official"
  step "4. bench_inversion on CUDA" 180 $PY benchmarks/bench_inversion.py --device cuda --models ffhq1024 --batches 1,32 --configs ref,fast,bf16 --reps 3
fi

{
  echo "## summary"
  echo
  echo "$FAILED step(s) failed; $(( $(date +%s) - START )) s in all."
} >> "$OUT"
echo "gpu_check: report in $OUT ($FAILED step(s) failed)"
[ $FAILED -eq 0 ]

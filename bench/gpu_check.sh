#!/usr/bin/env bash
# Issue 23's GPU check, one command on one CUDA GPU, under 10 minutes; every figure goes to one file.
#
#   bench/gpu_check.sh [OUT_FILE]          (default: gpu_check.txt; needs `make install` done, or PYTHON=...)
#
# 1. the tests that train with --device auto on CUDA (tests/test_device.py: fit, and K seeds at once,
#    each against its own run there);
# 2. bench/bench_core.py --device cuda (our core's training and decoding on the GPU);
# 3. K=1 against K=8 seeds at once on the GPU (bench/bench_seeds.py --device cuda --ks 1,8);
# 4. a 20-trial sweep of studies/quickstart.yaml with device auto (so on the GPU), 1 worker.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.txt}
PY=${PYTHON:-.venv/bin/python}
SWEEP=$(dirname "$PY")/sweep
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
status=0
step() {  # step TITLE COMMAND...: run it, its output into $OUT, and remember a failure
  echo "=== $1 ($(date -u +%H:%M:%S))" | tee -a "$OUT"
  shift
  local start=$SECONDS
  "$@" 2>&1 | tee -a "$OUT"
  local rc=${PIPESTATUS[0]}
  echo "--- exit $rc, $((SECONDS - start)) s" | tee -a "$OUT"
  [ "$rc" -eq 0 ] || status=1
}
: >"$OUT"
step "machine" "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "no CUDA GPU here: nothing to check" | tee -a "$OUT"
  exit 1
}
step "1. tests with --device auto on CUDA" "$PY" -m pytest -q -p no:cacheprovider tests/test_device.py
step "2. bench_core on CUDA" "$PY" bench/bench_core.py --device cuda --threads 4
step "3. K=1 against K=8 on CUDA" "$PY" bench/bench_seeds.py --device cuda --ks 1,8 --epochs 3 --threads 4
step "4. a 20-trial sweep (device auto)" "$SWEEP" run studies/quickstart.yaml --trials 20 --workers 1 \
  --storage "sqlite:///$WORK/gpu.db" --artifacts "$WORK/artifacts"
step "4. its best trial" "$SWEEP" best quickstart --storage "sqlite:///$WORK/gpu.db"
echo "all figures in $OUT; exit $status" | tee -a "$OUT"
exit $status

#!/usr/bin/env bash
# The GPU check, one command on a CUDA machine, under 10 minutes; every figure goes to one file.
#
#   bench/gpu_check.sh [OUT_FILE]          (default: gpu_check.txt; needs `make install` done, or PYTHON=...)
#
# On an offline GPU image with its own Python and torch (docs/scaling.md): `make wheelhouse WHEEL_PYTHON=3.12`
# here, carry wheelhouse/ there, then WHEELHOUSE=wheelhouse PYTHON=python3 bench/gpu_check.sh installs the
# project and those wheels into that Python with pip install --no-index --no-deps, and runs with its torch.
#
# 1. the tests that train with --device auto on CUDA (tests/test_device.py: fit, and K seeds at once,
#    each against its own run there);
# 2. bench/bench_core.py --device cuda (our core's training and decoding on the GPU);
# 3. K=1 against K=8 seeds at once on the GPU (bench/bench_seeds.py --device cuda --ks 1,8);
# 4. a 20-trial sweep of studies/quickstart.yaml with device auto (so on the GPU), 1 worker;
# 5. the placement: 2 workers per GPU with --devices auto, each trial's recorded device and GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_check.txt}
PY=${PYTHON:-.venv/bin/python}
if [ -n "${WHEELHOUSE:-}" ]; then  # the image's own torch stays; nothing is fetched from the network
  "$PY" -m pip install -q --no-index --no-deps "$WHEELHOUSE"/*.whl || exit 1
fi
SWEEP=("$PY" -m sweep.cli)
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
step "4. a 20-trial sweep (device auto)" "${SWEEP[@]}" run studies/quickstart.yaml --trials 20 --workers 1 \
  --storage "sqlite:///$WORK/gpu.db" --artifacts "$WORK/artifacts"
step "4. its best trial" "${SWEEP[@]}" best quickstart --storage "sqlite:///$WORK/gpu.db"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
step "5. placement: $((2 * GPUS)) workers on $GPUS GPU(s), --devices auto" "${SWEEP[@]}" run studies/quickstart.yaml \
  --trials $((4 * GPUS)) --workers $((2 * GPUS)) --devices auto --oversubscribe \
  --storage "sqlite:///$WORK/placed.db" --artifacts "$WORK/placed"
step "5. each trial's worker, device and GPU" "$PY" - "sqlite:///$WORK/placed.db" <<'EOF'
import sys
import optuna
trials = [t for t in optuna.load_study(study_name="quickstart", storage=sys.argv[1]).trials if "device" in t.user_attrs]
for t in trials:
    print(t.number, t.user_attrs["worker"], t.user_attrs["device"], t.user_attrs["processor"])
assert trials and all(t.user_attrs["device"].startswith("cuda:") for t in trials), "a trial did not train on a GPU"
EOF
echo "all figures in $OUT; exit $status" | tee -a "$OUT"
exit $status

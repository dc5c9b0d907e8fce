#!/usr/bin/env bash
# Train ML-1M on a GPU machine in one short call and print the same table as quality.py.
#
# The GPU machine gets a copy of the working tree only, so the benchmark file must travel
# inside it, in a folder git ignores locally (the data's licence forbids committing it):
#
#   echo /.bench-data/ >> .git/info/exclude
#   mkdir -p .bench-data && cp ../shared/data/ml-1m/ml-1m.txt.gz .bench-data/
#   # then, on the GPU machine (carry .bench-data):  bash benchmarks/gpu.sh
#
# Needs a python3 with CUDA torch, pandas, scipy, rich, tqdm and safetensors (the device
# image has torch; missing packages can travel as wheels, see the device notes). Prints the
# table and writes $OUT/ml1m-gpu.json when $OUT is set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
DATA=${1:-${SHOPREC_ML1M:-.bench-data/ml-1m.txt.gz}}
BUDGET=${BUDGET_MINUTES:-7}
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1

"$PYTHON" - <<'PY'
import importlib, sys, torch
missing = [m for m in ("pandas", "scipy", "rich", "tqdm", "safetensors") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages on this machine: {missing}")
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch: this script is for the GPU machine")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# Same recipe as the CPU run (hidden 64, 2 blocks, max length 200, full softmax), bf16
# autocast on the GPU; a larger batch keeps the GPU busy, the step size scaled with it.
"$PYTHON" benchmarks/quality.py --datasets ml-1m --ml1m "$DATA" --device cuda --amp bf16 \
    --budget-minutes "$BUDGET" --batch-size "${BATCH_SIZE:-256}" --lr "${LR:-2e-3}" \
    ${OUT:+--json "$OUT/ml1m-gpu.json"}

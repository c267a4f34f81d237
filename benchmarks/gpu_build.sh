#!/usr/bin/env bash
# The whole paper build from an empty cache on this machine's GPU, timed, in one call.
#
# Runs every chapter's code in the book's order (benchmarks/chapter_times.py: each
# chapter in a fresh process, no Jupyter, which a GPU machine lacks), then the CUDA
# tests, and writes under $OUT (default /tmp/gpu-build): times.json (seconds per
# chapter, written after each), cuda-tests.txt, env.txt and summary.txt. Meant for one
# call of the project's `run` tool (at most 600 s); the build stops at $LIMIT seconds
# (default 540) and keeps the chapters it finished. Record each run in
# benchmarks/RESULTS.md with its commit.
#
#   bash benchmarks/gpu_build.sh <commit>       # MNIST in $MNIST_DIR or data/mnist
set -uo pipefail
cd "$(dirname "$0")/.."
COMMIT=${1:-unknown}
OUT=${OUT:-/tmp/gpu-build}
LIMIT=${LIMIT:-540}
mkdir -p "$OUT"
export PYTHONPATH=src
export MNIST_DIR=${MNIST_DIR:-data/mnist}
FLOWBOUND_CACHE=$(mktemp -d)
export FLOWBOUND_CACHE
{
  echo "commit $COMMIT"
  date -u
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  python -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
} > "$OUT/env.txt" 2>&1
start=$(date +%s)
timeout "$LIMIT" python benchmarks/chapter_times.py --profile paper --json "$OUT/times.json" \
  > "$OUT/build-log.txt" 2>&1
status=$?
build=$(( $(date +%s) - start ))
python -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$OUT/cuda-tests.txt" 2>&1
tests=$?
{
  echo "commit $COMMIT: build exit $status after $build s (limit $LIMIT s; 124: stopped there)"
  echo "tests/test_cuda.py exit $tests: $(tail -n 1 "$OUT/cuda-tests.txt")"
  python - "$OUT/times.json" <<'PY'
import json, sys
try:
    times = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit("no chapter finished")
rows = times.get("chapters", times)
for name, sec in rows.items():
    print(f"{name}: {sec if isinstance(sec, (int, float)) else sec}")
PY
} > "$OUT/summary.txt" 2>&1
cat "$OUT/summary.txt"
tail -n 20 "$OUT/build-log.txt"

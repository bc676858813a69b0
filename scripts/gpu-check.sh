#!/usr/bin/env bash
# The GPU path proven in one call (bench/checks/gpucheck.py says what it checks): correctness, speed
# and science on one H100/H200 in about 8 minutes. Every output goes under $OUT (default: a new
# results/gpu-check-<time>); the last thing printed is the summary JSON, also in
# $OUT/gpu-check.json, beside the log ($OUT/gpu-check.log) and the table's report
# ($OUT/table-report.md). Exit status 1 when a check failed.
#
#   scripts/gpu-check.sh [--smoke] [--data-root DIR] [--wheels DIR] [--budget-s S] [--workers N]
#
#   --smoke      tiny sizes on any device (about a minute on a CPU; tests/checks/test_gpucheck.py)
#   --data-root  the folder holding Fashion-MNIST's files (else $MASKBENCH_DATA, else Debian's)
#   --wheels     install the wheels in DIR first (packages the machine lacks, e.g. submitit)
#
# Environment: PYTHON (default python3), OUT, TORCHINDUCTOR_CACHE_DIR (default a folder under
# $TMPDIR that outlives $OUT, so a rerun on the same machine compiles nothing again).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${OUT:-results/gpu-check-$(date +%Y%m%d-%H%M%S)}
args=()
while (($#)); do
  case $1 in
    --wheels)
      site=${TMPDIR:-/tmp}/maskbench-gpu-check-site
      "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$2"/*.whl
      export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
      shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/maskbench-gpu-check-inductor}
"$PYTHON" -m bench.checks.gpucheck --out "$OUT" "${args[@]}" 2>&1 | tee "$OUT/gpu-check.log"

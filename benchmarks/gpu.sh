#!/usr/bin/env bash
# One script for a lent GPU machine (H100/H200): the CUDA tests, then the MAML benchmark on
# CUDA, in under 8 minutes. Needs only a Python with a CUDA build of torch. The lent machines'
# image already holds pytest, hypothesis, tqdm, matplotlib and PyYAML; pure-Python extras it
# lacks (higher, for its benchmark rows) are installed from benchmarks/wheels/ into a private
# folder when present. Fill it beforehand on a machine with a package index (Python 3.12 there):
#   pip download --only-binary=:all: --no-deps -d benchmarks/wheels higher==0.2.1
# Results go under $OUT (the device tool's output folder; default benchmarks/gpu-results).
# Each stage has its own time limit, so a slow stage cannot starve the others. From a session
# with a device: run(command="bash benchmarks/gpu.sh", timeout_s=600).
#
# Usage: bash benchmarks/gpu.sh            (from the repository root)
#        PYTHON=/path/to/python bash benchmarks/gpu.sh
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/gpu-results}"
mkdir -p "$OUT"
LOG="$OUT/gpu_log.txt"
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "no CUDA device visible to $PYTHON (torch.cuda.is_available() is False); nothing to do"
    exit 1
fi
nvidia-smi -L 2>/dev/null | tee -a "$LOG"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, \
torch.cuda.get_device_name(0))" | tee -a "$LOG"

# Pure-Python dependencies into a private folder, never into the machine's environment.
DEPS="$(mktemp -d)"
if [ -d benchmarks/wheels ] && ls benchmarks/wheels/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$DEPS" benchmarks/wheels/*.whl \
        >>"$LOG" 2>&1 || say "warning: installing benchmarks/wheels failed (see log)"
fi
export PYTHONPATH="$PWD/src:$DEPS${PYTHONPATH:+:$PYTHONPATH}"
"$PYTHON" -c "import higher" 2>/dev/null || say "higher not importable: its rows are skipped"

status=0
# 1. The CUDA tests (every test parametrised over the `device` fixture or marked `cuda`).
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    say "== pytest -m cuda"
    timeout 120 "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -5
    rc=${PIPESTATUS[0]}
    say "pytest exit code $rc"
    [ "$rc" -eq 0 ] || status=1
else
    say "pytest not importable (put its wheels in benchmarks/wheels/): CUDA tests NOT run"
    status=1
fi

# 2-4. The benchmark on CUDA, most wanted numbers first, each stage with its own limit so
#      that the whole script stays under 8 minutes (process start-up dominates GPU steps).
bench() {  # bench NAME LIMIT_SECONDS ARGS...
    local name=$1 limit=$2
    shift 2
    say "== bench_maml.py --device cuda $* ($name, limit ${limit}s)"
    # stdout is flushed line by line: a stage cut off by its limit keeps its finished tables.
    timeout "$limit" "$PYTHON" benchmarks/bench_maml.py --device cuda --quick "$@" \
        >"$OUT/bench_$name.md" 2>"$OUT/bench_$name.stderr"
    local rc=$?
    say "bench $name exit code $rc"
    if [ "$rc" -ne 0 ]; then
        status=1
        tail -20 "$OUT/bench_$name.stderr" | tee -a "$LOG"
    fi
}
# The issue's targets: Conv-4 MiniImagenet 5w1s and Omniglot 20w1s against every peer.
bench conv 170 --workloads miniimagenet,omniglot --no-curves --no-leak
# learner.compile(mode="reduce-overhead"): the compiled meta-gradient replayed as a CUDA graph.
bench compile 150 --workloads sine,miniimagenet \
    --impls metalearn,metalearn+compile,autograd-loop --no-curves --no-leak
# Sine against every peer, the cost curves and the 1,000-step memory check.
bench sine 70 --workloads sine
rm -rf "$DEPS"
exit $status

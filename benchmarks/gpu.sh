#!/usr/bin/env bash
# One script for a lent GPU machine (H100/H200): the CUDA tests, then the MAML benchmark on
# CUDA, in under 10 minutes. Needs only a Python with a CUDA build of torch. The lent machines'
# image already holds pytest, hypothesis, tqdm, matplotlib and PyYAML; pure-Python extras it
# lacks (higher, for its benchmark rows) are installed from benchmarks/wheels/ into a private
# folder when present. Fill it beforehand on a machine with a package index (Python 3.12 there):
#   pip download --only-binary=:all: --no-deps -d benchmarks/wheels higher==0.2.1
# learn2learn has no wheel for Python 3.12: put the learn2learn/ folder of its sdist in a
# folder on PYTHONPATH (bench_maml.py loads only its pure-PyTorch MAML modules from it).
# Results go under $OUT (the device tool's output folder; default benchmarks/gpu-results).
# Each stage has its own time limit, so a slow stage cannot starve the others. From a session
# with a device: run(command="bash benchmarks/gpu.sh", timeout_s=600).
# OMNIGLOT=DIR also runs benchmarks/gpu_omniglot.sh DIR (the real-Omniglot test; its variables,
# LOAD, TEST_WAYS, TEST_LIMIT..., pass through) beside the CUDA tests; the benchmark waits for it,
# so that its timings have the GPU alone. LIMIT_CONV and LIMIT_COMPILE (seconds) cap the
# benchmark's two stages (defaults 280 and 200).
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
# 0. The real-Omniglot test, when asked for, in processes of its own (its log: $OUT/log.txt).
omniglot_pid=
if [ -n "${OMNIGLOT:-}" ]; then
    say "== gpu_omniglot.sh $OMNIGLOT (log: $OUT/log.txt)"
    PYTHON="$PYTHON" OUT="$OUT" bash benchmarks/gpu_omniglot.sh "$OMNIGLOT" &
    omniglot_pid=$!
fi

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
if [ -n "$omniglot_pid" ]; then
    wait "$omniglot_pid"
    say "gpu_omniglot.sh exit code $?"
fi

# 2-3. The benchmark on CUDA, most wanted numbers first, each stage with its own limit so that
#      the whole script stays under 10 minutes. Each implementation is measured in a fresh
#      process, and on the H200 machine (2026-12-04) each such process took about 13 s to
#      start (torch import, CUDA context, cuDNN): every implementation on both Conv-4
#      workloads, two rounds, is over 60 processes, more than the call allows. So each stage
#      names the rows it needs and runs one round.
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
# The issue's targets: Conv-4 MiniImagenet 5w1s and Omniglot 20w1s against the peers (20
# processes), the user's own Conv-4 beside ours.
bench conv "${LIMIT_CONV:-280}" --workloads miniimagenet,omniglot --no-curves --no-leak \
    --rounds 1 --impls metalearn,metalearn+own-model,autograd-loop,higher,learn2learn
# learner.compile(mode="reduce-overhead"): the compiled meta-gradient replayed as a CUDA graph,
# on Conv-4 (sine's was measured on the H200: 3.0 ms against 6.9-8.9 eager, RESULTS.md).
bench compile "${LIMIT_COMPILE:-200}" --workloads miniimagenet --no-curves --no-leak \
    --rounds 1 --impls metalearn,metalearn+compile,autograd-loop
rm -rf "$DEPS"
exit $status

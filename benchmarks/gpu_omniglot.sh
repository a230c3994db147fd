#!/usr/bin/env bash
# Real Omniglot on a lent GPU (H100/H200) in one call of under 10 minutes: the mirrored 20-way
# MAML recipe (configs/omniglot_minimal/maml_20way_mirror.yaml) meta-trained on CUDA, then
# tested on the 600 tasks of each protocol with 8 distorted copies of the support, 30 steps
# and each query averaged with 8 distorted copies (the protocols in parallel).
# The data does not travel by itself: copy the two zips of the minimal sets into a folder of
# the repository that git ignores and carry it, e.g.
#   mkdir -p .gpu_data/omniglot && cp DATA/images_background_small*.zip .gpu_data/omniglot/
#   run(command="bash benchmarks/gpu_omniglot.sh .gpu_data/omniglot", carry=[".gpu_data"])
# Meta-training stops after MAX_MINUTES (default 3.7; the JSON records the iterations done).
# LOAD=FILE.pt skips the meta-training and tests that saved learner instead (a run of the same
# config saved it, on any device; its JSON of the same name, if beside it, gives the training's
# cost): the CPU-trained network of docs/results.md, tested with more copies and steps.
# TEST_WAYS (default 20; e.g. "20 5") are the N of the test tasks, each N and protocol in a
# process of its own; THREADS the CPU threads of each (default 4: the distortions are made on
# the CPU); TEST_LIMIT each one's time limit in seconds (default 240).
# Results and logs go under $OUT (default benchmarks/gpu-results): log.txt, om/ (the trained
# learner and its standard test), om_20way_any-class/, om_20way_within-alphabet/, ... (the
# augmented tests).
#
# Usage: bash benchmarks/gpu_omniglot.sh OMNIGLOT_DIR   (from the repository root)
set -uo pipefail

cd "$(dirname "$0")/.."
ROOT="${1:?usage: bash benchmarks/gpu_omniglot.sh OMNIGLOT_DIR (the two minimal-set zips)}"
OUT="${OUT:-benchmarks/gpu-results}"
source benchmarks/gpu_common.sh  # PYTHON, DEVICE, TASKS, LOG, stage

CONFIG=configs/omniglot_minimal/maml_20way_mirror.yaml
LEARNER="$OUT/om/maml_20way.pt"
if [ -n "${LOAD:-}" ]; then
    LEARNER="$LOAD"
    echo "testing the saved learner $LOAD (no meta-training)" >> "$LOG"
else
    stage "meta-training on $DEVICE"
    timeout "${TRAIN_LIMIT:-300}" "$PYTHON" examples/omniglot_minimal.py --root "$ROOT" \
        --config "$CONFIG" --device "$DEVICE" --curve-every 0 --no-progress \
        --max-minutes "${MAX_MINUTES:-3.7}" --test-tasks "$TASKS" --out "$OUT/om" \
        ${EXTRA:-} >> "$LOG" 2>&1
    echo "meta-training exit code $?" >> "$LOG"
fi
stage "tests with distorted support and query copies"
for ways in ${TEST_WAYS:-20}; do  # each N and protocol in a process of its own
    for protocol in any-class within-alphabet; do
        name="${ways}way_$protocol"
        timeout "${TEST_LIMIT:-240}" "$PYTHON" examples/omniglot_minimal.py --root "$ROOT" \
            --config "$CONFIG" --device "$DEVICE" --load "$LEARNER" --threads "${THREADS:-4}" \
            --test-support-copies 8 --test-steps 30 --test-query-copies 8 \
            --protocols "$protocol" --test-ways "$ways" --test-tasks "$TASKS" \
            --out "$OUT/om_$name" > "$OUT/test_$name.txt" 2>&1 &  # tqdm: the pace every 30 s
    done
done
wait
# tqdm's updates end in carriage returns: one line each in the log.
cat "$OUT"/test_*.txt | tr '\r' '\n' | grep -v '^\s*$' >> "$LOG"
rm -f "$OUT"/test_*.txt
stage end

# Sourced by the real-Omniglot GPU scripts (from the repository root, with OUT set): the
# shared settings (PYTHON, DEVICE, TASKS), the log $OUT/log.txt, `stage NAME` (a timestamped
# line in it) and the torch build and card on its first line.
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
TASKS="${TASKS:-600}"
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: > "$LOG"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
start=$(date +%s)
stage() { echo "== $1 at +$(($(date +%s) - start)) s" >> "$LOG"; }
"$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) \
if torch.cuda.is_available() else 'no CUDA device')" >> "$LOG" 2>&1

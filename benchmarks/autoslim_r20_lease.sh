#!/usr/bin/env bash
# AutoSlim on CIFAR-10, ResNet-20, GPU rerun (issue 14, item 4) in leases of a GPU machine (the
# `device` tool): a 15-epoch supernet, greedy search at 50 % and 25 % of max FLOPs, then 30-epoch
# retraining of both found nets and their uniform-width baselines under seeds 0 and 1 (8 trainings,
# run side by side in 8 worker processes on the one GPU), report with intervals.
#
#   usage: bash benchmarks/autoslim_r20_lease.sh DATA_DIR [PARTS_DIR]
#     DATA_DIR   holds cifar10_jpg.tar.gz
#     PARTS_DIR  the run.tgz.NN files an earlier lease left in $OUT: the run continues from them
#
# One lease runs `widthsearch run ... --resume` until $DEADLINE seconds (default 540, inside a
# 600-second call), then packs the whole run folder (every checkpoint: each training saves one per
# epoch) into $OUT as run.tgz.00, .01, ... (parts under 15 MiB: what comes back from $OUT is at
# most 8 files of 16 MiB), beside report.md / report.json once the run has finished, the lease's
# log and machine.txt. Between leases, copy the parts into a folder of the repo that git ignores
# and carry it: the next lease unpacks them and continues where the run stopped (up to one epoch
# of each training in flight is redone). Every lease must run the same settings.
#
# GPU time, an ESTIMATE from other measurements (nothing of this run was measured on a GPU): the
# H100 section of docs/benchmarks.md measured the cbm_mobilenet AutoSlim supernet (4 sub-networks
# per step, batch 256, 3 processes sharing the GPU) at 1,800 img/s, and the 3 processes together at
# about 20,000 sub-network image passes/s (1,800 x 4 + 2 x 3,200 x 2). ResNet-20 has a fifth of
# cbm_mobilenet's MACs (40.8M vs 211M) and about as many layers, and such small nets are
# launch-bound on an H100, so those speeds are taken as they are:
#   supernet   15 epochs x 44,928 images = 674k images / 1,800 img/s        ~ 6 min
#   retraining 8 nets x 30 epochs x 44,928 = 10.8M passes / 20,000 passes/s ~ 9 min
# This run keeps the documented recipe's batch 128 (not 256); if a step costs the same at either
# batch (launch-bound), both numbers double: 12 and 18 min. The greedy search (about 800
# forward-only evaluations of 2,000 held-out images) and the start-up (decoding CIFAR-10 once per
# fresh machine, the 8 workers' imports) were not measured on a GPU. So expect 15-30 min of GPU
# time: two to four leases.
#
# Dry run on a CPU (fake data, tiny epochs; same script, same flags):
#   OUT=/tmp/lease DEVICE=cpu DATA_SPEC=fake:512:3x32x32:10 EPOCHS=1 RETRAIN_EPOCHS=1 JOBS=2 THREADS=1 \
#       SEARCH_IMAGES=100 PYTHON=.venv/bin/python bash benchmarks/autoslim_r20_lease.sh none
set -u
DATA=${1:?usage: bash benchmarks/autoslim_r20_lease.sh DATA_DIR [PARTS_DIR]}
PARTS=${2:-}
OUT=${OUT:-/tmp/lease_out}
PYTHON=${PYTHON:-python3}
RUN=${RUN:-/tmp/autoslim_r20}
DEADLINE=${DEADLINE:-540}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WIDTHSEARCH_CACHE=${WIDTHSEARCH_CACHE:-/tmp/wscache}
export WIDTHSEARCH_PROGRESS_SECONDS=${WIDTHSEARCH_PROGRESS_SECONDS:-30}

{ date -u; nvidia-smi -L 2>/dev/null || echo "no GPU"; lscpu | grep -E "Model name|^CPU\(s\)"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/machine.txt"

if [ -n "$PARTS" ] && [ ! -d "$RUN" ]; then  # an earlier lease's run folder
  mkdir -p "$(dirname "$RUN")"
  cat "$PARTS"/run.tgz.* | tar xzf - -C "$(dirname "$RUN")" || { echo "cannot unpack $PARTS/run.tgz.*"; exit 2; }
fi
RESUME=(); [ -d "$RUN" ] && RESUME=(--resume)

# $THREADS torch threads per process: 16 cores for the parent and 8 workers
timeout --signal=TERM "$DEADLINE" "$PYTHON" -m widthsearch run --method autoslim --model resnet20 \
    --data "${DATA_SPEC:-cifar10:$DATA/cifar10_jpg.tar.gz}" --epochs "${EPOCHS:-15}" --retrain-epochs "${RETRAIN_EPOCHS:-30}" \
    --targets 0.5,0.25 --seeds 0,1 --jobs "${JOBS:-8}" --threads "${THREADS:-2}" --device "${DEVICE:-cuda}" \
    ${SEARCH_IMAGES:+--search-images "$SEARCH_IMAGES"} --out "$RUN" "${RESUME[@]}" 2>&1 | tee "$OUT/lease.log"
status=${PIPESTATUS[0]}
case $status in
  0) echo "the run is complete: $OUT/report.md" ;;
  124) echo "stopped at the ${DEADLINE} s deadline: run this script again with the run.tgz.* parts to continue" ;;
  *) echo "widthsearch run ended with exit code $status (see lease.log); the parts below continue it" ;;
esac | tee -a "$OUT/lease.log"

[ -d "$RUN" ] || exit "$status"
cat "$OUT/lease.log" >> "$RUN/leases.log"  # every lease's log travels with the run
for f in report.md report.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
rm -f "$OUT"/run.tgz.*
tar czf - -C "$(dirname "$RUN")" "$(basename "$RUN")" | split -b 15m -d - "$OUT/run.tgz."
parts=$(ls "$OUT"/run.tgz.* | wc -l)
[ "$parts" -le 4 ] || echo "WARNING: $parts parts: with the 4 other files that is over the 8 files that come back from \$OUT"
ls -la "$OUT"
exit "$status"

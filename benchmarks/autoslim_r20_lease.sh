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
# The leases are benchmarks/run_lease.sh's (its header says how parts travel between them): each
# one runs `widthsearch run ... --resume` until $DEADLINE seconds (default 540, inside a 600-second
# call) and packs the run folder into $OUT/run.tgz.NN; up to one epoch of each training in flight
# is redone by the next.
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
export RUN=${RUN:-/tmp/autoslim_r20}
# $THREADS torch threads per process: 16 cores for the parent and 8 workers
exec bash "$(dirname "$0")/run_lease.sh" "${2:-none}" -- --method autoslim --model resnet20 \
    --data "${DATA_SPEC:-cifar10:$DATA/cifar10_jpg.tar.gz}" --epochs "${EPOCHS:-15}" --retrain-epochs "${RETRAIN_EPOCHS:-30}" \
    --targets 0.5,0.25 --seeds 0,1 --jobs "${JOBS:-8}" --threads "${THREADS:-2}" --device "${DEVICE:-cuda}" \
    ${SEARCH_IMAGES:+--search-images "$SEARCH_IMAGES"}

#!/usr/bin/env bash
# One lease of a GPU machine (the `device` tool): the Channel-Bench-Macro equal-passes experiment on
# the GPU, and the CPU latency-table check on otherwise idle cores beside it. Results go to $OUT.
#   usage: bash benchmarks/cbm_gpu_lease.sh DATA_DIR   (DATA_DIR holds cifar10_jpg.tar.gz and cbm/)
set -u
DATA=${1:-.devdata}
OUT=${OUT:-/tmp/lease_out}
mkdir -p "$OUT" /tmp/lat
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 WIDTHSEARCH_CACHE=/tmp/wscache
{ date -u; nvidia-smi -L; lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\) per core"; python3 -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"; } | tee "$OUT/machine.txt"
LAT="--threads 1 --clock wall --runs 10 --warmup 3 --references 20 --configs 100 --sampling spread --out-dir /tmp/lat"
( taskset -c 15 timeout "${LAT_TIMEOUT:-420}" python3 benchmarks/latency_table.py --models mobilenet_v2:3x224x224 --retest $LAT \
    --json "$OUT/latency_mbv2.json" > /tmp/lat/mbv2.log 2>&1 ) &
( taskset -c 13 timeout "${LAT_TIMEOUT:-420}" python3 benchmarks/latency_table.py --models resnet50:3x224x224 $LAT \
    --json "$OUT/latency_r50.json" > /tmp/lat/r50.log 2>&1 ) &
taskset -c 0-11 python3 benchmarks/cbm_equal_passes.py --data "cifar10:$DATA/cifar10_jpg.tar.gz" --tables "$DATA/cbm" \
    --out /tmp/cbm --device "${DEVICE:-cuda}" --deadline-s "${DEADLINE:-480}" --preflight --no-compare 2>&1 | tee "$OUT/driver.log"
wait
tar czf "$OUT/results.tgz" --exclude='*.pt' -C /tmp cbm lat
for a in autoslim bcnet uniform; do cp "/tmp/cbm/$a/supernet.pt" "$OUT/$a.pt" 2>/dev/null; done
ls -la "$OUT"

#!/usr/bin/env bash
# The CIFAR-10 experiment still open, on the development machine's CPU, continued from its
# checkpoints wherever the last session stopped it: AutoSlim, ResNet-20 (issue 14, item 4): 15-epoch
# supernet, greedy search at 50 % and 25 % of max FLOPs, 30-epoch retraining of the found nets and
# their uniform baselines, seeds 0 and 1. (Network Adjustment and SP-Net, run by this script before,
# are finished; their commands and numbers are in docs/benchmarks.md.)
#
# A finished run (its report.md exists) is skipped; a started one is resumed. Where the run folder
# did not survive (a new machine), the results kept in the repository by benchmarks/keep_results.sh
# (benchmarks/results/<run>: no weights) are copied in first, and the resume takes the finished
# search and trainings from them. The command is the one docs/benchmarks.md gives, with the same
# data spelling (a resumed run must name the same file). Run it in the background and let a
# session's end kill it:
#
#   (nohup bash benchmarks/cpu_experiments.sh > /work/runs/cpu_experiments.log 2>&1 &)
#
# Settings that may change between sessions without changing the results: --threads, --jobs,
# --compile, --device. Two cores: the supernet and search run in one process with both cores
# (two threads); the retrainings then run two at a time with one thread each and --compile.
set -euo pipefail
DATA=${DATA:-/work/shared/data/cifar10_jpg.tar.gz}
RUNS=${RUNS:-/work/runs}
WIDTHSEARCH=${WIDTHSEARCH:-widthsearch}
NICE=${NICE:-10}

finished() { [ -f "$1/report.md" ]; }
resume_if_started() { if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then echo --resume; fi; }
KEPT=${KEPT:-$(dirname "$0")/results}
restore() {  # restore OUT: a run folder that did not survive starts from its kept results, if any
    local kept=$KEPT/$(basename "$1")
    if [ ! -d "$1" ] && [ -d "$kept" ]; then
        echo "$(date -u +%FT%TZ) restore the kept results: $kept -> $1"
        mkdir -p "$(dirname "$1")" && cp -r "$kept" "$1"
    fi
}
run() {  # run OUT ARGS...: one experiment, resumed if it was started, skipped if it is finished
    local out=$1; shift
    if finished "$out"; then echo "$(date -u +%FT%TZ) done already: $out"; return; fi
    echo "$(date -u +%FT%TZ) start: $out"
    nice -n "$NICE" "$WIDTHSEARCH" run "$@" --device cpu --out "$out" $(resume_if_started "$out")
    echo "$(date -u +%FT%TZ) finished: $out"
}

AUTOSLIM=$RUNS/autoslim_r20
restore "$AUTOSLIM"
if [ -f "$AUTOSLIM/search/search.json" ]; then SPREAD=(--jobs 2 --threads 1); else SPREAD=(--jobs 1 --threads 2); fi
run "$AUTOSLIM" --method autoslim --model resnet20 --data "cifar10:$DATA" --epochs 15 --retrain-epochs 30 \
    --targets 0.5,0.25 --seeds 0,1 "${SPREAD[@]}" --compile

#!/usr/bin/env bash
# The CIFAR-10 experiments of the open issues, one after another on the development machine's CPU,
# each continued from its checkpoints wherever the last session stopped it:
#   1. Network Adjustment, ResNet-20 (issue 11): 5 rounds x 8 epochs, then the adjusted and the
#      original network retrained 30 epochs under seeds 0 and 1;
#   2. SP-Net vs S-Net, ResNet-20 (issue 12): bases 10 epochs, fine-tune 5, seeds 0 and 1, with
#      the no-zero-padding ablation;
#   3. AutoSlim, ResNet-20 (issue 14, item 4): 15-epoch supernet, greedy search at 50 % and 25 %
#      of max FLOPs, 30-epoch retraining of the found nets and their uniform baselines, seeds 0, 1.
# A finished run (its report.md exists) is skipped; a started one is resumed. Each command is the one
# docs/benchmarks.md gives for that experiment, with the same data spelling (a resumed run must
# name the same file). Run it in the background and let a session's end kill it:
#
#   (nohup bash benchmarks/cpu_experiments.sh > /work/runs/cpu_experiments.log 2>&1 &)
#
# Settings that may change between sessions without changing the results: --threads, --jobs,
# --compile, --device. Two cores: static-network trainings (retraining, SP-Net's bases) run two at
# a time with one thread each and --compile; AutoSlim's supernet and search run in one process with
# both cores (two threads) until its search is done.
set -euo pipefail
DATA=${DATA:-/work/shared/data/cifar10_jpg.tar.gz}
RUNS=${RUNS:-/work/runs}
WIDTHSEARCH=${WIDTHSEARCH:-widthsearch}
NICE=${NICE:-10}

finished() { [ -f "$1/report.md" ]; }
resume_if_started() { if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then echo --resume; fi; }
run() {  # run OUT ARGS...: one experiment, resumed if it was started, skipped if it is finished
    local out=$1; shift
    if finished "$out"; then echo "$(date -u +%FT%TZ) done already: $out"; return; fi
    echo "$(date -u +%FT%TZ) start: $out"
    nice -n "$NICE" "$WIDTHSEARCH" run "$@" --device cpu --out "$out" $(resume_if_started "$out")
    echo "$(date -u +%FT%TZ) finished: $out"
}

run "$RUNS/na_r20_run" --method netadjust --model resnet20 --data "cifar10:$DATA" --rounds 5 --epochs 8 \
    --retrain-epochs 30 --seeds 0,1 --jobs 2 --threads 1 --compile

run "$RUNS/spnet_r20" --method spnet --model resnet20 --data "cifar10:$DATA" --epochs 10 --retrain-epochs 5 \
    --seeds 0,1 --ablation nopad --jobs 2 --threads 1 --compile

AUTOSLIM=$RUNS/autoslim_r20
if [ -f "$AUTOSLIM/search/search.json" ]; then SPREAD=(--jobs 2 --threads 1); else SPREAD=(--jobs 1 --threads 2); fi
run "$AUTOSLIM" --method autoslim --model resnet20 --data "cifar10:$DATA" --epochs 15 --retrain-epochs 30 \
    --targets 0.5,0.25 --seeds 0,1 "${SPREAD[@]}" --compile

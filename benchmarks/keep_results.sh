#!/usr/bin/env bash
# Copy what a `widthsearch run` folder has found and measured, without its weights, so that a long
# experiment can go on in a later session on a machine where the folder itself did not survive:
#
#   bash benchmarks/keep_results.sh RUN_DIR DEST
#
# DEST gets every file of RUN_DIR except checkpoints (*.pt), lock files, the atomic writes' temp
# files and progress.json, and without the folders of trainings that had not finished (they hold
# nothing a resume could use without their checkpoint). `widthsearch run ... --out DEST --resume`
# then takes the finished trainings from their result.json and, for AutoSlim, a finished search
# without its supernet (docs/methods/autoslim.md, "Resume"); what had not finished is trained
# again. DEST is replaced. Stop the run's process first.
set -euo pipefail
[ $# -eq 2 ] && [ -d "$1" ] || { echo "usage: bash benchmarks/keep_results.sh RUN_DIR DEST"; exit 2; }
run=$1 dest=$2
case "$(realpath -m "$dest")/" in "$(realpath "$run")"/*) echo "DEST must lie outside RUN_DIR"; exit 2 ;; esac
rm -rf "$dest" && mkdir -p "$dest"
tar cf - --exclude='*.pt' --exclude=.widthsearch.lock --exclude='.*.tmp' --exclude=progress.json -C "$run" . \
    | tar xf - -C "$dest"
# a training folder (it has a log) without a finished result: dropped, it starts over on resume
find "$dest" -name log.jsonl -printf '%h\n' | while read -r folder; do
    if ! grep -q '"complete": true' "$folder/result.json" 2>/dev/null; then
        echo "not finished, left out: ${folder#"$dest"/}"; rm -rf "$folder"
    fi
done
echo "kept $(find "$dest" -type f | wc -l) files ($(du -sh "$dest" | cut -f1)) in $dest"

#!/usr/bin/env bash
# Continue any long `widthsearch run` in leases of a GPU machine (the `device` tool), which holds a
# machine for at most 10 minutes a call and 15 minutes a session: each lease resumes the run folder
# an earlier lease (or the machine that started the run) left, stops at a deadline, and packs the
# folder into parts that come back through $OUT for the next lease.
#
#   bash benchmarks/run_lease.sh --pack RUN_DIR PARTS_DIR
#       pack a run folder started elsewhere (stop its process first) into PARTS_DIR/run.tgz.NN
#   bash benchmarks/run_lease.sh PARTS_DIR -- RUN_ARGS...
#       one lease: unpack PARTS_DIR/run.tgz.* (PARTS_DIR "none": start a new run), run
#       `widthsearch run RUN_ARGS --out $RUN [--resume]` until $DEADLINE seconds, pack the folder
#       into $OUT/run.tgz.NN, copy report.md / report.json there once the run has finished
#
# Parts are the run folder's contents (every checkpoint; each training saves one per epoch) in
# pieces under 15 MiB: at most 8 files of 16 MiB come back from $OUT, and this script also leaves
# lease.log and machine.txt there. Lock files are left out: a lock written on another host is
# refused. Between leases, copy the parts into a folder that git ignores and `carry` it. Every
# lease must give the same RUN_ARGS (the run refuses other settings, except --threads, --device and
# --jobs); the data spec is compared by path, so a run started elsewhere needs its data at the same
# path: LINK="RECORDED_PATH=FILE_HERE" makes that path a link to the file (as root, on the lease).
#
# Environment: OUT (default /tmp/lease_out), RUN (default /tmp/lease_run), PYTHON (python3),
# DEADLINE (540 s, inside a 600-second call), LINK (see above).
#
# Dry run on a CPU (fake data, tiny epochs):
#   OUT=/tmp/lease RUN=/tmp/lease_run PYTHON=.venv/bin/python bash benchmarks/run_lease.sh none -- \
#       --method autoslim --model tiny_cnn --data fake:256:1x8x8:10 --epochs 1 --retrain-epochs 1 --seeds 0
set -u
usage="usage: bash benchmarks/run_lease.sh --pack RUN_DIR PARTS_DIR | PARTS_DIR -- RUN_ARGS..."

pack() {  # pack DIR DEST: DIR's contents, without lock files, as DEST/run.tgz.00, .01, ...
  mkdir -p "$2" && rm -f "$2"/run.tgz.*
  tar czf - --exclude=.widthsearch.lock -C "$1" . | split -b 15m -d - "$2/run.tgz." || return 1
  echo "$(ls "$2"/run.tgz.* | wc -l) part(s) in $2:"; ls -la "$2"/run.tgz.*
}

if [ "${1:-}" = "--pack" ]; then
  [ $# -eq 3 ] && [ -d "$2" ] || { echo "$usage"; exit 2; }
  pack "$2" "$3"; exit $?
fi
PARTS=${1:?$usage}
[ "${2:-}" = "--" ] || { echo "$usage"; exit 2; }
shift 2
for arg in "$@"; do
  case $arg in --out|--out=*|--resume) echo "give RUN_ARGS without --out and --resume: the script sets them"; exit 2 ;; esac
done
OUT=${OUT:-/tmp/lease_out}
RUN=${RUN:-/tmp/lease_run}
PYTHON=${PYTHON:-python3}
DEADLINE=${DEADLINE:-540}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 WIDTHSEARCH_CACHE=${WIDTHSEARCH_CACHE:-/tmp/wscache}
export WIDTHSEARCH_PROGRESS_SECONDS=${WIDTHSEARCH_PROGRESS_SECONDS:-30}

{ date -u; nvidia-smi -L 2>/dev/null || echo "no GPU"; lscpu | grep -E "Model name|^CPU\(s\)"
  "$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/machine.txt"

if [ -n "${LINK:-}" ]; then
  recorded=${LINK%%=*}; here=${LINK#*=}
  [ -e "$here" ] || { echo "LINK: $here does not exist"; exit 2; }
  if [ ! -e "$recorded" ]; then
    mkdir -p "$(dirname "$recorded")" && ln -s "$(realpath "$here")" "$recorded" || { echo "LINK: cannot link $recorded"; exit 2; }
  fi
fi
if [ "$PARTS" != none ] && [ ! -d "$RUN" ]; then  # an earlier lease's run folder
  ls "$PARTS"/run.tgz.* >/dev/null 2>&1 || { echo "no run.tgz.* parts in $PARTS"; exit 2; }
  mkdir -p "$RUN" && cat "$PARTS"/run.tgz.* | tar xzf - -C "$RUN" || { echo "cannot unpack $PARTS/run.tgz.*"; exit 2; }
fi
RESUME=(); [ -d "$RUN" ] && RESUME=(--resume)

timeout --signal=TERM "$DEADLINE" "$PYTHON" -m widthsearch run "$@" --out "$RUN" "${RESUME[@]}" 2>&1 | tee "$OUT/lease.log"
status=${PIPESTATUS[0]}
case $status in
  0) echo "the run is complete: $OUT/report.md" ;;
  124) echo "stopped at the ${DEADLINE} s deadline: run this script again with the run.tgz.* parts to continue" ;;
  *) echo "widthsearch run ended with exit code $status (see lease.log); the parts below continue it" ;;
esac | tee -a "$OUT/lease.log"

[ -d "$RUN" ] || exit "$status"
cat "$OUT/lease.log" >> "$RUN/leases.log"  # every lease's log travels with the run
for f in report.md report.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
pack "$RUN" "$OUT" || exit 1
parts=$(ls "$OUT"/run.tgz.* | wc -l)
[ "$parts" -le 4 ] || echo "WARNING: $parts parts: with the 4 other files that is over the 8 files that come back from \$OUT"
exit "$status"

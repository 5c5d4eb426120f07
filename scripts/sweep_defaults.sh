#!/usr/bin/env bash
# scripts/sweep_defaults.sh: the sweep behind every optimizer's default learning rate (results/sweep/).
#   scripts/sweep_defaults.sh 60 "sgd=0.03 0.1 0.3 1" "came=3e-5 1e-4"   # short horizon
#   scripts/sweep_defaults.sh 200 "sgd=0.3" "came=1e-4"                  # the default run, finalists
# Each (optimizer, lr) pair runs scripts/sweep.sh OPT --lrs LR --steps STEPS, i.e. the default run
# (d4, B=8, T=64, 10% warmup, cosine to 10%, clip 1.0, seed 1337, GCIDE) with -l LR and -x STEPS, into
# results/sweep/sSTEPS/OPT/lr_LR/ (stdout.txt with the summary line, log.jsonl). `default` as an lr
# passes no -l (adafactor: its relative step). At most JOBS (2) trainings at once, one OpenMP thread each
# (the machine has 2 shared cores). scripts/sweep_table.sh then tabulates everything under results/sweep/.
# The grids actually run, and why, are in results/sweep/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:?usage: scripts/sweep_defaults.sh STEPS "OPT=LR LR ..." ...}; shift
JOBS=${JOBS:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
make -s train_cpu >&2
out=results/sweep/s$steps
mkdir -p "$out"
run_one() { # OPT LR STEPS OUT
    bash scripts/sweep.sh "$1" --lrs "$2" --steps "$3" --out "$4" | sed -n '3p'
}
export -f run_one
start=$SECONDS
for spec in "$@"; do
    o=${spec%%=*}
    for lr in ${spec#*=}; do printf '%s %s %s %s\n' "$o" "$lr" "$steps" "$out"; done
done | xargs -P "$JOBS" -L 1 bash -c 'echo "$1 $(run_one "$@")"' _
echo "wall: $((SECONDS - start)) s (ended $(date -u +%FT%TZ), $(getconf _NPROCESSORS_ONLN) cores, OMP_NUM_THREADS=$OMP_NUM_THREADS)"

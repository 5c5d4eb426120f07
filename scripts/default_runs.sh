#!/usr/bin/env bash
# scripts/default_runs.sh: the default run of every optimizer, `./train -opt NAME` and nothing else (GPT-2
# d4, B=8, T=64, 200 steps, 10% warmup, cosine to 10%, clip 1.0, seed 1337, GCIDE, each optimizer's
# default lr from `-opt list`), into DIR/NAME/ (log.jsonl, stdout.txt; checkpoints deleted), then
# DIR/meta.txt, DIR/table.md (scripts/results.py loss) and DIR/loss.png, DIR/memory.png (scripts/plot.sh).
# This is the CPU loss table: every optimizer at the lr it ships with, which is what a user gets.
#   scripts/default_runs.sh [--train ./train_cpu] [--out results/cpu] [--no-plot] [NAME ...]
# Runs one training at a time (each uses every core); a finished run (its stdout has a summary line) is
# kept, not redone, so the script can be stopped and started again. About 80 s per optimizer on 2 idle
# cores (d4), 25 minutes for all 19. With --train ./train_gpu the optimizers without CUDA kernels are
# left out (scripts/gpu_optim_runs.sh is the GPU's version, with GPT-2 124M end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
train=./train_cpu; out=results/cpu; plot=1; opts=()
while [ $# -gt 0 ]; do
    case "$1" in
        --train) train=$2; shift ;;
        --out) out=$2; shift ;;
        --no-plot) plot=0 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "error: unknown option '$1' (see $0 --help)" >&2; exit 2 ;;
        *) opts+=("$1") ;;
    esac
    shift
done
if [ ! -x "$train" ]; then
    echo "building $(basename "$train")" >&2
    make -s "$(basename "$train")" >&2 || { echo "error: could not build $train" >&2; exit 2; }
fi
[ -f data/gcide/gcide_train.bin ] || make -s data >&2
# every optimizer this trainer runs, in -opt list's order
[ ${#opts[@]} -gt 0 ] || mapfile -t opts < <(bash scripts/opt_names.sh "$train")
[ ${#opts[@]} -gt 0 ] || { echo "error: $train -opt list gave no optimizer" >&2; exit 2; }
mkdir -p "$out"
rev=$(bash scripts/revision.sh "$out")
for o in "${opts[@]}"; do
    d="$out/$o"
    if grep -q '^summary:' "$d/stdout.txt" 2>/dev/null; then echo "$o: done before, kept" >&2; continue; fi
    mkdir -p "$d"
    t0=$SECONDS
    set +e
    "$train" -opt "$o" -o "$d" -overwrite 1 > "$d/stdout.txt" 2>&1
    rc=$?
    set -e
    rm -f "$d"/checkpoint*.bin "$d/.lock"
    echo "$o: exit $rc, $((SECONDS - t0)) s, $(grep '^summary:' "$d/stdout.txt" | sed 's/.*\(val_loss=[^ ]*\).*/\1/')" >&2
done
{
    echo "command: scripts/default_runs.sh --train $train --out $out ${opts[*]}"
    # the runs' own start times (their config records), so kept runs keep their dates
    dates=$(for o in "${opts[@]}"; do head -n 1 "$out/$o/log.jsonl" 2>/dev/null | sed -nE 's/.*"date":"([^"]+)".*/\1/p'; done | sort)
    echo "date: runs started $(echo "$dates" | head -n 1) .. $(echo "$dates" | tail -n 1)"
    echo "machine: $(uname -srm); $(getconf _NPROCESSORS_ONLN) cores; $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "git: $rev"
    echo "trainer: $train -opt NAME, nothing else; model d4, B=8, T=64, steps 200, each optimizer's default lr, val every 50 steps on 8 batches, seed 1337"
    echo "learning rates (each optimizer's default, from -opt list):"
    for o in "${opts[@]}"; do
        lr=$(sed -nE 's/.*"opt":"[a-z0-9_]+","lr":([^,]+),.*"relative_step":([01]).*/\1 \2/p' "$out/$o/log.jsonl" 2>/dev/null | head -n 1 |
             awk '{ if ($2 == 1) print "default"; else printf "%.3g\n", $1 }')
        echo "  $o ${lr:-?}"
    done
} > "$out/meta.txt"
python3 scripts/results.py loss "$out" > "$out/table.md"
[ "$plot" = 1 ] && bash scripts/plot.sh loss "$out"
echo "wrote $out/table.md$([ "$plot" = 1 ] && echo ", $out/loss.png, $out/memory.png")" >&2

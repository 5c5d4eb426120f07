#!/usr/bin/env bash
# scripts/loss_table.sh: every optimizer on the same data, seed, model, batch and steps, each with its
# own learning rate (the table below), then the markdown tables and PNG plots of the article's layout.
#
#   scripts/loss_table.sh --cpu    # d4, B=8, T=64, 200 steps: every optimizer in < 60 min on 2 cores
#   scripts/loss_table.sh --gpu    # GPT-2 d12, B=16, T=1024, 600 steps, with ./train (the CUDA trainer)
#   scripts/loss_table.sh --tiny   # 2:64:2, B=2, T=32, 12 steps: seconds per optimizer (CI)
# Options: --opts "adamw came ..." (default: every optimizer of `-opt list`), --steps N, --round NAME
# (output folder results/NAME, default the preset's name), --out DIR (instead of results/NAME),
# --train BIN (default ./train for --gpu, ./train_cpu otherwise), --lr OPT=LR (repeatable override).
# Anything after `--` goes to every training run unchanged.
#
# Writes, under results/ROUND/:
#   OPT/log.jsonl, OPT/stdout.txt   each run (the trainer's own log and its printed lines)
#   table.md                        the article's tables: 8-bit vs standard; Adam / Adafactor / CAME; all
#   loss.png, memory.png            loss curves of every optimizer on one chart; peak memory per optimizer
#   meta.txt                        command, machine, date, git revision, the learning-rate table used
# Set-up: gnuplot (Debian: apt-get install -y gnuplot-nox; done here when missing and run as root) and
# python3 (standard library only).
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- per-optimizer peak learning rates, one row per preset (blank = the optimizer's own default).
# Sensible values for short GPT-2 runs (warmup 10%, cosine to 10%, clip 1.0), or the best of
# scripts/sweep.sh: adam-family 1e-3 at d4 (6e-4 at d12, GPT-2's own); lion ~10x smaller (its paper:
# 3-10x); sophia slightly below AdamW (its README); came 0.5x AdamW (its README: 0.5-0.9x);
# adafactor: its relative step (no -l: lr = min(1e-2, 1/sqrt(t)) * RMS(theta)); adalomo's lr is
# scaled by RMS(theta) ~ 0.02 like Adafactor's, so 1e-2 matches Adafactor's early step; sgd/lomo
# (plain SGD after global-norm clipping at 1) 0.3; sgdm 0.03 (momentum 0.9 => effective 0.3).
lr_table() { # PRESET OPT -> lr or empty
    case "$1:$2" in
        cpu:sgd|cpu:lomo|tiny:sgd|tiny:lomo) echo 0.3 ;;
        gpu:sgd|gpu:lomo) echo 0.1 ;;
        cpu:sgdm|tiny:sgdm) echo 0.03 ;;
        gpu:sgdm) echo 0.01 ;;
        cpu:adam|cpu:adamw|cpu:adam8bit|cpu:adamw8bit|cpu:paged_adamw8bit) echo 1e-3 ;;
        tiny:adam|tiny:adamw|tiny:adam8bit|tiny:adamw8bit|tiny:paged_adamw8bit) echo 1e-3 ;;
        gpu:adam|gpu:adamw|gpu:adam8bit|gpu:adamw8bit|gpu:paged_adamw8bit) echo 6e-4 ;;
        cpu:lion) echo 1e-3 ;;   # scripts/sweep.sh lion (60 steps): 1e-4 7.95, 3e-4 6.06, 1e-3 4.89 val
        tiny:lion) echo 1e-4 ;;
        gpu:lion) echo 6e-5 ;;
        cpu:sophia|tiny:sophia) echo 8e-4 ;;
        gpu:sophia) echo 5e-4 ;;
        cpu:came) echo 1e-4 ;;   # scripts/sweep.sh came (60 steps): 1e-4 4.96, 2e-4 5.05, 5e-4 5.20, 1e-3 5.62 val
        tiny:came) echo 5e-4 ;;
        gpu:came) echo 3e-4 ;;
        *:adalomo) echo 1e-2 ;;
        *:adafactor) echo "" ;;
        *) echo "" ;;   # an optimizer added later: its own default (-opt list)
    esac
}

preset=cpu; opts=""; steps=""; round=""; out=""; train=""; extra=(); overrides=()
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) preset=cpu ;; --gpu) preset=gpu ;; --tiny) preset=tiny ;;
        --opts) opts=$2; shift ;;
        --steps) steps=$2; shift ;;
        --round) round=$2; shift ;;
        --out) out=$2; shift ;;
        --train) train=$2; shift ;;
        --lr) overrides+=("$2"); shift ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option '$1' (see $0 --help)" >&2; exit 2 ;;
    esac
    shift
done

case $preset in
    cpu)  model=d4;    B=8;  T=64;   def_steps=200; V=50;  M=8;  train=${train:-./train_cpu} ;;
    tiny) model=2:64:2; B=2; T=32;   def_steps=12;  V=6;   M=2;  train=${train:-./train_cpu} ;;
    gpu)  model=d12;   B=16; T=1024; def_steps=600; V=100; M=20; train=${train:-./train} ;;
esac
steps=${steps:-$def_steps}
out=${out:-results/${round:-$preset}}

if [ ! -x "$train" ]; then
    target=$(basename "$train")
    echo "building $target"; make -s "$target" >&2 || { echo "error: could not build $train" >&2; exit 2; }
fi
if [ "$preset" != tiny ] && [ ! -f data/gcide/gcide_train.bin ]; then make -s data; fi
. scripts/plot_setup.sh   # ensures gnuplot (installs gnuplot-nox when root and missing)

[ -n "$opts" ] || opts=$($train -opt list | awk 'NR > 1 { print $1 }' | tr '\n' ' ')
mkdir -p "$out"
{
    echo "command: $0 --$preset --steps $steps --opts \"$opts\" ${extra[*]:-}"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(uname -srm); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ //')"
    command -v nvidia-smi >/dev/null 2>&1 && echo "gpu: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "trainer: $train; model $model, B=$B, T=$T, steps $steps, val every $V steps on $M batches, seed 1337"
    echo "OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-unset}; load average at start: $(cut -d" " -f1-3 /proc/loadavg)"
    echo "learning rates (blank: the optimizer's default):"
} > "$out/meta.txt"

for o in $opts; do
    lr=$(lr_table "$preset" "$o")
    for ov in "${overrides[@]:-}"; do [ "${ov%%=*}" = "$o" ] && lr=${ov#*=}; done
    echo "  $o ${lr:-default}" >> "$out/meta.txt"
    lrflag=(); [ -n "$lr" ] && lrflag=(-l "$lr")
    mkdir -p "$out/$o"
    rm -f "$out/$o/log.jsonl"
    echo "== $o (lr ${lr:-default}) -> $out/$o" >&2
    start=$SECONDS
    if ! $train -model "$model" -b "$B" -t "$T" -x "$steps" -v "$V" -m "$M" -gen 0 -seed 1337 \
            -opt "$o" "${lrflag[@]}" -o "$out/$o" "${extra[@]}" > "$out/$o/stdout.txt" 2>&1; then
        echo "   $o failed (exit $?); last lines:" >&2; tail -n 3 "$out/$o/stdout.txt" >&2
    fi
    rm -f "$out/$o/checkpoint.bin"   # checkpoints are large and not results
    echo "   $(grep '^summary:' "$out/$o/stdout.txt" || echo 'no summary') ($((SECONDS - start)) s)" >&2
done

python3 scripts/results.py loss "$out" > "$out/table.md"
bash scripts/plot.sh loss "$out"
echo "wrote $out/table.md, $out/loss.png, $out/memory.png" >&2
cat "$out/table.md"

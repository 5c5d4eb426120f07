#!/usr/bin/env bash
# scripts/bench_cpu.sh: how fast the CPU trainer is on this machine, against this machine's own peak.
#
#   1. build/bench/peak_flops   the fp32 FMA peak (independent FMA chains, all cores)
#   2. build/bench/bench_matmul GFLOP/s of cpu/matmul.c on the GPT-2 shapes, forward and backward
#   3. ./train_cpu -model d4 and -model d12 at fixed B, T: tokens/s and the matmul GFLOP/s they imply
# and prints a markdown table (machine, date, commands, figures) for the README.
#
# Usage: scripts/bench_cpu.sh [-quick]
#   -quick        shorter timings, only C=768 in the matmul table, d4 only (a smoke run)
# Environment:
#   BT=1024       rows of the matmul benchmark (B*T of the trainer runs below)
#   TRAIN_FLAGS   extra flags for the trainer runs (default: "-m 1": one val batch at the end)
#   STEPS=6       trainer steps per run
# The machine should be otherwise idle: with 2 cores, any other busy process halves the figures.
# Without a trainer (./train_cpu missing and `make train_cpu` failing, or no dataset), the script
# reports the matmul part only.
set -u
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "-quick" ] && QUICK=1
BT=${BT:-1024}
STEPS=${STEPS:-6}
TRAIN_FLAGS=${TRAIN_FLAGS:--m 1}
B=4
T=$((BT / B))
LOG=$(mktemp -d /tmp/bench_cpu.XXXXXX)

echo "== building the benchmarks (make bench)"
if ! make -s bench >"$LOG/build.txt" 2>&1; then
    cat "$LOG/build.txt"
    echo "error: 'make bench' failed (see above); fix the build and rerun" >&2
    exit 1
fi

MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1)
CORES=$(nproc)
FLAGS=$(lscpu 2>/dev/null | sed -n 's/^Flags:[[:space:]]*//p')
ISA=avx2
case " $FLAGS " in *" avx512f "*) ISA="avx512f" ;; esac
DATE=$(date -u +"%Y-%m-%d %H:%M UTC")

# Other busy processes steal cores from the OpenMP threads (which then wait for each other at
# every barrier): measure how busy the CPUs are over 2 seconds and say so, since the figures would
# be low. (The load average lags by a minute.)
cpu_busy_percent() {
    local a b c d e f g h t1 i1 t2 i2
    read -r _ a b c d e f g h _ < /proc/stat; t1=$((a + b + c + d + e + f + g + h)); i1=$d
    sleep 2
    read -r _ a b c d e f g h _ < /proc/stat; t2=$((a + b + c + d + e + f + g + h)); i2=$d
    echo $((100 - 100 * (i2 - i1) / (t2 - t1 > 0 ? t2 - t1 : 1)))
}
BUSY=""
if [ -r /proc/stat ]; then
    PCT=$(cpu_busy_percent)
    if [ "$PCT" -gt 10 ]; then
        echo "warning: the CPUs are ${PCT}% busy before starting: other processes are running; figures will be low"
        BUSY=" (CPUs ${PCT}% busy with other work at start)"
    fi
fi

echo "== fp32 FMA peak"
PEAK_SECONDS=0.5
[ $QUICK = 1 ] && PEAK_SECONDS=0.2
./build/bench/peak_flops $PEAK_SECONDS | tee "$LOG/peak.txt"
grep -q '^warning' "$LOG/peak.txt" && BUSY="$BUSY (peak measured on a busy machine)"
PEAK_LINE=$(grep '^peak:' "$LOG/peak.txt")
PEAK=$(sed -n 's/.*gflops_total=\([0-9.]*\).*/\1/p' <<<"$PEAK_LINE")
PEAK_CORE=$(sed -n 's/.*gflops_per_core=\([0-9.]*\).*/\1/p' <<<"$PEAK_LINE")
PEAK_ISA=$(sed -n 's/.*isa=\([a-z0-9]*\).*/\1/p' <<<"$PEAK_LINE")

echo "== matmul GFLOP/s (BT=$BT)"
MM_ARGS="-bt $BT -peak $PEAK"
[ $QUICK = 1 ] && MM_ARGS="$MM_ARGS -c 768 -time 0.1"
./build/bench/bench_matmul $MM_ARGS | tee "$LOG/matmul.txt" | grep -v '^matmul:'

# ---- the trainer ---------------------------------------------------------------------------------
# Training flops per token from the matmuls alone: 6 per weight (2 forward, 4 backward), over the
# 12*C^2 weights of each block and the C*V of the LM head. Attention scores, layernorms, GELU and
# the optimizer are left out, so this is a lower bound on the work done.
matmul_flops_per_token() {  # L C
    echo "6 * ($1 * 12 * $2 * $2 + $2 * 50304)" | bc
}

TRAIN_ROWS=()
if [ ! -x ./train_cpu ]; then
    echo "== ./train_cpu missing: trying 'make train_cpu'"
    make -s train_cpu >"$LOG/train_build.txt" 2>&1 || echo "   (could not build the trainer; reporting the matmuls only)"
fi
MODELS="d4 d12"
[ $QUICK = 1 ] && MODELS="d4"
if [ -x ./train_cpu ]; then
    for m in $MODELS; do
        n=${m#d}
        cmd="./train_cpu -model $m -b $B -t $T -x $STEPS $TRAIN_FLAGS"
        echo "== $cmd"
        if $cmd >"$LOG/train_$m.txt" 2>&1 && grep -q '^summary:' "$LOG/train_$m.txt"; then
            tail -n 3 "$LOG/train_$m.txt"
            tps=$(grep '^summary:' "$LOG/train_$m.txt" | tail -1 | sed -n 's/.*tok_per_s=\([0-9.]*\).*/\1/p')
            fpt=$(matmul_flops_per_token "$n" $((64 * n)))
            gf=$(echo "scale=1; $tps * $fpt / 1000000000" | bc)
            frac=$(echo "scale=1; 100 * $gf / $PEAK" | bc)
            TRAIN_ROWS+=("| \`$cmd\` | $tps | $gf | $frac% |")
        else
            tail -n 5 "$LOG/train_$m.txt"
            echo "   (the trainer run failed; see $LOG/train_$m.txt)"
            TRAIN_ROWS+=("| \`$cmd\` | failed | | |")
        fi
    done
fi

# ---- the markdown table ---------------------------------------------------------------------------
echo
echo "== markdown (for the README)"
echo
echo "Machine: $MODEL, $CORES cores ($ISA), $DATE$BUSY. Command: \`scripts/bench_cpu.sh\`."
echo
echo "fp32 FMA peak (\`build/bench/peak_flops\`, $PEAK_ISA): **$PEAK GFLOP/s** ($PEAK_CORE per core)."
echo
echo "Matmuls (\`build/bench/bench_matmul $MM_ARGS\`, BT = $BT; backward = dinp + dweight):"
echo
echo "| C | shape | in x out | forward GFLOP/s | of peak | backward GFLOP/s | of peak |"
echo "|---|---|---|---|---|---|---|"
grep '^matmul:' "$LOG/matmul.txt" | while read -r line; do
    get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
    C=$(get C); shape=$(get shape); fwd=$(get fwd_gflops); bwd=$(get bwd_gflops)
    if [ "$shape" = all ]; then dims="all five"; else dims="$(get in) x $(get out)"; fi
    pf=$(echo "scale=1; 100 * $fwd / $PEAK" | bc)
    pb=$(echo "scale=1; 100 * $bwd / $PEAK" | bc)
    echo "| $C | $shape | $dims | $fwd | $pf% | $bwd | $pb% |"
done
if [ ${#TRAIN_ROWS[@]} -gt 0 ]; then
    echo
    echo "Trainer (matmul GFLOP/s = tok/s x 6 x (12 L C^2 + C V), attention and the rest not counted):"
    echo
    echo "| command | tok/s | matmul GFLOP/s | of peak |"
    echo "|---|---|---|---|"
    for r in "${TRAIN_ROWS[@]}"; do echo "$r"; done
else
    echo
    echo "(no trainer run: ./train_cpu is not available)"
fi
echo
echo "logs: $LOG"

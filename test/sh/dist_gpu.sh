#!/usr/bin/env bash
# test/sh/dist_gpu.sh: what of the CUDA trainer's data parallelism runs without a GPU. ./train_gpu plans
# its memory without touching a device (-memory-only 1), so under mpirun its ledgers show each rank's
# ZeRO-1 shard exactly: the same plan code as the CPU trainer (trainer/zero.c), so the GPU's per-rank
# state bytes must equal the CPU trainer's to the byte, and add up to the unsharded state. Also: the
# refusals that need no GPU. Skipped (a note, no PASS line) when ./train_gpu was not built (CI builds
# it before make test) or mpirun is missing. The training itself needs a GPU: test/test_gpt2cu.cu.
cd "$(dirname "$0")/../.."
. test/lib.sh
GPU=./train_gpu
expect_exit "cpu: -dist-force 1 is the CUDA trainer's" 2 "runs the CUDA trainer's NCCL path" -- $TRAIN -model 1:32:2 -t 16 -x 1 -dist-force 1
if [ ! -x "$GPU" ]; then skip_test "CUDA data-parallel planning (make train_gpu)" "train_gpu not built"; exit 0; fi
# sophia's label draws for the Gauss-Newton-Bartlett pass: one float per position of the micro-batch
# (-b 2 -t 16: 128 bytes), in the ledger; not there for another optimizer
$GPU -model 2:64:2 -b 2 -t 16 -memory-only 1 -opt sophia >"$TMP/so.txt" 2>&1; $GPU -model 2:64:2 -b 2 -t 16 -memory-only 1 -opt adamw >"$TMP/aw.txt" 2>&1
grep -Eq "Sophia label draws +\| +128 " "$TMP/so.txt" && ! grep -q "Sophia label draws" "$TMP/aw.txt" \
    && pass "gpu sophia: its label draws (4 bytes x B x T = 128) in the ledger, nothing for adamw" \
    || fail "gpu sophia label draws in the ledger" "$(grep -h 'label draws' "$TMP/so.txt" "$TMP/aw.txt" | tr '\n' ' ')"
if ! command -v mpirun >/dev/null; then skip_test "CUDA data-parallel planning" "mpirun missing"; exit 0; fi
MPIRUN="mpirun --oversubscribe --allow-run-as-root --mca btl self,vader"
export OMP_NUM_THREADS=1
SMALL="-model 2:64:2 -b 2 -t 16 -memory-only 1"
nccl=0; ldd "$GPU" 2>/dev/null | grep -q libnccl && nccl=1

# the rank lines "rank R/N: -zero 1 shard of params [A, B) = ..., fp32 master X bytes, optimizer state S bytes of F (largest ...)"
# as "R A B S F X" (both trainers shard the fp32 master by the same ranges: X = 4 (B - A) in bf16 mode),
# from the files named (each rank prints its own line on stderr, which mpirun may interleave with rank 0's
# stdout: runs keep the two apart, and the line is found anywhere on a line)
shards() { cat "$@" | sed -nE 's/^.*rank ([0-9]+)\/[0-9]+: -zero 1 shard of params \[([0-9]+), ([0-9]+)\) = [0-9]+ of [0-9]+, fp32 master ([0-9]+) bytes, optimizer state ([0-9]+) bytes of ([0-9]+).*/\1 \2 \3 \5 \6 \4/p' | sort -n; }
if [ $nccl = 1 ]; then
    # adafactor and came: row ranges of the matrices (the factored kernels reduce the column statistics
    # across the ranks sharing a matrix), the CPU trainer's plan exactly
    # sophia: element ranges, its Hessian EMA with its parameters' shard (the element-wise kernels)
    # and the whole-tensor ones (muon, adam_mini, adamw4bit, galore_adamw, whose CPU unit is whole tensors
    # too): every optimizer with kernels
    for spec in "2 adamw" "3 adamw8bit" "3 came" "2 adafactor" "4 came" "2 paged_adamw8bit" "3 sophia" "3 lion8bit" "2 sgdm8bit" \
                "2 muon" "3 adam_mini" "2 adamw4bit" "2 galore_adamw" "3 sgd" "2 sgdm" "2 adam" "3 lion" "2 adam8bit"; do
        set -- $spec
        if ! $MPIRUN -np "$1" $GPU $SMALL -opt "$2" -zero 1 >"$TMP/gpu.txt" 2>"$TMP/gpu.err"; then
            fail "gpu plan $2 at $1 ranks" "$(tail -n 2 "$TMP/gpu.err" | tr '\n' ' ')"; continue
        fi
        g=$(shards "$TMP/gpu.txt" "$TMP/gpu.err")
        sum=$(echo "$g" | awk '{ s += $4 } END { print s + 0 }'); full=$(echo "$g" | awk 'NR == 1 { print $5 }')
        $MPIRUN -np "$1" $TRAIN $SMALL -opt "$2" -zero 1 >"$TMP/cpu.txt" 2>"$TMP/cpu.err" || { fail "cpu plan $2 at $1 ranks" "$(tail -n 2 "$TMP/cpu.err" | tr '\n' ' ')"; continue; }
        c=$(shards "$TMP/cpu.txt" "$TMP/cpu.err")
        # row shards: every rank sharing a matrix keeps its whole column state (v_col, came's res_col too),
        # so the ranks' state adds up to the unsharded plus those copies: at most (ranks - 1) matrices cut,
        # each column state 4 bytes x 256 columns at most in this model, two of them for came
        extra=$((sum - full)); most=0
        case "$2" in adafactor) most=$(( ($1 - 1) * 4 * 256 ));; came) most=$(( ($1 - 1) * 8 * 256 ));; esac
        if [ "$(echo "$g" | wc -l)" = "$1" ] && [ "$g" = "$c" ] && [ "$extra" -ge 0 ] && [ "$extra" -le "$most" ] \
            && { [ "$most" = 0 ] || [ "$extra" -gt 0 ]; }; then
            pass "gpu -zero 1 $2, $1 ranks: each rank's shard, fp32 master and state bytes = the CPU trainer's, summing to the unsharded $full$([ "$most" = 0 ] || echo " + $extra of column state on each sharing rank")"
        else fail "gpu -zero 1 $2, $1 ranks: shards" "gpu [$(echo $g)] cpu [$(echo $c)] sum $sum full $full"; fi
    done
    # GPT-2 124M at 8 ranks (planned: -plan-world): came's row shards balance the state (the 38.6M-parameter
    # embedding is cut too, where whole tensors left one rank with it); the GPU's rank lines are the CPU's
    $GPU -model d12 -memory-only 1 -opt came -zero 1 -plan-world 8 >"$TMP/g8.txt" 2>&1
    $TRAIN -model d12 -memory-only 1 -opt came -zero 1 -plan-world 8 >"$TMP/c8.txt" 2>&1
    g8=$(shards "$TMP/g8.txt"); c8=$(shards "$TMP/c8.txt")
    bal=$(echo "$g8" | awk '{ s += $4; if ($4 > m) m = $4 } END { if (NR == 8 && s > 0) printf "%.4f", m / (s / NR); else print "none" }')
    if [ -n "$g8" ] && [ "$g8" = "$c8" ] && awk -v b="$bal" 'BEGIN { exit !(b != "none" && b <= 1.01) }'; then
        pass "gpu -zero 1 came d12, 8 ranks (planned): rank lines = the CPU trainer's, largest state shard $bal x the mean"
    else fail "gpu -zero 1 came d12, 8 ranks" "balance $bal; gpu [$(echo $g8 | head -c 300)] cpu [$(echo $c8 | head -c 300)]"; fi
    # rank 0's ledger: exactly its shard of each state buffer (adamw: 4 bytes per parameter of its range
    # in exp_avg and in exp_avg_sq) and of the fp32 master, and the fp32 all-reduce buffer (4 bytes per
    # parameter up to the chunk)
    $MPIRUN -np 2 $GPU $SMALL -opt adamw -zero 1 >"$TMP/gpu.txt" 2>"$TMP/gpu.err"
    hi=$(shards "$TMP/gpu.txt" "$TMP/gpu.err" | awk '$1 == 0 { print $3 }')
    P=$(sed -nE 's/^summary: .*params=([0-9]+) .*/\1/p' "$TMP/gpu.txt")
    grep -Eq "master shard \(fp32\) +\| +$((4 * hi)) " "$TMP/gpu.txt" && ! grep -q "master weights (fp32)" "$TMP/gpu.txt" \
        && pass "gpu -zero 1: rank 0's ledger holds its shard of the fp32 master ($((4 * hi)) bytes of $((4 * P)))" \
        || fail "gpu -zero 1: the fp32 master in rank 0's ledger" "$(grep -i 'master' "$TMP/gpu.txt" | tr '\n' ' ')"
    grep -Eq "opt: exp_avg +\| +$((4 * hi)) " "$TMP/gpu.txt" && grep -Eq "opt: exp_avg_sq +\| +$((4 * hi)) " "$TMP/gpu.txt" \
        && pass "gpu -zero 1: rank 0's ledger holds its shard of exp_avg and exp_avg_sq ($((4 * hi)) bytes each)" \
        || fail "gpu -zero 1: rank 0's ledger" "$(grep 'opt:' "$TMP/gpu.txt" | tr '\n' ' ')"
    grep -Eq "grad all-reduce \(fp32\) +\| +$((4 * P)) " "$TMP/gpu.txt" \
        && pass "gpu 2 ranks bf16: the fp32 all-reduce buffer is in the ledger ($((4 * P)) bytes, 4 per parameter)" \
        || fail "gpu all-reduce buffer in the ledger" "$(grep -i 'all-reduce' "$TMP/gpu.txt")"
    # -plan-world 2 (one process, no MPI) plans what mpirun -np 2 runs: the same rank lines, and rank 0's
    # ledger (master shard, state, all-reduce buffer, every line) equal to the real rank 0's
    $GPU $SMALL -opt adamw -zero 1 -plan-world 2 -plan-rank 0 >"$TMP/plan.txt" 2>&1
    ledger_lines() { grep -E '^\| [a-z]' "$1" | grep -v '^| category'; }
    if [ "$(shards "$TMP/plan.txt")" = "$(shards "$TMP/gpu.txt" "$TMP/gpu.err")" ] && [ -n "$(ledger_lines "$TMP/plan.txt")" ] \
        && [ "$(ledger_lines "$TMP/plan.txt")" = "$(ledger_lines "$TMP/gpu.txt")" ]; then
        pass "gpu -plan-world 2: the rank lines and rank 0's ledger equal mpirun -np 2's"
    else
        fail "gpu -plan-world 2 vs mpirun -np 2" "$(diff <(ledger_lines "$TMP/plan.txt") <(ledger_lines "$TMP/gpu.txt") | head -n 4 | tr '\n' ' ')"
    fi
    TRAIN_ALLREDUCE_CHUNK=100003 $GPU $SMALL -opt adamw -dist-force 1 >"$TMP/chunk.txt" 2>&1
    grep -Eq "grad all-reduce \(fp32\) +\| +400012 " "$TMP/chunk.txt" \
        && pass "gpu -dist-force 1: the all-reduce buffer is one chunk (TRAIN_ALLREDUCE_CHUNK=100003: 400012 bytes)" \
        || fail "gpu all-reduce chunk" "$(grep -i 'all-reduce' "$TMP/chunk.txt")"
    $GPU $SMALL -opt adamw >"$TMP/one.txt" 2>&1
    $GPU $SMALL -opt adamw -precision fp32 -dist-force 1 >"$TMP/fp32.txt" 2>&1
    ! grep -q "all-reduce" "$TMP/one.txt" && ! grep -q "all-reduce" "$TMP/fp32.txt" \
        && pass "gpu: no all-reduce buffer at one rank, nor in fp32 mode (reduced in place)" \
        || fail "gpu: all-reduce buffer where none is needed" "$(grep -h 'all-reduce' "$TMP/one.txt" "$TMP/fp32.txt" | tr '\n' ' ')"
    # a machine without a GPU: one clear line on every rank, exit 2, no hang
    if ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
        expect_exit "gpu 2 ranks, no GPU: one clear line" 2 "no CUDA GPU found" -- timeout 60 $MPIRUN -np 2 $GPU -model 2:64:2 -b 2 -t 16 -x 1
        expect_exit "gpu -dist-force 1, no GPU: one clear line" 2 "no CUDA GPU found" -- $GPU -model 2:64:2 -b 2 -t 16 -x 1 -dist-force 1
    fi
else
    expect_exit "gpu without NCCL: 2 ranks refused, naming NCCL" 2 "built without NCCL.*install NCCL" -- timeout 60 $MPIRUN -np 2 $GPU $SMALL
    expect_exit "gpu without NCCL: -dist-force 1 refused" 2 "without NCCL" -- $GPU $SMALL -dist-force 1
fi

#!/usr/bin/env bash
# test/sh/dist.sh: data-parallel training (trainer/dist.c) and ZeRO-1 (trainer/zero.c) under mpirun,
# against one rank on the same global batch. Skipped (no PASS line, a note) when mpirun is missing or
# the trainer was built without MPI; .ci/run installs Open MPI so CI runs it.
#
# Reference: one rank with -b 6 trains on exactly the tokens that 2 ranks with -b 3 (or 3 ranks of
# -b 2) train on: every rank reads the same stream and keeps its rows of the global micro-batch.
# The model has an odd width (-model 1:33:3: 33 columns), so no even cut of the flat parameters falls
# on a row boundary of the embedding matrix, and the row-sharded optimizers (adafactor, came) give
# the ranks unequal numbers of its rows.
# Tolerance against one rank: each rank's per-unit fp32 gradient is averaged over ranks before anything
# is rounded, so the only difference from one rank is the order of fp32 additions (sums over B*T rows
# split in two and added, then scaled by 1/2 instead of 1/(B*T) at once): about 1e-7 relative in each
# gradient element. After 3 steps that moves the loss by < 1e-5 for every optimizer here (measured:
# <= 2e-6); lion's sign and the 8-bit quantization could flip on such a difference, but only for
# elements at a tie, which moves the mean loss by far less. The row-sharded factored optimizers add
# only a different split of double sums (test_zero.c: bit-identical on its matrices). Tolerance 1e-4
# absolute on each step's loss (losses ~10.8).
# Bit for bit: with -zero 1 each rank gets its range's gradient by a reduce-scatter instead of the
# all-reduce of plain data parallel, keeps only its range of the fp32 master, and the gradient norm is
# the all-reduce of the ranks' sums of squares. At 2 ranks every element is one commutative fp32
# addition either way, and the norm's double sum is rounded to fp32, so -zero 1 and plain data parallel
# write the same checkpoint byte for byte (checked for adamw, came, and in fp32 mode). At 3
# ranks the association of the three partial sums depends on Open MPI's algorithm for each collective,
# so only the reduction order differs (the 1e-4 tolerance above).
cd "$(dirname "$0")/../.."
. test/lib.sh
if ! command -v mpirun >/dev/null; then skip_test "data parallel, test/sh/dist.sh" "mpirun missing"; exit 0; fi
if ! grep -q "MPI_Init" <(nm "$TRAIN" 2>/dev/null) && ! ldd "$TRAIN" 2>/dev/null | grep -q libmpi; then
    echo "note: $TRAIN was built without MPI; data-parallel tests skipped"; exit 0
fi
MPIRUN="mpirun --oversubscribe --allow-run-as-root --mca btl self,vader"
export OMP_NUM_THREADS=1
L=1; C=33
SMALL="-model $L:$C:3 -t 16 -x 3 -v 0 -gen 0"
# One global batch everywhere: 6 rows of 16 tokens = 1 rank x -b 6 = 2 ranks x -b 3 = 3 ranks x -b 2.

# compare A B TOL: the same steps in both logs, every step's loss within TOL; prints the largest difference
compare() {
    paste <(step_losses "$1") <(step_losses "$2") | awk -v tol="$3" '
        { n++; if ($1 != $4) bad = 1; d = $2 - $5; if (d < 0) d = -d; if (d > max) max = d }
        END { if (n != 3 || bad) { print "steps differ (" n " lines)"; exit 1 } printf "%.3g\n", max; exit (max > tol) }'
}
run1() { $TRAIN $SMALL "$@" >"$TMP/out1" 2>&1; }
# (stdout: rank 0's; stderr: every rank's shard line and errors, kept apart: mpirun may interleave the two
# streams in the middle of a line)
runN() { local n=$1; shift; $MPIRUN -np "$n" $TRAIN $SMALL "$@" >"$TMP/outN" 2>"$TMP/errN"; }
lastN() { tail -n 3 "$TMP/errN" "$TMP/outN" | tr '\n' ' '; }
# check NAME REF RUN: RUN's losses against REF's
check() {
    local d
    d=$(compare "$TMP/$2/log.jsonl" "$TMP/$3/log.jsonl" 1e-4) && pass "$1 (max loss diff $d)" || fail "$1" "max loss diff $d"
}
# same NAME A B: the two runs' checkpoints byte for byte
same() { same_checkpoint "$TMP/$2/checkpoint.bin" "$TMP/$3/checkpoint.bin" && pass "$1" || fail "$1" "checkpoints differ ($(cmp "$TMP/$2/checkpoint.bin" "$TMP/$3/checkpoint.bin" 2>&1 | head -c 120))"; }
# every rank's shard line (trainer/zero.h): "rank start end master_bytes state_bytes"
shards() { cat "$@" | sed -nE 's/^.*rank ([0-9]+)\/[0-9]+: -zero 1 shard of params \[([0-9]+), ([0-9]+)\) = [0-9]+ of [0-9]+, fp32 master ([0-9]+) bytes, optimizer state ([0-9]+) bytes.*/\1 \2 \3 \4 \5/p' | sort -n; }
# formula OPT A B: the state bytes of flat parameters [A, B) of the model above, from the layouts that
# optim/adafactor.c and optim/came.c document (a slice of k rows of a (rows, cols) matrix: adafactor
# 4k + 4cols, came 4k*cols + 8k + 8cols; a whole vector of n: 4n, 8n); "error" when the range cuts a
# vector or a row
formula() {
    awk -v opt="$1" -v a="$2" -v b="$3" -v L=$L -v C=$C 'function t(r, c, reps,   i, lo, hi, k) {
        for (i = 0; i < reps; i++) { lo = off > a ? off : a; hi = off + r * c < b ? off + r * c : b
            if (hi > lo) { if (r == 1 && hi - lo != c) bad = 1; if ((lo - off) % c || (hi - lo) % c) bad = 1; k = (hi - lo) / c
                if (r == 1) s += (opt == "came" ? 8 : 4) * c; else s += opt == "came" ? 4 * k * c + 8 * k + 8 * c : 4 * k + 4 * c }
            off += r * c } }
    BEGIN { off = 0; t(50304, C, 1); t(1024, C, 1); t(1, C, L); t(1, C, L); t(3 * C, C, L); t(1, 3 * C, L); t(C, C, L); t(1, C, L)
            t(1, C, L); t(1, C, L); t(4 * C, C, L); t(1, 4 * C, L); t(C, 4 * C, L); t(1, C, L); t(1, C, 1); t(1, C, 1)
            if (bad) print "error"; else print s }'
}
# every optimizer of the article's set, and lion8bit for the 1-state 8-bit loop (sgdm8bit shares its
# shard unit; muon's whole tensors and the unit of every optimizer: test_zero.c)
ALL="sgd sgdm adam adamw lion sophia lomo adafactor came adalomo adam8bit adamw8bit paged_adamw8bit lion8bit"
ZERO="sgd sgdm adam adamw lion sophia adafactor came adam8bit adamw8bit paged_adamw8bit lion8bit"
xflags() { [ "$1" = sophia ] && echo "-k 2"; }   # sophia: a Hessian estimate at step 2

# the 1-rank references
for opt in $ALL; do
    run1 -b 6 -opt $opt $(xflags $opt) -o "$TMP/$opt.ref" || fail "1 rank $opt" "$(tail -n 2 "$TMP/out1" | tr '\n' ' ')"
done

# plain data parallel (every rank the whole state): the fused-backward pair, and the optimizers whose
# -zero 1 runs below are compared with it byte for byte
for opt in lomo adalomo adamw came; do
    if runN 2 -b 3 -opt $opt -o "$TMP/$opt.dp"; then check "dp $opt: 2 ranks x -b 3 = 1 rank x -b 6" $opt.ref $opt.dp
    else fail "dp $opt: 2 ranks" "$(lastN)"; fi
done
grep -q "data parallel: 2 ranks" "$TMP/outN" && [ "$(grep -c '^summary:' "$TMP/outN")" = 1 ] && grep -q '^summary:.* world=2' "$TMP/outN" \
    && pass "dp: one batch line and one summary (rank 0's), world=2" || fail "dp: rank 0 output" "$(grep -E '^summary|data parallel' "$TMP/outN" | tr '\n' ' ')"

# -zero 1 for every optimizer that shards, 2 ranks, against 1 rank. State bytes: every rank reports its
# shard on stderr. Element-wise and 8-bit shards add up to the unsharded state of the 1-rank run (the
# layout formula); adafactor's and came's each equal the formula for the rank's rows (the column
# state is whole on both ranks that share the embedding).
for opt in $ZERO; do
    if ! runN 2 -b 3 -opt $opt $(xflags $opt) -zero 1 -o "$TMP/$opt.z2"; then
        fail "zero $opt: 2 ranks" "$(lastN)"; continue; fi
    check "zero $opt: 2 ranks -zero 1 = 1 rank" $opt.ref $opt.z2
    shards "$TMP/outN" "$TMP/errN" > "$TMP/$opt.shards"
    full=$(grep -h '"type":"summary"' "$TMP/$opt.ref/log.jsonl" | sed -E 's/.*"state_bytes":([0-9]+).*/\1/')
    nl=$(wc -l < "$TMP/$opt.shards")
    case $opt in
    adafactor|came)
        bad=$(while read -r r a b m s; do f=$(formula $opt $a $b); [ "$f" = "$s" ] || echo "rank $r: $s bytes, formula $f"; done < "$TMP/$opt.shards")
        [ "$nl" = 2 ] && [ -z "$bad" ] && pass "zero $opt: each rank's state bytes = the layout formula for its rows ($(awk '{ printf "%s%s", s, $5; s = " + " }' "$TMP/$opt.shards"))" \
            || fail "zero $opt: state bytes per rank" "$nl rank lines; $bad" ;;
    *)
        sum=$(awk '{ s += $5 } END { print s + 0 }' "$TMP/$opt.shards")
        [ "$nl" = 2 ] && [ "$sum" = "$full" ] && pass "zero $opt: the 2 shards' state adds up to the unsharded $full bytes" \
            || fail "zero $opt: state bytes per rank" "$nl rank lines, shards sum to $sum, unsharded $full" ;;
    esac
done
# the sharded fp32 master: each rank keeps 4 bytes for each parameter of its range, the ranges cover the
# model once, and rank 0's ledger line is its shard's
P=$(sed -nE 's/.*"params":([0-9]+).*/\1/p' "$TMP/came.ref/log.jsonl" | head -n 1)
awk -v P="$P" '{ n++; if ($4 != 4 * ($3 - $2) || $2 != e) bad++; e = $3 } END { exit !(n == 2 && !bad && e == P) }' "$TMP/came.shards" \
    && pass "zero: each rank's fp32 master is 4 bytes x its range, the ranges cover the $P parameters" \
    || fail "zero: master bytes per rank" "$(tr '\n' ' ' < "$TMP/came.shards")"
runN 2 -b 3 -opt came -zero 1 -memory-only 1
m0=$(awk '$1 == 0 { print $4 }' "$TMP/came.shards")
grep -Eq "master shard \(fp32\) +\| +$m0 " "$TMP/outN" && pass "zero: rank 0's ledger holds its fp32 master shard ($m0 bytes)" \
    || fail "zero: master ledger line" "$(grep -E 'master' "$TMP/outN" | head -n 2 | tr '\n' ' ')"
awk '{ n++; if ($5 != 8 * ($3 - $2) || $3 <= $2) bad++ } END { exit !(n == 2 && !bad) }' "$TMP/adamw.shards" \
    && pass "zero adamw: each rank's state is exactly 8 bytes x its parameters" \
    || fail "zero adamw: exact shard bytes" "$(tr '\n' ' ' < "$TMP/adamw.shards")"

# reduce-scatter (-zero 1) against all-reduce (plain data parallel), 2 ranks: the same bytes (header)
for opt in adamw came; do
    same "zero $opt: 2 ranks, -zero 1 (reduce-scatter, sharded master) writes plain data parallel's checkpoint byte for byte" $opt.dp $opt.z2
done
runN 2 -b 3 -opt came -precision fp32 -o "$TMP/f.dp" && runN 2 -b 3 -opt came -precision fp32 -zero 1 -o "$TMP/f.z2" \
    && same "zero came, fp32 mode: 2 ranks, the fp32 gradient reduce-scattered once = all-reduced, byte for byte" f.dp f.z2 \
    || fail "zero fp32 mode" "$(lastN)"

# 3 ranks: gradient accumulation with 8-bit blocks, row shards of the factored optimizers
run1 -b 6 -d 192 -opt adamw8bit -o "$TMP/acc.ref"
if runN 3 -b 2 -d 192 -opt adamw8bit -zero 1 -o "$TMP/acc.z3"; then check "zero adamw8bit: 3 ranks, 2 micro-steps = 1 rank" acc.ref acc.z3
else fail "zero 3 ranks" "$(lastN)"; fi
grep -q "2 micro-steps" "$TMP/outN" && grep -q "data parallel: 3 ranks" "$TMP/outN" && pass "dp: batch line says the micro-steps and the ranks" \
    || fail "dp: batch line" "$(grep -E 'batch:|data parallel' "$TMP/outN" | tr '\n' ' ')"
# the even cuts P/3, 2P/3 fall inside a 256-element block of the embedding; the cuts are whole
# 4096-element pieces from its start (every 8-bit piece is itself quantized with the same blocks)
shards "$TMP/outN" "$TMP/errN" | awk -v P="$P" '{ n++; if ($1 > 0) { even = int(P * $1 / 3); if ($2 % 4096 || even % 256 == 0) bad++ } }
    END { exit !(n == 3 && !bad) }' && pass "zero adamw8bit: 3 ranks, every even cut would split a block; the cuts sit on whole 4096-element pieces" \
    || fail "zero adamw8bit: block cuts" "$(shards "$TMP/outN" "$TMP/errN" | tr '\n' ' ')"
for opt in adafactor came; do
    if runN 3 -b 2 -opt $opt -zero 1 -o "$TMP/$opt.z3"; then
        check "zero $opt: 3 ranks, row shards of the embedding = 1 rank" $opt.ref $opt.z3
        shards "$TMP/outN" "$TMP/errN" > "$TMP/$opt.s3"
        bad=$(while read -r r a b m s; do f=$(formula $opt $a $b); [ "$f" = "$s" ] || echo "rank $r: $s bytes, formula $f"; done < "$TMP/$opt.s3")
        rows=$(awk -v C=$C '$2 < 50304 * C { hi = $3 < 50304 * C ? $3 : 50304 * C; printf "%s%d", s, (hi - $2) / C; s = "/" }' "$TMP/$opt.s3")
        [ "$(wc -l < "$TMP/$opt.s3")" = 3 ] && [ -z "$bad" ] && pass "zero $opt: 3 ranks, each rank's state = the formula for its rows (embedding rows $rows)" \
            || fail "zero $opt: 3 ranks state bytes" "$bad"
    else fail "zero $opt 3 ranks" "$(lastN)"; fi
done
# the dry plan of a world without MPI lists the same shards as the real ranks
$TRAIN $SMALL -b 2 -opt came -zero 1 -memory-only 1 -plan-world 3 > "$TMP/plan" 2>&1
[ -s "$TMP/came.s3" ] && [ "$(shards "$TMP/plan")" = "$(cat "$TMP/came.s3")" ] && pass "plan: -plan-world 3 lists the shards the 3 real ranks keep (came)" \
    || fail "plan: -plan-world 3 (came)" "plan $(shards "$TMP/plan" | tr '\n' ' '); real $(tr '\n' ' ' < "$TMP/came.s3")"

# checkpoints are one unsharded file (the fp32 master gathered from the ranks' shards): stop and resume
# across world sizes; the resumed runs match the uninterrupted 1-rank run
runN 2 -b 3 -opt came -zero 1 -stop 1 -o "$TMP/rc" && run1 -b 6 -opt came -y 1 -stop 2 -o "$TMP/rc" \
    && runN 3 -b 2 -opt came -zero 1 -y 1 -o "$TMP/rc" \
    && check "resume: 2 ranks -zero 1 -> 1 rank -> 3 ranks -zero 1 (came, sharded master)" came.ref rc || fail "resume 2 -> 1 -> 3 ranks" "$(lastN) $(tail -n 3 "$TMP/out1" | tr '\n' ' ')"
runN 2 -b 3 -opt adam8bit -zero 1 -stop 2 -o "$TMP/rz" && runN 3 -b 2 -opt adam8bit -zero 1 -y 1 -o "$TMP/rz" \
    && check "resume: 2 ranks -zero 1 -> 3 ranks -zero 1 (adam8bit)" adam8bit.ref rz || fail "resume across -zero world sizes" "$(lastN)"

# the decision guide over -gpus 3 keeps, per GPU, what the trainer's plan of 3 ranks gives its largest
# rank: bf16 params and grads whole, the master and the state of that rank (exact bytes)
$TRAIN -advise 1 -model $L:$C:3 -gpus 3 -bytes 1 > "$TMP/adv" 2>&1
for opt in adamw came adafactor adamw8bit muon lomo; do
    zf="-zero 1"; [ $opt = lomo ] && zf=""
    $TRAIN -model $L:$C:3 -b 1 -t 16 -opt $opt $zf -memory-only 1 -plan-world 3 > "$TMP/plan" 2>&1
    want=$(awk -F'|' '/^\| total (params|master|grads|optimizer) /{ gsub(/ /, "", $2); v[$2] = $4 + 0 }
        END { printf "%d %d %d %d", v["totalparams"], v["totalmaster"], v["totalgrads"], v["totaloptimizer"] }' "$TMP/plan")
    got=$(awk -v o=$opt '$1 == o { print $3, $4, $5, $6 }' "$TMP/adv")
    [ -n "$got" ] && [ "$got" = "$want" ] && pass "advise -gpus 3 = the dry ledger of the largest of 3 ranks ($opt: params master grads state $got)" \
        || fail "advise -gpus 3 ($opt)" "advise '$got', ledger '$want'"
done

# errors: one clear line, every rank ends (no hang: timeout)
expect_exit "dp: -d not a multiple of -b*-t*ranks" 2 "multiple of -b \* -t \* ranks" -- timeout 60 $MPIRUN -np 2 $TRAIN $SMALL -b 2 -d 96
expect_exit "zero: lomo refused" 2 "lomo: -zero 1 shards optimizer state" -- timeout 60 $MPIRUN -np 2 $TRAIN $SMALL -b 2 -opt lomo -zero 1
expect_exit "plan: -plan-world refused under mpirun" 2 "plan-world plans a world of ranks without MPI" -- timeout 60 $MPIRUN -np 2 $TRAIN $SMALL -b 2 -memory-only 1 -plan-world 3
cat > "$TMP/mismatch.sh" <<EOS
#!/bin/sh
if [ "\$OMPI_COMM_WORLD_RANK" = 1 ]; then exec $TRAIN $SMALL -b 2 -l 0.5; else exec $TRAIN $SMALL -b 2; fi
EOS
expect_exit "dp: different flags on one rank" 2 "rank 1 was started with other flags" -- timeout 60 $MPIRUN -np 2 sh "$TMP/mismatch.sh"

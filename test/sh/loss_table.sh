#!/usr/bin/env bash
# test/sh/loss_table.sh: scripts/loss_table.sh --tiny (the logic of the GPU loss tables on the CPU
# trainer, a 2-layer model, 6 steps a run, AdamW's 3-point sweep 1e-3 3e-3 1e-2):
#  1. it chooses the best lr: the lowest val loss among the sweep's seed-1337 logs (recomputed here from
#     the logs with awk), runs that lr with seeds 1338 and 1339, and its table's mean is theirs;
#  2. it refuses a best lr at an end of the sweep: faked logs with the best at the top end make it run
#     one point beyond (3e-2) and nothing else; faked logs with the best at the bottom plan 3e-4 next;
#  3. it skips finished runs (a second call starts none and leaves every log as it was) and redoes an
#     interrupted one, resumed from its checkpoint with the same final val loss as the uninterrupted run
#     (the trainer's resume is bit-exact);
#  4. it rebuilds the table from the logs alone: no trainer, no scratch folder, the same table.md, a PNG.
# About 30-50 s on 2 cores (about 8 runs of 1-5 s each, depending on the load).
cd "$(dirname "$0")/../.." || exit 1
. test/lib.sh
[ -x "$TRAIN" ] || make -s "$(basename "$TRAIN")" >/dev/null
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # tiny runs: threads only add contention on a shared box
O=$TMP/out; S=$TMP/scratch
LT=(bash scripts/loss_table.sh --tiny --tables pretrain --opts adamw --steps 6 --train "$TRAIN" --no-plot)

# val_loss of the summary record of a log (empty when none)
val_of() { sed -n 's/.*"type":"summary".*"val_loss":\([^,]*\),.*/\1/p' "$1" 2>/dev/null | tail -n 1; }
# the table row of adamw: "best_lr seeds mean"
row_of() { awk -F'|' '$2 ~ /^ adamw / { gsub(/ /, "", $3); gsub(/ /, "", $4); split($5, v, " "); print $3, $4, v[1] }' "$1"; }
logs_sum() { find "$1" -name log.jsonl | sort | xargs md5sum; }

# ---- 1. the best lr, then its seeds
# the planned grid 1e-2 3e-2 1e-1 (at 6 steps the best is near 3e-2: fewer extensions, a shorter test)
G=(--grid "adamw=1e-2,3e-2,1e-1")
if "${LT[@]}" "${G[@]}" --out "$O" --scratch "$S" > "$TMP/1.out" 2> "$TMP/1.err"; then pass "loss_table: --tiny runs"
else fail "loss_table: --tiny runs" "$(tail -n 3 "$TMP/1.err" | tr '\n' ' ')"; fi
D=$O/pretrain/adamw
best=$(for d in "$D"/*/1337; do lr=$(basename "$(dirname "$d")"); v=$(val_of "$d/log.jsonl"); [ -n "$v" ] && echo "$lr $v"; done \
       | sort -g -k2 | head -n 1 | cut -d' ' -f1)
swept=$(ls "$D" | sort -g | tr '\n' ' ')
mean=$(for s in 1337 1338 1339; do val_of "$D/$best/$s/log.jsonl"; done | awk 'NF { n++; t += $1 } END { if (n == 3) printf "%.4f", t / n }')
got=$(row_of "$O/pretrain/table.md")
if [ -n "$best" ] && [ -n "$mean" ] && [ "$got" = "$best 3 $mean" ]; then
    pass "loss_table: best lr = the sweep's lowest val loss ($best of $swept), 3 seeds, mean $mean"
else fail "loss_table: best lr = the sweep's lowest val loss" "logs say '$best 3 $mean' (swept $swept), table says '$got'"; fi
lo=$(echo "$swept" | awk '{ print $1 }'); hi=$(echo "$swept" | awk '{ print $NF }'); tbest=${got%% *}
if [ -n "$tbest" ] && [ "$tbest" != "$lo" ] && [ "$tbest" != "$hi" ] || grep -q 'extension limit reached' "$O/pretrain/table.md"; then
    pass "loss_table: the table's lr $tbest is inside the swept range ($swept)"
else fail "loss_table: the table's lr is inside the swept range" "table's $tbest of $swept"; fi

# ---- 2. a best lr at an end of the sweep extends it
fake() { # DIR LR VAL: a finished run's log with this val loss
    mkdir -p "$1/$2/1337"
    printf '{"type":"step","step":6,"loss":%s,"lr":0.001,"norm":1,"ms":1,"tok_per_s":1}\n{"type":"summary","opt":"adamw","steps":6,"train_loss":%s,"val_loss":%s,"tok_per_s":1000.0,"peak_mib":100.000,"state_bytes":8,"state_bytes_per_param":8.000000,"params":1,"skipped":0,"rss_mib":1.000}\n' "$3" "$3" "$3" > "$1/$2/1337/log.jsonl"
}
E=$TMP/ext
fake "$E/pretrain/adamw" 1e-3 3.3; fake "$E/pretrain/adamw" 3e-3 3.2; fake "$E/pretrain/adamw" 1e-2 3.1
"${LT[@]}" --seeds 1 --out "$E" --scratch "$TMP/es" > "$TMP/2.out" 2> "$TMP/2.err"
v=$(val_of "$E/pretrain/adamw/3e-2/1337/log.jsonl")
dirs=$(ls "$E/pretrain/adamw" | sort -g | tr '\n' ' ')
if [ -n "$v" ] && [ "$dirs" = "1e-3 3e-3 1e-2 3e-2 " ] && [ "$(row_of "$E/pretrain/table.md" | cut -d' ' -f1)" = 1e-2 ]; then
    pass "loss_table: best at the top end (1e-2) -> ran 3e-2 (val $v), then settled on 1e-2"
else fail "loss_table: best at the top end extends the sweep" "lr folders '$dirs', 3e-2 val '$v', table row '$(row_of "$E/pretrain/table.md")'"; fi
E2=$TMP/ext2
fake "$E2/pretrain/adamw" 1e-3 3.1; fake "$E2/pretrain/adamw" 3e-3 3.2; fake "$E2/pretrain/adamw" 1e-2 3.3
plan=$("${LT[@]}" --out "$E2" --scratch "$TMP/es2" --plan 2>&1)
echo "$plan" | grep -q 'next: 3e-4/1337$' && pass "loss_table: best at the bottom end (1e-3) -> plans 3e-4 next" \
    || fail "loss_table: best at the bottom end plans 3e-4 next" "$(echo "$plan" | head -n 2 | tr '\n' ' ')"

# ---- 3. finished runs are skipped; an interrupted one is redone (resumed from its checkpoint)
before=$(logs_sum "$O")
"${LT[@]}" "${G[@]}" --out "$O" --scratch "$S" > "$TMP/3.out" 2> "$TMP/3.err"
if grep -q '^runs started: 0$' "$TMP/3.err" && [ "$(logs_sum "$O")" = "$before" ]; then pass "loss_table: a second call runs nothing and changes no log"
else fail "loss_table: a second call runs nothing and changes no log" "$(grep '^runs started' "$TMP/3.err")"; fi
R=$D/$best/1339; W=$S/pretrain/adamw/$best/1339
want=$(val_of "$R/log.jsonl")
cmd=$(sed -n 's/^command: //p' "$R/run.txt")
rm -rf "$R" "$W"
eval "$cmd -stop 3" > /dev/null 2>&1   # the same run, stopped after step 3 with its checkpoint
"${LT[@]}" "${G[@]}" --out "$O" --scratch "$S" > "$TMP/4.out" 2> "$TMP/4.err"
got=$(val_of "$R/log.jsonl")
if [ -f "$W/checkpoint.bin" ] || ! grep -q "seed 1339 (resumed)" "$TMP/4.err"; then
    fail "loss_table: an interrupted run resumes from its checkpoint" "$(grep -E '^(==|runs started)' "$TMP/4.err" | tr '\n' ' ')"
elif grep -q '^runs started: 1$' "$TMP/4.err" && [ -n "$got" ] && [ "$got" = "$want" ]; then
    pass "loss_table: an interrupted run is resumed, the only run, to the same val loss ($got)"
else fail "loss_table: an interrupted run is resumed to the same val loss" "want '$want', got '$got'; $(grep '^runs started' "$TMP/4.err")"; fi

# ---- 4. the table from the logs alone
cp "$O/pretrain/table.md" "$TMP/table.md"
rm -rf "$S" "$O/pretrain/table.md" "$O/pretrain/plot"
NOPLOT=(); command -v gnuplot >/dev/null || NOPLOT=(--no-plot)
if bash scripts/loss_table.sh --tiny --tables pretrain --opts adamw "${G[@]}" "${NOPLOT[@]}" --out "$O" --train /nonexistent/train --rebuild > "$TMP/5.out" 2> "$TMP/5.err" \
   && cmp -s "$TMP/table.md" "$O/pretrain/table.md"; then
    pass "loss_table: --rebuild writes the same table.md from the logs alone"
else fail "loss_table: --rebuild writes the same table.md from the logs alone" "$(tail -n 2 "$TMP/5.err" | tr '\n' ' ') $(diff "$TMP/table.md" "$O/pretrain/table.md" | head -n 3 | tr '\n' ' ')"; fi
f=$O/pretrain/loss.png
if [ ${#NOPLOT[@]} -gt 0 ]; then skip_test "loss_table: loss.png" "gnuplot missing"
elif [ -f "$f" ] && [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] && [ "$(stat -c %s "$f")" -gt 5000 ]; then
    pass "loss_table: loss.png is a PNG"; else fail "loss_table: loss.png is a PNG" "missing, not a PNG or tiny"; fi

#!/usr/bin/env bash
# test/sh/tables.sh: the result tables and the decision guide.
#  - the -memory-only ledger (nothing allocated) equals the ledger of a real run, line for line, for
#    every optimizer: the memory tables of 175B models rest on it;
#  - the article's formula rows come out exactly (1B Adam = 16 GB, 7B = 112 GB, ...), and our exact
#    AdamW total is exactly 16 bytes per parameter of the shape;
#  - the decision guide's bytes (its own tensor shapes + the optimizers' layouts) equal the trainer's
#    ledger for the same shape, for every optimizer;
#  - scripts/memory_table.sh runs end to end and writes its tables and valid PNGs (scripts/loss_table.sh:
#    test/sh/loss_table.sh).
cd "$(dirname "$0")/../.." || exit 1
. test/lib.sh
[ -x "$TRAIN" ] || make -s "$(basename "$TRAIN")" >/dev/null
OPTS=$($TRAIN -opt list | awk 'NR > 1 { print $1 }')

# the ledger table's per-tensor rows "category|tensor|bytes" (not the totals)
ledger_rows() { grep -E '^\| [a-z]' | grep -v '^| category' | grep -v '^| total' | awk -F'|' '{ gsub(/ +/, " "); print $2 "|" $3 "|" $4 }'; }

# ---- 1. memory-only ledger == real allocation, every optimizer: every line identical, in the same
# order, the token shards and the CPU matmul's packing buffer included.
SHAPE="-model 2:64:2 -b 2 -t 16"
for o in $OPTS; do
    dry=$($TRAIN $SHAPE -opt "$o" -memory-only 1 2>&1 | ledger_rows)
    real=$($TRAIN $SHAPE -opt "$o" -x 1 -v 0 -m 1 -gen 0 2>&1 | ledger_rows)
    if [ -n "$dry" ] && [ "$dry" = "$real" ]; then pass "tables: memory-only ledger equals a real run's ($o)"
    else fail "tables: memory-only ledger equals a real run's ($o)" "$(diff <(echo "$dry") <(echo "$real") | head -n 4 | tr '\n' ' ')"; fi
done

# ---- 2. the memory tables: the article's formula rows, exactly; our AdamW = 16 B/param exactly
if ! command -v gnuplot >/dev/null; then skip_test "memory tables (scripts/memory_table.sh draws PNGs)" "gnuplot missing"; else
MT="$TMP/memory"
if bash scripts/memory_table.sh --out "$MT" --train "$TRAIN" > "$TMP/mt.out" 2> "$TMP/mt.err"; then
    pass "tables: memory_table.sh runs"
else
    fail "tables: memory_table.sh runs" "$(tail -n 2 "$TMP/mt.err" | tr '\n' ' ')"
fi
# table 1 row "| adamw | 16.0 | ours | 112.0 | ours | 208.0 | ours | 1120.0 | ours | 2800.0 | ours |"
row=$(grep -E '^\| adamw \|' "$MT/memory.md" | head -n 1 | awk -F'|' '{ print $3, $5, $7, $9, $11 }' | tr -s ' ')
[ "$row" = " 16.0 112.0 208.0 1120.0 2800.0 " ] && pass "tables: article formula AdamW 1B/7B/13B/70B/175B = 16/112/208/1120/2800 GB" \
    || fail "tables: article formula AdamW 1B/7B/13B/70B/175B = 16/112/208/1120/2800 GB" "got '$row'"
row=$(grep -E '^\| adamw8bit \|' "$MT/memory.md" | head -n 1 | awk -F'|' '{ print $3, $5, $7, $9, $11 }' | tr -s ' ')
[ "$row" = " 10.0 70.0 130.0 700.0 1750.0 " ] && pass "tables: article formula 8-bit Adam = 10 B/param (10/70/130/700/1750 GB)" \
    || fail "tables: article formula 8-bit Adam = 10 B/param (10/70/130/700/1750 GB)" "got '$row'"
grep -qE '^\| total \| 16 \| 112\.0 \|' "$MT/memory.md" && pass "tables: 7B breakdown total 16 B/param = 112 GB" \
    || fail "tables: 7B breakdown total 16 B/param = 112 GB" "row missing"
# our exact AdamW ledger: params + master + grads + state = 16 bytes x the shape's parameters, every size
bad=""
for f in "$MT"/ledger/*__adamw.txt; do
    python3 - "$f" <<'PY' || bad="$bad $(basename "$f")"
import sys
sys.path.insert(0, "scripts")
from results import parse_ledger, cat_bytes
L = parse_ledger(open(sys.argv[1]).read())
s = sum(cat_bytes(L, c) for c in ("params", "master", "grads", "optimizer"))
sys.exit(0 if L["params"] > 0 and s == 16 * L["params"] else 1)
PY
done
[ -z "$bad" ] && pass "tables: our AdamW ledger is exactly 16 B/param at 1B..175B" || fail "tables: our AdamW ledger is exactly 16 B/param at 1B..175B" "$bad"
for p in memory_7b memory_sizes; do
    f="$MT/$p.png"
    if [ -f "$f" ] && [ "$(head -c 8 "$f" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] && [ "$(stat -c %s "$f")" -gt 5000 ]; then
        pass "tables: $p.png is a PNG"; else fail "tables: $p.png is a PNG" "missing, not a PNG or tiny"; fi
done
fi

# ---- 3. the decision guide's bytes == the trainer's ledger, every optimizer (a 6.7B shape)
ADV="$TMP/advise"
cat > "$TMP/adv_main.c" <<'C'
#include "trainer/advise.h"
int main(int argc, char** argv) { return advise_main(argc, argv); }
C
if ${CC:-gcc} -O1 -std=gnu11 -I. "$TMP/adv_main.c" trainer/advise.c trainer/cli.c trainer/model.c trainer/zero.c trainer/dist.c optim/*.c cpu/*.c common/checkpoint.c common/crc32c.c common/fileio.c -lm -fopenmp -o "$ADV" 2> "$TMP/cc.err"; then
    out=$("$ADV" -advise 1 -model 32:4096:32 -mem 80)
    for o in $OPTS; do
        want=$(python3 - "$MT/ledger/7B__$o.txt" <<'PY'
import sys
sys.path.insert(0, "scripts")
from results import parse_ledger, cat_bytes
L = parse_ledger(open(sys.argv[1]).read())
print("%.2f" % (sum(cat_bytes(L, c) for c in ("params", "master", "grads", "optimizer")) / 1e9))
PY
)
        got=$(echo "$out" | awk -v o="$o" '$1 == o { print $7 }')
        [ -n "$got" ] && [ "$got" = "$want" ] && pass "advise: total equals the ledger's for 6.7B ($o: $got GB)" \
            || fail "advise: total equals the ledger's for 6.7B ($o)" "advise '$got' GB, ledger '$want' GB"
    done
    a=$("$ADV" -advise 1 -params 7e9 -mem 80 -task finetune -reserve 0 | sed -n 's/^summary: advise=\([a-z0-9_]*\).*/\1/p')
    [ "$a" = "adamw8bit" ] && pass "advise: 7B fine-tuning on one 80 GB GPU -> adamw8bit" || fail "advise: 7B fine-tuning on one 80 GB GPU -> adamw8bit" "got '$a'"
    # ZeRO-1 over N GPUs keeps the bf16 params and grads whole (4 B/param) and 1/N of AdamW's master +
    # state (12 B/param): 10 B/param = 66.5 GB per GPU at N = 2, over the 64 GB left of 80 GB with 20%
    # reserved (8-bit AdamW: 4 + (4 + 2.03)/2 = 7.02 B/param, 46.7 GB, fits); AdamW 8 B/param = 53.2 GB at N = 3
    a=$("$ADV" -advise 1 -params 7e9 -mem 80 -gpus 2 | sed -n 's/^summary: advise=\([a-z0-9_]*\).*/\1/p')
    [ "$a" = "adamw8bit" ] && pass "advise: 7B on two 80 GB GPUs (ZeRO-1) -> adamw8bit" || fail "advise: 7B on two 80 GB GPUs (ZeRO-1) -> adamw8bit" "got '$a'"
    a=$("$ADV" -advise 1 -params 7e9 -mem 80 -gpus 3 | sed -n 's/^summary: advise=\([a-z0-9_]*\).*/\1/p')
    [ "$a" = "adamw" ] && pass "advise: 7B on three 80 GB GPUs (ZeRO-1) -> adamw" || fail "advise: 7B on three 80 GB GPUs (ZeRO-1) -> adamw" "got '$a'"
    a=$("$ADV" -advise 1 -params 7e9 -mem 80 | awk '$1 == "adamw" { print $NF }')
    [ "$a" = 3 ] && pass "advise: AdamW on 7B needs 3 such GPUs with ZeRO-1" || fail "advise: AdamW on 7B needs 3 such GPUs with ZeRO-1" "got '$a'"
    a=$("$ADV" -advise 1 -params 70e9 -mem 80 | sed -n 's/^summary: advise=\([a-z0-9_]*\) .*fits=\([01]\)/\1 \2/p')
    [ "$a" = "none 0" ] && pass "advise: 70B on one 80 GB GPU -> nothing fits" || fail "advise: 70B on one 80 GB GPU -> nothing fits" "got '$a'"
    expect_exit "advise: bad task is exit 2" 2 "task must be finetune or pretrain" -- "$ADV" -advise 1 -params 7e9 -task dance
    expect_exit "advise: no size is exit 2" 2 "needs the model size" -- "$ADV" -advise 1 -mem 80
else
    fail "advise: compiles" "$(head -n 3 "$TMP/cc.err" | tr '\n' ' ')"
fi

# ---- 4. scripts/loss_table.sh (sweeps, seeds, resume, tables and plots): test/sh/loss_table.sh

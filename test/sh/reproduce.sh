#!/usr/bin/env bash
# test/sh/reproduce.sh: `make reproduce`'s pipeline in its tiny mode (scripts/reproduce.sh --tiny: the
# memory ledgers of the five article sizes, 8 runs of a 2-layer model through scripts/loss_table.sh's
# engine, the README), with two of the article's numbers planted wrong:
#  1. it runs and writes every table: the four memory tables and the two quality tables;
#  2. our numbers are the logs' (AdamW's mean val loss recomputed here with awk) and the ledger's;
#  3. the verdict column can say "differs": the planted 8-bit perplexity (30 instead of 21.2) and the
#     planted master-weight bytes (5 instead of 4) are called "differs"; with the article's real numbers
#     (--rebuild from the same runs, no training) the memory breakdown agrees exactly, and every quality
#     verdict matches its own numbers (|our Δ - the article's Δ| <= 2 se <=> "agrees");
#  4. a second call starts no run; --gpu-command prints the one device call; --gpu --plan counts the
#     GPU version's 18 core runs.
# About 10-20 s on 2 cores.
cd "$(dirname "$0")/../.." || exit 1
. test/lib.sh
[ -x "$TRAIN" ] || make -s "$(basename "$TRAIN")" >/dev/null
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
A=$TMP/a
RP=(bash scripts/reproduce.sh --tiny --train "$TRAIN")

# ---- 1. the pipeline
if "${RP[@]}" --out "$A" --plant eightbit.adamw8bit=30 --plant breakdown.master=5 > "$TMP/1.out" 2> "$TMP/1.err" && [ -f "$A/README.md" ]; then
    pass "reproduce: --tiny writes README.md"
else fail "reproduce: --tiny runs" "$(tail -n 3 "$TMP/1.err" | tr '\n' ' ')"; fi
miss=""
for h in "Adam's 16 bytes per parameter" "optimizer state bytes per parameter" "training memory by model size" \
         "80 GB GPUs needed" "8-bit Adam vs 32-bit Adam" "Adam vs Adafactor vs CAME" "What differs from the article"; do
    grep -q "^##.*$h" "$A/README.md" || miss="$miss '$h'"
done
[ -z "$miss" ] && pass "reproduce: the README has the 4 memory tables, the 2 quality tables and the setup paragraph" \
    || fail "reproduce: every table" "missing:$miss"

# ---- 2. our numbers are the logs'
val_of() { sed -n 's/.*"type":"summary".*"val_loss":\([^,]*\),.*/\1/p' "$1" | tail -n 1; }
D=$A/runs/pretrain/adamw/1e-3
want=$(for s in 1337 1338; do val_of "$D/$s/log.jsonl"; done | awk 'NF { n++; t += $1 } END { if (n == 2) printf "%.4f", t / n }')
got=$(awk -F'|' '/^### 8-bit/ { on = 1 } on && $2 ~ /^ adamw / { split($8, v, " "); print v[1]; exit }' "$A/README.md")
[ -n "$want" ] && [ "$got" = "$want" ] && pass "reproduce: AdamW's val loss in the README is the mean of its 2 logs ($got)" \
    || fail "reproduce: AdamW's val loss = its logs' mean" "logs $want, README '$got'"
led=$(awk -F'|' '/^\| total params /{ p = $4 } /^\| total optimizer /{ o = $4 } END { printf "%.4f", o / p * 2 }' "$A/memory/7B__adamw8bit.txt")
grep -q "^| adamw8bit (8-bit Adam) | 2 | $led |" "$A/README.md" && pass "reproduce: 8-bit state bytes/param = the ledger's ($led)" \
    || fail "reproduce: 8-bit state bytes/param = the ledger's" "ledger $led; README: $(grep '^| adamw8bit (8-bit Adam)' "$A/README.md")"

# ---- 3. the verdicts
row() { grep "^| $2 " "$1" | head -n 1; }
r=$(awk '/^### 8-bit/ { on = 1 } on && /^\| adamw8bit /' "$A/README.md" | head -n 1)
echo "$r" | grep -q '| 30 |' && echo "$r" | grep -q 'differs by' && pass "reproduce: a planted 8-bit ppl (30) is called 'differs'" \
    || fail "reproduce: a planted 8-bit ppl is called 'differs'" "row: $r"
r=$(row "$A/README.md" "fp32 master weights")
echo "$r" | grep -q 'differs by -1.00 B/param' && pass "reproduce: planted master bytes (5) -> 'differs by -1.00 B/param'" \
    || fail "reproduce: planted master bytes -> differs" "row: $r"
grep -q "Planted values" "$A/README.md" && pass "reproduce: the README says what was planted" || fail "reproduce: says what was planted" "no 'Planted values' line"
B=$TMP/b
"${RP[@]}" --out "$B" --runs "$A/runs" --rebuild > "$TMP/2.out" 2> "$TMP/2.err"
n=$(grep -c '^| .* | agrees (exact) |$' <(sed -n '/16 bytes per parameter/,/state bytes per parameter/p' "$B/README.md"))
[ "$n" = 5 ] && pass "reproduce: the real article's breakdown agrees exactly on all 5 rows" || fail "reproduce: the breakdown agrees" "$n of 5 rows 'agrees (exact)'"
grep -q "Planted" "$B/README.md" && fail "reproduce: --rebuild without --plant" "says Planted" || true
python3 - "$B/README.md" <<'PY' && pass "reproduce: every quality verdict matches its numbers (agrees <=> |Δ - article Δ| <= 2 se)" || fail "reproduce: verdicts match their numbers" "see above"
import re, sys
bad, seen = [], 0
for line in open(sys.argv[1]):
    c = [x.strip() for x in line.strip().strip("|").split("|")]
    if len(c) != 11 or not re.match(r"^[+-]\d", c[9]) or "±" not in c[9]:
        continue
    ours, se = [float(x) for x in c[9].split("±")]
    art = re.match(r"^([+-][\d.]+)(?: \(([+-][\d.]+)\))?$", c[3])
    if not art:
        continue
    ad = float(art.group(2) or art.group(1))
    seen += 1
    agrees = abs(ours - ad) <= 2 * se + 1e-4
    if agrees != c[10].startswith("agrees"):
        bad.append(line.strip())
if bad or seen < 3:
    print("FAIL detail: %d rows checked; wrong: %s" % (seen, bad))
    sys.exit(1)
PY

# ---- 4. resumable; the GPU call
"${RP[@]}" --out "$A" > "$TMP/3.out" 2> "$TMP/3.err"
grep -q '^runs started: 0$' "$TMP/3.err" && pass "reproduce: a second call starts no run" || fail "reproduce: a second call starts no run" "$(grep 'runs started' "$TMP/3.err")"
g=$(bash scripts/reproduce.sh --gpu-command)
echo "$g" | grep -q 'scripts/reproduce.sh --gpu --runs "$OUT/gpu" --budget-s' && echo "$g" | grep -q 'carry:.*gcide_train.bin' \
    && pass "reproduce: --gpu-command prints the device call (carry, budget)" || fail "reproduce: --gpu-command" "$(echo "$g" | head -n 3)"
p=$(bash scripts/reproduce.sh --gpu --plan --runs "$TMP/gpu" --train "$TRAIN" 2>&1)
echo "$p" | grep -q 'pretrain: 18 runs left' && pass "reproduce: --gpu --plan counts 18 core runs" \
    || fail "reproduce: --gpu --plan counts 18 core runs" "$(echo "$p" | tail -n 2 | tr '\n' ' ')"

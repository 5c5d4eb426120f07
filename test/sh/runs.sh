#!/usr/bin/env bash
# test/sh/runs.sh: runs that lose nothing and say what they were (trainer/run.c), on a tiny model:
#  - run directories: -o '' and over-long paths refused, a second run on a locked directory refused,
#    a fresh run never replaces another run's files unless -overwrite 1;
#  - SIGTERM finishes the step, checkpoints, exits 4, and the resumed run equals an uninterrupted one bit
#    for bit, each step once in the log;
#  - constants that make the update undefined are refused (the issue's NaN reproductions);
#  - the log's config record, the summary after -stop and after resume;
#  - using a checkpoint: -eval, -sample (prompt, temperature, top-k), -init from another optimizer and
#    precision, a wrong shape refused, llm.c's file format against a hand-derived loss;
#  - -memory-only prints exactly the ledger a real run allocates.
cd "$(dirname "$0")/../.."
. test/lib.sh
M="-model 2:64:2 -b 2 -t 32 -v 0 -gen 0"

# ---- run directories
expect_exit "runs: -o '' refused" 2 "needs a directory name" -- $TRAIN $M -x 2 -o ''
long=$(printf 'd%.0s' $(seq 1 950))
expect_exit "runs: an over-long -o refused, never truncated" 2 "characters long" -- $TRAIN $M -x 2 -o "$TMP/$long"
$TRAIN $M -x 400 -o "$TMP/locked" > "$TMP/locked.out" 2>&1 &
pid=$!
for i in $(seq 1 100); do grep -q '"type":"step"' "$TMP/locked/log.jsonl" 2>/dev/null && break; sleep 0.2; done
expect_exit "runs: a second run on a directory in use is refused" 2 "another run is using" -- $TRAIN $M -x 2 -o "$TMP/locked" -overwrite 1
kill -KILL $pid 2>/dev/null; wait $pid 2>/dev/null
$TRAIN $M -x 2 -o "$TMP/taken" > /dev/null 2>&1
expect_exit "runs: a fresh run refuses a directory holding another run" 2 "holds another run.*-overwrite 1" -- $TRAIN $M -x 2 -o "$TMP/taken"
expect_exit "runs: -overwrite 1 replaces it" 0 "summary:" -- $TRAIN $M -x 2 -o "$TMP/taken" -overwrite 1

# ---- SIGTERM: checkpoint, exit 4, bit-exact resume
F="$M -x 10 -opt adamw"
$TRAIN $F -o "$TMP/whole" > /dev/null 2>&1
$TRAIN $F -o "$TMP/sig" > "$TMP/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 600); do n=$(grep -c '"type":"step"' "$TMP/sig/log.jsonl" 2>/dev/null); [ "${n:-0}" -ge 3 ] && break; sleep 0.1; done
kill -TERM $pid; wait $pid; rc=$?
if [ $rc -eq 4 ] && grep -q "interrupted by SIGTERM after step .*resume with the same flags and -y 1" "$TMP/sig.out" &&
   grep -q '"type":"interrupted"' "$TMP/sig/log.jsonl"; then pass "runs: SIGTERM checkpoints, logs it and exits 4"
else fail "runs: SIGTERM checkpoints and exits 4" "exit $rc: $(tail -n 2 "$TMP/sig.out" | tr '\n' ' ')"; fi
$TRAIN $F -o "$TMP/sig" -y 1 > "$TMP/sig2.out" 2>&1
a=$(step_losses "$TMP/whole/log.jsonl"); b=$(step_losses "$TMP/sig/log.jsonl")
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "runs: resumed after SIGTERM equals the uninterrupted run, each step once"
else fail "runs: resume after SIGTERM is bit-exact" "$(diff <(echo "$a") <(echo "$b") | head -n 4 | tr '\n' ' ')"; fi
n=$(grep -c '"type":"summary"' "$TMP/sig/log.jsonl")
[ "$n" -eq 1 ] && pass "runs: the resumed log holds one summary" || fail "runs: one summary after resume" "$n summaries"

# ---- constants that would write NaN weights are refused (the reproductions from the reliability issue)
expect_exit "runs: -beta2 rounding to 1 in fp32 refused" 2 "rounds to 1 in fp32" -- $TRAIN $M -x 2 -beta2 0.999999999
expect_exit "runs: came -beta3 rounding to 1 refused" 2 "rounds to 1 in fp32" -- $TRAIN $M -x 2 -opt came -beta3 0.999999999
expect_exit "runs: came -eps2 0 refused" 2 "eps2 0" -- $TRAIN $M -x 2 -opt came -eps 1e-30 -eps2 0
for o in adamw adam adafactor adamw8bit adalomo; do
    expect_exit "runs: $o -eps 0 refused" 2 "eps 0" -- $TRAIN $M -x 2 -opt $o -eps 0
done

# ---- the log says what ran; the summary after -stop and after resume
$TRAIN $M -x 8 -stop 3 -o "$TMP/stop" > "$TMP/stop.out" 2>&1
cfg=$(head -n 1 "$TMP/stop/log.jsonl")
missing=""
for k in '"type":"config"' '"trainer":"cpu"' '"model":"2:64:2"' '"opt":"adamw"' '"lr":0.001' '"seed":1337' '"B":2' '"T":32' \
         '"steps":8' '"precision":"bf16"' '"git":"' '"date":"20' '"host":"' '"time":'; do
    echo "$cfg" | grep -qF "$k" || missing="$missing $k"
done
[ -z "$missing" ] && pass "runs: the log starts with a config record" || fail "runs: config record" "missing:$missing in $cfg"
grep -q "summary: opt=adamw steps=3 " "$TMP/stop.out" && pass "runs: the summary after -stop 3 says steps=3" ||
    fail "runs: summary after -stop" "$(grep summary: "$TMP/stop.out")"
bad=$(grep -v '"time":[0-9.]*}$' "$TMP/stop/log.jsonl" | head -n 1)
[ -z "$bad" ] && pass "runs: every record has a time" || fail "runs: every record has a time" "$bad"

# ---- using a checkpoint
CK="$TMP/stop/checkpoint.bin"
expect_exit "runs: -eval on a saved checkpoint" 0 "eval: loss [0-9.]+ perplexity [0-9.]+" -- $TRAIN $M -init "$CK" -eval data/gcide/gcide_val.bin -m 2
out=$($TRAIN $M -o "$TMP/stop" -sample 1 -prompt "The word" -gen 12 -temp 0.8 -topk 20 2>&1)
echo "$out" | grep -q "^The word" && pass "runs: -sample continues a prompt from -o DIR's checkpoint" || fail "runs: -sample" "$(echo "$out" | tail -n 2)"
out2=$($TRAIN $M -o "$TMP/stop" -sample 1 -prompt "The word" -gen 12 -temp 0.8 -topk 20 2>&1)
[ "$out" = "$out2" ] && pass "runs: -sample is deterministic for a seed" || fail "runs: -sample deterministic" "two runs differ"
expect_exit "runs: -init from an adamw checkpoint trains came in fp32" 0 "weights from .*checkpoint; fresh optimizer state" -- \
    $TRAIN $M -x 2 -init "$CK" -opt came -precision fp32
expect_exit "runs: -init of another model shape refused" 2 "holds a model L=2 C=64 heads=2.*-model" -- $TRAIN -model 2:128:2 -b 2 -t 32 -x 2 -init "$CK"
e1=$($TRAIN $M -init "$CK" -eval data/gcide/gcide_val.bin -m 2 | grep eval:)
$TRAIN $M -x 3 -init "$CK" -o "$TMP/ft" > /dev/null 2>&1
first=$(step_losses "$TMP/ft/log.jsonl" | head -n 1 | awk '{print $2}')
[ -n "$first" ] && awk -v f="$first" 'BEGIN { exit !(f < 10.5) }' && pass "runs: -init starts from the checkpoint's weights (step-1 loss $first, not 10.8)" ||
    fail "runs: -init loads the weights" "step-1 loss $first"

# llm.c's GPT-2 format: every weight 0 except lnf.b[0] = 1 and wte[v][0] = 0.001 v, so the logits are
# 0.001 v whatever the blocks do (lnf.w = 0 makes the final LayerNorm output lnf.b), and the loss on the
# val shard's first 32 targets is derived by hand (in double; the trainer's fp32 softmax agrees to ~1e-6).
python3 - "$TMP" > "$TMP/llmc_expect.txt" <<'PY'
import struct, sys, math
d = sys.argv[1]
L, C, NH, T, V, Vp = 2, 64, 2, 1024, 50257, 50304
sizes = [Vp*C, T*C, L*C, L*C, L*3*C*C, L*3*C, L*C*C, L*C, L*C, L*C, L*4*C*C, L*4*C, L*C*4*C, L*C, C, C]
P = sum(sizes)
w = [0.0] * P
for v in range(V): w[v*C] = 0.001 * v               # wte[v][0]
w[P - C] = 1.0                                        # lnf.b[0]; lnf.w, just before it, stays 0
def f32(x): return struct.unpack("<f", struct.pack("<f", x))[0]
def bf16(x):  # round to nearest even on the top 16 bits, as the trainer and torch do
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    return (u + 0x7fff + ((u >> 16) & 1)) >> 16
def header(version): return struct.pack("<256i", *([20240326, version, T, V, L, NH, C, Vp] + [0] * 248))
with open(d + "/llmc_fp32.bin", "wb") as f: f.write(header(3)); f.write(struct.pack("<%df" % P, *w))
with open(d + "/llmc_bf16.bin", "wb") as f: f.write(header(5)); f.write(struct.pack("<%dH" % P, *[bf16(x) for x in w]))
with open(d + "/llmc_short.bin", "wb") as f: f.write(header(3)); f.write(struct.pack("<%df" % 1000, *w[:1000]))
raw = open("data/gcide/gcide_val.bin", "rb").read()
toks = struct.unpack("<33H", raw[1024:1024 + 66])
for fmt in ("fp32", "bf16"):
    z = [f32(0.001 * v) for v in range(V)]
    if fmt == "bf16": z = [struct.unpack("<f", struct.pack("<I", bf16(x) << 16))[0] for x in z]
    m = max(z); lse = m + math.log(sum(math.exp(x - m) for x in z))
    print("%s %.6f" % (fmt, sum(lse - z[t] for t in toks[1:]) / 32))
PY
E="-model 2:64:2 -b 1 -t 32 -m 1 -eval data/gcide/gcide_val.bin"
want32=$(awk '$1 == "fp32" {print $2}' "$TMP/llmc_expect.txt"); want16=$(awk '$1 == "bf16" {print $2}' "$TMP/llmc_expect.txt")
close() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d < 1e-4) }'; }
for c in "fp32 -precision fp32 $want32" "bf16 -precision fp32 $want16" "fp32 -precision bf16 $want16"; do
    set -- $c
    got=$($TRAIN $E -precision "$3" -init "$TMP/llmc_$1.bin" 2>&1 | sed -nE 's/^eval: loss ([0-9.]+).*/\1/p')
    close "$got" "$4" && pass "runs: llm.c $1 file, $3 run: loss $got = hand-derived $4" ||
        fail "runs: llm.c $1 file, $3 run" "loss '$got', want $4 (tolerance 1e-4)"
done
expect_exit "runs: a truncated llm.c file refused" 2 "llm.c file of this shape has" -- $TRAIN $E -init "$TMP/llmc_short.bin"

# ---- -memory-only prints the ledger a real run allocates, line for line
$TRAIN $M -x 1 -opt came > "$TMP/real.out" 2>&1
$TRAIN $M -x 1 -opt came -memory-only 1 > "$TMP/dry.out" 2>&1
a=$(grep '^|' "$TMP/real.out"); b=$(grep '^|' "$TMP/dry.out")
[ -n "$a" ] && [ "$a" = "$b" ] && pass "runs: -memory-only equals the real run's ledger" ||
    fail "runs: -memory-only equals the real ledger" "$(diff <(echo "$a") <(echo "$b") | head -n 4 | tr '\n' ' ')"

#!/usr/bin/env bash
# test/sh/checkpoint_run.sh: a checkpoint carries its run (issue 26). The model shape comes from the
# checkpoint for -y 1, -sample 1, -eval, -export and -init (no -model given); -y 1 takes every recorded
# flag as its default (a resume without -x stays the run it was: not a 200-step run); a flag given on
# resume that differs is applied with a note (-x: the schedule changes) or refused (-i, unless
# -new-data 1; -qblock); a checkpoint without the run flags (the older format) resumes and says what it
# lacks.
cd "$(dirname "$0")/../.."
. test/lib.sh
M="-model 2:32:2 -b 2 -t 16 -v 0 -gen 0"

# the run: 4 steps, stopped after 2 (checkpoint at 2), and the same run uninterrupted
$TRAIN $M -x 4 -stop 2 -o "$TMP/a" > "$TMP/a.out" 2>&1 || fail "setup: -stop 2 run" "$(tail -n 2 "$TMP/a.out")"
$TRAIN $M -x 4 -o "$TMP/whole" > /dev/null 2>&1
cp -r "$TMP/a" "$TMP/a0"   # the checkpoint at step 2, kept for the checks below
CK="$TMP/a0/checkpoint.bin"

expect_exit "shape from checkpoint: -sample 1 -o DIR without -model" 0 "weights from .*checkpoint" -- $TRAIN -o "$TMP/a0" -sample 1 -gen 4
expect_exit "shape from checkpoint: -eval without -model" 0 "eval: loss [0-9.]+ perplexity" -- $TRAIN -init "$CK" -eval data/gcide/gcide_val.bin -m 1
expect_exit "shape from checkpoint: -export without -model" 0 "exported .*28 tensors" -- $TRAIN -o "$TMP/a0" -export "$TMP/m.safetensors"
expect_exit "shape from checkpoint: -init without -model" 0 "model 2:32:2: L=2 C=32" -- $TRAIN -init "$CK" -b 2 -t 16 -v 0 -gen 0 -x 1
expect_exit "shape from checkpoint: another -model is still refused" 2 "use the same -model" -- $TRAIN -o "$TMP/a0" -sample 1 -model 3:32:2

# resume with nothing but -o and -y 1: the recorded run, to its own -x, bit-exact
out=$($TRAIN -o "$TMP/a" -y 1 2>&1); rc=$?
a=$(step_losses "$TMP/whole/log.jsonl"); b=$(step_losses "$TMP/a/log.jsonl")
if [ $rc -eq 0 ] && grep -q "step     4/4 " <<<"$out" && [ -n "$a" ] && [ "$a" = "$b" ] && ! grep -q "^note\|^warning" <<<"$out"; then
    pass "resume: -o DIR -y 1 alone resumes the 4-step run bit-exactly, silently (not a 200-step run)"
else fail "resume: -o DIR -y 1 alone" "exit $rc; $(grep -E "^(note|warning|error)|/200 " <<<"$out" | head -n 2 | tr '\n' ' ') $(diff <(echo "$a") <(echo "$b") | head -n 2 | tr '\n' ' ')"; fi

# a new -x: applied, with a note that says what changes
rm -rf "$TMP/b"; cp -r "$TMP/a0" "$TMP/b"
out=$($TRAIN -o "$TMP/b" -y 1 -x 6 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "note: -x 6 changes the schedule of .* (-x 4): from step 3 the lr follows the cosine to step 6" <<<"$out" &&
   grep -q "step     6/6 " <<<"$out"; then pass "resume: a changed -x is applied with a note"
else fail "resume: a changed -x is applied with a note" "exit $rc: $(grep -E "note|error" <<<"$out" | head -n 2 | tr '\n' ' ')"; fi

# another -i: refused, unless -new-data 1
rm -rf "$TMP/c"; cp -r "$TMP/a0" "$TMP/c"
expect_exit "resume: another -i is refused" 2 "cannot resume: .* trained on -i data/gcide/gcide_train.bin, this run gives -i data/gcide/gcide_val.bin.*-new-data 1" \
    -- $TRAIN -o "$TMP/c" -y 1 -i data/gcide/gcide_val.bin
expect_exit "resume: another -i with -new-data 1 goes on, with a note" 0 "note: -i data/gcide/gcide_val.bin replaces .*-new-data 1" \
    -- $TRAIN -o "$TMP/c" -y 1 -i data/gcide/gcide_val.bin -new-data 1
expect_exit "resume: the same -i written otherwise is not a change" 0 "resumed from" -- $TRAIN -o "$TMP/a0" -y 1 -i ./data/gcide/../gcide/gcide_train.bin -stop 3
expect_exit "resume: a changed optimizer constant is applied with a note" 0 "note: -c 0.5 replaces the checkpoint's -c 0.01 from step 5" \
    -- $TRAIN -o "$TMP/c" -y 1 -x 6 -c 0.5

# -qblock changes the 8-bit state's layout: refused before anything is read
$TRAIN $M -x 2 -opt adamw8bit -o "$TMP/q" > /dev/null 2>&1
expect_exit "resume: another -qblock is refused" 2 "written with -qblock 256, this run gives -qblock 512" -- $TRAIN -o "$TMP/q" -y 1 -x 3 -qblock 512

# the older format: a checkpoint without the run flags blob (here also version 1) resumes, and says so
rm -rf "$TMP/old"; cp -r "$TMP/a0" "$TMP/old"
python3 - "$TMP/old/checkpoint.bin" <<'PY'
import struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
h = bytearray(b[:152]); n = struct.unpack_from("<i", h, 84)[0]
table = b[152:152 + 56 * n]
names = [table[56 * i:56 * i + 40].split(b"\0")[0] for i in range(n)]
sizes = [struct.unpack_from("<Q", table, 56 * i + 40)[0] for i in range(n)]
assert names[1] == b"run flags", names     # the second blob, after the weights
struct.pack_into("<i", h, 8, 1); struct.pack_into("<i", h, 84, n - 1)
h[120:152] = bytes(32)
v1 = b"".join(table[56 * i:56 * i + 48] for i in range(n) if i != 1)
data = b[152 + 56 * n:]
open(p, "wb").write(bytes(h) + v1 + data[:sizes[0]] + data[sizes[0] + sizes[1]:])
PY
out=$($TRAIN -o "$TMP/old" -y 1 -b 2 -t 16 -v 0 -gen 0 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "records no run flags .*-x and -seed come from it" <<<"$out" && grep -q "step     4/4 " <<<"$out"; then
    pass "resume: an older checkpoint (no run flags) resumes with its shape and -x, saying what it lacks"
else fail "resume: an older checkpoint" "exit $rc: $(grep -E "note|error" <<<"$out" | head -n 3 | tr '\n' ' ')"; fi

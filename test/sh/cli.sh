#!/usr/bin/env bash
# test/sh/cli.sh: the trainer's handling of bad input (exit code 2, a one-line message saying what is
# wrong, nothing overwritten), -opt list, -h, and non-finite losses.
cd "$(dirname "$0")/../.."
. test/lib.sh
SMALL="-model 2:32:2 -b 2 -t 16 -x 3 -v 0 -gen 0"

expect_exit "cli: unknown flag is exit 2" 2 "unknown flag -bogus" -- $TRAIN -bogus 1
expect_exit "cli: flag without value is exit 2" 2 "needs a value" -- $TRAIN -x
expect_exit "cli: non-integer value is exit 2" 2 "flag -b expects an integer" -- $TRAIN -b abc
expect_exit "cli: out-of-range value is exit 2" 2 "flag -t must be between" -- $TRAIN -t 5000
expect_exit "cli: bad precision is exit 2" 2 "precision must be bf16 or fp32" -- $TRAIN -precision fp8
expect_exit "cli: bad model spec is exit 2" 2 "model must be dN" -- $TRAIN -model big
expect_exit "cli: heads must divide channels" 2 "divisible" -- $TRAIN -model 2:30:4
expect_exit "cli: unknown optimizer lists the valid names" 2 "unknown optimizer 'adamx'.*adamw" -- $TRAIN -opt adamx
expect_exit "cli: -d not a multiple of b*t" 2 "must be a multiple" -- $TRAIN $SMALL -d 33
expect_exit "cli: -h prints usage, exit 0" 0 "usage: ./train" -- $TRAIN -h
expect_exit "cli: -opt list names every optimizer" 0 "adamw .*Loshchilov" -- $TRAIN -opt list

# bad data files
expect_exit "data: missing file is exit 2" 2 "train data: .*nonexistent" -- $TRAIN $SMALL -i "$TMP/nonexistent.bin"
head -c 4096 /dev/urandom > "$TMP/garbage.bin"
expect_exit "data: wrong magic is exit 2" 2 "magic" -- $TRAIN $SMALL -i "$TMP/garbage.bin"
head -c 3000 data/gcide/gcide_val.bin > "$TMP/trunc.bin"
expect_exit "data: truncated shard is exit 2" 2 "trunc" -- $TRAIN $SMALL -i "$TMP/trunc.bin"
# a valid header with one token id past the vocabulary
python3 - "$TMP/oob.bin" <<'PY'
import struct, sys
n = 2000
hdr = [20240520, 1, n] + [0] * 253
toks = [i % 50000 for i in range(n)]
toks[777] = 60000
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", *hdr)); f.write(struct.pack("<%dH" % n, *toks))
PY
expect_exit "data: token id out of range is exit 2" 2 "60000" -- $TRAIN $SMALL -i "$TMP/oob.bin"
printf '' > "$TMP/empty.txt"
expect_exit "data: empty text file is exit 2" 2 "empty" -- $TRAIN $SMALL -i "$TMP/empty.txt"

# checkpoints: unreadable, wrong shape; neither is overwritten
mkdir -p "$TMP/ck"
head -c 10000 /dev/urandom > "$TMP/ck/checkpoint.bin"
sum_before=$(md5sum < "$TMP/ck/checkpoint.bin")
expect_exit "resume: garbage checkpoint is exit 2" 2 "not a checkpoint" -- $TRAIN $SMALL -o "$TMP/ck" -y 1
[ "$(md5sum < "$TMP/ck/checkpoint.bin")" = "$sum_before" ] && pass "resume: garbage checkpoint left untouched" || fail "resume: garbage checkpoint left untouched" "file changed"
mkdir -p "$TMP/ck2"
$TRAIN $SMALL -o "$TMP/ck2" >/dev/null 2>&1
sum_before=$(md5sum < "$TMP/ck2/checkpoint.bin")
expect_exit "resume: other model shape is exit 2" 2 "use the same -model" -- $TRAIN -model 2:64:2 -b 2 -t 16 -x 6 -v 0 -gen 0 -o "$TMP/ck2" -y 1
expect_exit "resume: other optimizer is exit 2" 2 "written by -opt adamw" -- $TRAIN $SMALL -x 6 -opt sgd -o "$TMP/ck2" -y 1
expect_exit "resume: other precision is exit 2" 2 "precision" -- $TRAIN $SMALL -x 6 -precision fp32 -o "$TMP/ck2" -y 1
expect_exit "resume: checkpoint already past -x is exit 2" 2 "raise -x" -- $TRAIN $SMALL -o "$TMP/ck2" -y 1
[ "$(md5sum < "$TMP/ck2/checkpoint.bin")" = "$sum_before" ] && pass "resume: refused checkpoint left untouched" || fail "resume: refused checkpoint left untouched" "file changed"
head -c 5000 "$TMP/ck2/checkpoint.bin" > "$TMP/ck/checkpoint.bin"
expect_exit "resume: truncated checkpoint is exit 2" 2 "truncated" -- $TRAIN $SMALL -x 6 -o "$TMP/ck" -y 1

# a diverging run: non-finite steps are skipped and counted, training stops with exit 3, the last
# good checkpoint survives
mkdir -p "$TMP/nan"
out=$($TRAIN -model 2:32:2 -b 2 -t 16 -x 40 -v 0 -gen 0 -opt sgd -l 1000 -g 0 -u 0 -n 1 -o "$TMP/nan" 2>&1); rc=$?
if [ $rc -eq 3 ] && echo "$out" | grep -q "SKIPPED" && echo "$out" | grep -q "consecutive steps had a non-finite" \
   && grep -q '"type":"skip"' "$TMP/nan/log.jsonl"; then pass "nan: skipped steps counted, stop with exit 3"
else fail "nan: skipped steps counted, stop with exit 3" "rc=$rc $(echo "$out" | tail -n 2 | tr '\n' ' ')"; fi
out=$($TRAIN -model 2:32:2 -b 2 -t 16 -x 60 -v 0 -gen 0 -opt sgd -l 0.001 -o "$TMP/nan" -y 1 -stop 59 2>&1)
if echo "$out" | grep -q "resumed from"; then pass "nan: last checkpoint still loads"
else fail "nan: last checkpoint still loads" "$(echo "$out" | tail -n 2 | tr '\n' ' ')"; fi

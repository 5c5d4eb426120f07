#!/usr/bin/env bash
# test/sh/reliability.sh: nothing lost, nothing silently wrong. Flag values that used to wrap or never
# finish, special files that used to block forever, too little data, damaged checkpoints (each must
# be refused with exit 2 and a message that names the problem), the .prev checkpoint, the version 1
# format, and a resume with other flags.
# Checks that need a trainer main to call a new function (ckpt_choose, run_ckpt_header on the resume
# header, dataloader_check, check_val_batches) fail if neither train_gpt2.c nor trainer/run.c calls it.
cd "$(dirname "$0")/../.."
. test/lib.sh
SMALL="-model 2:32:2 -b 2 -t 16 -v 0 -gen 0"
wired() { grep -q "$1" train_gpt2.c trainer/run.c; }
skip() { echo "FAIL $1: neither train_gpt2.c nor trainer/run.c calls $2"; }

# ---- flags: parsed in 64 bits, bounded so that a run can finish
expect_exit "bounds: -model d99999999999 is exit 2 (was a signed overflow)" 2 "need 1 <= L <= 200" -- $TRAIN -model d99999999999
expect_exit "bounds: -model 4294967298:64:2 is exit 2 (trained as 2:64:2)" 2 "need 1 <= L <= 200" -- $TRAIN -model 4294967298:64:2
expect_exit "bounds: -model 2:64:2x is exit 2" 2 "model must be dN" -- $TRAIN -model 2:64:2x
expect_exit "bounds: -model -2:64:2 is exit 2" 2 "model must be dN" -- $TRAIN -model -2:64:2
expect_exit "bounds: -model 2:64:128 (more heads than channels) is exit 2" 2 "divisible" -- $TRAIN -model 2:64:128
expect_exit "bounds: -b 4294967298 is exit 2 (no wrap to 2)" 2 "flag -b must be between 1 and 65536, got 4294967298" -- $TRAIN -b 4294967298
expect_exit "bounds: -x 99999999999999999999 is exit 2" 2 "flag -x must be between" -- $TRAIN -x 99999999999999999999
expect_exit "bounds: -d 1073741824 (2M micro-steps) is exit 2" 2 "micro-steps of -b 8 x -t 64 tokens, more than 4096" -- $TRAIN -d 1073741824
expect_exit "bounds: -d 2147483648 is exit 2" 2 "flag -d must be between" -- $TRAIN -d 2147483648
if wired check_val_batches; then
    expect_exit "bounds: -m 1048576 is exit 2 (more val batches than the val data holds)" 2 "-m 1048576: the val data .* holds only" -- $TRAIN $SMALL -x 1 -m 1048576
else skip "bounds: -m 1048576 is exit 2" check_val_batches; fi

# ---- special files: refused at once (a FIFO used to block forever), a directory named as such
mkfifo "$TMP/fifo" "$TMP/fifo2"
expect_exit "files: FIFO as -i is exit 2, no hang" 2 "train data: data file .*fifo' is a FIFO" -- timeout 60 $TRAIN $SMALL -i "$TMP/fifo"
expect_exit "files: FIFO as -j is exit 2, no hang" 2 "val data: data file .*fifo' is a FIFO" -- timeout 60 $TRAIN $SMALL -j "$TMP/fifo"
# the vocabulary is optional (samples print ids without it): a FIFO is a warning, then the FIFO -j stops the run
expect_exit "files: FIFO as -vocab-encoder is a warning, no hang" 2 "warning: cannot read GPT-2 vocabulary .*FIFO" -- timeout 60 $TRAIN $SMALL -vocab-encoder "$TMP/fifo" -j "$TMP/fifo2"
mkdir -p "$TMP/dirdata"
expect_exit "files: directory as -i is named a directory" 2 "dirdata' is a directory" -- $TRAIN $SMALL -i "$TMP/dirdata"
mkdir -p "$TMP/ckfifo"
mkfifo "$TMP/ckfifo/checkpoint.bin"
expect_exit "files: FIFO as checkpoint.bin is exit 2, no hang" 2 "FIFO" -- timeout 60 $TRAIN $SMALL -x 3 -o "$TMP/ckfifo" -y 1

# ---- too little data: named as such
python3 - "$TMP/short.bin" <<'PY'
import struct, sys
n = 100
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, n, *([0] * 253))); f.write(struct.pack("<%dH" % n, *range(n)))
PY
expect_exit "data: 100 tokens for -b 2 -t 64 is named as too little data" 2 "holds 100 tokens, fewer than the 129" -- $TRAIN $SMALL -t 64 -i "$TMP/short.bin"
if wired dataloader_check; then
    expect_exit "data: too little data with a huge -b -t is not an out-of-memory" 2 "holds 100 tokens, fewer than the 67108865" -- $TRAIN -model 2:32:2 -b 65536 -t 1024 -i "$TMP/short.bin"
else skip "data: too little data with a huge -b -t is not an out-of-memory" dataloader_check; fi

# ---- checkpoints: a run with -n 1 leaves checkpoint.bin (step 2) and checkpoint.prev.bin (step 1)
mkdir -p "$TMP/ck"
$TRAIN $SMALL -x 2 -n 1 -o "$TMP/ck" >"$TMP/ck.out" 2>&1
[ -f "$TMP/ck/checkpoint.bin" ] && [ -f "$TMP/ck/checkpoint.prev.bin" ] && pass "checkpoint: a second save keeps checkpoint.prev.bin" \
    || fail "checkpoint: a second save keeps checkpoint.prev.bin" "$(ls "$TMP/ck" | tr '\n' ' ')"
cp "$TMP/ck/checkpoint.bin" "$TMP/good.bin"
cp "$TMP/ck/checkpoint.prev.bin" "$TMP/good.prev.bin"
# patch FILE OFFSET HEX: overwrite bytes in place; flip FILE OFFSET: flip the low bit of one byte.
# OFFSET < 0 counts from the end. Plain dd/od (no interpreter start-up per call).
abs_off() { local o=$2; [ "$o" -lt 0 ] && o=$(( $(stat -c %s "$1") + o )); echo "$o"; }
patch() { printf "$(echo "$3" | sed 's/../\\x&/g')" | dd of="$1" bs=1 seek="$(abs_off "$1" "$2")" conv=notrunc status=none; }
flip() {
    local o; o=$(abs_off "$1" "$2")
    local b; b=$(od -An -tu1 -j "$o" -N1 "$1" | tr -d ' ')
    printf "\\x$(printf %02x $((b ^ 1)))" | dd of="$1" bs=1 seek="$o" conv=notrunc status=none
}
fresh() { rm -f "$TMP/ck/"*; cp "$TMP/good.bin" "$TMP/ck/checkpoint.bin"; }
# the header's step field: 8 (magic) + 4 (version) + 6*4 (shape) + 4 (precision) + 32 (optimizer) = offset 72
fresh; patch "$TMP/ck/checkpoint.bin" 72 ffffffff
expect_exit "checkpoint: step = -1 is refused" 2 "checksum mismatch in the header" -- $TRAIN $SMALL -x 6 -o "$TMP/ck" -y 1
fresh; patch "$TMP/ck/checkpoint.bin" 72 00000080
expect_exit "checkpoint: step = INT_MIN is refused" 2 "checksum mismatch in the header" -- $TRAIN $SMALL -x 6 -o "$TMP/ck" -y 1
fresh; flip "$TMP/ck/checkpoint.bin" 88   # the seed
expect_exit "checkpoint: a flipped bit in the seed is refused" 2 "checksum mismatch in the header" -- $TRAIN $SMALL -x 6 -o "$TMP/ck" -y 1
fresh; flip "$TMP/ck/checkpoint.bin" 1000   # inside the first blob, the fp32 weights
expect_exit "checkpoint: a flipped bit in the weights is refused, naming the blob" 2 "checksum mismatch in blob 'weights fp32'" -- $TRAIN $SMALL -x 6 -o "$TMP/ck" -y 1
fresh; flip "$TMP/ck/checkpoint.bin" -3
expect_exit "checkpoint: a flipped bit in the optimizer state is refused, naming the blob" 2 "checksum mismatch in blob 'opt: exp_avg_sq'" -- $TRAIN $SMALL -x 6 -o "$TMP/ck" -y 1
fresh; printf 'x' >> "$TMP/ck/checkpoint.bin"
expect_exit "checkpoint: an appended byte is refused" 2 "1 bytes after its last blob" -- $TRAIN $SMALL -x 6 -o "$TMP/ck" -y 1

# a damaged checkpoint.bin with an intact .prev: resume from .prev, with a warning
if wired ckpt_choose; then
    fresh; cp "$TMP/good.prev.bin" "$TMP/ck/checkpoint.prev.bin"; flip "$TMP/ck/checkpoint.bin" -3
    expect_exit "checkpoint: damaged checkpoint.bin falls back to checkpoint.prev.bin" 0 "checkpoint.prev.bin" -- $TRAIN $SMALL -x 3 -o "$TMP/ck" -y 1
    fresh; cp "$TMP/good.prev.bin" "$TMP/ck/checkpoint.prev.bin"; flip "$TMP/ck/checkpoint.bin" -3; flip "$TMP/ck/checkpoint.prev.bin" 1000
    expect_exit "checkpoint: both damaged is exit 2 naming both" 2 "exp_avg_sq.*weights fp32" -- $TRAIN $SMALL -x 3 -o "$TMP/ck" -y 1
else skip "checkpoint: damaged checkpoint.bin falls back to checkpoint.prev.bin" ckpt_choose; fi

# a version 1 file (the format before checksums) still resumes, with a note
fresh
python3 - "$TMP/ck/checkpoint.bin" <<'PY'
import struct, sys
p = sys.argv[1]
b = open(p, "rb").read()
h = bytearray(b[:152]); nblobs = struct.unpack_from("<i", h, 84)[0]
struct.pack_into("<i", h, 8, 1)             # version 1
h[120:152] = bytes(32)                      # version 1 had 32 reserved (zero) bytes here
table = b[152:152 + 56 * nblobs]
v1 = b"".join(table[56 * i:56 * i + 48] for i in range(nblobs))   # 48-byte entries, no crc
open(p, "wb").write(bytes(h) + v1 + b[152 + 56 * nblobs:])
PY
out=$($TRAIN $SMALL -x 3 -o "$TMP/ck" -y 1 2>&1); rc=$?
if [ $rc -eq 0 ] && grep -q "note: checkpoint .* version 1, which carries no checksums" <<<"$out" && grep -q "resumed from .* at step 2" <<<"$out"; then
    pass "checkpoint: a version 1 file still resumes at its step, with a note"
else fail "checkpoint: a version 1 file still resumes at its step, with a note" "exit $rc: $(tail -n 2 <<<"$out" | tr '\n' ' ')"; fi
ver=$(od -An -td4 -j8 -N4 "$TMP/ck/checkpoint.bin" | tr -d ' ')
[ "$ver" = 2 ] && pass "checkpoint: the save after a version 1 resume writes version 2" || fail "checkpoint: the save after a version 1 resume writes version 2" "version $ver"

# other flags than the checkpoint was written with: refused, naming each
if wired "run_ckpt_header(&mine"; then
    fresh
    expect_exit "resume: other -b is refused, naming old and new" 2 "-b x ranks 2 \(now 4\).*pass the same flags" -- $TRAIN -model 2:32:2 -b 4 -t 16 -v 0 -gen 0 -x 6 -o "$TMP/ck" -y 1
    expect_exit "resume: other -seed and -sr are refused, naming both" 2 "-seed 1337 \(now 7\), -sr 0 \(now 1\)" -- $TRAIN $SMALL -x 6 -seed 7 -sr 1 -o "$TMP/ck" -y 1
else skip "resume: other -b is refused" "run_ckpt_header(&mine, ...)"; fi

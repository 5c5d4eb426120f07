#!/usr/bin/env bash
# test/sh/reliability2.sh: the reliability failures of issue 27, each made to happen: a symlink or a FIFO
# planted at a temporary file's name, a damaged newest checkpoint followed by a failed rename, -export
# over a device and two exports at once, crafted checkpoint counters and a non-finite bf16 blob, a
# killed -overwrite run, a run directory deleted and made again under a live run, a log that cannot
# be written, eps that is 0 in fp32. Each check fails on the code before its fix.
cd "$(dirname "$0")/../.."
. test/lib.sh
SMALL="-model 2:32:2 -b 2 -t 16 -v 0 -gen 0"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
EDIT="python3 test/sh/ckpt_edit.py"
# same FILE A B: the two files are byte for byte the same
same() { cmp -s "$1" "$2"; }

# ---- F1, F9: temporary files are created exclusively under new names: a symlink planted at
# DIR/checkpoint.bin.tmp, DIR/log.jsonl.tmp or EXPORT.tmp is never followed, a FIFO never opened
mkdir -p "$TMP/sym"
echo "precious" > "$TMP/victim1"; echo "precious" > "$TMP/victim2"; echo "precious" > "$TMP/victim3"
ln -s "$TMP/victim1" "$TMP/sym/checkpoint.bin.tmp"
ln -s "$TMP/victim2" "$TMP/sym/log.jsonl.tmp"
ln -s "$TMP/victim3" "$TMP/m.safetensors.tmp"
$TRAIN $SMALL -x 2 -o "$TMP/sym" > "$TMP/sym1.out" 2>&1; rc1=$?
$TRAIN $SMALL -x 3 -o "$TMP/sym" -y 1 > "$TMP/sym2.out" 2>&1; rc2=$?   # the resume rewrites the log through a temporary file
$TRAIN $SMALL -o "$TMP/sym" -export "$TMP/m.safetensors" > "$TMP/sym3.out" 2>&1; rc3=$?
if [ $rc1 = 0 ] && [ $rc2 = 0 ] && [ $rc3 = 0 ] && [ "$(cat "$TMP/victim1" "$TMP/victim2" "$TMP/victim3")" = "$(printf 'precious\nprecious\nprecious')" ] \
    && [ -L "$TMP/sym/checkpoint.bin.tmp" ] && [ -s "$TMP/m.safetensors" ]; then
    pass "tmp files: symlinks planted at checkpoint.bin.tmp, log.jsonl.tmp and EXPORT.tmp are not followed"
else fail "tmp files: symlinks planted at checkpoint.bin.tmp, log.jsonl.tmp and EXPORT.tmp are not followed" \
    "exits $rc1 $rc2 $rc3; victims: $(cat "$TMP/victim1" "$TMP/victim2" "$TMP/victim3" | head -c 300 | tr -c '[:print:]' '.')"; fi
# the log itself: a fresh run (-overwrite 1) replaces a symlink at log.jsonl instead of truncating its
# target; a resume refuses a FIFO there at once
mkdir -p "$TMP/symlog"; echo "precious" > "$TMP/victim4"; ln -s "$TMP/victim4" "$TMP/symlog/log.jsonl"
$TRAIN $SMALL -x 1 -o "$TMP/symlog" -overwrite 1 > /dev/null 2>&1; rc=$?
[ $rc = 0 ] && [ "$(cat "$TMP/victim4")" = precious ] && [ -f "$TMP/symlog/log.jsonl" ] && [ ! -L "$TMP/symlog/log.jsonl" ] \
    && pass "log: a fresh run replaces a symlink at log.jsonl, its target untouched" || fail "log: a fresh run replaces a symlink at log.jsonl" "exit $rc; target: $(head -c 60 "$TMP/victim4" | tr -c '[:print:]' '.')"
rm -f "$TMP/symlog/log.jsonl"; mkfifo "$TMP/symlog/log.jsonl"
expect_exit "log: a FIFO at log.jsonl on resume is refused at once (exit 2)" 2 "cannot (resume|write).*log.jsonl" -- timeout -k 5 60 $TRAIN $SMALL -x 2 -o "$TMP/symlog" -y 1
mkdir -p "$TMP/fifo"
mkfifo "$TMP/fifo/checkpoint.bin.tmp"
expect_exit "tmp files: a FIFO at checkpoint.bin.tmp does not block the run" 0 "checkpoint: .*checkpoint.bin \(step 2\)" -- \
    timeout -k 5 60 $TRAIN $SMALL -x 2 -o "$TMP/fifo"

# ---- F2: after a resume from checkpoint.prev.bin (checkpoint.bin damaged) the first save must not move
# the damaged file over the good .prev: a rename that then fails leaves the good .prev
mkdir -p "$TMP/rot"
$TRAIN $SMALL -x 2 -n 1 -o "$TMP/rot" > /dev/null 2>&1
cp "$TMP/rot/checkpoint.prev.bin" "$TMP/good_prev.bin"
b=$(od -An -tu1 -j 2000 -N1 "$TMP/rot/checkpoint.bin" | tr -d ' ')   # damage the newest: flip a bit of the weights
printf "\\x$(printf %02x $((b ^ 1)))" | dd of="$TMP/rot/checkpoint.bin" bs=1 seek=2000 conv=notrunc status=none
# an LD_PRELOAD shim whose rename() fails when it would put a new checkpoint in place
cat > "$TMP/failrename.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <string.h>
int rename(const char* a, const char* b) {
    static int (*real)(const char*, const char*);
    if (!real) real = (int (*)(const char*, const char*))dlsym(RTLD_NEXT, "rename");
    size_t n = strlen(b);
    if (strstr(a, ".tmp.") && n >= 14 && !strcmp(b + n - 14, "checkpoint.bin")) { errno = EIO; return -1; }
    return real(a, b);
}
C
if ! ldd "$TRAIN" 2>/dev/null | grep -q libasan && gcc -shared -fPIC -o "$TMP/failrename.so" "$TMP/failrename.c" -ldl 2>/dev/null; then
    out=$(LD_PRELOAD="$TMP/failrename.so" $TRAIN $SMALL -x 3 -o "$TMP/rot" -y 1 2>&1); rc=$?
    if [ $rc = 5 ] && grep -q "resuming from the previous checkpoint" <<<"$out" && same "$TMP/rot/checkpoint.prev.bin" "$TMP/good_prev.bin"; then
        pass "rotation: after a resume from .prev, a failed rename of the first save leaves the good .prev (exit 5)"
    else fail "rotation: after a resume from .prev, a failed rename of the first save leaves the good .prev (exit 5)" \
        "exit $rc; .prev $(same "$TMP/rot/checkpoint.prev.bin" "$TMP/good_prev.bin" && echo kept || echo replaced): $(tail -n 2 <<<"$out" | tr '\n' ' ')"; fi
    expect_exit "rotation: ... and the run resumes from that .prev" 0 "resumed from .*checkpoint.prev.bin at step 1" -- $TRAIN $SMALL -x 3 -o "$TMP/rot" -y 1
else
    echo "note: no LD_PRELOAD shim (sanitized trainer or no gcc): the forced rename failure is skipped"
    $TRAIN $SMALL -x 3 -o "$TMP/rot" -y 1 > /dev/null 2>&1
fi
# without a failure: the save after the resume from .prev replaces the damaged file and keeps .prev
same "$TMP/rot/checkpoint.prev.bin" "$TMP/good_prev.bin" && [ "$(od -An -td4 -j72 -N4 "$TMP/rot/checkpoint.bin" | tr -d ' ')" = 3 ] \
    && pass "rotation: the save after a resume from .prev replaces the damaged checkpoint.bin and keeps the good .prev" \
    || fail "rotation: the save after a resume from .prev replaces the damaged checkpoint.bin and keeps the good .prev" "$(ls -l "$TMP/rot" | tr '\n' ' ')"

# ---- F3: -export refuses to replace what is not a regular file; concurrent exports never mix
mkdir -p "$TMP/exp"
$TRAIN $SMALL -x 2 -n 1 -o "$TMP/exp" > /dev/null 2>&1
if [ "$(id -u)" = 0 ] && mknod "$TMP/fakedev" c 1 7 2>/dev/null; then   # 1,7: /dev/full's numbers
    expect_exit "export: -export over a character device is refused (exit 2), the device kept" 2 "is a character device" -- \
        $TRAIN $SMALL -o "$TMP/exp" -export "$TMP/fakedev"
    [ -c "$TMP/fakedev" ] || fail "export: the character device is still there" "$(ls -l "$TMP/fakedev")"
else
    echo "note: not root (or mknod refused): the device case is shown with a FIFO"
fi
mkfifo "$TMP/expfifo"
expect_exit "export: -export over a FIFO is refused (exit 2)" 2 "is a FIFO" -- timeout -k 5 60 $TRAIN $SMALL -o "$TMP/exp" -export "$TMP/expfifo"
mkdir -p "$TMP/expdir"
expect_exit "export: -export over a directory is refused (exit 2)" 2 "is a directory" -- $TRAIN $SMALL -o "$TMP/exp" -export "$TMP/expdir"
# two different models exported to one path at once, 6 times: the file is always one of them, whole
$TRAIN $SMALL -init "$TMP/exp/checkpoint.bin" -export "$TMP/a.st" > /dev/null 2>&1
$TRAIN $SMALL -init "$TMP/exp/checkpoint.prev.bin" -export "$TMP/b.st" > /dev/null 2>&1
bad=0
for i in 1 2 3 4 5 6; do
    $TRAIN $SMALL -init "$TMP/exp/checkpoint.bin" -export "$TMP/both.st" > "$TMP/c1.out" 2>&1 &
    $TRAIN $SMALL -init "$TMP/exp/checkpoint.prev.bin" -export "$TMP/both.st" > "$TMP/c2.out" 2>&1 &
    wait
    same "$TMP/both.st" "$TMP/a.st" || same "$TMP/both.st" "$TMP/b.st" || bad=$((bad + 1))
done
out=$($TRAIN $SMALL -init "$TMP/exp/checkpoint.bin" -export "$TMP/both.st" 2>&1)
if [ $bad = 0 ] && ! cmp -s "$TMP/a.st" "$TMP/b.st" && ! ls "$TMP"/both.st.tmp* >/dev/null 2>&1 && grep -q "replaced (atomically" <<<"$out"; then
    pass "export: concurrent exports to one path leave one whole file, never a mix; replacing a file is said"
else fail "export: concurrent exports to one path leave one whole file, never a mix; replacing a file is said" "$bad of 6 mixed; $(tail -n 1 <<<"$out")"; fi

# ---- F8, F11: a checkpoint whose checksums are right but whose content cannot be resumed
mkdir -p "$TMP/craft"
$TRAIN $SMALL -x 2 -o "$TMP/craft" > /dev/null 2>&1
cp "$TMP/craft/checkpoint.bin" "$TMP/craft_good.bin"
craft() { rm -f "$TMP/craft/"checkpoint*; cp "$TMP/craft_good.bin" "$TMP/craft/checkpoint.bin"; $EDIT "$TMP/craft/checkpoint.bin" "$@"; }
craft blob "weights bf16" 10 807f     # element 5 = +inf in bf16 (0x7f80, little-endian)
expect_exit "checkpoint: inf in the bf16 weights of a checksum-valid checkpoint is refused" 2 "'weights bf16' holds a non-finite value \(inf at element 5\)" -- \
    $TRAIN $SMALL -x 4 -o "$TMP/craft" -y 1
craft field tokens_seen 0x7fffffffffffffff
expect_exit "checkpoint: tokens_seen 2^63-1 is refused (was a signed overflow)" 2 "tokens seen 9223372036854775807 after 2 steps" -- \
    $TRAIN $SMALL -x 4 -o "$TMP/craft" -y 1
craft field data_position 0x7fffffffffffffff
expect_exit "checkpoint: data_position 2^63-1 is refused" 2 "data position" -- $TRAIN $SMALL -x 4 -o "$TMP/craft" -y 1
craft field skipped_steps 3
expect_exit "checkpoint: more skipped steps than steps is refused" 2 "3 skipped steps at step 2" -- $TRAIN $SMALL -x 4 -o "$TMP/craft" -y 1
craft field step 2147483647
expect_exit "checkpoint: step INT_MAX is refused by the step bound, not an overflow" 2 "at step 2147483647 already" -- $TRAIN $SMALL -x 4 -o "$TMP/craft" -y 1

# ---- F7: -eps that is 0 in fp32 is refused; a run whose every step was skipped is not a success
expect_exit "eps: -eps 1e-46 (0 in fp32) is refused" 2 "-eps 1e-46 is 0 in fp32" -- $TRAIN $SMALL -x 2 -eps 1e-46
# a checkpoint whose ln_f bias is 3e38 (finite, but every logit overflows): the one step left is skipped
mkdir -p "$TMP/huge"
$TRAIN $SMALL -x 2 -o "$TMP/huge" > /dev/null 2>&1
P=1667968   # parameters of -model 2:32:2; ln_f's bias is the last 32
$EDIT "$TMP/huge/checkpoint.bin" blob "weights fp32" $(( (P - 32) * 4 )) "$(printf 'ffff7f7f%.0s' $(seq 32))"
$EDIT "$TMP/huge/checkpoint.bin" blob "weights bf16" $(( (P - 32) * 2 )) "$(printf '7f7f%.0s' $(seq 32))"
out=$($TRAIN $SMALL -x 3 -o "$TMP/huge" -y 1 2>&1); rc=$?
if [ $rc = 3 ] && grep -q "every step this run took (3 to 3) had a non-finite" <<<"$out" && ! grep -q "train_loss=nan" <<<"$out"; then
    pass "skips: a run whose every step was skipped exits 3, no train_loss=nan summary"
else fail "skips: a run whose every step was skipped exits 3, no train_loss=nan summary" "exit $rc: $(tail -n 2 <<<"$out" | tr '\n' ' ')"; fi
# F14: the skipped step is printed once (its SKIPPED line), not also as a normal step line
[ "$(grep -c '^step *3/3' <<<"$out")" = 1 ] && grep -q "^step *3/3 .*SKIPPED" <<<"$out" \
    && pass "skips: a skipped step is printed once" || fail "skips: a skipped step is printed once" "$(grep '^step' <<<"$out" | tr '\n' ' ')"

# ---- F4: a fresh -overwrite 1 run killed before its first save leaves no old checkpoint to resume
mkdir -p "$TMP/ow"
$TRAIN $SMALL -x 2 -o "$TMP/ow" > /dev/null 2>&1
cp "$TMP/ow/checkpoint.bin" "$TMP/ow_old.bin"
$TRAIN $SMALL -x 100000 -n 0 -seed 5 -o "$TMP/ow" -overwrite 1 > "$TMP/ow.out" 2>&1 &
pid=$!
for i in $(seq 600); do grep -q '"seed":5,' "$TMP/ow/log.jsonl" 2>/dev/null && break; sleep 0.1; done   # its config record is written
kill -9 $pid; wait $pid 2>/dev/null
expect_exit "overwrite: after a killed -overwrite 1 run, -y 1 finds no old checkpoint (exit 2)" 2 "cannot resume: no usable checkpoint" -- \
    $TRAIN $SMALL -x 100000 -seed 5 -o "$TMP/ow" -y 1
cp "$TMP/ow_old.bin" "$TMP/ow/checkpoint.bin"   # another run's checkpoint beside this run's log
expect_exit "overwrite: a checkpoint of another run than the log's is refused, naming both runs" 2 "belongs to run [0-9a-f]{8}, but .*log.jsonl belongs to run [0-9a-f]{8}" -- \
    $TRAIN $SMALL -x 100000 -seed 5 -o "$TMP/ow" -y 1

# ---- F6: a run directory deleted and made again under a live run: the old run stops (exit 5) and writes
# nothing into the new one
mkdir -p "$TMP/rm"
$TRAIN $SMALL -x 100000 -n 1 -o "$TMP/rm" > "$TMP/rm.out" 2>&1 &
pid=$!
for i in $(seq 600); do [ -f "$TMP/rm/checkpoint.bin" ] && break; sleep 0.1; done
# (rm -rf can race with a save that creates a file in the directory meanwhile: repeat until it is gone)
for i in $(seq 100); do rm -rf "$TMP/rm" 2>/dev/null; [ -e "$TMP/rm" ] || break; sleep 0.05; done
mkdir -p "$TMP/rm"
timeout 120 $TRAIN $SMALL -x 1 -o "$TMP/rm" > "$TMP/rm2.out" 2>&1; rc2=$?
for i in $(seq 600); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill $pid 2>/dev/null; wait $pid; rc=$?
step=$(od -An -td4 -j72 -N4 "$TMP/rm/checkpoint.bin" 2>/dev/null | tr -d ' ')
# (a save in progress while the directory goes fails on its own: exit 5 as well)
if [ $rc = 5 ] && grep -Eq "was deleted or replaced while this run used it|cannot rename .*checkpoint|cannot write checkpoint" "$TMP/rm.out" && [ $rc2 = 0 ] && [ "$step" = 1 ]; then
    pass "run dir: deleted and made again under a live run: that run stops with exit 5, the new run's checkpoint is its own"
else fail "run dir: deleted and made again under a live run: that run stops with exit 5, the new run's checkpoint is its own" \
    "old run exit $rc, new run exit $rc2, checkpoint step $step: $(tail -n 1 "$TMP/rm.out")"; fi

# ---- F12: a log that cannot be written: the message says what is saved; the log ends in whole JSON
# ulimit -f (EFBIG once the log passes 2 KiB, SIGXFSZ ignored) works for any user; a full tmpfs as root
logfail_check() { # NAME DIR WANT-PATTERN OUTFILE RC
    local last; last=$(tail -n 1 "$2/log.jsonl")
    if [ "$5" = 5 ] && grep -Eq "$3" "$4" && python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$2/log.jsonl" 2>/dev/null; then
        pass "$1"
    else fail "$1" "exit $5: $(tail -n 1 "$4"); last log line: $(echo "$last" | head -c 120)"; fi
}
mkdir -p "$TMP/lf1"
# (the output goes through a pipe: a file would be limited too)
(trap '' XFSZ; ulimit -f 2; exec $TRAIN $SMALL -x 60 -n 0 -o "$TMP/lf1" 2>&1) | cat > "$TMP/lf1.out"; rc=${PIPESTATUS[0]}
logfail_check "log: a failed log write with no checkpoint says so, and the log ends in a whole record" "$TMP/lf1" \
    "log.jsonl failed .*: no checkpoint was written" "$TMP/lf1.out" $rc
mkdir -p "$TMP/lf2"
$TRAIN $SMALL -x 2 -o "$TMP/lf2" > /dev/null 2>&1
(trap '' XFSZ; ulimit -f 2; exec $TRAIN $SMALL -x 60 -n 0 -o "$TMP/lf2" -y 1 2>&1) | cat > "$TMP/lf2.out"; rc=${PIPESTATUS[0]}
logfail_check "log: a failed log write after a resume names the last checkpoint's step" "$TMP/lf2" \
    "log.jsonl failed .*: the last checkpoint is of step 2" "$TMP/lf2.out" $rc
if [ "$(id -u)" = 0 ] && mkdir -p "$TMP/tfs" && mount -t tmpfs -o size=40k tmpfs "$TMP/tfs" 2>/dev/null; then
    $TRAIN $SMALL -x 400 -n 0 -o "$TMP/tfs/run" > "$TMP/lf3.out" 2>&1; rc=$?
    logfail_check "log: ENOSPC on a full tmpfs: exit 5, no checkpoint said, the log ends in a whole record" "$TMP/tfs/run" \
        "log.jsonl failed .*: no checkpoint was written" "$TMP/lf3.out" $rc
    umount "$TMP/tfs"
else echo "note: the full-tmpfs (ENOSPC) log check is skipped: it needs root and mount (not root, or mount refused here)"; fi

# ---- F5: a resume on another number of ranks (here with -zero 1) is not bit-exact: it says so
if command -v mpirun >/dev/null && ldd "$TRAIN" 2>/dev/null | grep -q libmpi; then
    MPIRUN="mpirun --oversubscribe --allow-run-as-root --mca btl self,vader"
    mkdir -p "$TMP/w21" "$TMP/w12"
    $MPIRUN -np 2 $TRAIN $SMALL -b 1 -x 2 -zero 1 -o "$TMP/w21" > "$TMP/w21.out" 2>&1
    expect_exit "world: 2 ranks (-zero 1) resumed on 1 says it is not bit-exact" 0 "written by a run on 2 ranks, this run has 1: the resumed run is not bit-exact" -- \
        $TRAIN $SMALL -b 2 -x 3 -o "$TMP/w21" -y 1
    $TRAIN $SMALL -b 2 -x 2 -o "$TMP/w12" > /dev/null 2>&1
    expect_exit "world: 1 rank resumed on 2 (-zero 1) says it is not bit-exact" 0 "written by a run on 1 rank, this run has 2: the resumed run is not bit-exact" -- \
        $MPIRUN -np 2 $TRAIN $SMALL -b 1 -x 3 -zero 1 -o "$TMP/w12" -y 1
else echo "note: mpirun or an MPI build missing: the world-size resume checks are skipped"; fi

# ---- F13: out of memory is exit 2 with its size, not an internal error; tokenizing a pathological text
# (one 4 MB "word") stays small (it took ~40 bytes per input byte)
python3 -c "open('$TMP/aaa.txt','w').write('a' * 4000000)"
rss=$(python3 -c 'import resource,subprocess,sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)' \
      ./prepare_data -text "$TMP/aaa.txt" -train "$TMP/aaa_train.bin" -val "$TMP/aaa_val.bin")
[ -s "$TMP/aaa_train.bin" ] && [ "$rss" -lt 80 ] && pass "tokenizer: 4 MB of one repeated letter tokenizes in $rss MiB (bounded BPE pieces)" \
    || fail "tokenizer: 4 MB of one repeated letter tokenizes in bounded memory" "peak RSS $rss MiB (want < 80)"
# a 3 GiB text (sparse: no disk used) under a 2 GB address-space limit: reading it fails outside the ledger
truncate -s 3G "$TMP/huge.txt"
out=$( (ulimit -v 2000000; exec $TRAIN $SMALL -x 1 -i "$TMP/huge.txt") 2>&1 ); rc=$?
if [ $rc = 2 ] && grep -Eq "out of memory \(3072.0 MiB for data/" <<<"$out" && ! grep -q "internal error" <<<"$out"; then
    pass "memory: out of memory outside the ledger is exit 2 with its size, not an internal error"
else fail "memory: out of memory outside the ledger is exit 2 with its size, not an internal error" "exit $rc: $(tail -n 2 <<<"$out" | tr '\n' ' ')"; fi

# ---- F10: a SIGSTOPped rank: the other ranks' collectives time out (-dist-timeout) and name it
if command -v mpirun >/dev/null && ldd "$TRAIN" 2>/dev/null | grep -q libmpi; then
    MPIRUN="mpirun --oversubscribe --allow-run-as-root --mca btl self,vader"
    mkdir -p "$TMP/stop"
    start=$(date +%s)
    timeout -k 10 240 $MPIRUN -np 2 $TRAIN $SMALL -b 1 -x 1000000 -dist-timeout 5 -o "$TMP/stop" > "$TMP/stop.out" 2>&1 &
    mp=$!
    for i in $(seq 600); do grep -q '"type":"step"' "$TMP/stop/log.jsonl" 2>/dev/null && break; sleep 0.1; done
    victim=""
    for p in $(pgrep -f "$TMP/stop"); do   # the rank 1 process: its environment says so
        tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$p
    done
    [ -n "$victim" ] && kill -STOP "$victim"
    wait $mp; rc=$?
    took=$(( $(date +%s) - start ))
    [ -n "$victim" ] && kill -CONT "$victim" 2>/dev/null
    if [ -n "$victim" ] && [ $rc != 0 ] && [ $rc != 124 ] && [ $rc != 137 ] && [ $took -lt 200 ] && grep -q "rank 1 did not answer" "$TMP/stop.out"; then
        pass "mpi: a SIGSTOPped rank: the collectives time out (-dist-timeout 5) naming it, the job ends (${took}s)"
    else fail "mpi: a SIGSTOPped rank: the collectives time out (-dist-timeout 5) naming it, the job ends" \
        "victim '$victim', exit $rc after ${took}s: $(grep -v '^step' "$TMP/stop.out" | tail -n 3 | tr '\n' ' ')"; fi
fi

# ---- F14: -sample from -o DIR's checkpoint names it a checkpoint, not "-init"
mkdir -p "$TMP/noinit"; printf 'junk' > "$TMP/noinit/checkpoint.bin"
out=$($TRAIN $SMALL -o "$TMP/noinit" -sample 1 2>&1); rc=$?
[ $rc = 2 ] && grep -q "error: checkpoint: " <<<"$out" && ! grep -q -- "-init" <<<"$out" \
    && pass "messages: a bad -o DIR checkpoint without -init is not called -init" || fail "messages: a bad -o DIR checkpoint without -init is not called -init" "exit $rc: $(tail -n 1 <<<"$out")"

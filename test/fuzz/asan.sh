#!/usr/bin/env bash
# test/fuzz/asan.sh (run by `make test-asan`): the fast tests under AddressSanitizer + LeakSanitizer +
# UndefinedBehaviorSanitizer (binaries from build-asan/: test/bin-asan/*, ./train_cpu_asan), then a
# bounded, deterministic fuzz run of every target in test/fuzz/. Counts PASS/FAIL lines like
# test/run.sh; a sanitizer report makes its program exit non-zero, which counts as a failure.
# Last line: "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
FUZZ_ITERS=${FUZZ_ITERS:-3000}
. test/runner.sh
# a sanitizer finding: show its report, not just the last lines
crash_report() {
    echo "(a sanitizer finding?) the report:"
    grep -E -A12 'ERROR: (Address|Leak)Sanitizer|runtime error:|fuzz oracle failed|fuzz_cli: child' "$log" | head -n 40 | sed 's/^/    /'
}

for t in test/bin-asan/test_*; do
    case $t in *.d) continue ;; esac
    run_one "asan:$(basename "$t")" "$t"
done

# shell checks against the sanitized trainer: test/sh/reliability.sh (bad flags, special files, damaged
# checkpoints, resume); `ASAN_SHELL_ALL=1` adds test/sh/cli.sh (slower: a 40-step diverging run)
run_one "asan:reliability.sh" env TRAIN=./train_cpu_asan bash test/sh/reliability.sh
# data parallel under the sanitizers: 2 ranks, -zero 1 (reduce-scatter, sharded master, all-gather),
# a checkpoint and a resume. Open MPI's plugins keep allocations until exit and are unloaded before the
# leak check (their frames show as "<unknown module>"): a leak counts when its stack has a frame of our
# code; any other sanitizer finding counts as it is
mpi_asan() {
    local d out rc=0 k
    d=$(mktemp -d)
    local run="mpirun --oversubscribe --allow-run-as-root --mca btl self,vader -np 2 ./train_cpu_asan -model 1:33:3 -b 1 -t 16 -v 0 -gen 0 -zero 1 -o $d"
    for k in "-x 2 -n 1" "-x 3 -y 1"; do
        out=$(OMP_NUM_THREADS=1 $run $k 2>&1)
        if ! grep -q "^summary: opt=adamw steps=[23]" <<<"$out" || grep -Eq "ERROR: AddressSanitizer|runtime error:" <<<"$out"; then
            echo "$out" | grep -v '^step' | tail -n 30; rc=1
        fi
        # leak reports, one block each; ours: a frame in this repository's sources
        if awk '/^(Direct|Indirect) leak/{b=1; ours=0} b && /(train_gpt2\.c|trainer\/|common\/|data\/|optim\/|cpu\/)[a-z_0-9]*\.c:/{ours=1} b && /^$/{if (ours) found=1; b=0} END{if (ours) found=1; exit !found}' <<<"$out"; then
            echo "$out" | grep -A14 -E '^(Direct|Indirect) leak' | head -n 60; echo "FAIL asan: 2 MPI ranks: a leak in our code"; rc=1
        fi
    done
    rm -rf "$d"
    [ $rc = 0 ] && echo "PASS asan: 2 MPI ranks, -zero 1, a checkpoint and a resume: no sanitizer finding in our code"
    return $rc
}
if command -v mpirun >/dev/null && ldd ./train_cpu_asan 2>/dev/null | grep -q libmpi; then
    run_one "asan:mpi -zero 1" mpi_asan
else echo "note: mpirun or an MPI build missing: the sanitized 2-rank run is skipped"; fi
if [ "${ASAN_SHELL_ALL:-0}" = 1 ]; then
    run_one "asan:cli.sh" env TRAIN=./train_cpu_asan bash test/sh/cli.sh
fi

# bounded deterministic fuzzing: FUZZ_ITERS mutated inputs per target (the cli target forks per input:
# a quarter of that), seed 1, inputs up to 4 KiB
fuzz_one() {
    local t=$1 n=$2
    local out
    # scratch files in memory when possible: the targets write each input to a file (and the checkpoint
    # target fsyncs its re-saves), which on a disk costs more than the code under test
    local tmpdir=/dev/shm
    [ -d /dev/shm ] && [ -w /dev/shm ] || tmpdir=${TMPDIR:-/tmp}
    out=$(FUZZ_TMPDIR=$tmpdir "test/bin-asan/fuzz_$t" -n "$n" -seed 1 -max 4096 "test/fuzz/corpus/$t" 2>&1)
    local rc=$?
    if [ $rc -eq 0 ]; then echo "PASS $(echo "$out" | tail -n 1)"; else echo "$out" | tail -n 40; echo "FAIL fuzz_$t: exit $rc"; return 1; fi
}
for f in test/bin-asan/fuzz_*; do
    case $f in *.d) continue ;; esac
    t=${f#test/bin-asan/fuzz_}
    n=$FUZZ_ITERS
    [ "$t" = cli ] && n=$((FUZZ_ITERS / 4))
    run_one "asan:fuzz_$t" fuzz_one "$t" "$n"
    grep '^PASS fuzz_' "$log" | sed 's/^PASS /    /'
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

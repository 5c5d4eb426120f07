#!/usr/bin/env bash
# test/run.sh: runs every C test (test/test_*.c, built into test/bin/) and every shell test (test/sh/*.sh) from
# the repository root, counts their "PASS name" / "FAIL name: why" lines, and prints the total as
# the last line: "N passed, N failed". A test program that crashes or exits non-zero without
# reporting a FAIL line counts as one failure, so a crash can never pass silently.
set -u
cd "$(dirname "$0")/.."
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_one() {
    local name=$1; shift
    local start=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep -E '^(FAIL )' "$log"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $rc without reporting a failure; last lines:"
        tail -n 5 "$log" | sed 's/^/    /'
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-28s %4d passed, %d failed  (%ds)\n' "$name" "$p" "$f" $((SECONDS - start))
}

# the C tests (test/test_*.c); CUDA tests (test/*.cu) need a GPU and run from scripts/gpu_check.sh
for src in test/test_*.c; do
    t=test/bin/$(basename "$src" .c)
    if [ ! -x "$t" ]; then echo "FAIL $(basename "$t"): not built (make test builds it)"; failed=$((failed + 1)); continue; fi
    run_one "$(basename "$t")" "$t"
done
for s in test/sh/*.sh; do
    [ -f "$s" ] || continue
    run_one "$(basename "$s")" bash "$s"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

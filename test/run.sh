#!/usr/bin/env bash
# test/run.sh: runs every C test binary (test/bin/test_*) and every shell test (test/sh/*.sh) from
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

for t in test/bin/test_*; do
    [ -x "$t" ] || continue
    run_one "$(basename "$t")" "$t"
done
for s in test/sh/*.sh; do
    [ -f "$s" ] || continue
    run_one "$(basename "$s")" bash "$s"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

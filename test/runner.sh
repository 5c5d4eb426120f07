# test/runner.sh: what the test runners share (sourced by test/run.sh and test/fuzz/asan.sh): run_one
# runs one test program, counts its "PASS name" / "FAIL name: why" lines into $passed and $failed and
# prints a line for it. A program that exits non-zero without a FAIL line counts as one failure, so a
# crash can never pass silently; crash_report (a runner may redefine it) shows why.
passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# what a program that failed without a FAIL line printed last
crash_report() { echo "last lines:"; tail -n 5 "$log" | sed 's/^/    /'; }

run_one() {
    local name=$1; shift
    local start=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    local p f
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep -E '^FAIL ' "$log"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $rc without reporting a failure; $(crash_report)"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-28s %4d passed, %d failed  (%ds)\n' "$name" "$p" "$f" $((SECONDS - start))
}

# test/runner.sh: what the test runners share (sourced by test/run.sh and test/fuzz/asan.sh): run_one
# runs one test program, counts its "PASS name" / "FAIL name: why" lines into $passed and $failed and its
# "SKIP name: reason" lines (a tool the check needs is missing) into $skipped, and prints a line for it;
# skip_reasons groups the skips by reason: "gnuplot missing: compare.sh PNG, memory tables; ...". A program that exits non-zero without a FAIL line counts as one failure, so a
# crash can never pass silently; crash_report (a runner may redefine it) shows why.
passed=0
failed=0
skipped=0
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT

# what a program that failed without a FAIL line printed last
crash_report() { echo "last lines:"; tail -n 5 "$log" | sed 's/^/    /'; }

run_one() {
    local name=$1; shift
    local start=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    local p f s
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    s=$(grep -c '^SKIP ' "$log")
    grep -E '^(FAIL|SKIP) ' "$log"
    grep -E '^SKIP ' "$log" >> "$skips"
    skipped=$((skipped + s))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $rc without reporting a failure; $(crash_report)"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-28s %4d passed, %d failed%s  (%ds)\n' "$name" "$p" "$f" "$([ "$s" -gt 0 ] && echo ", $s skipped")" $((SECONDS - start))
}

# "K skipped (REASON: name, name; REASON: name)" from the SKIP lines so far, or nothing when none
# The closing lines: "skipped: REASON: names; ..." when anything was skipped, then the total alone on the
# last line, "N passed, N failed" or "N passed, N failed, K skipped": the shape CI's parser reads (a
# parenthesis after it would not be that line any more), so the reasons go on the line before.
skip_reasons() {
    sed -E 's/^SKIP (.*): ([^:]*)$/\2\t\1/' "$skips" | awk -F'\t' '
        !($1 in names) { order[++n] = $1; names[$1] = $2; next } { names[$1] = names[$1] ", " $2 }
        END { for (i = 1; i <= n; i++) printf "%s%s: %s", (i > 1 ? "; " : ""), order[i], names[order[i]] }'
}
print_total() {
    if [ "$skipped" -gt 0 ]; then
        echo "skipped: $(skip_reasons)"
        echo "$passed passed, $failed failed, $skipped skipped"
    else
        echo "$passed passed, $failed failed"
    fi
}

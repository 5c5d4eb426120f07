#!/usr/bin/env bash
# test/sh/skips.sh: a machine without gnuplot or MPI runs the tests to "0 failed" with the skips counted
# on the closing line and named on the line before it, and nothing is installed. test/run.sh runs test/sh/dist.sh (needs
# mpirun) and test/sh/loss_table.sh (its PNG needs gnuplot) with a PATH from which gnuplot, mpirun,
# mpiexec, mpicc and apt-get are hidden (as root, scripts/plot_setup.sh used to apt-get install gnuplot).
cd "$(dirname "$0")/../.."
. test/lib.sh
mkdir -p "$TMP/bin"
IFS=: read -ra dirs <<< "$PATH"
for d in "${dirs[@]}"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
        n=$(basename "$f")
        case "$n" in gnuplot|mpirun|mpiexec|mpicc|orterun|apt-get|apt) continue ;; esac
        [ -e "$TMP/bin/$n" ] || ln -s "$f" "$TMP/bin/$n" 2>/dev/null
    done
done
out=$(PATH="$TMP/bin" bash test/run.sh test/sh/dist.sh test/sh/loss_table.sh 2>&1); rc=$?
last=$(tail -n 1 <<<"$out")
reasons=$(tail -n 2 <<<"$out" | head -n 1)
if [ $rc -eq 0 ] && grep -Eq '^[0-9]+ passed, 0 failed, 2 skipped$' <<<"$last" &&
   [ "$reasons" = "skipped: mpirun missing: data parallel, test/sh/dist.sh; gnuplot missing: loss_table: loss.png" ]; then
    pass "skips: without gnuplot and mpirun: '$reasons' / '$last'"
else fail "skips: without gnuplot and mpirun, 0 failed and the skips named" "exit $rc, last lines '$reasons' / '$last'; $(grep -E '^(FAIL|SKIP)' <<<"$out" | head -n 3 | tr '\n' ' ')"; fi
# the shape CI parses: "N passed, N failed" (", K skipped" may follow) alone on the last line
grep -Eq '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' <<<"$last" && pass "skips: the closing line is 'N passed, N failed[, K skipped]' alone" \
    || fail "skips: the closing line's shape" "'$last'"
grep -qi "installing" <<<"$out" && fail "skips: nothing installed" "$(grep -m1 -i "installing" <<<"$out")" || pass "skips: nothing installed or tried"

#!/usr/bin/env bash
# test/run.sh: runs every C test (test/test_*.c, built into test/bin/) and every shell test (test/sh/*.sh) from
# the repository root, counts their "PASS name" / "FAIL name: why" lines, and prints the total as
# the last line: "N passed, N failed", or "N passed, N failed, K skipped" when a check was skipped because
# a tool it needs is missing ("SKIP name: reason" lines), its reasons named on the line before
# ("skipped: gnuplot missing: ...; mpirun missing: ..."). A test program that crashes or exits non-zero without
# reporting a FAIL line counts as one failure, so a crash can never pass silently.
# With arguments (test/sh/*.sh files), runs only those. Nothing is installed: a missing tool is a skip.
set -u
cd "$(dirname "$0")/.."
. test/runner.sh
export PLOT_NO_INSTALL=1   # scripts/plot_setup.sh would apt-get install gnuplot as root: never in a test
if [ $# -gt 0 ]; then
    for s in "$@"; do run_one "$(basename "$s")" bash "$s"; done
    print_total
    [ "$failed" -eq 0 ]
    exit
fi

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
print_total
[ "$failed" -eq 0 ]

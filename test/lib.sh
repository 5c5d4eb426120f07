# test/lib.sh: helpers for the shell tests in test/sh/ (sourced, run from the repository root).
# Each check prints "PASS name" or "FAIL name: why", which test/run.sh counts.
TRAIN=${TRAIN:-./train_cpu}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
# skip_test NAME REASON: a check that cannot run here (a tool is missing); counted and named by test/run.sh
skip_test() { echo "SKIP $1: $2"; }
export PLOT_NO_INSTALL=1   # tests never install anything (scripts/plot_setup.sh would, as root)

# expect_exit NAME CODE PATTERN -- cmd...: runs cmd, checks its exit code and that stderr+stdout
# match the extended regex PATTERN.
expect_exit() {
    local name=$1 code=$2 pattern=$3; shift 4
    local out rc
    out=$("$@" 2>&1); rc=$?
    if [ "$rc" -ne "$code" ]; then fail "$name" "exit $rc, want $code; output: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; return; fi
    if ! echo "$out" | grep -Eq -- "$pattern"; then fail "$name" "output lacks /$pattern/: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; return; fi
    if echo "$out" | grep -Eq "Segmentation|core dumped|internal error"; then fail "$name" "crashed: $(echo "$out" | tail -n 2)"; return; fi
    pass "$name"
}

# the losses of step lines in a log.jsonl, one "step loss norm" per line, full precision
step_losses() { grep '"type":"step"' "$1" | sed -E 's/.*"step":([0-9]+),"loss":([^,]+),"lr":[^,]+,"norm":([^,]+),.*/\1 \2 \3/'; }

# same_checkpoint A B: two checkpoint files hold the same run state byte for byte, apart from the run id
# (header bytes 144..151: the header checksum and the run id, which is new for every fresh run)
same_checkpoint() {
    cmp -s <(head -c 144 "$1") <(head -c 144 "$2") && cmp -s <(tail -c +153 "$1") <(tail -c +153 "$2")
}

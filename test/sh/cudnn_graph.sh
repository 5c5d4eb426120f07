#!/usr/bin/env bash
# test/sh/cudnn_graph.sh: cuda/attention_cudnn.cuh's cuDNN graphs, checked without a GPU.
#  1. test/cudnn_graph_check.cu builds and finalizes the forward and backward operation graphs at d12's
#     shape (B=32 T=1024 NH=12 HS=64) and at a small one (B=4 T=256 NH=2 HS=64): cuDNN accepts them.
#  2. cuDNN's API log of each d12 graph (CUDNN_LOGLEVEL_DBG=3), put in the record's one-line format by
#     test/cudnn_log.py, equals ../shared/reference/cudnn_sdpa/{fwd,bwd}_backend_calls.txt (what
#     llm.c's cudnn-frontend sends cuDNN 9.19) up to the operation graph's finalize. Both sides go
#     through the same canonical form (cudnn_log.py canon: pointer names, and the two rules it states).
#  3. The comparison can fail: a copy of the header with one stride changed must be caught.
# SKIP lines (exit 0) when nvcc, cuDNN's header or library, python3, or the record is missing, and for
# the comparison when the library is not the record's 9.19 (other versions set other attributes).
cd "$(dirname "$0")/../.."
. test/lib.sh

NVCC=$(command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
[ -n "$NVCC" ] || { echo "SKIP cudnn_graph: no nvcc (PATH, /usr/local/cuda/bin)"; exit 0; }
INC= LIB=
for d in ${CUDNN_HOME:+"$CUDNN_HOME"} "$(dirname "$(dirname "$NVCC")")" /usr/local/cuda /usr; do
    [ -z "$INC" ] && [ -f "$d/include/cudnn_graph.h" ] && INC=$d/include
    for l in "$d/lib64" "$d/lib" "$d/lib/x86_64-linux-gnu"; do
        [ -z "$LIB" ] && [ -e "$l/libcudnn.so" ] && LIB=$l
    done
done
[ -n "$INC" ] && [ -n "$LIB" ] || { echo "SKIP cudnn_graph: cuDNN not found (cudnn_graph.h: ${INC:-none}, libcudnn.so: ${LIB:-none}; set CUDNN_HOME)"; exit 0; }

# build: $1 = extra include folder searched first (the mutated header's copy), $2 = output
build() {
    "$NVCC" -O2 -std=c++17 ${1:+-I"$1"} -I. -I"$INC" -DUSE_CUDNN test/cudnn_graph_check.cu -L"$LIB" -lcudnn \
        -Xlinker -rpath="$LIB" -o "$2" 2>&1
}
out=$(build "" "$TMP/check") || { fail "cudnn_graph: test/cudnn_graph_check.cu builds" "$(echo "$out" | tail -n 5)"; exit 0; }

# 1. every graph finalizes (one process per graph: one log per graph, as the record was made)
for dir in fwd bwd; do
    for shape in "32 1024 12 64" "4 256 2 64"; do
        log=$TMP/$dir.${shape// /_}.log
        out=$(CUDNN_LOGLEVEL_DBG=3 CUDNN_LOGDEST_DBG=$log "$TMP/check" $dir $shape 2>&1)
        if [ $? -eq 0 ]; then pass "cudnn_graph: $out"; else fail "cudnn_graph: $dir graph finalizes ($shape)" "$out"; fi
    done
done

# 2. the d12 graphs' calls equal the record's
REF=../shared/reference/cudnn_sdpa
command -v python3 >/dev/null || { echo "SKIP cudnn_graph: no python3 to read cuDNN's log"; exit 0; }
[ -f "$REF/fwd_backend_calls.txt" ] || { echo "SKIP cudnn_graph: no record at $REF (../shared beside the repository)"; exit 0; }
ver=$("$TMP/check" version)
[ "$ver" = 91900 ] || { echo "SKIP cudnn_graph: the record is cuDNN 9.19's calls, this cuDNN is $ver"; exit 0; }

# compare LOG RECORD: prints nothing when equal, else the first differences
compare() {
    python3 test/cudnn_log.py raw "$1" > "$TMP/calls" || return 1
    python3 test/cudnn_log.py canon "$TMP/calls" > "$TMP/ours"
    python3 test/cudnn_log.py canon "$2" > "$TMP/ref"
    diff "$TMP/ref" "$TMP/ours" | head -n 6
}
for dir in fwd bwd; do
    d=$(compare "$TMP/$dir.32_1024_12_64.log" "$REF/${dir}_backend_calls.txt")
    n=$(wc -l < "$TMP/ref")
    if [ -z "$d" ] && [ "$n" -gt 100 ]; then pass "cudnn_graph: $dir calls at d12 equal the record's ($n lines)"
    else fail "cudnn_graph: $dir calls at d12 equal the record's" "diff (record < ours >): $(echo "$d" | tr '\n' ' ')"; fi
done

# 3. a wrong stride is caught: Q/K/V's row stride 3C becomes 3C + 64 in a copy of the header
mkdir -p "$TMP/mut/cuda"
sed 's/#define QKV_ROWS b, h, t, d, q3, d, 3 \* C, 1/#define QKV_ROWS b, h, t, d, q3, d, 3 * C + 64, 1/' cuda/attention_cudnn.cuh > "$TMP/mut/cuda/attention_cudnn.cuh"
if cmp -s cuda/attention_cudnn.cuh "$TMP/mut/cuda/attention_cudnn.cuh"; then
    fail "cudnn_graph: a wrong stride is caught" "the mutation did not apply (QKV_ROWS changed?)"
elif ! out=$(build "$TMP/mut" "$TMP/check_mut"); then
    fail "cudnn_graph: a wrong stride is caught" "the mutated copy does not build: $(echo "$out" | tail -n 3)"
else
    CUDNN_LOGLEVEL_DBG=3 CUDNN_LOGDEST_DBG=$TMP/mut.log "$TMP/check_mut" fwd 32 1024 12 64 >/dev/null 2>&1
    d=$(compare "$TMP/mut.log" "$REF/fwd_backend_calls.txt")
    if echo "$d" | grep -q "^> .*\[2359296,64,2368,1\]"; then pass "cudnn_graph: a wrong stride is caught ($(echo "$d" | grep -m1 '^> ' | cut -c1-90)...)"
    else fail "cudnn_graph: a wrong stride is caught" "the comparison said: $(echo "$d" | tr '\n' ' ')"; fi
fi

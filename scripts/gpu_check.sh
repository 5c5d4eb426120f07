#!/usr/bin/env bash
# scripts/gpu_check.sh: everything that needs a GPU, in one call, for a machine with no network:
#   1. build the CPU and CUDA trainers, the CPU tests and test/bin/test_gpt2cu (nvcc -arch=sm_90)
#   2. run test_gpt2cu (model vs PyTorch vectors, optimizer kernels vs CPU, 20 steps GPU vs CPU, checkpoints,
#      the NCCL / -zero 1 path at one rank vs the plain run: its own row)
#   2e. run test_gpt2cu -attn: every attention route vs float64 at six shapes, and the trainer with each route
#   2f. run each route's own GPU check (test/test_attention_{flash,cublas,cudnn}_gpu.cu: vs the reference
#      kernels, reruns, the kernels timed alone)
#   3. run the CPU tests (test/bin/test_* except test_gpt2cu, and test/sh/*.sh)
#   4. run scripts/bench_gpu.sh (d12, B=32, T=1024, bf16, adamw; every -attn route, a -prof table and the
#      speed and memory targets as pass/fail) and scripts/bench_optim.sh (the
#      optimizer step alone, every optimizer with CUDA kernels, d12)
#   5. write a short markdown table to $OUT/gpu_check.md and print it last
# Data: nothing is fetched. test_gpt2cu writes its own synthetic shard; the benchmark uses
# data/gcide/*.bin if it was carried along, else a synthetic shard. CPU tests that need `make data`
# output report FAIL here if it is missing (see their logs).
#   OUT=./out/gpu_check bash scripts/gpu_check.sh
# SKIP_BENCH=1 leaves out part 4; SKIP_CPU_TESTS=1 leaves out part 3 (CI runs those; on a leased GPU every second counts). Each part runs
# under `timeout` (TEST_TIMEOUT, BENCH_TIMEOUT seconds), so a hung kernel costs one part, not the call.
# NCCL: when the CUDA toolkit has no nccl.h but PyTorch's pip package nvidia-nccl is installed (the GPU
# machines' image), NCCL_HOME is pointed at a folder of links to it.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./out/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export OUT
summary="$OUT/gpu_check.md"
row() { echo "| $1 | $2 | $3 |" >> "$summary"; }
{
    echo "## gpu_check: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| part | result | details |"
    echo "|---|---|---|"
} > "$summary"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-180}
nvcc_bin=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [ -z "${NCCL_HOME:-}" ] && [ ! -f "$(dirname "$(dirname "$nvcc_bin")")/include/nccl.h" ] && [ ! -f /usr/include/nccl.h ]; then
    nd=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
    if [ -n "$nd" ] && [ -f "$nd/include/nccl.h" ]; then
        mkdir -p /tmp/nccl_home/lib
        ln -sfn "$nd/include" /tmp/nccl_home/include
        for f in "$nd"/lib/libnccl.so*; do ln -sf "$f" /tmp/nccl_home/lib/; done
        [ -e /tmp/nccl_home/lib/libnccl.so ] || ln -sf "$(ls "$nd"/lib/libnccl.so.* | head -1)" /tmp/nccl_home/lib/libnccl.so
        export NCCL_HOME=/tmp/nccl_home
        echo "NCCL from the pip package: $nd" >> "$OUT/nvidia-smi.txt"
    fi
fi

# cuDNN (the -attn cudnn route): when the CUDA toolkit has no cudnn_graph.h but PyTorch's pip package
# nvidia-cudnn is installed (the GPU machines' image), CUDNN_HOME is pointed at a folder of links to it.
if [ -z "${CUDNN_HOME:-}" ] && [ ! -f "$(dirname "$(dirname "$nvcc_bin")")/include/cudnn_graph.h" ] && [ ! -f /usr/include/cudnn_graph.h ]; then
    cd_dir=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)
    if [ -n "$cd_dir" ] && [ -f "$cd_dir/include/cudnn_graph.h" ]; then
        mkdir -p /tmp/cudnn_home/lib
        ln -sfn "$cd_dir/include" /tmp/cudnn_home/include
        for f in "$cd_dir"/lib/libcudnn*.so*; do ln -sf "$f" /tmp/cudnn_home/lib/; done
        [ -e /tmp/cudnn_home/lib/libcudnn.so ] || ln -sf "$(ls "$cd_dir"/lib/libcudnn.so.* | head -1)" /tmp/cudnn_home/lib/libcudnn.so
        export CUDNN_HOME=/tmp/cudnn_home
        echo "cuDNN from the pip package: $cd_dir" >> "$OUT/nvidia-smi.txt"
    fi
fi

# 1. build
start=$SECONDS
cpu_tests=$(ls test/test_*.c | sed 's#^test/\(.*\)\.c$#test/bin/\1#')
[ "${SKIP_CPU_TESTS:-0}" = 1 ] && cpu_tests=
if make -j"$(nproc)" train_cpu train_gpu prepare_data build/bench/bench_optim test/bin/test_gpt2cu $cpu_tests > "$OUT/build.log" 2>&1 &&
   make test/bin/test_gpt2cu >> "$OUT/build.log" 2>&1; then
    warn=$(grep -ci 'warning' "$OUT/build.log" || true)
    row build ok "$((SECONDS - start)) s, $warn warning lines (build.log)"
else
    row build FAILED "see build.log: $(grep -m1 -i error "$OUT/build.log" | cut -c1-120)"
    cat "$summary"; tail -n 30 "$OUT/build.log"; exit 1
fi

# 1b. the attention routes' own GPU checks, built apart: a route's check that fails to build costs its row,
#     not the call (the cudnn one needs cuDNN, found by the Makefile or the pip package above)
attn_bins="test/bin/test_attention_flash_gpu test/bin/test_attention_cublas_gpu test/bin/test_attention_cudnn_gpu"
make -k -j"$(nproc)" $attn_bins > "$OUT/build_attn.log" 2>&1 || true

# 2. the GPU tests
start=$SECONDS
timeout "$TEST_TIMEOUT" ./test/bin/test_gpt2cu > "$OUT/test_gpt2cu.log" 2>&1
rc=$?
p=$(grep -c '^PASS ' "$OUT/test_gpt2cu.log"); f=$(grep -c '^FAIL ' "$OUT/test_gpt2cu.log")
[ $rc -ne 0 ] && [ "$f" -eq 0 ] && f=1
row test_gpt2cu "$p passed, $f failed" "exit $rc, $((SECONDS - start)) s (test_gpt2cu.log)"

# 2b. the data-parallel path at one rank: test_gpt2cu's "nccl" checks (-dist-force 1, with and without
#     -zero 1, and `mpirun -np 1 --allow-run-as-root` when Open MPI is installed, against the plain run:
#     bit-identical losses and checkpoints expected). No multi-GPU machine: this is all that runs of NCCL.
np=$(grep -c '^PASS nccl' "$OUT/test_gpt2cu.log"); nf=$(grep -c '^FAIL nccl' "$OUT/test_gpt2cu.log")
nb=$(ldd ./train_gpu 2>/dev/null | grep -q libnccl && echo "built with NCCL" || echo "built WITHOUT NCCL (no nccl.h/libnccl)")
if grep -q '^SKIP nccl mpirun' "$OUT/test_gpt2cu.log"; then nm="SKIP: no mpirun (the NCCL path ran only through -dist-force 1)"
else nm="mpirun -np 1 included"; fi
row "nccl, 1 rank" "$np passed, $nf failed" "$nb; $nm (test_gpt2cu.log)"
# 2c. -zero 1 pieces: every rank of a 2-3 rank plan on this one GPU against the whole step ("zero pieces":
#     element-wise and 8-bit kernels; "zero rows": adafactor/came row shards, ranks emulated by threads)
zp=$(grep -cE '^PASS zero (rows|pieces)' "$OUT/test_gpt2cu.log"); zf=$(grep -cE '^FAIL zero (rows|pieces)' "$OUT/test_gpt2cu.log")
row "zero pieces/rows, 2-3 ranks on 1 GPU" "$zp passed, $zf failed" "every rank's slices on one GPU vs the whole step; adafactor/came row shards reduced through a thread group (test_gpt2cu.log)"
# 2d. sophia on the GPU (kernels, label draws, the Gauss-Newton-Bartlett pass, 20 steps vs the CPU trainer)
sp=$(grep -cE '^PASS (optimizer kernel sophia|sophia |20 steps sophia)' "$OUT/test_gpt2cu.log")
sf=$(grep -cE '^FAIL (optimizer kernel sophia|sophia |20 steps sophia)' "$OUT/test_gpt2cu.log")
row "sophia" "$sp passed, $sf failed" "kernels vs sophia.c, label draws vs sample_index, GNB pass and 20 steps vs the CPU trainer (test_gpt2cu.log)"
# lomo, adalomo: the update inside backward (written without a GPU; first run here)
lp=$(grep -cE '^PASS (optimizer kernel (ada)?lomo|20 steps (ada)?lomo|adalomo checkpoint|lomo d12)' "$OUT/test_gpt2cu.log")
lf=$(grep -cE '^FAIL (optimizer kernel (ada)?lomo|20 steps (ada)?lomo|adalomo checkpoint|lomo d12)' "$OUT/test_gpt2cu.log")
row "lomo, adalomo" "$lp passed, $lf failed" "unit kernels vs lomo.c/adalomo.c, 20 steps vs the CPU trainer (two-pass clipping and -g 0), checkpoints both ways, d12 device peak vs sgd (test_gpt2cu.log)"

# 2e. the attention routes (cuda/attention_routes.cuh): each against a float64 host attention at six shapes,
#     bit-identical reruns, and ./train_gpu -attn ROUTE against the CPU trainer (20 steps, rerun, resume)
start=$SECONDS
timeout "$TEST_TIMEOUT" ./test/bin/test_gpt2cu -attn > "$OUT/test_attn.log" 2>&1
rc=$?
cu=$(ldd ./train_gpu 2>/dev/null | grep -q libcudnn && echo "built with cuDNN" || echo "built WITHOUT cuDNN")
for route in ref cublas flash cudnn; do
    ap=$(grep -c "^PASS attention $route " "$OUT/test_attn.log"); af=$(grep -c "^FAIL attention $route " "$OUT/test_attn.log")
    as=$(grep -c "^SKIP attention $route " "$OUT/test_attn.log")
    row "attention $route" "$ap passed, $af failed, $as skipped" "kernels at 6 shapes vs float64, reruns, trainer vs CPU; $cu (test_attn.log)"
done
ap=$(grep -c '^PASS ' "$OUT/test_attn.log"); af=$(grep -c '^FAIL ' "$OUT/test_attn.log")
[ $rc -ne 0 ] && [ "$af" -eq 0 ] && af=1
row "test_gpt2cu -attn" "$ap passed, $af failed" "exit $rc, $((SECONDS - start)) s (test_attn.log)"

# 2f. each route's own GPU check (against the reference kernels, reruns, and its kernels timed alone)
: > "$OUT/attn_gpu.log"
for b in $attn_bins; do
    name=$(basename "$b")
    echo "## $name" >> "$OUT/attn_gpu.log"
    if [ ! -x "$b" ]; then row "$name" "not built" "see build_attn.log"; continue; fi
    start=$SECONDS
    extra=; [ "$name" = test_attention_cublas_gpu ] && extra=-bench
    timeout 120 "./$b" $extra > "$OUT/one_attn.log" 2>&1; rc=$?
    cat "$OUT/one_attn.log" >> "$OUT/attn_gpu.log"
    tp=$(grep -c '^PASS ' "$OUT/one_attn.log"); tf=$(grep -c '^FAIL ' "$OUT/one_attn.log")
    [ $rc -ne 0 ] && [ "$tf" -eq 0 ] && tf=1
    row "$name" "$tp passed, $tf failed" "exit $rc, $((SECONDS - start)) s (attn_gpu.log)"
done
rm -f "$OUT/one_attn.log"
# 2g. the flash kernels under compute-sanitizer (racecheck, synccheck, memcheck) on two small shapes: the
#     races a sequential host emulation cannot see (cp.async groups, barriers, shared-memory reuse)
if [ -x test/bin/test_attention_flash_gpu ] && command -v compute-sanitizer >/dev/null 2>&1; then
    for tool in racecheck synccheck memcheck; do
        start=$SECONDS
        timeout 60 compute-sanitizer --tool "$tool" --error-exitcode 9 ./test/bin/test_attention_flash_gpu -small > "$OUT/sanitizer_$tool.log" 2>&1; rc=$?
        cat "$OUT/sanitizer_$tool.log" >> "$OUT/attn_gpu.log"
        errs=$(grep -m1 -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | cut -c1-80)
        row "flash under compute-sanitizer $tool" "$([ $rc -eq 0 ] && echo clean || echo "FAILED (exit $rc)")" "${errs:-no summary line}, $((SECONDS - start)) s"
    done
else
    row "flash under compute-sanitizer" skipped "no compute-sanitizer or the flash check was not built"
fi

# 3. the CPU tests (the same counting as test/run.sh)
start=$SECONDS
cp=0; cf=0
if [ "${SKIP_CPU_TESTS:-0}" = 1 ]; then
    row "CPU tests" skipped "SKIP_CPU_TESTS=1"
else
: > "$OUT/cpu_tests.log"
for t in test/bin/test_*; do
    [ -x "$t" ] || continue
    [ "$(basename "$t")" = test_gpt2cu ] && continue
    echo "## $t" >> "$OUT/cpu_tests.log"
    "$t" > "$OUT/one.log" 2>&1; trc=$?
    cat "$OUT/one.log" >> "$OUT/cpu_tests.log"
    tp=$(grep -c '^PASS ' "$OUT/one.log"); tf=$(grep -c '^FAIL ' "$OUT/one.log")
    [ $trc -ne 0 ] && [ "$tf" -eq 0 ] && tf=1
    cp=$((cp + tp)); cf=$((cf + tf))
done
for s in test/sh/*.sh; do
    [ -f "$s" ] || continue
    echo "## $s" >> "$OUT/cpu_tests.log"
    bash "$s" > "$OUT/one.log" 2>&1; trc=$?
    cat "$OUT/one.log" >> "$OUT/cpu_tests.log"
    tp=$(grep -c '^PASS ' "$OUT/one.log"); tf=$(grep -c '^FAIL ' "$OUT/one.log")
    [ $trc -ne 0 ] && [ "$tf" -eq 0 ] && tf=1
    cp=$((cp + tp)); cf=$((cf + tf))
done
rm -f "$OUT/one.log"
row "CPU tests" "$cp passed, $cf failed" "$((SECONDS - start)) s (cpu_tests.log)"
fi

# 4. the benchmark
start=$SECONDS
if [ "${SKIP_BENCH:-0}" = 1 ]; then
    row bench skipped "SKIP_BENCH=1"
elif timeout "$BENCH_TIMEOUT" bash scripts/bench_gpu.sh > "$OUT/bench.log" 2>&1; then
    best=$(grep -E '^\| (ref|cublas|flash|cudnn) \| 0 ' "$OUT/bench_gpu.md" | awk -F'|' '{printf "%s: %s tok/s; ", $2, $4}')
    row bench "ok" "$best($((SECONDS - start)) s, bench_gpu.md)"
else
    row bench FAILED "see bench.log"
fi

# 4b. the optimizer step alone (bench/bench_optim.cu): ms, bytes moved, GB/s, % of the copy bandwidth
start=$SECONDS
if [ "${SKIP_BENCH:-0}" = 1 ]; then
    row bench_optim skipped "SKIP_BENCH=1"
elif OUT="$OUT" timeout "$BENCH_TIMEOUT" bash scripts/bench_optim.sh > "$OUT/bench_optim.log" 2>&1 && [ -f "$OUT/bench_optim.md" ]; then
    n=$(grep -c '^| [a-z]' "$OUT/bench_optim.md" | head -1)
    row bench_optim ok "$((n - 1)) optimizers ($((SECONDS - start)) s, bench_optim.md)"
else
    row bench_optim FAILED "see bench_optim.log"
fi

echo >> "$summary"
grep '^FAIL' "$OUT/test_gpt2cu.log" | head -20 | sed 's/^/    /' >> "$summary"
grep '^FAIL' "$OUT/test_attn.log" 2>/dev/null | head -20 | sed 's/^/    /' >> "$summary"
grep '^FAIL' "$OUT/attn_gpu.log" 2>/dev/null | head -20 | sed 's/^/    /' >> "$summary"
echo >> "$summary"
[ -f "$OUT/bench_gpu.md" ] && cat "$OUT/bench_gpu.md" >> "$summary"
[ -f "$OUT/bench_optim.md" ] && { echo >> "$summary"; cat "$OUT/bench_optim.md" >> "$summary"; }
cat "$summary"

#!/usr/bin/env bash
# scripts/bench_optim.sh: the optimizer step alone on the GPU (bench/bench_optim.cu), on GPT-2 d12's
# parameter set, for every optimizer with CUDA kernels: ms/step, the bytes a step must move (from the
# state layout and dtypes), GB/s, and percent of the device's copy bandwidth measured in the same run.
# muon and galore_adamw cost matrix products, not bytes: their rows give ms/step only (GB/s "n/a"), and
# GaLore's projector refresh step (Gram matrices + eigendecompositions, every -update-proj-gap steps) is
# timed on a row of its own.
# GPU machines only: without a CUDA device it says so and exits 0 (nothing to measure).
#   OUT=./out/bench_optim bash scripts/bench_optim.sh [-model d12] [-iters 20] [optimizer ...]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./out/bench_optim}
mkdir -p "$OUT"
if ! nvidia-smi -L 2>/dev/null | grep -q GPU; then
    echo "bench_optim: no GPU on this machine (nvidia-smi lists none); this benchmark runs on a GPU machine only"
    exit 0
fi
make build/bench/bench_optim > "$OUT/bench_optim_build.log" 2>&1 || { echo "bench_optim: build failed (see $OUT/bench_optim_build.log)"; tail -n 20 "$OUT/bench_optim_build.log"; exit 1; }
{
    echo "## bench_optim: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1), $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "command: ./build/bench/bench_optim $*"
    echo
    ./build/bench/bench_optim "$@"
} | tee "$OUT/bench_optim.md"
exit "${PIPESTATUS[0]}"

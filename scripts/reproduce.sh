#!/usr/bin/env bash
# scripts/reproduce.sh (`make reproduce`): the article's tables beside ours in results/article/README.md,
# a verdict per row: memory (Adam's 16 B/param, state bytes/param, memory by model size, 80 GB GPUs for
# 7B: exact, from the trainer's ledger) and the two quality tables (8-bit vs 32-bit Adam; Adam vs
# Adafactor vs CAME: val loss and perplexity, 3 seeds, each optimizer at its swept lr).
#
#   scripts/reproduce.sh          the small version on the CPU: GPT-2 d4, 200 steps of 512 tokens, the CPU
#                                 trainer's default run (results/article/cpu/; finished default runs of
#                                 results/cpu/ are reused as sweep points); ~30 min on 2 cores
#   scripts/reproduce.sh --gpu    GPT-2 124M (d12, B=32, T=1024, 300 steps) with ./train on a GPU, the runs
#                                 in results/gpu/pretrain/ (shared with scripts/loss_table.sh --gpu)
#   scripts/reproduce.sh --gpu-command   prints the one device call that runs (and resumes) the GPU
#                                 version inside 9 minutes, and what to do with what comes back
#   scripts/reproduce.sh --tiny   the whole pipeline in seconds (a 2-layer model, 4 steps, one lr, 2 seeds;
#                                 make test: test/sh/reproduce.sh); writes under --out only
# Options: --plan (the runs still to do and their estimated time; runs nothing), --rebuild (the README
#   from the ledgers and logs there; no training), --budget-s S (start no run that would end after S
#   seconds), --extras (also adam8bit, paged_adamw8bit, adamw4bit and Adafactor with a swept fixed lr),
#   --out DIR (the README's folder, default results/article), --runs DIR (the loss runs' folder),
#   --plant TABLE.KEY=VALUE (replace one article number; tests), --train BIN, --no-readme (runs only).
# The core runs: adamw, adamw8bit, came (3-point sweeps around their swept defaults, then 2 more seeds at
# the best; a sweep whose best sits at an end grows by a point) and Adafactor's relative step (3 seeds).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=cpu; out=results/article; runs=""; plan=0; rebuild=0; budget=""; extras=0; plants=(); train=""; gpucmd=0; readme=1
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu) mode=cpu ;; --gpu) mode=gpu ;; --tiny) mode=tiny ;;
        --gpu-command) gpucmd=1 ;;
        --plan) plan=1 ;; --rebuild) rebuild=1 ;; --extras) extras=1 ;; --no-readme) readme=0 ;;
        --budget-s) budget=$2; shift ;;
        --out) out=$2; shift ;; --runs) runs=$2; shift ;; --train) train=$2; shift ;;
        --plant) plants+=(--plant "$2"); shift ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option '$1' (see $0 --help)" >&2; exit 2 ;;
    esac
    shift
done

opts="adamw adamw8bit adafactor came"
grids=(--grid adamw=3e-4,1e-3,3e-3 --grid adamw8bit=3e-4,1e-3,3e-3)
extra_grids=(--grid adam8bit=3e-4,1e-3,3e-3 --grid paged_adamw8bit=3e-4,1e-3,3e-3 --grid adamw4bit=3e-4,1e-3,3e-3)
seeds=3; steps=""; lt_more=()
case $mode in
    cpu)  # d4: the CPU sweep chose 1e-3 for the Adam family, 5e-5 for CAME, the relative step for Adafactor
        preset=cpu_default; runs=${runs:-results/article/cpu}; label="CPU, small version (GPT-2 d4)"
        grids+=(--grid came=1e-5,3e-5,1e-4)
        extra_grids+=(--grid adafactor=1e-3,3e-3,1e-2) ;;
    gpu)  # d12, T=1024: the same ladder points; CAME from its d4 default (5e-5) up to its README's 2e-4
        preset=gpu; runs=${runs:-results/gpu}; label="GPU, GPT-2 124M (d12)"
        grids+=(--grid came=3e-5,1e-4,3e-4)
        extra_grids+=(--grid adafactor=1e-3,3e-3,1e-2) ;;
    tiny) # one lr each (no sweep), 2 seeds, 4 steps of a 2-layer model: the pipeline, not a result
        preset=tiny; runs=${runs:-$out/runs}; label="tiny pipeline check (2-layer model, 4 steps; not a result)"
        seeds=2; steps=4; lt_more=(--no-plot)
        grids=(--grid adamw=1e-3 --grid adamw8bit=1e-3 --grid came=3e-4)
        extra_grids=() ;;
esac
if [ "$extras" = 1 ]; then opts="$opts adam8bit paged_adamw8bit adamw4bit"; grids+=("${extra_grids[@]}")
else grids+=(--grid adafactor=default); fi
lt=(bash scripts/loss_table.sh --preset "$preset" --tables pretrain --opts "$opts" "${grids[@]}" --seeds "$seeds" --out "$runs")
[ -n "$steps" ] && lt+=(--steps "$steps")
[ -n "$train" ] && lt+=(--train "$train")
lt+=("${lt_more[@]}")

# the one device call of the GPU version: the datasets carried (no network there), the runs written
# straight into $OUT, a budget that leaves the build and the copy inside a 600 s call
GPU_BUDGET=480
gpu_call="cp -r results/gpu \"\$OUT/gpu\" && make -s train_gpu && cp -f train_gpu train && OMP_NUM_THREADS=8 scripts/reproduce.sh --gpu --runs \"\$OUT/gpu\" --budget-s $GPU_BUDGET --no-readme"
if [ "$gpucmd" = 1 ]; then
    cat <<EOF
# The GPU version, one call of at most 9 minutes (repeat until --plan says nothing is left; each call
# resumes: finished runs are never redone). Device tool arguments:
#   carry:     ["data/gcide/gcide_train.bin", "data/gcide/gcide_val.bin", "data/gpt2"]   (make data here first)
#   timeout_s: 600
#   command:
$gpu_call
# Then, here: copy what came back over results/gpu and write the README (no training):
#   cp -r FILES_AT/gpu/. results/gpu/ && scripts/reproduce.sh --rebuild && git add results/gpu results/article
# Runs: 18 core runs (adamw, adamw8bit, came: 3 sweep points + 2 seeds; adafactor relative step: 3 seeds),
# each 300 steps x 32768 = 9,830,400 training tokens (~113 s at 112k tok/s on an H200 incl. start-up), so
# about 4 runs per call on an H200 (3 on an H100): 5-6 calls, about 40-50 min of device time in all.
EOF
    exit 0
fi

reuse_default_runs() {
    # finished default runs of results/cpu/ (scripts/default_runs.sh: the same trainer flags, seed 1337)
    # become sweep points when their config records match this preset
    python3 - "$runs/pretrain" <<'PY'
import json, os, shutil, sys
dest = sys.argv[1]
want = {"model": "d4", "B": 8, "T": 64, "steps": 200, "warmup": 20, "final_lr_frac": 0.1, "grad_clip": 1,
        "seed": 1337, "val_every": 50, "val_batches": 8, "precision": "bf16", "sr": 0, "recompute": 0,
        "init": "", "train": "data/gcide/gcide_train.bin", "val": "data/gcide/gcide_val.bin"}
ladder = {0.0003: "3e-4", 0.001: "1e-3", 0.003: "3e-3", 3e-05: "3e-5", 1e-05: "1e-5", 0.0001: "1e-4"}
for opt in ("adamw", "adamw8bit", "adafactor", "came", "adam8bit", "paged_adamw8bit", "adamw4bit"):
    src = os.path.join("results/cpu", opt)
    log = os.path.join(src, "log.jsonl")
    if not os.path.exists(log):
        continue
    recs = [json.loads(l) for l in open(log) if l.strip()]
    cfg = next((r for r in recs if r.get("type") == "config"), {})
    if not any(r.get("type") == "summary" for r in recs) or any(cfg.get(k) != v for k, v in want.items()):
        continue
    lr = "default" if cfg.get("relative_step") else ladder.get(round(cfg.get("lr", 0), 8))
    if lr is None:
        continue   # off the ladder (came's 5e-5): not a sweep point
    d = os.path.join(dest, opt, lr, "1337")
    if os.path.exists(os.path.join(d, "log.jsonl")):
        continue
    os.makedirs(d)
    for f in ("log.jsonl", "stdout.txt"):
        shutil.copyfile(os.path.join(src, f), os.path.join(d, f))
    with open(os.path.join(d, "run.txt"), "w") as f:
        f.write("reused: %s (scripts/default_runs.sh, git %s, %s): the same trainer flags as this preset, "
                "seed 1337\nexit: 0\n" % (src, cfg.get("git"), cfg.get("date")))
    print("reusing %s as %s" % (src, d), file=sys.stderr)
PY
}
[ "$mode" = cpu ] && [ "$rebuild" = 0 ] && reuse_default_runs

if [ "$plan" = 1 ]; then exec "${lt[@]}" --plan; fi

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet 2>/dev/null || rev="$rev (with uncommitted changes)"
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
machine="$(uname -sr), $(getconf _NPROCESSORS_ONLN) cores${cpu:+, $cpu}"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
[ -n "$gpu" ] && machine="$machine, $gpu"

# 1. the memory ledgers (seconds: -memory-only allocates nothing)
cputrain=./train_cpu
if [ "$readme" = 1 ] && [ ! -x "$cputrain" ]; then make -s train_cpu >&2 || { echo "error: could not build train_cpu" >&2; exit 2; }; fi
mem=$out/memory
if [ "$readme" = 1 ] && { [ "$rebuild" = 0 ] || [ ! -d "$mem" ]; }; then
    mkdir -p "$mem"
    for s in 1B:24:2048:16 7B:32:4096:32 13B:40:5120:40 70B:80:8192:64 175B:96:12288:96; do
        key=${s%%:*}; shape=${s#*:}
        for o in sgd sgdm adamw adamw8bit adafactor came lion sophia; do
            case $key in 7B|1B) ;; *) [ "$o" = adamw ] || continue ;; esac
            $cputrain -memory-only 1 -model "$shape" -b 1 -t 1024 -opt "$o" > "$mem/${key}__$o.txt" ||
                { echo "error: $cputrain -memory-only 1 -model $shape -opt $o failed" >&2; exit 2; }
        done
    done
    echo "command: $cputrain -memory-only 1 -model SHAPE -b 1 -t 1024 -opt OPT (one file each: SIZE__OPT.txt)" > "$mem/meta.txt"
fi

# 2. the runs (resumable; finished runs are never redone)
if [ "$rebuild" = 0 ]; then
    [ -n "$budget" ] && lt+=(--budget-s "$budget")
    "${lt[@]}" || { rc=$?; [ $rc = 130 ] && exit 130; echo "error: scripts/loss_table.sh failed (exit $rc)" >&2; exit $rc; }
fi
[ "$readme" = 1 ] || exit 0

# 3. the README
loss=(--loss "$label=$preset=$runs/pretrain")
# the GPU section also appears in the CPU README once results/gpu has runs
if [ "$mode" = cpu ] && [ -d results/gpu/pretrain ]; then loss=(--loss "GPU, GPT-2 124M (d12)=gpu=results/gpu/pretrain" "${loss[@]}"); fi
gpu_note=""; [ "$mode" = cpu ] && gpu_note=1
cmdline="scripts/reproduce.sh --$mode${plants[*]:+ ${plants[*]}}"
[ "$mode" = cpu ] && cmdline="make reproduce (scripts/reproduce.sh)"
python3 scripts/reproduce.py --memory "$mem" "${loss[@]}" --out "$out/README.md" --seeds "$seeds" ${steps:+--steps "$steps"} \
    "${plants[@]}" "${grids[@]}" --command "$cmdline" --machine "$machine" --git "$rev" --date "$(date -u +%Y-%m-%dT%H:%MZ)" \
    --extras "$extras" ${gpu_note:+--gpu-command "$gpu_call"}

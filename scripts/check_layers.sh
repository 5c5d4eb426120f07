#!/usr/bin/env bash
# scripts/check_layers.sh [ROOT]: checks that every folder includes only folders below it.
# Layers, bottom up (README "Layout"): common 0; cpu, cuda 1; data, optim 2; train 3. A file in folder F
# may include its own folder or a folder of a lower layer. Prints each violation as
# "FILE:LINE includes PATH (DIR is not below F)" and exits 1 if there is any.
set -u
root=${1:-.}
files=$(cd "$root" && ls common/* cpu/* cuda/* data/* optim/* trainer/* 2>/dev/null | grep -E '\.(c|h|cuh)$')
[ -n "$files" ] || { echo "check_layers: no source folders under $root"; exit 2; }
cd "$root" && awk '
    BEGIN { r["common"] = 0; r["cpu"] = 1; r["cuda"] = 1; r["data"] = 2; r["optim"] = 2; r["trainer"] = 3 }
    /^[ \t]*#[ \t]*include[ \t]*"/ {
        split(FILENAME, f, "/"); dir = f[1]
        t = $0; sub(/^[^"]*"/, "", t); sub(/".*$/, "", t); sub(/^\.\.\//, "", t)
        n = split(t, parts, "/"); if (n < 2) next          # same-folder include ("util.h")
        td = parts[1]; if (!(td in r) || td == dir) next
        if (r[td] >= r[dir]) { printf "%s:%d includes %s (%s is not below %s)\n", FILENAME, FNR, t, td, dir; bad = 1 }
    }
    END { exit bad }' $files

#!/usr/bin/env bash
# scripts/check_layers.sh [ROOT]: checks that every folder includes only folders below it.
# Layers, bottom up (README "Layout"): common 0; cpu, cuda 1; data, optim 2; train 3. A file in folder F
# may include its own folder or a folder of a lower layer. Prints each violation as
# "FILE:LINE includes DIR/..." and exits 1 if there is any.
set -u
root=${1:-.}
rank() { case $1 in common) echo 0 ;; cpu|cuda) echo 1 ;; data|optim) echo 2 ;; train) echo 3 ;; *) echo "" ;; esac; }
bad=0
for dir in common cpu cuda data optim train; do
    r=$(rank "$dir")
    [ -d "$root/$dir" ] || continue
    while IFS=: read -r file line inc; do
        target=$(echo "$inc" | sed -E 's/.*#include *"([^"]+)".*/\1/')
        # a relative include ("../optim/optim.h") names its folder too
        target=${target#../}
        tdir=${target%%/*}
        [ "$tdir" = "$target" ] && continue # same-folder include ("util.h")
        tr=$(rank "$tdir")
        [ -n "$tr" ] || continue            # not a layered folder (e.g. a system path)
        if [ "$tdir" != "$dir" ] && [ "$tr" -ge "$r" ]; then
            echo "${file#$root/}:$line includes $target ($tdir is not below $dir)"
            bad=1
        fi
    done < <(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$root/$dir"/*.c "$root/$dir"/*.h "$root/$dir"/*.cuh 2>/dev/null)
done
exit $bad

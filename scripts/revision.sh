#!/usr/bin/env bash
# scripts/revision.sh [PATH...]: the git revision that results record, e.g. "617382f0a1b2", with
# " (with uncommitted changes)" only when tracked files really differ from it. Untracked files do not
# count, nor do the PATHs given (the output directory a script is about to rewrite: its own old results
# would otherwise make every regeneration look dirty). "unknown" outside a git checkout.
# Scripts call it once, before they write anything: `rev=$(bash scripts/revision.sh "$out")`.
caller=$PWD
cd "$(dirname "$0")/.." || exit 2
rev=$(git rev-parse --short=12 HEAD 2>/dev/null) || { echo unknown; exit 0; }
excl=()
for p in "$@"; do # only paths inside the checkout (a path outside it would make git status fail)
    case $p in /*) ;; *) p=$caller/$p ;; esac
    rel=$(realpath -m --relative-to=. "$p")
    case $rel in ..|../*) ;; *) excl+=(":(exclude)$rel") ;; esac
done
if ! st=$(git status --porcelain --untracked-files=no -- . "${excl[@]}" 2>&1); then
    echo "$rev (tree state unknown: git status failed)"
elif [ -n "$st" ]; then
    echo "$rev (with uncommitted changes)"
else
    echo "$rev"
fi

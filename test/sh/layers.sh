#!/usr/bin/env bash
# test/sh/layers.sh: the folders are layers (README "Layout"): no folder includes a folder above it.
# The checker is run on the tree (must pass) and on a copy with an upward include planted (must fail),
# so the check itself is known to work.
cd "$(dirname "$0")/../.."
. test/lib.sh
out=$(bash scripts/check_layers.sh . 2>&1)
if [ $? -eq 0 ]; then pass "layers: no folder includes a folder above it"; else fail "layers: no upward include" "$out"; fi
mkdir -p "$TMP/tree"
cp -r common cpu cuda data optim trainer "$TMP/tree/"
echo '#include "trainer/model.h"' >> "$TMP/tree/common/ledger.h"
out=$(bash scripts/check_layers.sh "$TMP/tree" 2>&1)
if [ $? -ne 0 ] && echo "$out" | grep -q "common/ledger.h:.*trainer/model.h"; then pass "layers: an upward include is caught ($out)"
else fail "layers: an upward include is caught" "checker said: $out"; fi

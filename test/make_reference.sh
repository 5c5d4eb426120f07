#!/usr/bin/env bash
# test/make_reference.sh (make reference): regenerates every committed reference vector.
#  - PyTorch references (model, optimizers) with Debian's python3-torch, which installs for
#    /usr/bin/python3 (not a pyenv python that may come first on PATH);
#  - GPT-2 token ids with js-tiktoken (npm), run by node.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON_TORCH:-/usr/bin/python3}
if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
    echo "installing python3-torch (Debian) for $PY ..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy
fi
for s in test/reference.py test/ref_optim_*.py; do
    echo "== $s"
    "$PY" "$s"
done
echo "== test/gen_tokenizer_ref.js"
node test/gen_tokenizer_ref.js
git status --short test/vectors || true

#!/usr/bin/env bash
# test/sh/newcomer.sh: what a newcomer trips over (issue 26): -export writes HuggingFace's config.json
# beside the safetensors (GPT2Config keys, the checkpoint's shape); `make train` does not fetch or
# tokenize again when the shards are there; the trainer says how many tokens it read from -i and -j.
cd "$(dirname "$0")/../.."
. test/lib.sh
M="-model 2:32:2 -b 2 -t 16 -v 0 -gen 0"
$TRAIN $M -x 1 -o "$TMP/r" > "$TMP/r.out" 2>&1
mkdir -p "$TMP/hf"
out=$($TRAIN -o "$TMP/r" -export "$TMP/hf/model.safetensors" 2>&1); rc=$?
if [ $rc -eq 0 ] && [ -f "$TMP/hf/config.json" ] && python3 - "$TMP/hf/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
want = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257, "n_positions": 1024, "n_ctx": 1024,
        "n_embd": 32, "n_layer": 2, "n_head": 2, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
        "tie_word_embeddings": True, "bos_token_id": 50256, "eos_token_id": 50256}
bad = ["%s=%r (want %r)" % (k, c.get(k), v) for k, v in want.items() if c.get(k) != v]
print("\n".join(bad)); sys.exit(1 if bad else 0)
PY
then pass "export: config.json beside the safetensors holds GPT2Config's keys for the checkpoint's shape"
else fail "export: config.json" "exit $rc: $(tail -n 2 <<<"$out" | tr '\n' ' ')"; fi
[ ! -e "$TMP/hf/config.json.tmp" ] && pass "export: no config.json.tmp left" || fail "export: config.json.tmp left" "$TMP/hf"

# the token counts of -i and -j, as read
n=$(grep -E "^data: train data/gcide/gcide_train.bin, [0-9]+ tokens; val data/gcide/gcide_val.bin, [0-9]+ tokens" "$TMP/r.out" | sed -E 's/.*train.bin, ([0-9]+) tokens.*/\1/')
want=$(( ($(stat -c %s data/gcide/gcide_train.bin) - 1024) / 2 ))
[ -n "$n" ] && [ "$n" = "$want" ] && pass "data: -i's token count printed ($n = the shard's (bytes - 1024 header) / 2)" \
    || fail "data: -i's token count" "printed '${n:-nothing}', the shard holds $want"

# make: the shards are there, so neither data/fetch.sh nor prepare_data -text runs (even when the
# library, hence prepare_data, is newer than the shards)
if [ -f data/gcide/gcide_train.bin ] && [ -f data/gcide/gcide_val.bin ]; then
    out=$(make -n -W trainer/cli.c train GPU=0 2>&1)
    grep -q "fetch.sh\|prepare_data -text" <<<"$out" && fail "make: no data preparation when the shards exist" "$(grep -m1 "fetch.sh\|prepare_data -text" <<<"$out")" \
        || pass "make: train with data/gcide/*.bin present plans no fetch and no tokenizing"
fi

# the defaults the docs and the optimizer headers state are the code's (scripts/doc_defaults.py against
# -opt list), and the checker catches a planted wrong value
out=$(python3 scripts/doc_defaults.py --check --train "$TRAIN" README.md docs/*.md optim/*.c 2>&1) \
    && pass "docs: every stated default lr, betas and eps equals -opt list's" \
    || fail "docs: stated defaults vs -opt list" "$(head -n 3 <<<"$out" | tr '\n' ' ')"
sed 's/ours is \*\*5e-5\*\*/ours is **2e-4**/' docs/optimizers.md > "$TMP/planted.md"
sed 's|^// Defaults: lr 1e-3 (lion.s; bitsandbytes|// Defaults: lr 1e-4 (lion'"'"'s; bitsandbytes|' optim/lion8bit.c > "$TMP/lion8bit.c"
out=$(python3 scripts/doc_defaults.py --check --train "$TRAIN" "$TMP/planted.md" "$TMP/lion8bit.c" 2>&1); rc=$?
[ $rc = 1 ] && grep -q "came's default lr is stated as 2e-4; the code's is 5e-05" <<<"$out" && grep -q "lion8bit's default lr is stated as 1e-4" <<<"$out" \
    && pass "docs: doc_defaults.py catches a planted wrong lr in docs/optimizers.md and in an optimizer header (exit 1)" \
    || fail "docs: doc_defaults.py on planted values" "exit $rc: $(tr '\n' ' ' <<<"$out")"
# the GPU table's step count: the README and docs/results.md say the same
r=$(grep -o "\`-x [0-9]*\` steps" README.md | head -n 1 | grep -o "[0-9]*"); d=$(grep -o "T=1024, [0-9]* steps" docs/results.md | head -n 1 | grep -o "[0-9]* steps" | grep -o "[0-9]*")
[ -n "$r" ] && [ "$r" = "$d" ] && pass "docs: the GPU table's steps agree ($r)" || fail "docs: the GPU table's steps" "README $r, docs/results.md $d"

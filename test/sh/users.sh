#!/usr/bin/env bash
# test/sh/users.sh: what a user of the runs relies on: scripts/compare.sh (its table matches the logs'
# summary records, its CSV parses, its PNG is written, its errors), -export's safetensors read back by
# test/export_check.py (an independent reader; with torch, an HF-style forward against -eval), the
# HuggingFace optimizer aliases, and scripts/plot.sh failing with a message when its inputs are missing.
cd "$(dirname "$0")/../.."
. test/lib.sh
SMALL="-model 2:32:2 -b 2 -t 32 -gen 0"
# the python with torch if there is one (the forward check), else any python3 (that check is skipped)
PY=python3
/usr/bin/python3 -c 'import torch' >/dev/null 2>&1 && PY=/usr/bin/python3

# two short runs through aliases: -opt AdamW (case) and HF's adamw_bnb_8bit
$TRAIN $SMALL -x 6 -v 3 -m 1 -opt AdamW -o "$TMP/r1" > "$TMP/r1.out" 2>&1; rc1=$?
$TRAIN $SMALL -x 6 -v 3 -m 1 -opt adamw_bnb_8bit -o "$TMP/r2" > "$TMP/r2.out" 2>&1; rc2=$?
o1=$(sed -n 's/.*"type":"config".*"opt":"\([a-z0-9_]*\)".*/\1/p' "$TMP/r1/log.jsonl" 2>/dev/null)
o2=$(sed -n 's/.*"type":"config".*"opt":"\([a-z0-9_]*\)".*/\1/p' "$TMP/r2/log.jsonl" 2>/dev/null)
[ $rc1 = 0 ] && [ "$o1" = adamw ] && pass "alias: -opt AdamW runs adamw" || fail "alias: -opt AdamW" "exit $rc1, config opt '$o1': $(tail -n 2 "$TMP/r1.out")"
[ $rc2 = 0 ] && [ "$o2" = adamw8bit ] && pass "alias: -opt adamw_bnb_8bit runs adamw8bit" || fail "alias: -opt adamw_bnb_8bit" "exit $rc2, config opt '$o2': $(tail -n 2 "$TMP/r2.out")"
expect_exit "alias: -opt list shows the HF names" 0 "adamw .*adamw_torch, adamw_torch_fused, adamw_hf" -- $TRAIN -opt list
expect_exit "alias: -opt list shows adamw_bnb_8bit" 0 "adamw8bit .*adamw_bnb_8bit" -- $TRAIN -opt list
# an alias whose optimizer is not registered (yet) is an unknown name, not a crash
if ! $TRAIN -opt list | awk '{print $1}' | grep -qx lion8bit; then
    expect_exit "alias: lion_8bit without lion8bit is unknown" 2 "unknown optimizer 'lion_8bit'" -- $TRAIN $SMALL -x 1 -opt lion_8bit
else
    expect_exit "alias: lion_8bit runs lion8bit" 0 "optimizer lion8bit" -- $TRAIN $SMALL -x 1 -v 0 -opt LION_8BIT
fi

# compare.sh: the markdown rows equal the summaries (to the table's 4 decimals), CSV parses, PNG written
have_gnuplot=1; command -v gnuplot >/dev/null || have_gnuplot=0
if [ $have_gnuplot = 1 ]; then bash scripts/compare.sh -o "$TMP/cmp.png" "$TMP/r1" "$TMP/r2" > "$TMP/cmp.md" 2> "$TMP/cmp.err"; rc=$?
else bash scripts/compare.sh --no-plot "$TMP/r1" "$TMP/r2" > "$TMP/cmp.md" 2> "$TMP/cmp.err"; rc=$?; fi
bash scripts/compare.sh --csv --no-plot "$TMP/r1" "$TMP/r2" > "$TMP/cmp.csv" 2>> "$TMP/cmp.err"; rc2=$?
if [ $rc = 0 ] && [ $rc2 = 0 ]; then
    python3 - "$TMP" <<'PY' && pass "compare.sh: table and CSV rows equal the logs' summaries" || fail "compare.sh: values" "see above"
import csv, json, sys
t = sys.argv[1]
def summary(run):
    return [json.loads(l) for l in open("%s/%s/log.jsonl" % (t, run)) if '"summary"' in l][-1]
md = [l.strip().strip("|").split("|") for l in open(t + "/cmp.md") if l.startswith("| r")]
md = {c[0].strip(): [x.strip() for x in c] for c in md}
rows = {r["run"]: r for r in csv.DictReader(open(t + "/cmp.csv"))}
ok = True
for run, opt in (("r1", "adamw"), ("r2", "adamw8bit")):
    s, m, c = summary(run), md.get(run), rows.get(run)
    if m is None or c is None or len(m) != 10:
        print("FAIL compare.sh: row %s missing or malformed: %r %r" % (run, m, c)); ok = False; continue
    want = [opt, None, s["train_loss"], s["val_loss"], s["state_bytes"], s["state_bytes_per_param"], s["peak_mib"], s["tok_per_s"], s["steps"]]
    # 4-decimal losses and B/param, 2-decimal MiB, 1-decimal tok/s: half a unit of the last digit
    tol = [None, None, 5e-5, 5e-5, 0, 5e-5, 5e-3, 0.05, 0]
    for k, (w, e) in enumerate(zip(want, tol)):
        for got in (m[k + 1], list(c.values())[k + 1]):
            if w is None: continue
            bad = got != w if e is None else abs(float(got) - w) > e + 1e-12
            if bad:
                print("FAIL compare.sh: %s column %d: %r, summary %r" % (run, k + 1, got, w)); ok = False
    if m[2] != "0.001":  # lr from the config record (adamw's and adamw8bit's default)
        print("FAIL compare.sh: %s lr %r" % (run, m[2])); ok = False
sys.exit(0 if ok else 1)
PY
    if [ $have_gnuplot = 0 ]; then skip_test "compare.sh PNG" "gnuplot missing"
    else head -c 8 "$TMP/cmp.png" 2>/dev/null | od -An -c | grep -q 'P   N   G' && pass "compare.sh: PNG written" || fail "compare.sh: PNG" "$TMP/cmp.png is not a PNG"; fi
else
    fail "compare.sh: two runs" "exit $rc/$rc2: $(tail -n 2 "$TMP/cmp.err")"
fi
# a log from before the config record: '?' where only the config knows
mkdir -p "$TMP/old"; grep -v '"type":"config"' "$TMP/r1/log.jsonl" > "$TMP/old/log.jsonl"
out=$(bash scripts/compare.sh --no-plot "$TMP/old" 2>&1)
echo "$out" | grep -Eq '^\| old \| adamw \| \? \|' && pass "compare.sh: a log without config gives ?" || fail "compare.sh: old log" "$out"
expect_exit "compare.sh: missing directory is exit 2" 2 "nope is not a directory" -- bash scripts/compare.sh --no-plot "$TMP/nope"
mkdir -p "$TMP/nosteps"; head -n 1 "$TMP/r1/log.jsonl" > "$TMP/nosteps/log.jsonl"
expect_exit "compare.sh: a log without steps is exit 2" 2 "no step records" -- bash scripts/compare.sh --no-plot "$TMP/nosteps"

# default_run_table.py: a CPU and a GPU folder of runs side by side, from their log.jsonl. The "GPU"
# adamw run is r1's with its summary record's val_loss raised by 0.0123 (so the difference column must
# say +0.0123); adamw8bit has no GPU run (its GPU cell must say "CPU only"); every CPU value equals r1's
# and r2's summaries.
summary_val() { python3 -c 'import json, sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"summary\"" in l][-1]["val_loss"])' "$1"; }
mkdir -p "$TMP/drt/cpu/adamw" "$TMP/drt/cpu/adamw8bit" "$TMP/drt/gpu/adamw"
cp "$TMP/r1/log.jsonl" "$TMP/drt/cpu/adamw/"
cp "$TMP/r2/log.jsonl" "$TMP/drt/cpu/adamw8bit/"
# sgd: the same run on both sides except the GPU's config says another lr (a default changed between them)
mkdir -p "$TMP/drt/cpu/sgd" "$TMP/drt/gpu/sgd"
cp "$TMP/r1/log.jsonl" "$TMP/drt/cpu/sgd/"
sed '1s/"lr":[^,]*/"lr":0.002/' "$TMP/r1/log.jsonl" > "$TMP/drt/gpu/sgd/log.jsonl"
v1=$(summary_val "$TMP/r1/log.jsonl")
v2=$(summary_val "$TMP/r2/log.jsonl")
vg=$(python3 -c "print('%.8f' % ($v1 + 0.0123))")
sed "/\"type\":\"summary\"/s/\"val_loss\":[0-9.]*/\"val_loss\":$vg/" "$TMP/r1/log.jsonl" > "$TMP/drt/gpu/adamw/log.jsonl"
python3 scripts/default_run_table.py "$TMP/drt/cpu" "$TMP/drt/gpu" > "$TMP/drt.md" 2> "$TMP/drt.err"; rc=$?
row1=$(grep '^| adamw |' "$TMP/drt.md"); row2=$(grep '^| adamw8bit |' "$TMP/drt.md"); row3=$(grep '^| sgd |' "$TMP/drt.md")
want1="| adamw | 0.001 | $(printf %.4f "$v1") | $(printf %.4f "$vg") | +0.0123 |"
want2="| adamw8bit | 0.001 | $(printf %.4f "$v2") | CPU only |  |"
[ $rc = 0 ] && [ "${row1#"$want1"}" != "$row1" ] && [ "${row2#"$want2"}" != "$row2" ] \
    && pass "default_run_table.py: CPU and GPU val losses, their difference, CPU-only rows" \
    || fail "default_run_table.py: rows" "exit $rc; got '$row1' / '$row2', want '$want1...' / '$want2...'"
want3="| sgd | 0.001 (GPU: 0.002) | $(printf %.4f "$v1") | $(printf %.4f "$v1") | other lr |"
[ "${row3#"$want3"}" != "$row3" ] && pass "default_run_table.py: runs at different lrs show no difference" \
    || fail "default_run_table.py: different lrs" "got '$row3', want '$want3...'"
expect_exit "default_run_table.py: a missing folder is an error that names it" 1 "nope is not a folder of runs" -- \
    python3 scripts/default_run_table.py "$TMP/drt/cpu" "$TMP/nope"

# default_runs.sh: finished runs are kept (not rerun), and meta.txt/table.md come from their own records:
# the lr from each config record, the dates from the runs, the table's val losses from the summaries
mkdir -p "$TMP/dr/adamw" "$TMP/dr/adamw8bit"
cp "$TMP/r1/log.jsonl" "$TMP/dr/adamw/"; cp "$TMP/r1.out" "$TMP/dr/adamw/stdout.txt"
cp "$TMP/r2/log.jsonl" "$TMP/dr/adamw8bit/"; cp "$TMP/r2.out" "$TMP/dr/adamw8bit/stdout.txt"
d1=$(head -n 1 "$TMP/r1/log.jsonl" | sed -nE 's/.*"date":"([^"]+)".*/\1/p')
bash scripts/default_runs.sh --out "$TMP/dr" --no-plot adamw adamw8bit > "$TMP/dr.out" 2>&1; rc=$?
if [ $rc = 0 ] && grep -q "adamw: done before, kept" "$TMP/dr.out" && grep -qx "  adamw 0.001" "$TMP/dr/meta.txt" \
    && grep -qx "  adamw8bit 0.001" "$TMP/dr/meta.txt" && grep -q "^date: runs started $d1" "$TMP/dr/meta.txt" \
    && grep -Eq "^\| adamw \| 0.001 \| [0-9.]+ \| $(printf %.4f "$v1") \|" "$TMP/dr/table.md" \
    && grep -Eq "^\| adamw8bit \| 0.001 \| [0-9.]+ \| $(printf %.4f "$v2") \|" "$TMP/dr/table.md"; then
    pass "default_runs.sh: kept runs, meta.txt from their records, table.md rows from their summaries"
else
    fail "default_runs.sh" "exit $rc: $(tail -n 2 "$TMP/dr.out" | tr '\n' ' ') / $(grep -E 'adamw|date' "$TMP/dr/meta.txt" 2>/dev/null | tr '\n' ' ')"
fi

# export: the checkpoint of r1 as safetensors, read back; the forward loss against -eval's (fp32)
$TRAIN $SMALL -o "$TMP/r1" -export "$TMP/m.safetensors" > "$TMP/exp.out" 2>&1; rc=$?
[ $rc = 0 ] && [ -s "$TMP/m.safetensors" ] && [ ! -e "$TMP/m.safetensors.tmp" ] && pass "export: exit 0, file written, no .tmp left" \
    || fail "export: -export" "exit $rc: $(tail -n 2 "$TMP/exp.out")"
loss=$($TRAIN $SMALL -m 1 -precision fp32 -init "$TMP/r1/checkpoint.bin" -eval data/gcide/gcide_val.bin 2>&1 | sed -n 's/^eval: loss \([0-9.]*\).*/\1/p')
$PY test/export_check.py "$TMP/m.safetensors" "$TMP/r1/checkpoint.bin" --tokens data/gcide/gcide_val.bin --B 2 --T 32 --loss "${loss:-nan}"
mkdir -p "$TMP/empty"
expect_exit "export: -o without a checkpoint is exit 2" 2 "holds no checkpoint" -- $TRAIN $SMALL -o "$TMP/empty" -export "$TMP/e.safetensors"
expect_exit "export: an unwritable path is exit 5" 5 "cannot write" -- $TRAIN $SMALL -o "$TMP/r1" -export "$TMP/no/such/dir/m.safetensors"

# plot.sh: missing inputs are a message and exit 2, never silence
mkdir -p "$TMP/res"
expect_exit "plot.sh: without meta.txt says so" 2 "meta.txt is missing.*loss_table.sh" -- bash scripts/plot.sh loss "$TMP/res"
expect_exit "plot.sh: without a directory says so" 2 "is not a directory" -- bash scripts/plot.sh loss "$TMP/nodir"
expect_exit "plot.sh: memory without its .dat says so" 2 "memory_7b.dat is missing.*memory_table.sh" -- bash scripts/plot.sh memory "$TMP/res"

# the documentation's links to lines of code ("Code:" in docs/optimizers.md) land on the definition they
# name (scripts/doc_links.py), and the checker catches a link that does not
nl=$(grep -o '#L[0-9][0-9]*)' README.md docs/*.md | wc -l)
out=$(python3 scripts/doc_links.py --check README.md docs/*.md 2>&1) \
    && pass "docs: all $nl links to lines of code land on the definitions they name" \
    || fail "docs: links to lines of code (fix: python3 scripts/doc_links.py --fix README.md docs/*.md)" "$(echo "$out" | head -n 3 | tr '\n' ' ')"
mkdir -p "$TMP/docs"
printf 'See [`sophia_step` (optim/sophia.c)](../optim/sophia.c#L1) and [`no_such_function`](../optim/sophia.c#L40).\n' > "$TMP/docs/x.md"
cp -r optim "$TMP/optim"
out=$(python3 scripts/doc_links.py --check "$TMP/docs/x.md" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "sophia_step is defined at" && echo "$out" | grep -q "no definition of no_such_function" \
    && pass "docs: doc_links.py reports a link off its definition and a name it cannot find (exit 1)" \
    || fail "docs: doc_links.py on planted bad links" "exit $rc: $(echo "$out" | tr '\n' ' ')"

#!/usr/bin/env bash
# scripts/gpu_profile.sh: where one training step of the CUDA trainer spends its GPU time, kernel by
# kernel, for a GPU machine (prepared for the speed work; the first run on an H200 measured 9.9% MFU at
# d12 without saying which kernel is slow). Nsight Compute (ncu) times every kernel launch of one step
# (-x 1: forward, backward, norm, optimizer) with one metric, gpu__time_duration.sum, each kernel
# replayed alone with the card's clocks left as they are (--clock-control none); the launches are then
# grouped by kernel name: count, total ms, share of the step, mean us per launch, largest first.
#   OUT=dir bash scripts/gpu_profile.sh [-model d12] [-b 8] [-t 1024] [-opt adamw]
# Writes $OUT/profile.md (the table) and $OUT/ncu.csv (every launch). A kernel replayed alone runs
# without its neighbours' cache state, so the sum is close to, not equal to, the step's event time.
# d12, B=8, T=1024: about 400 launches; ncu needs roughly 0.1-0.3 s per launch for one metric.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-./out/gpu_profile}
mkdir -p "$OUT"
model=d12; B=8; T=1024; opt=adamw
while [ $# -gt 0 ]; do
    case "$1" in
        -model) model=$2; shift ;; -b) B=$2; shift ;; -t) T=$2; shift ;; -opt) opt=$2; shift ;;
        *) echo "error: unknown option '$1' (usage: $0 [-model S] [-b B] [-t T] [-opt NAME])" >&2; exit 2 ;;
    esac
    shift
done
command -v ncu >/dev/null || { echo "error: ncu (Nsight Compute) is not on the PATH; this script runs on a GPU machine" >&2; exit 2; }
[ -x ./train_gpu ] || make train_gpu > "$OUT/build.log" 2>&1 || { echo "error: make train_gpu failed (see $OUT/build.log)" >&2; exit 1; }
data=data/gcide/gcide_train.bin
if [ ! -f "$data" ]; then
    data="$OUT/synthetic_train.bin"
    python3 scripts/synthetic_shard.py "$data" 1000000
fi
val=data/gcide/gcide_val.bin; [ -f "$val" ] || val=$data
cmd=(./train_gpu -model "$model" -b "$B" -t "$T" -x 1 -opt "$opt" -v 0 -m 1 -gen 0 -i "$data" -j "$val")
echo "profiling: ${cmd[*]}" >&2
ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file "$OUT/ncu.log" "${cmd[@]}" > "$OUT/ncu.csv" 2> "$OUT/train.log"
rc=$?
[ $rc -eq 0 ] || { echo "error: ncu exited $rc (see $OUT/ncu.log and $OUT/train.log)" >&2; tail -n 5 "$OUT/ncu.log" >&2; exit 1; }
python3 - "$OUT/ncu.csv" "$OUT/profile.md" "${cmd[*]}" "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" <<'PY'
import csv, sys, collections, re
src, dst, cmd, card = sys.argv[1:5]
rows = []
with open(src, newline="") as f:
    lines = [l for l in f if l.startswith('"')]  # ncu prints its own lines before the CSV
for r in csv.DictReader(lines):
    if r.get("Metric Name") != "gpu__time_duration.sum":
        continue
    v = float(r["Metric Value"].replace(",", ""))
    unit = r.get("Metric Unit", "nsecond")
    ns = v * {"nsecond": 1, "usecond": 1e3, "msecond": 1e6, "second": 1e9}.get(unit, 1)
    name = re.sub(r"\(.*", "", r["Kernel Name"]).strip()  # template arguments and parameters off
    rows.append((name, ns))
if not rows:
    sys.exit("gpu_profile: no kernel timings in " + src)
total = sum(ns for _, ns in rows)
by = collections.defaultdict(lambda: [0, 0.0])
for name, ns in rows:
    by[name][0] += 1
    by[name][1] += ns
with open(dst, "w") as f:
    f.write("### One training step, kernel by kernel (%s)\n\n`ncu --clock-control none --metrics gpu__time_duration.sum %s`: "
            "%d launches, %.2f ms in all\n\n" % (card, cmd, len(rows), total / 1e6))
    f.write("| kernel | launches | total ms | share | mean us |\n|---|---|---|---|---|\n")
    for name, (n, ns) in sorted(by.items(), key=lambda kv: -kv[1][1]):
        f.write("| %s | %d | %.3f | %.1f%% | %.1f |\n" % (name, n, ns / 1e6, 100 * ns / total, ns / n / 1e3))
print(open(dst).read())
PY

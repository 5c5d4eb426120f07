#!/usr/bin/env python3
"""scripts/results.py: the tables behind scripts/loss_table.sh and scripts/memory_table.sh.
Standard library only.

  python3 scripts/results.py loss DIR     reads DIR/OPT/log.jsonl (+ DIR/meta.txt), prints the markdown
                                          tables, writes DIR/plot/*.dat for scripts/plot.sh
  python3 scripts/results.py ledger FILE  parses one `-memory-only` printout into JSON (one line)
  python3 scripts/results.py memory DIR   reads DIR/ledger/*.txt (written by memory_table.sh), prints
                                          the memory tables, writes DIR/plot/*.dat
"""
import json
import math
import os
import re
import sys

# Rows of the article's two comparison tables, in its order; optimizers missing from a run are skipped.
EIGHTBIT_ROWS = ["adam", "adam8bit", "adamw", "adamw8bit", "paged_adamw8bit"]
FACTORED_ROWS = ["adamw", "adafactor", "came", "adalomo"]


# ---------------------------------------------------------------- loss tables
def read_log(path):
    steps, vals, summary = [], [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a half-written last line of an interrupted run
            t = r.get("type")
            if t == "step":
                steps.append((r["step"], r["loss"]))
            elif t == "val":
                vals.append((r["step"], r["val_loss"]))
            elif t == "summary":
                summary = r
    return steps, vals, summary


def read_meta_lrs(d):
    lrs = {}
    p = os.path.join(d, "meta.txt")
    if os.path.exists(p):
        inlr = False
        for line in open(p):
            if line.startswith("learning rates"):
                inlr = True
                continue
            if inlr and line.startswith("  "):
                parts = line.split()
                if len(parts) == 2:
                    lrs[parts[0]] = parts[1]
    return lrs


def order_of(d):
    """Optimizers in the order the run listed them (meta.txt), then any other folder."""
    order = list(read_meta_lrs(d).keys())
    for name in sorted(os.listdir(d)):
        if os.path.isfile(os.path.join(d, name, "log.jsonl")) and name not in order:
            order.append(name)
    return [o for o in order if os.path.isfile(os.path.join(d, o, "log.jsonl"))]


def fmt(x, spec):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def signed(x, spec):
    return "n/a" if x is None else ("+" if x >= 0 else "") + format(x, spec)


def loss_tables(d):
    lrs = read_meta_lrs(d)
    rows = {}
    os.makedirs(os.path.join(d, "plot"), exist_ok=True)
    for o in order_of(d):
        steps, vals, s = read_log(os.path.join(d, o, "log.jsonl"))
        row = {
            "lr": lrs.get(o, "?"),
            "steps": len(steps),
            "train": s["train_loss"] if s else (steps[-1][1] if steps else None),
            "val": s["val_loss"] if s else (vals[-1][1] if vals else None),
            "bpp": s["state_bytes_per_param"] if s else None,
            "state_mib": s["state_bytes"] / 1048576.0 if s else None,
            "peak": s["peak_mib"] if s else None,
            "tok": s["tok_per_s"] if s else None,
            "done": s is not None,
        }
        rows[o] = row
        # curves for gnuplot: step, loss, EMA(0.9) of the loss (the raw per-batch loss is noisy)
        with open(os.path.join(d, "plot", o + ".dat"), "w") as f:
            ema = None
            for st, l in steps:
                if math.isfinite(l):
                    ema = l if ema is None else 0.9 * ema + 0.1 * l
                f.write("%d %.6f %.6f\n" % (st, l, ema if ema is not None else float("nan")))
        with open(os.path.join(d, "plot", o + ".val.dat"), "w") as f:
            for st, l in vals:
                f.write("%d %.6f\n" % (st, l))
    with open(os.path.join(d, "plot", "memory.dat"), "w") as f:
        f.write("opt peak_mib state_mib\n")
        for o, r in rows.items():
            if r["peak"] is not None:
                f.write("%s %.3f %.3f\n" % (o, r["peak"], r["state_mib"]))

    base = rows.get("adamw")
    meta = open(os.path.join(d, "meta.txt")).read().strip() if os.path.exists(os.path.join(d, "meta.txt")) else ""
    out = []
    out.append("# Loss table: %s\n" % os.path.basename(os.path.normpath(d)))
    if meta:
        out.append("```\n%s\n```\n" % meta)
    out.append("train loss: the trainer's summary (mean of the last 10 steps); val loss: at the last step; "
               "state: optimizer state from the ledger; peak: the trainer's measured peak_mib (on the CPU the "
               "ledger's high-water mark, on the GPU the device peak); Δ: difference to AdamW.\n")

    def table(title, names, note=None):
        names = [n for n in names if n in rows]
        if not names:
            return
        out.append("\n## %s\n" % title)
        if note:
            out.append(note + "\n")
        out.append("| optimizer | lr | train loss | val loss | Δ val vs AdamW | state B/param | "
                   "state MiB | peak MiB | Δ peak vs AdamW | tok/s |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for n in names:
            r = rows[n]
            dv = r["val"] - base["val"] if base and r["val"] is not None and base["val"] is not None else None
            dp = r["peak"] - base["peak"] if base and r["peak"] is not None and base["peak"] is not None else None
            name = n if r["done"] else n + " (incomplete)"
            out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                name, r["lr"], fmt(r["train"], ".4f"), fmt(r["val"], ".4f"),
                signed(dv, ".4f"), fmt(r["bpp"], ".4f"), fmt(r["state_mib"], ".2f"), fmt(r["peak"], ".1f"),
                signed(dp, ".1f"), fmt(r["tok"], ".0f")))

    table("8-bit vs standard Adam (the article's first comparison)", EIGHTBIT_ROWS)
    table("Adam / Adafactor / CAME (the article's second comparison)", FACTORED_ROWS)
    table("Every optimizer", list(rows.keys()))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- memory-only ledgers
LINE_RE = re.compile(r"^\|\s*(\w+)\s*\|\s*(.*?)\s*\|\s*(\d+)\s*\|")


def parse_ledger(text):
    """One `-memory-only` printout -> {"params": N, "opt": name, "lines": [[cat, label, bytes]...],
    "totals": {cat: bytes}, "summary": {...}}. Reads the table rows `| cat | label | bytes | ...`
    (split on '|', so a label longer than its column still parses) and the summary line."""
    res = {"lines": [], "totals": {}, "summary": {}}
    for line in text.splitlines():
        if line.startswith("summary:"):
            for kv in line[len("summary:"):].split():
                k, _, v = kv.partition("=")
                res["summary"][k] = v
            continue
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[2].isdigit():
            continue
        cat, label, nbytes = cells[0], cells[1], int(cells[2])
        if cat.startswith("total ") or cat == "TOTAL":
            res["totals"][cat.replace("total ", "")] = nbytes
        else:
            res["lines"].append([cat, label, nbytes])
    res["params"] = int(res["summary"].get("params", "0"))
    res["opt"] = res["summary"].get("opt", "?")
    return res


def cat_bytes(led, cat):
    return sum(b for c, _, b in led["lines"] if c == cat)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "loss":
        sys.stdout.write(loss_tables(arg))
    elif mode == "ledger":
        print(json.dumps(parse_ledger(open(arg).read())))
    elif mode == "memory":
        import memory_tables  # scripts/memory_tables.py
        sys.stdout.write(memory_tables.main(arg))
    else:
        sys.stderr.write("error: unknown mode '%s' (loss, ledger or memory)\n" % mode)
        sys.exit(2)

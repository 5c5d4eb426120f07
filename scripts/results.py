#!/usr/bin/env python3
"""scripts/results.py: the tables behind scripts/loss_table.sh and scripts/memory_table.sh.
Standard library only.

  python3 scripts/results.py loss DIR     reads DIR/OPT/log.jsonl (+ DIR/meta.txt), prints the markdown
                                          tables, writes DIR/plot/*.dat for scripts/plot.sh
  python3 scripts/results.py ledger FILE  parses one `-memory-only` printout into JSON (one line)
  python3 scripts/results.py memory DIR   reads DIR/ledger/*.txt (written by memory_table.sh), prints
                                          the memory tables, writes DIR/plot/*.dat
  python3 scripts/results.py sweep DIR    reads the runs DIR/OPT/LR/SEED/log.jsonl of one table of
                                          scripts/loss_table.sh (learning-rate sweeps + seeds), prints
                                          the markdown table, writes DIR/plot/*.dat for plot_sweep.sh
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


# ---------------------------------------------------------------- sweep tables (scripts/loss_table.sh)
# A table's runs live in DIR/OPT/LR/SEED/ (log.jsonl, stdout.txt, run.txt). LR is a point of the
# half-decade ladder 1e-4, 3e-4, 1e-3, 3e-3, ... (index k: lr = 10^(k/2), the 3 standing for 3.16), or
# "default" (no -l: the optimizer's own rule, e.g. Adafactor's relative step). The sweep runs use
# SWEEP_SEED; the best lr is then run with the other seeds. Everything here is computed from the
# folders alone, so a table can be rebuilt from the committed logs without the trainer.
SWEEP_SEED = 1337
MAX_EXTEND = 3   # points a sweep may grow beyond its planned grid on either side

# Table order: AdamW (the baseline) first, then the article's rows, then the rest alphabetically.
ORDER = ["adamw", "adam", "adamw8bit", "adam8bit", "paged_adamw8bit", "adafactor", "came", "adalomo",
         "lion", "sophia", "sgd", "sgdm", "lomo"]
# One panel per optimizer family in the loss plots (AdamW is drawn in every panel as the reference).
FAMILIES = [("Adam, AdamW", ["adam", "adamw"]),
            ("8-bit Adam", ["adam8bit", "adamw8bit", "paged_adamw8bit"]),
            ("factored second moment", ["adafactor", "came", "adalomo"]),
            ("SGD, LOMO", ["sgd", "sgdm", "lomo"]),
            ("sign and curvature", ["lion", "sophia"])]


def lr_index(name):
    """'3e-4' -> -7 (the ladder index), 'default' -> None; anything off the ladder -> ValueError."""
    if name == "default":
        return None
    x = float(name)
    if not (x > 0 and math.isfinite(x)):
        raise ValueError("learning rate %r is not positive" % name)
    k = round(2 * math.log10(x))
    if abs(x / lr_value(k) - 1) > 0.1:
        raise ValueError("learning rate %r is not on the half-decade ladder (1e-3, 3e-3, 1e-2, ...)" % name)
    return k


def lr_value(k):
    n, r = divmod(k, 2)  # floor division: k = -7 -> n = -4, r = 1 -> 3e-4
    return (3.0 if r else 1.0) * 10.0 ** n


def lr_name(k):
    if k is None:
        return "default"
    n, r = divmod(k, 2)
    return "%de%d" % (3 if r else 1, n)


def read_runinfo(d):
    """run.txt ("key: value" lines, written by scripts/loss_sweep.py) -> dict."""
    info = {}
    p = os.path.join(d, "run.txt")
    if os.path.exists(p):
        for line in open(p):
            k, _, v = line.partition(":")
            if v:
                info[k.strip()] = v.strip()
    return info


def config_steps(path):
    """The target step count (-x) of the log's first config record, or None."""
    with open(path) as f:
        for line in f:
            if '"type":"config"' in line:
                try:
                    return int(json.loads(line).get("steps"))
                except (ValueError, TypeError):
                    return None
    return None


def read_run(d):
    """One run folder -> {"status": done|diverged|failed|partial|missing, "val", "summary", "steps",
    "vals", "wall_s", "note"}. done: the log has a summary with a finite val loss that reached the
    run's target step count. diverged: the trainer
    stopped on non-finite losses (exit 3) or reported a non-finite val loss: it counts as the worst
    point of a sweep. failed: another non-zero exit (e.g. an optimizer this trainer lacks). partial: a
    log without a summary (an interrupted run: redone). missing: nothing there."""
    log = os.path.join(d, "log.jsonl")
    info = read_runinfo(d)
    r = {"status": "missing", "val": None, "summary": None, "steps": [], "vals": [], "note": "",
         "wall_s": float(info["wall_s"]) if "wall_s" in info else None}
    if os.path.exists(log):
        steps, vals, summary = read_log(log)
        # a resumed run appends to its log: the last record of each step wins
        r["steps"] = sorted(dict(steps).items())
        r["vals"] = sorted(dict(vals).items())
        r["summary"] = summary
        # a run stopped early (-stop, a signal) also writes a summary, with the steps it reached: it is
        # finished only when those reach the run's target (-x, in the log's config record; a log without
        # one, from an older trainer, is judged by its last step record)
        target = config_steps(log)
        last = r["steps"][-1][0] if r["steps"] else 0
        reached = summary.get("steps", 0) if summary is not None and target is not None else last
        if summary is not None and reached >= (target if target is not None else summary.get("steps", 0)):
            v = summary.get("val_loss")
            ok = isinstance(v, (int, float)) and math.isfinite(v)
            r["status"], r["val"] = ("done", float(v)) if ok else ("diverged", math.inf)
            return r
        r["status"] = "partial"
    code = info.get("exit")
    if code == "3":
        r["status"], r["val"], r["note"] = "diverged", math.inf, "non-finite loss (exit 3)"
    elif code not in (None, "0"):
        r["status"], r["note"] = "failed", "exit %s: %s" % (code, info.get("error", ""))
    return r


def scan_table(d):
    """DIR -> {opt: {lrname: {seed: run}}} for every OPT/LR/SEED folder (names starting with _ skipped)."""
    runs = {}
    if not os.path.isdir(d):
        return runs
    for o in sorted(os.listdir(d)):
        od = os.path.join(d, o)
        if o.startswith(("_", ".")) or o == "plot" or not os.path.isdir(od):
            continue
        for lr in sorted(os.listdir(od)):
            ld = os.path.join(od, lr)
            try:
                lr_index(lr)
            except ValueError:
                continue
            if not os.path.isdir(ld):
                continue
            for sd in sorted(os.listdir(ld)):
                if sd.isdigit() and os.path.isdir(os.path.join(ld, sd)):
                    runs.setdefault(o, {}).setdefault(lr, {})[int(sd)] = read_run(os.path.join(ld, sd))
    return runs


def settle(points, grid, max_extend=MAX_EXTEND):
    """The state of one sweep. points: {k: val} of the sweep seed's finished runs (inf = diverged);
    grid: the planned ladder indices (empty when rebuilding from logs alone: the points are the grid).
    Returns (missing, best, extend, note): the planned points not run yet; the best k (lowest val; a tie
    goes to the smaller lr; None while points are missing or when every point diverged); the point to
    run next because the best sits at an end of the sweep (one step beyond that end), or None; a note."""
    ks = sorted(set(grid) | set(points))
    missing = [k for k in ks if k not in points]
    if missing or not ks:
        return missing, None, None, "sweep incomplete"
    lo, hi = (min(grid), max(grid)) if grid else (ks[0], ks[-1])
    finite = [k for k in ks if math.isfinite(points[k])]
    best = min(finite, key=lambda k: (points[k], k)) if finite else None
    if best is None or best == ks[0]:   # every point diverged: go lower
        ext, limit = ks[0] - 1, lo - max_extend
        ok = ext >= limit if grid else False
    elif best == ks[-1]:
        ext, limit = ks[-1] + 1, hi + max_extend
        ok = ext <= limit if grid else False
    else:
        return [], best, None, ""
    if best is not None and len(ks) == 1:
        return [], best, None, ""   # a single point (no sweep)
    if ok:
        return [], best, ext, "best at the end of the sweep: extending to %s" % lr_name(ext)
    if best is None:
        return [], None, None, "every point diverged"
    return [], best, None, "best at the end of the sweep" + (" (extension limit reached)" if grid else "")


def mean_sd(xs):
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def row_key(opt, mode):
    return opt if mode == "sweep" else opt + "-" + mode


def table_rows(d, sweep_seed=SWEEP_SEED, nseeds=3, grids=None):
    """The rows of one sweep table: one per (optimizer, mode), mode "sweep" (numeric lr folders) or
    "default" (the optimizer's own lr rule). grids: {opt: [k...]} when the planned grids are known."""
    rows = []
    runs = scan_table(d)
    names = [o for o in ORDER if o in runs] + sorted(o for o in runs if o not in ORDER)
    for o in names:
        for mode in ("default", "sweep"):
            lrs = {lr: seeds for lr, seeds in runs[o].items() if (lr == "default") == (mode == "default")}
            if not lrs:
                continue
            row = {"opt": o, "mode": mode, "key": row_key(o, mode), "failed": ""}
            row["label"] = o if mode == "sweep" else o + (" (relative step)" if o == "adafactor" else " (default lr)")
            if mode == "sweep" and any(lr == "default" for lr in runs[o]) and o == "adafactor":
                row["label"] = o + " (lr swept)"
            points = {}
            for lr, seeds in lrs.items():
                r = seeds.get(sweep_seed)
                if r and r["status"] in ("done", "diverged"):
                    points[lr_index(lr) if mode == "sweep" else 0] = r["val"]
                for r in seeds.values():
                    if r["status"] == "failed":
                        row["failed"] = r["note"]
            grid = (grids or {}).get(o, []) if mode == "sweep" else []
            missing, best, ext, note = settle(points, grid) if mode == "sweep" else ([], 0 if points else None, None, "")
            if missing and any(math.isfinite(v) for v in points.values()):
                # an unfinished sweep: its best so far, marked as such (interim tables between GPU windows)
                best = min((k for k in points if math.isfinite(points[k])), key=lambda k: (points[k], k))
                note = "sweep incomplete (%d of %d points): best so far" % (len(points), len(points) + len(missing))
            row["points"], row["note"] = points, note
            row["best"] = best
            row["lr"] = (lr_name(best) if mode == "sweep" else "default") if best is not None else None
            row["complete"] = not missing and ext is None and best is not None
            seeds = lrs.get(row["lr"], {}) if row["lr"] else {}
            fin = [r for r in seeds.values() if r["status"] == "done"]
            row["diverged_seeds"] = sum(1 for r in seeds.values() if r["status"] == "diverged")
            row["nseeds"] = len(fin)
            row["seeds_complete"] = len(fin) + row["diverged_seeds"] >= nseeds
            row["val"], row["val_sd"] = mean_sd([r["val"] for r in fin])
            for f in ("peak_mib", "tok_per_s", "state_bytes", "state_bytes_per_param"):
                row[f] = mean_sd([float(r["summary"][f]) for r in fin if f in r["summary"]])[0]
            row["vals"] = [r["val"] for r in fin]
            row["curve"] = seeds.get(sweep_seed) if seeds else None
            rows.append(row)
    return rows


def _signed(x, spec):
    return "n/a" if x is None else ("+" if x >= 0 else "") + format(x, spec)


# The article's rows next to ours: (its setting and numbers, [(its column, our row key)], what is compared)
ARTICLE = {
    "pretrain": ("GPT-2 Medium (OpenWebText), val loss: Adam 3.18, Adafactor 3.25, CAME 3.19",
                 [("Adam", "adamw"), ("Adafactor", "adafactor-default"), ("Adafactor", "adafactor"), ("CAME", "came")], "val"),
    "finetune": ("GPT-2 (117M, WikiText), val perplexity: Adam 21.1, 8-bit Adam 21.2, 0.9 GB saved",
                 [("Adam", "adamw"), ("8-bit Adam", "adamw8bit"), ("8-bit Adam", "paged_adamw8bit")], "ppl"),
}


def article_block(rows, which):
    """Our rows that correspond to the article's table `which` (pretrain, finetune), as markdown."""
    if which not in ARTICLE:
        return []
    setting, cols, what = ARTICLE[which]
    by = {r["key"]: r for r in rows}
    base = by.get("adamw")
    out = ["## Next to the article\n", "The article: %s. Ours: this table's model and settings (the trainer flags at the end):\n" % setting,
           "| article's row | ours | %s | Δ vs AdamW | peak saving vs AdamW |" % ("val loss" if what == "val" else "val ppl"),
           "|---|---|---|---|---|"]
    for col, key in cols:
        r = by.get(key)
        if r is None or r["val"] is None:
            names = {"adafactor-default": "adafactor (relative step)", "adafactor": "adafactor (lr swept)"}
            out.append("| %s | %s | not run yet | | |" % (col, r["label"] if r else names.get(key, key)))
            continue
        v = r["val"] if what == "val" else math.exp(r["val"])
        bv = None if not base or base["val"] is None else (base["val"] if what == "val" else math.exp(base["val"]))
        save = None if not base or base["peak_mib"] is None or r["peak_mib"] is None else base["peak_mib"] - r["peak_mib"]
        out.append("| %s | %s (lr %s, %d seeds) | %s | %s | %s |" % (
            col, r["label"], r["lr"], r["nseeds"], format(v, ".4f" if what == "val" else ".2f"),
            "n/a" if bv is None or r is base else _signed(v - bv, ".4f" if what == "val" else ".2f"),
            "n/a" if save is None or r is base else "%.2f GB" % (save * 1048576 / 1e9)))
    return out + [""]


def sweep_table(d, title="", sweep_seed=SWEEP_SEED, nseeds=3, grids=None, which=None):
    """The markdown table of one sweep table folder; also writes DIR/plot/*.dat and DIR/plot/panels.txt.
    which: "pretrain" or "finetune" adds the article's matching rows (default: the folder's name)."""
    rows = table_rows(d, sweep_seed, nseeds, grids)
    base = next((r for r in rows if r["key"] == "adamw"), None)
    out = ["# %s\n" % (title or os.path.basename(os.path.normpath(d)))]
    out += article_block(rows, which or os.path.basename(os.path.normpath(d)))
    out.append("## Every optimizer\n")
    out.append("Each optimizer at its best learning rate (the lowest val loss of the sweep with seed %d), "
               "then that lr with %d seeds. val loss: mean ± sample standard deviation over the seeds; ppl: "
               "exp(mean val loss); Δ vs AdamW: difference of the means ± its standard error "
               "sqrt(sd²/n + sd_AdamW²/n_AdamW); state: the optimizer state (ledger bytes); peak: the "
               "trainer's peak_mib (the device peak on the GPU, the ledger's high-water mark on the CPU); "
               "saving: AdamW's peak minus this one; sweep: val loss at each lr (seed %d), the best in bold.\n"
               % (sweep_seed, nseeds, sweep_seed))
    out.append("| optimizer | best lr | seeds | val loss | ppl | Δ val vs AdamW | Δ ppl vs AdamW | state MiB (B/param) "
               "| peak MiB | peak saving vs AdamW | tok/s | sweep (val loss at each lr) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        label = r["label"]
        status = []
        if r["failed"] and r["best"] is None:
            status.append("failed: " + r["failed"])
        elif not r["complete"]:
            status.append(r["note"] or "sweep incomplete")
        elif r["note"]:
            status.append(r["note"])
        if r["best"] is not None and not r["seeds_complete"]:
            status.append("%d of %d seeds" % (r["nseeds"] + r["diverged_seeds"], nseeds))
        if r["diverged_seeds"]:
            status.append("%d seed(s) diverged" % r["diverged_seeds"])
        if status:
            label += " (" + "; ".join(status) + ")"
        v, sd = r["val"], r["val_sd"]
        vtxt = "n/a" if v is None else "%.4f ± %s" % (v, "n/a" if sd is None else "%.4f" % sd)
        ppl = None if v is None else math.exp(v)
        dv = dp = None
        dse = None
        if base and base["val"] is not None and v is not None:
            dv = v - base["val"]
            dp = ppl - math.exp(base["val"])
            if sd is not None and base["val_sd"] is not None:
                dse = math.sqrt(sd ** 2 / r["nseeds"] + base["val_sd"] ** 2 / base["nseeds"])
        dvtxt = "n/a" if dv is None else _signed(dv, ".4f") + (" ± %.4f" % dse if dse is not None else "")
        dptxt = _signed(dp, ".2f")
        if r is base:
            dvtxt = dptxt = "(baseline)"
        state = "n/a" if r["state_bytes"] is None else "%.1f (%.4f)" % (r["state_bytes"] / 1048576.0, r["state_bytes_per_param"])
        save = None
        if base and base["peak_mib"] is not None and r["peak_mib"] is not None:
            save = base["peak_mib"] - r["peak_mib"]
        savetxt = "n/a" if save is None else "%.0f MiB (%.1f%%)" % (save, 100.0 * save / base["peak_mib"])
        sweep = []
        for k in sorted(r["points"]):
            name = lr_name(k) if r["mode"] == "sweep" else "default"
            val = r["points"][k]
            t = "%s: %s" % (name, "%.4f" % val if math.isfinite(val) else "diverged")
            sweep.append("**%s**" % t if k == r["best"] else t)
        out.append("| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, r["lr"] or "n/a", r["nseeds"], vtxt, fmt(ppl, ".2f"), dvtxt, dptxt, state,
            fmt(r["peak_mib"], ".0f"), savetxt, fmt(r["tok_per_s"], ".0f"), " · ".join(sweep) or "n/a"))
    write_sweep_plot(d, rows)
    return "\n".join(out) + "\n"


def write_sweep_plot(d, rows):
    """DIR/plot/KEY.dat (step, loss, EMA 0.9 of the loss), KEY.val.dat (step, val loss) for the best-lr
    run with the sweep seed of each row, and DIR/plot/panels.txt: one line per panel,
    "title|key=label key=label ...", AdamW first in each (the reference)."""
    pd = os.path.join(d, "plot")
    os.makedirs(pd, exist_ok=True)
    have = {}
    for r in rows:
        c = r["curve"]
        if not c or not c["steps"]:
            continue
        have[r["key"]] = r["label"]
        with open(os.path.join(pd, r["key"] + ".dat"), "w") as f:
            ema = None
            for st, l in c["steps"]:
                if math.isfinite(l):
                    ema = l if ema is None else 0.9 * ema + 0.1 * l
                f.write("%d %.6f %.6f\n" % (st, l, ema if ema is not None else float("nan")))
        with open(os.path.join(pd, r["key"] + ".val.dat"), "w") as f:
            for st, l in c["vals"]:
                f.write("%d %.6f\n" % (st, l))
    fams = [(t, [k for k in have if k.split("-")[0] in members]) for t, members in FAMILIES]
    known = {k for _, ks in fams for k in ks}
    fams.append(("other", [k for k in have if k not in known]))
    with open(os.path.join(pd, "panels.txt"), "w") as f:
        for t, ks in fams:
            if not ks:
                continue
            if "adamw" in have and "adamw" not in ks:
                ks = ["adamw"] + ks
            f.write("%s|%s\n" % (t, " ".join("%s=%s" % (k, have[k].replace(" ", "_")) for k in ks)))


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
    elif mode == "sweep":
        seed = int(sys.argv[3]) if len(sys.argv) > 3 else SWEEP_SEED
        sys.stdout.write(sweep_table(arg, sweep_seed=seed))
    elif mode == "memory":
        import memory_tables  # scripts/memory_tables.py
        sys.stdout.write(memory_tables.main(arg))
    else:
        sys.stderr.write("error: unknown mode '%s' (loss, ledger, memory or sweep)\n" % mode)
        sys.exit(2)

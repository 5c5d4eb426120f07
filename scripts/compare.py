#!/usr/bin/env python3
"""scripts/compare.py: the table behind scripts/compare.sh, from each run's log.jsonl alone.
Standard library only.

    python3 scripts/compare.py [--csv] [--dat DIR] RUN_DIR...

Prints one row per run (markdown, or CSV with --csv): run, optimizer, lr, final train loss, final val
loss, state bytes, state B/param, peak MiB, tok/s, steps. With --dat DIR also writes DIR/N.dat (step,
train loss) and DIR/N.val.dat (step, val loss) for run N (1-based) and DIR/names.txt, for the plot.

Where the numbers come from: the "config" record (optimizer, lr, state bytes, params) and the last
"summary" record (train loss = its mean of the last 10 applied steps, val loss, peak MiB, tok/s, steps).
A log without a summary (a run still going, or killed) takes train loss as the same mean over its last
10 steps, val loss from its last val record, and says so with a "*" on the run's name. A log without a
config record (written before the trainer had one) gives "?" for what only the config knows (lr).
A missing directory, a directory without log.jsonl, or a log without a step record: a message, exit 2.
"""
import csv
import json
import math
import os
import sys

COLUMNS = ["run", "optimizer", "lr", "train_loss", "val_loss", "state_bytes", "state_B_per_param",
           "peak_MiB", "tok_per_s", "steps"]
HEADERS = ["run", "optimizer", "lr", "final train loss", "final val loss", "state bytes", "state B/param",
           "peak MiB", "tok/s", "steps"]


def die(msg):
    sys.stderr.write("error: %s\n" % msg)
    sys.exit(2)


def read_run(d):
    if not os.path.isdir(d):
        die("%s is not a directory: give run directories (the -o DIR of ./train_cpu or ./train_gpu)" % d)
    p = os.path.join(d, "log.jsonl")
    if not os.path.isfile(p):
        die("%s has no log.jsonl: is it a run directory (the -o DIR of a training run)?" % d)
    config, summary, steps, vals, bad = None, None, [], [], 0
    with open(p) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                r = json.loads(line)
            except ValueError:
                bad += 1  # a half-written last line of a killed run
                continue
            t = r.get("type")
            if t == "config":
                config = r
            elif t == "step" and not r.get("skipped"):
                steps.append((r["step"], r["loss"], (r.get("tok_per_s"), r.get("ms"))))
            elif t == "val":
                vals.append((r["step"], r["val_loss"]))
            elif t == "summary":
                summary = r
            elif t == "resume":  # the log was cut back to the checkpoint: later records replace earlier ones
                steps = [s for s in steps if s[0] <= r["step"]]
                vals = [v for v in vals if v[0] <= r["step"]]
    if not steps:
        die("%s has no step records: the run did not finish a step, so there is nothing to compare "
            "(run it, or leave it out)" % p)
    if bad:
        sys.stderr.write("warning: %s: %d unreadable line(s) skipped\n" % (p, bad))
    return config, summary, steps, vals


def fmt(x, spec):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "?"
    return format(x, spec)


def row(d):
    config, summary, steps, vals = read_run(d)
    c, s = config or {}, summary or {}
    name = os.path.basename(os.path.normpath(d)) or d
    if summary is None:
        name += " *"
    recent = [l for _, l, _ in steps[-10:]]
    train = s.get("train_loss") if summary else sum(recent) / len(recent)
    val = s.get("val_loss") if summary else (vals[-1][1] if vals else None)
    sb = s.get("state_bytes", c.get("state_bytes"))
    params = s.get("params", c.get("params"))
    bpp = s.get("state_bytes_per_param", sb / params if sb is not None and params else None)
    tps = s.get("tok_per_s")
    if tps is None and len(steps) > 1:  # the summary's rule: the first step (warm-up) left out
        xs = [(t, ms) for _, _, (t, ms) in steps[1:] if t and ms]  # tokens / seconds over those steps
        tps = sum(t * ms for t, ms in xs) / sum(ms for _, ms in xs) if xs else None
    return {
        "run": name,
        "optimizer": s.get("opt", c.get("opt", "?")),
        "lr": fmt(c.get("lr"), "g"),
        "train_loss": fmt(train, ".4f"),
        "val_loss": fmt(val, ".4f"),
        "state_bytes": fmt(sb, "d"),
        "state_B_per_param": fmt(bpp, ".4f"),
        "peak_MiB": fmt(s.get("peak_mib"), ".2f"),
        "tok_per_s": fmt(tps, ".1f"),
        "steps": fmt(s.get("steps", steps[-1][0]), "d"),
    }, steps, vals


def main(argv):
    as_csv, dat, dirs = False, None, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--csv":
            as_csv = True
        elif a == "--dat":
            dat = argv[i + 1]
            i += 1
        else:
            dirs.append(a)
        i += 1
    if not dirs:
        die("give at least one run directory (usage: scripts/compare.sh [-o PNG] [--csv] RUN_DIR...)")
    rows = []
    for n, d in enumerate(dirs, 1):
        r, steps, vals = row(d)
        rows.append(r)
        if dat:
            with open(os.path.join(dat, "%d.dat" % n), "w") as f:
                f.writelines("%d %.9g\n" % (st, l) for st, l, _ in steps)
            with open(os.path.join(dat, "%d.val.dat" % n), "w") as f:
                f.writelines("%d %.9g\n" % v for v in vals if v[1] is not None)
    if dat:
        with open(os.path.join(dat, "names.txt"), "w") as f:
            f.writelines("%s (%s)\n" % (r["run"], r["optimizer"]) for r in rows)
    if as_csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            w.writerow([r[k] for k in COLUMNS])
        return
    print("| " + " | ".join(HEADERS) + " |")
    print("|---|---|" + "---:|" * (len(HEADERS) - 2))
    for r in rows:
        print("| " + " | ".join(r[k] for k in COLUMNS) + " |")
    if any(r["run"].endswith(" *") for r in rows):
        print("\n\\* no summary record (run unfinished or killed): train loss is the mean of its last 10 steps, "
              "val loss its last val record")


if __name__ == "__main__":
    main(sys.argv[1:])

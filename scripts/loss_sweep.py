#!/usr/bin/env python3
"""scripts/loss_sweep.py: the engine behind scripts/loss_table.sh (run that; it builds the trainer and
the data first). Standard library only.

For each table (pretrain: the default dataset from scratch; finetune: the King James Bible from the
best AdamW pre-training weights via the trainer's -init) and each optimizer of the table:
  1. a learning-rate sweep with seed 1337 over a planned grid of half-decade points; while the best
     point sits at an end of the swept range, one more point beyond that end (at most 3 per side);
  2. the best lr again with the other seeds;
  3. the table (scripts/results.py) and the loss curves (scripts/plot_sweep.sh), rebuilt from the
     run folders alone.
Each finished run is copied to OUT/TABLE/OPT/LR/SEED/ (log.jsonl, stdout.txt, run.txt); runs found
there are never redone, so the script can be stopped at any time and started again (on another
machine, with the results folder carried over). Runs happen in SCRATCH/TABLE/OPT/LR/SEED/ (the
trainer's -o, with its checkpoints every -n steps): an interrupted run resumes from its checkpoint
with -y 1 when that is still there, else starts over. --budget-s stops before a run that would not
fit in the time left; the estimate of the time left is printed before and after.
"""
import argparse
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results as R  # noqa: E402  (scripts/results.py)

SEEDS = [1337, 1338, 1339]


def ladder(*names):
    return [R.lr_index(n) for n in names]


# ---- planned learning-rate grids (half-decade ladder). Centred on each family's usual peak lr for
# GPT-2-sized models on short horizons, so that the best lands inside: AdamW family 6e-4 is GPT-2's own,
# short runs prefer more; Lion 3-10x lower (its paper); CAME 0.5-0.9x AdamW (its README); Adafactor with
# a fixed lr and AdaLomo scale their step by RMS(theta) ~ 0.02-0.05 (so ~10x AdamW's); SGD after
# clipping at 1 needs large steps. The sweep extends itself when the best sits at an end.
PRETRAIN_GRIDS = {
    "adam": ladder("3e-4", "1e-3", "3e-3", "1e-2"), "adamw": ladder("3e-4", "1e-3", "3e-3", "1e-2"),
    "adam8bit": ladder("3e-4", "1e-3", "3e-3", "1e-2"), "adamw8bit": ladder("3e-4", "1e-3", "3e-3", "1e-2"),
    "paged_adamw8bit": ladder("3e-4", "1e-3", "3e-3", "1e-2"),
    "sophia": ladder("1e-4", "3e-4", "1e-3", "3e-3"), "came": ladder("1e-4", "3e-4", "1e-3", "3e-3"),
    "lion": ladder("3e-5", "1e-4", "3e-4", "1e-3"),
    "adafactor": ladder("1e-3", "3e-3", "1e-2", "3e-2"), "adalomo": ladder("1e-3", "3e-3", "1e-2", "3e-2"),
    "sgd": ladder("3e-2", "1e-1", "3e-1", "1e0"), "lomo": ladder("3e-2", "1e-1", "3e-1", "1e0"),
    "sgdm": ladder("1e-2", "3e-2", "1e-1", "3e-1"),
}
DEFAULT_GRID = ladder("1e-4", "3e-4", "1e-3", "3e-3")
# Fine-tuning a pre-trained model wants smaller steps: three points, a half-decade to a decade below.
FINETUNE_GRIDS = {
    "adamw": ladder("1e-4", "3e-4", "1e-3"), "adamw8bit": ladder("1e-4", "3e-4", "1e-3"),
    "paged_adamw8bit": ladder("1e-4", "3e-4", "1e-3"), "came": ladder("3e-5", "1e-4", "3e-4"),
    "adafactor": ladder("3e-4", "1e-3", "3e-3"), "adalomo": ladder("3e-4", "1e-3", "3e-3"),
    "lomo": ladder("1e-2", "3e-2", "1e-1"), "sgdm": ladder("3e-3", "1e-2", "3e-2"),
}
FINETUNE_OPTS = ["adamw", "adamw8bit", "paged_adamw8bit", "adafactor", "came", "lomo", "adalomo", "sgdm"]
TINY_GRIDS = {"adamw": ladder("1e-3", "3e-3", "1e-2"), "came": ladder("3e-4", "1e-3", "3e-3"),
              "adamw8bit": ladder("1e-3", "3e-3", "1e-2")}

# ---- presets: the trainer flags shared by every run of a table (the optimizer, -l, -seed, -o, -init
# are added per run). -v/-m: val every V steps on M batches, M*B*T+1 <= the val shard's 262144 tokens so
# no val batch is counted twice.
PRESETS = {
    "gpu": {
        "train": "./train", "out": "results/gpu", "assume_tok_s": 112000.0, "assume_start_s": 20.0,
        "pretrain": "-model d12 -b 32 -t 1024 -x 300 -u 30 -q 0.1 -g 1 -c 0.1 -v 50 -m 7 -gen 0 -n 100",
        "finetune": "-model d12 -b 32 -t 1024 -x 60 -u 6 -q 0.1 -g 1 -c 0.1 -v 20 -m 7 -gen 0 -n 30",
        "grids": PRETRAIN_GRIDS, "ft_grids": FINETUNE_GRIDS, "ft_opts": FINETUNE_OPTS, "opts": None,
    },
    "cpu": {
        "train": "./train_cpu", "out": "results/cpu_sweep", "assume_tok_s": 4000.0, "assume_start_s": 2.0,
        "pretrain": "-model d4 -b 8 -t 64 -x 200 -u 20 -q 0.1 -g 1 -c 0.1 -v 50 -m 8 -gen 0 -n 50",
        "finetune": "-model d4 -b 8 -t 64 -x 60 -u 6 -q 0.1 -g 1 -c 0.1 -v 20 -m 8 -gen 0 -n 20",
        "grids": PRETRAIN_GRIDS, "ft_grids": FINETUNE_GRIDS, "ft_opts": FINETUNE_OPTS, "opts": None,
    },
    # The default run of the CPU trainer (./train_cpu -opt NAME: each optimizer's own weight decay, betas,
    # eps; no -c), as scripts/default_runs.sh ran it into results/cpu/: scripts/reproduce.sh's small
    # version, which reuses those runs as sweep points (-gen 0, -n 50 do not change the training).
    "cpu_default": {
        "train": "./train_cpu", "out": "results/article/cpu", "assume_tok_s": 1200.0, "assume_start_s": 2.0,
        "pretrain": "-model d4 -b 8 -t 64 -x 200 -u 20 -q 0.1 -g 1 -v 50 -m 8 -gen 0 -n 50",
        "finetune": "-model d4 -b 8 -t 64 -x 60 -u 6 -q 0.1 -g 1 -v 20 -m 8 -gen 0 -n 20",
        "grids": PRETRAIN_GRIDS, "ft_grids": FINETUNE_GRIDS, "ft_opts": FINETUNE_OPTS, "opts": None,
    },
    "tiny": {
        "train": "./train_cpu", "out": "results/tiny", "assume_tok_s": 600.0, "assume_start_s": 1.0,
        "pretrain": "-model 2:64:2 -b 4 -t 32 -x 20 -u 2 -q 0.1 -g 1 -c 0.1 -v 10 -m 2 -gen 0 -n 10",
        "finetune": "-model 2:64:2 -b 4 -t 32 -x 10 -u 1 -q 0.1 -g 1 -c 0.1 -v 5 -m 2 -gen 0 -n 5",
        "grids": TINY_GRIDS, "ft_grids": TINY_GRIDS, "ft_opts": ["adamw", "adamw8bit"], "opts": ["adamw", "came"],
    },
}
KJV = "-i data/kjv/kjv_train.bin -j data/kjv/kjv_val.bin"


class Entry:
    """One row of a table: an optimizer with a swept lr ("sweep") or with its own rule ("default")."""

    def __init__(self, opt, mode, grid):
        self.opt, self.mode, self.grid = opt, mode, grid
        self.abandoned = ""   # set when a run fails (not diverges): no more runs of it this time

    def label(self):
        if self.mode == "sweep":
            return self.opt
        return self.opt + (" (relative step)" if self.opt == "adafactor" else " (default lr)")


class Table:
    def __init__(self, name, flags, entries, seeds, out, scratch, needs_init=False):
        self.name, self.flags, self.entries, self.seeds = name, flags, entries, seeds
        self.dir = os.path.join(out, name)
        self.scratch = os.path.join(scratch, name)
        self.needs_init = needs_init

    def flag(self, f, default):
        """The value of one trainer flag of this table (e.g. -x), as a number."""
        fl = self.flags
        return float(fl[fl.index(f) + 1]) if f in fl else default

    def tokens_per_run(self):
        b, t, x = self.flag("-b", 8), self.flag("-t", 64), self.flag("-x", 200)
        d = self.flag("-d", b * t)
        v, m = self.flag("-v", 50), self.flag("-m", 8)
        evals = (x // v if v else 0) + 1
        return x * d + evals * m * b * t / 3.0   # a val batch costs about a third of a training step


# ---------------------------------------------------------------- planning
def run_dir(base, e, lrname, seed):
    return os.path.join(base, e.opt, lrname, str(seed))


def status(t, e, lrname, seed):
    return R.read_run(run_dir(t.dir, e, lrname, seed))["status"]


def next_runs(t, e):
    """What this entry needs next: (todo, state, more, best). todo: (lrname, seed) pairs, the first to
    run next; state: a line for humans; more: whether runs not known yet may follow (the sweep is not
    settled); best: the chosen lr's name once the sweep is settled, else None."""
    s0 = t.seeds[0]
    if e.mode == "default":
        best = "default"
    else:
        points = {}
        od = os.path.join(t.dir, e.opt)
        for lr in (os.listdir(od) if os.path.isdir(od) else []):
            try:
                k = R.lr_index(lr)
            except ValueError:
                continue
            if k is None:
                continue
            r = R.read_run(run_dir(t.dir, e, lr, s0))
            if r["status"] in ("done", "diverged"):
                points[k] = r["val"]
        missing, best_k, ext, note = R.settle(points, e.grid)
        if missing:
            return [(R.lr_name(k), s0) for k in missing], "sweep: %d of %d points done" % (
                len(points), len(points) + len(missing)), True, None
        if ext is not None:
            return [(R.lr_name(ext), s0)], note, True, None
        if best_k is None:
            return [], note, False, None
        best = R.lr_name(best_k)
    todo = [(best, s) for s in t.seeds if status(t, e, best, s) not in ("done", "diverged")]
    return todo, "best lr %s%s" % (best, "; " + note if e.mode == "sweep" and note else ""), False, best


# ---------------------------------------------------------------- running
def git_rev():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet"]).returncode != 0
        return (rev or "unknown") + (" (with uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def machine():
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        gpu = []
    return "%s; %d cores%s" % (" ".join(os.uname()[0:3:2]), os.cpu_count() or 0, "; gpu " + gpu[0] if gpu else "")


def run_one(args, t, e, lrname, seed, init=None, work=None, dest=None, keep_ckpt=False):
    """Runs one training run in work (default SCRATCH/TABLE/OPT/LR/SEED, the trainer's -o), then copies
    its log, stdout and run.txt to dest (default OUT/TABLE/OPT/LR/SEED). Returns the run's status (read
    back from the copy). The checkpoint stays in work only while the run is unfinished, or keep_ckpt."""
    work = work or run_dir(t.scratch, e, lrname, seed)
    dest = dest or run_dir(t.dir, e, lrname, seed)
    os.makedirs(work, exist_ok=True)
    ckpt = os.path.join(work, "checkpoint.bin")
    resume = os.path.exists(ckpt) and os.path.exists(os.path.join(work, "log.jsonl"))
    if not resume:
        for f in ("log.jsonl", "stdout.txt", "checkpoint.bin"):
            if os.path.exists(os.path.join(work, f)):
                os.remove(os.path.join(work, f))
    cmd = [args.train] + t.flags + ["-opt", e.opt]
    if lrname != "default":
        cmd += ["-l", lrname]
    cmd += ["-seed", str(seed), "-o", work]
    if resume:
        cmd += ["-y", "1"]   # the checkpoint holds the -init weights' descendants already
    elif init:
        cmd += ["-init", init]
    cmd += args.extra
    print("== %s %s lr %s seed %d%s" % (t.name, e.opt, lrname, seed, " (resumed)" if resume else ""),
          file=sys.stderr, flush=True)
    start = time.time()
    with open(os.path.join(work, "stdout.txt"), "a" if resume else "w") as so:
        proc = subprocess.Popen(cmd, stdout=so, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            # Ctrl-C or a time limit's SIGTERM: the trainer finishes its step, writes its checkpoint and
            # exits 4; wait for that (a minute at most) so the run can resume later
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    wall = time.time() - start
    lines = open(os.path.join(work, "stdout.txt"), errors="replace").read().splitlines()
    summary = next((l for l in reversed(lines) if l.startswith("summary:")), None)
    error = next((l for l in reversed(lines) if l.startswith("error")), lines[-1] if lines else "")
    if rc < 0 or rc == 4:
        # killed by a signal, or interrupted (exit 4: checkpoint written): leave the scratch folder for a
        # resume, record nothing
        raise KeyboardInterrupt
    os.makedirs(dest, exist_ok=True)
    for f in ("log.jsonl", "stdout.txt"):
        p = os.path.join(work, f)
        if os.path.exists(p):
            shutil.copyfile(p, os.path.join(dest, f))
        elif os.path.exists(os.path.join(dest, f)):
            os.remove(os.path.join(dest, f))
    with open(os.path.join(dest, "run.txt"), "w") as f:
        f.write("command: %s\n" % " ".join(shlex.quote(c) for c in cmd))
        f.write("exit: %d\n" % rc)
        f.write("wall_s: %.1f\n" % wall)
        if rc not in (0, 3):
            f.write("error: %s\n" % error.strip()[:300])
        if init:
            f.write("init: %s\n" % init)
        f.write("date: %s\n" % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        f.write("machine: %s\n" % args.machine)
        f.write("git: %s\n" % args.git)
    st = R.read_run(dest)["status"]
    if st in ("done", "diverged", "failed") and not keep_ckpt and os.path.exists(ckpt):
        os.remove(ckpt)   # checkpoints are large and not results
    print("   %s (%.0f s)%s" % (summary or "no summary (exit %d)" % rc, wall,
                                ": " + error.strip() if st == "failed" else ""), file=sys.stderr, flush=True)
    return st


# ---------------------------------------------------------------- estimate
def per_run_seconds(args, tables, t):
    """Seconds one run of table t takes: the mean wall time of t's finished runs; else from the
    measured tok/s of any finished run (scaled by tokens per run); else the preset's assumption."""
    walls, rates = [], []
    for tb in tables:
        for o, lrs in R.scan_table(tb.dir).items():
            for seeds in lrs.values():
                for r in seeds.values():
                    if r["status"] == "done":
                        if tb is t and r["wall_s"]:
                            walls.append(r["wall_s"])
                        if r["summary"].get("tok_per_s"):
                            rates.append(float(r["summary"]["tok_per_s"]))
    if walls:
        return sum(walls) / len(walls), "measured: mean wall time of %d finished %s runs" % (len(walls), t.name)
    if rates:
        tps = sum(rates) / len(rates)
        return t.tokens_per_run() / tps + args.assume_start_s, "from the measured %.0f tok/s of %d finished runs + %.0f s start-up (assumed)" % (tps, len(rates), args.assume_start_s)
    return (t.tokens_per_run() / args.assume_tok_s + args.assume_start_s,
            "assumed: %.0f tok/s + %.0f s start-up per run (no run finished yet)" % (args.assume_tok_s, args.assume_start_s))


def remaining(t):
    """Runs still needed in table t as far as known now: missing sweep points, the best lr's other
    seeds (a sweep not settled yet counts its planned seeds), no extensions (they depend on results)."""
    n = 0
    for e in t.entries:
        todo, _, more, _ = next_runs(t, e)
        n += len(todo)
        if more:
            n += len(t.seeds) - 1
    if t.needs_init and n:
        n += 1   # the init weights, when this machine lacks them
    return n


def estimate(args, tables):
    total = 0.0
    lines = []
    for t in tables:
        n = remaining(t)
        s, how = per_run_seconds(args, tables, t)
        total += n * s
        lines.append("  %s: %d runs left x %.0f s = %.1f min (%s)" % (t.name, n, s, n * s / 60.0, how))
    print("estimated time left: %.1f min (%.2f h); one more run per sweep whose best sits at an end\n%s"
          % (total / 60.0, total / 3600.0, "\n".join(lines)), file=sys.stderr, flush=True)
    return total


# ---------------------------------------------------------------- tables and plots
def rebuild(args, tables):
    here = os.path.dirname(os.path.abspath(__file__))
    for t in tables:
        if not os.path.isdir(t.dir):
            continue
        grids = {e.opt: e.grid for e in t.entries if e.mode == "sweep"}
        title = {"pretrain": "Pre-training: every optimizer from scratch",
                 "finetune": "Fine-tuning on the King James Bible from the best AdamW pre-training weights"}.get(t.name, t.name)
        md = R.sweep_table(t.dir, title=title, sweep_seed=t.seeds[0], nseeds=len(t.seeds), grids=grids)
        meta = os.path.join(t.dir, "meta.txt")
        if os.path.exists(meta):
            md += "\n```\n" + open(meta).read().strip() + "\n```\n"
        with open(os.path.join(t.dir, "table.md"), "w") as f:
            f.write(md)
        if not args.no_plot:
            rc = subprocess.run(["bash", os.path.join(here, "plot_sweep.sh"), t.dir, title]).returncode
            if rc != 0:
                print("warning: the plot of %s failed (exit %d); the table is written" % (t.dir, rc), file=sys.stderr)
        print("wrote %s" % os.path.join(t.dir, "table.md"), file=sys.stderr)


def write_meta(args, t):
    os.makedirs(t.dir, exist_ok=True)
    with open(os.path.join(t.dir, "meta.txt"), "w") as f:
        f.write("command: %s\n" % args.command.strip())
        f.write("trainer flags: %s (+ -opt, -l, -seed, -o%s per run)\n" % (" ".join(t.flags), ", -init" if t.needs_init else ""))
        f.write("seeds: %s (the sweep uses the first)\n" % " ".join(map(str, t.seeds)))
        f.write("planned grids: %s\n" % "; ".join(
            "%s %s" % (e.opt, "default" if e.mode == "default" else " ".join(R.lr_name(k) for k in e.grid)) for e in t.entries))
        f.write("last update: %s on %s, git %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), args.machine, args.git))


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="gpu")
    ap.add_argument("--tables", default="pretrain finetune", help="which tables, in order")
    ap.add_argument("--opts", default="", help="pretraining optimizers (default: every one of -opt list)")
    ap.add_argument("--ft-opts", default="", help="fine-tuning optimizers (default: the article's eight)")
    ap.add_argument("--train", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--scratch", default="", help="where runs happen and checkpoints stay (default out/loss_table/PRESET)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0, help="override -x of every table")
    ap.add_argument("--grid", action="append", default=[], help="OPT=LR,LR,... pre-training grid override (repeatable); "
                    "OPT=default: no sweep, the optimizer's own lr rule only")
    ap.add_argument("--ft-grid", action="append", default=[], help="OPT=LR,LR,... fine-tuning grid override (repeatable)")
    ap.add_argument("--budget-s", type=float, default=0, help="start no run that would end after this many seconds")
    ap.add_argument("--plan", action="store_true", help="print what would run next and the estimate; run nothing")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the tables and plots from the logs; run nothing")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--assume-tok-s", type=float, default=0)
    ap.add_argument("--command", default=" ".join(sys.argv))  # how loss_table.sh was called (meta.txt)
    ap.add_argument("extra", nargs="*", help="after --: passed to every training run")
    args = ap.parse_args()
    p = PRESETS[args.preset]
    args.train = args.train or p["train"]
    args.out = args.out or p["out"]
    args.scratch = args.scratch or os.path.join("out", "loss_table", args.preset)
    args.assume_tok_s = args.assume_tok_s or p["assume_tok_s"]
    args.assume_start_s = p["assume_start_s"]
    args.machine, args.git = machine(), git_rev()
    seeds = SEEDS[:args.seeds] if args.seeds <= len(SEEDS) else list(range(1337, 1337 + args.seeds))

    def parse_grids(specs, flag):
        grids = {}
        for g in specs:
            o, _, lrs = g.partition("=")
            if lrs == "default":   # OPT=default: only the optimizer's own lr rule (Adafactor's relative step)
                grids[o] = "default"
                continue
            try:
                grids[o] = sorted(R.lr_index(x) for x in lrs.split(",") if x)
            except ValueError as ex:
                sys.exit("error: %s %s: %s" % (flag, g, ex))
            if not grids[o] or None in grids[o]:
                sys.exit("error: %s %s: give OPT=LR,LR,... with learning rates like 1e-3,3e-3" % (flag, g))
        return grids

    pre_over, ft_over = parse_grids(args.grid, "--grid"), parse_grids(args.ft_grid, "--ft-grid")

    def entries(opts, grids, overrides, with_relstep):
        es = []
        for o in opts:
            if overrides.get(o) == "default":
                es.append(Entry(o, "default", []))
                continue
            if o == "adafactor" and with_relstep:
                es.append(Entry(o, "default", []))   # its relative step: no -l, nothing to sweep
            es.append(Entry(o, "sweep", overrides.get(o) or grids.get(o, DEFAULT_GRID)))
        return es

    def flags(s):
        fl = s.split()
        if args.steps:
            fl[fl.index("-x") + 1] = str(args.steps)
        return fl

    all_opts = args.opts.split() or p["opts"] or list_opts(args.train, args.out)
    # AdamW first: the baseline of every Δ, and the fine-tuning table's starting point
    all_opts = sorted(all_opts, key=lambda o: o != "adamw")
    tables = []
    for name in args.tables.split():
        if name == "pretrain":
            tables.append(Table("pretrain", flags(p["pretrain"]), entries(all_opts, p["grids"], pre_over, True), seeds,
                                args.out, args.scratch))
        elif name == "finetune":
            ft = args.ft_opts.split() or p["ft_opts"]
            tables.append(Table("finetune", flags(p["finetune"]) + KJV.split(), entries(sorted(ft, key=lambda o: o != "adamw"), p["ft_grids"], ft_over, False),
                                seeds, args.out, args.scratch, needs_init=True))
        else:
            sys.exit("error: unknown table '%s' (pretrain, finetune)" % name)

    if args.rebuild:
        rebuild(args, tables)
        return 0
    if args.plan:
        for t in tables:
            for e in t.entries:
                todo, state, _, _ = next_runs(t, e)
                print("%s %s: %s; next: %s" % (t.name, e.label(), state,
                                               " ".join("%s/%d" % x for x in todo) or "nothing (done)"))
        estimate(args, tables)
        return 0

    def on_term(signum, frame):   # a time limit's SIGTERM: stop like Ctrl-C, so the tables get rebuilt
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    start = time.time()
    estimate(args, tables)
    started = 0
    stop = ""
    try:
        for t in tables:
            write_meta(args, t)
            init = None
            if t.needs_init:
                init, why = prepare_init(args, tables, t, start)
                if init is None:
                    print("skipping the %s table: %s" % (t.name, why), file=sys.stderr)
                    continue
            for e in t.entries:
                while not stop:
                    todo, state, _, best = next_runs(t, e)
                    if not todo:
                        prune_checkpoints(t, e, best)
                        break
                    lrname, seed = todo[0]
                    est, _ = per_run_seconds(args, tables, t)
                    if args.budget_s and time.time() - start + est > args.budget_s:
                        stop = "the next run (~%.0f s) would not fit in --budget-s %.0f" % (est, args.budget_s)
                        break
                    keep = t.name == "pretrain" and e.opt == "adamw" and e.mode == "sweep" and seed == t.seeds[0]
                    st = run_one(args, t, e, lrname, seed, init=init, keep_ckpt=keep)
                    started += 1
                    if st == "failed":
                        e.abandoned = R.read_run(run_dir(t.dir, e, lrname, seed))["note"]
                        print("   giving up on %s %s for now: %s" % (t.name, e.label(), e.abandoned), file=sys.stderr)
                        break
                    if st not in ("done", "diverged"):
                        stop = "a run ended without a summary"
                        break
                if stop:
                    break
            if stop:
                break
    except KeyboardInterrupt:
        stop = "interrupted"
    finally:
        rebuild(args, tables)
        print("runs started: %d%s" % (started, "; stopped: " + stop if stop else ""), file=sys.stderr)
        estimate(args, tables)
    return 130 if stop == "interrupted" else 0


def list_opts(train, out_dir):
    """Every optimizer of `TRAIN -opt list`; without a runnable trainer (--rebuild, --plan on a machine
    without the build), the optimizer folders already in OUT/pretrain."""
    try:
        out = subprocess.run([train, "-opt", "list"], capture_output=True, text=True).stdout
        return [l.split()[0] for l in out.splitlines()[1:] if l.strip()]
    except OSError:
        d = os.path.join(out_dir, "pretrain")
        found = sorted(o for o in os.listdir(d) if os.path.isdir(os.path.join(d, o)) and not o.startswith(("_", ".")) and o != "plot") if os.path.isdir(d) else []
        if not found:
            sys.exit("error: cannot run %s -opt list and %s has no runs: build the trainer or give --opts" % (train, d))
        return found


def prune_checkpoints(t, e, best):
    """Once AdamW's pre-training sweep is settled only its best point's checkpoint is kept (the
    fine-tuning start); the other sweep points' go (about 1.7 GB each at d12)."""
    od = os.path.join(t.scratch, e.opt)
    if best is None or not os.path.isdir(od):
        return
    for lr in os.listdir(od):
        c = os.path.join(od, lr, str(t.seeds[0]), "checkpoint.bin")
        if lr != best and os.path.exists(c) and R.read_run(run_dir(t.dir, e, lr, t.seeds[0]))["status"] != "missing":
            os.remove(c)


def has_init_flag(train):
    out = subprocess.run([train, "-h"], capture_output=True, text=True)
    return "-init" in out.stdout + out.stderr


def prepare_init(args, tables, t, start):
    """The -init checkpoint for the fine-tuning table: the weights of the best AdamW pre-training run
    (seed 1337). That run keeps its checkpoint in scratch; a machine without it (a fresh GPU window)
    re-runs that one run into SCRATCH/finetune/_init/LR/ (its log kept in OUT/finetune/_init/LR/)."""
    if not has_init_flag(args.train):
        return None, "%s has no -init flag yet (weights-only start from a checkpoint)" % args.train
    pre = next((x for x in tables if x.name == "pretrain"), None)
    if pre is None:   # fine-tuning alone: the pre-training table's settings and results still decide
        p = PRESETS[args.preset]
        fl = p["pretrain"].split()
        if args.steps:
            fl[fl.index("-x") + 1] = str(args.steps)
        pre = Table("pretrain", fl, [], t.seeds, args.out, args.scratch)
    grids = PRESETS[args.preset]["grids"]
    e = next((x for x in pre.entries if x.opt == "adamw" and x.mode == "sweep"), None) or Entry("adamw", "sweep", grids["adamw"])
    todo, state, more, best = next_runs(pre, e)
    if best is None or status(pre, e, best, pre.seeds[0]) != "done":
        return None, "the AdamW pre-training sweep is not finished (%s)" % state
    mine = os.path.join(run_dir(pre.scratch, e, best, pre.seeds[0]), "checkpoint.bin")
    work = os.path.join(t.scratch, "_init", best)
    again = os.path.join(work, "checkpoint.bin")
    for c in (mine, again):
        if os.path.exists(c):
            return c, ""
    est, _ = per_run_seconds(args, tables, pre)
    if args.budget_s and time.time() - start + est > args.budget_s:
        return None, "re-making its init weights (~%.0f s) would not fit in --budget-s" % est
    print("== the fine-tuning start: re-running pre-training adamw lr %s seed %d for its weights"
          % (best, pre.seeds[0]), file=sys.stderr)
    st = run_one(args, pre, e, best, pre.seeds[0], work=work, dest=os.path.join(t.dir, "_init", best), keep_ckpt=True)
    if st != "done" or not os.path.exists(again):
        return None, "the run that makes the init weights ended with status %s" % st
    return again, ""


if __name__ == "__main__":
    sys.exit(main())

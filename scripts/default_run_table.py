#!/usr/bin/env python3
"""scripts/default_run_table.py: the default run (`./train -opt NAME`, nothing else) of every optimizer
on the CPU trainer and on the CUDA trainer, side by side, from the runs' own logs.

    python3 scripts/default_run_table.py CPU_RUNS GPU_RUNS > table.md

CPU_RUNS and GPU_RUNS hold one folder per optimizer with the run's log.jsonl (its config record:
lr, trainer, device, date, git revision; its summary record: the final numbers), read by compare.py. The table: each optimizer's default
lr, final val loss on both trainers and their difference (none where the two ran different lrs, e.g.
after a default changed), state bytes/param, the peak memory each
trainer measured (CPU: the ledger's high-water mark; GPU: device total - free, CUDA context included)
and tok/s. A missing run is a blank cell; an optimizer the GPU trainer does not run says so.
Standard library only.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import read_run  # noqa: E402  (the one reader of a run's log.jsonl: config + summary records)


def runs(root):
    """{optimizer: (summary, config)} for every folder of root whose log.jsonl has a summary record."""
    out = {}
    if not os.path.isdir(root):
        sys.exit(f"default_run_table: {root} is not a folder of runs (one folder per optimizer)")
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if not os.path.isfile(os.path.join(d, "log.jsonl")):
            continue
        config, summary, _, _ = read_run(d)
        if summary is not None:
            out[name] = (summary, config or {})
    return out


def fmt(x, spec):
    return format(float(x), spec) if x not in (None, "") else ""


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    cpu, gpu = runs(sys.argv[1]), runs(sys.argv[2])
    if not cpu and not gpu:
        sys.exit("default_run_table: no run with a summary record in either folder")
    order = ["adamw", "adam", "adam8bit", "adamw8bit", "paged_adamw8bit", "adamw4bit", "adafactor", "came",
             "adam_mini", "galore_adamw", "muon", "sgd", "sgdm", "sgdm8bit", "lion", "lion8bit", "sophia",
             "lomo", "adalomo"]
    names = [n for n in order if n in cpu or n in gpu] + sorted((set(cpu) | set(gpu)) - set(order))

    def who(runs_):
        cfgs = [c for _, c in runs_.values() if c]
        if not cfgs:
            return "unknown"
        c = cfgs[0]
        dates = sorted(x.get("date", "")[:10] for x in cfgs)
        revs = sorted({x.get("git", "?") for x in cfgs})
        return f"{c.get('device') or c.get('host', '?')}, {dates[0]}..{dates[-1]}, git {', '.join(revs)}"

    print("| optimizer | lr | val loss CPU | val loss GPU | GPU - CPU | state B/param | peak MiB CPU (ledger) | "
          "peak MiB GPU (device) | tok/s CPU | tok/s GPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        c = cpu.get(n, ({}, {}))
        g = gpu.get(n, ({}, {}))
        cs, cc = c
        gs, gc = g
        def lr_of(c):
            if not c:
                return ""
            if n == "adafactor" and c.get("relative_step"):
                return "relative"
            return f"{float(c['lr']):.3g}" if "lr" in c else "?"  # the fp32 value: 0.00100000005 is 1e-3
        lr_c, lr_g = lr_of(cc), lr_of(gc)
        lr = lr_c or lr_g
        vc, vg = cs.get("val_loss"), gs.get("val_loss")
        diff = f"{vg - vc:+.4f}" if vc is not None and vg is not None else ""
        if lr_c and lr_g and lr_c != lr_g:  # not the same run: no difference to show
            lr, diff = f"{lr_c} (GPU: {lr_g})", "other lr"
        bpp = fmt(cs.get("state_bytes_per_param", gs.get("state_bytes_per_param")), ".4f")
        gpu_val = fmt(vg, ".4f") if gs else "CPU only"
        print(f"| {n} | {lr} | {fmt(vc, '.4f')} | {gpu_val} | {diff} | {bpp} | {fmt(cs.get('peak_mib'), '.1f')} | "
              f"{fmt(gs.get('peak_mib'), '.1f')} | {fmt(cs.get('tok_per_s'), '.0f')} | {fmt(gs.get('tok_per_s'), '.0f')} |")
    print()
    print(f"CPU runs: {who(cpu)}. GPU runs: {who(gpu)}.")


if __name__ == "__main__":
    main()

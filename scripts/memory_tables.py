#!/usr/bin/env python3
"""scripts/memory_tables.py: the article's memory tables from our exact ledgers (standard library only).

Called by scripts/memory_table.sh as `python3 scripts/results.py memory DIR`; reads
DIR/ledger/SIZE__OPT.txt (one `-memory-only 1` printout each), DIR/sizes.txt and
scripts/article_figures.tsv; returns the markdown and writes DIR/plot/*.dat for scripts/plot.sh.

"GB" is 10^9 bytes throughout, as the article counts (1B params x 16 B = 16 GB); "80 GB" GPUs likewise.
The GPU counts and the memory per GPU (tables 4 and 5) come from DIR/ledger/7B__OPT__zN.txt: the trainer's
ZeRO-1 plan of N ranks (`-memory-only 1 -zero 1 -plan-world N`), the ledger of the rank that keeps the most,
or "noshard" for an optimizer that cannot shard (each GPU then keeps everything).
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from results import parse_ledger, cat_bytes  # noqa: E402

GB = 1e9
STATIC = ["params", "master", "grads", "optimizer"]  # the article's four components


def read_article(path):
    fig = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        name, bpp, src = line.rstrip("\n").split("\t")
        fig[name] = (None if bpp == "-" else float(bpp), src)  # "-": no single figure
    return fig


def formula_bpp(fig, o):
    """The article's formula: 2 (bf16 params) + 4 (fp32 master) + 2 (bf16 grads) + state."""
    return 2 + 4 + 2 + fig[o][0] if o in fig and fig[o][0] is not None else None


def g(x, spec=".1f"):
    return "—" if x is None else format(x, spec)


def main(d):
    here = os.path.dirname(os.path.abspath(__file__))
    fig = read_article(os.path.join(here, "article_figures.tsv"))
    # sizes.txt: "key nominal_params model_spec description" per line; meta.txt: B, T, command, date
    sizes = []
    for line in open(os.path.join(d, "sizes.txt")):
        if line.strip() and not line.startswith("#"):
            key, nominal, spec, desc = line.split(None, 3)
            sizes.append((key, float(nominal), spec, desc.strip()))
    opts = open(os.path.join(d, "opts.txt")).read().split()
    meta = open(os.path.join(d, "meta.txt")).read().strip()
    led = {}
    for key, _, _, _ in sizes:
        for o in opts:
            p = os.path.join(d, "ledger", "%s__%s.txt" % (key, o))
            led[key, o] = parse_ledger(open(p).read())
    # ZeRO-1 plans of the 7B shape: zled[o][n] = the largest rank's ledger at n ranks ("noshard": none)
    zled = {}
    for o in opts:
        zled[o] = {1: led["7B", o]}
        n = 2
        while True:
            p = os.path.join(d, "ledger", "7B__%s__z%d.txt" % (o, n))
            if not os.path.exists(p):
                if n > 16:
                    break
                n += 1
                continue
            text = open(p).read()
            if text.strip() == "noshard":
                zled[o] = None
                break
            zled[o][n] = parse_ledger(text)
            n += 1

    def static(key, o):
        return sum(cat_bytes(led[key, o], c) for c in STATIC)

    def acts(key, o):
        return cat_bytes(led[key, o], "activations")

    out = ["# Memory tables: the article's formula next to our exact ledger\n", "```\n%s\n```\n" % meta]
    out.append("Shapes (GPT-2 architecture, vocabulary 50257 padded to 50304, 1024 positions, tied LM head):\n")
    out.append("| size | shape L:C:heads | exact parameters |")
    out.append("|---|---|---|")
    for key, nominal, spec, desc in sizes:
        out.append("| %s | %s (%s) | %s |" % (key, spec, desc, format(led[key, opts[0]]["params"], ",")))
    out.append("\nOurs = the ledger's params + master + grads + optimizer state, bf16 mixed precision (the "
               "trainer's default), exact bytes for the shape above. Formula = the article's 2 + 4 + 2 + "
               "state bytes/param (scripts/article_figures.tsv) times the nominal size. Activations are the CPU "
               "trainer's (fp32, everything kept for backward) at the stated B and T, shown on their own row; "
               "the CPU-only fp32 scratch lines (workspace) are left out. GB = 10^9 bytes.\n")

    # 1. training memory by optimizer and size
    out.append("## 1. Training memory by optimizer (mixed precision): formula / ours, GB\n")
    out.append("| optimizer | " + " | ".join("%s formula | %s ours" % (k, k) for k, _, _, _ in sizes) + " |")
    out.append("|---|" + "---|---|" * len(sizes))
    for o in opts:
        cells = []
        for key, nominal, _, _ in sizes:
            fb = formula_bpp(fig, o)
            cells.append(g(fb * nominal / GB if fb is not None else None))
            cells.append(g(static(key, o) / GB))
        out.append("| %s | %s |" % (o, " | ".join(cells)))
    out.append("| activations (B, T above; any optimizer) | " +
               " | ".join("— | %s" % g(acts(k, "adamw") / GB) for k, _, _, _ in sizes) + " |")

    # 2. where the memory goes, 7B
    k7 = "7B"
    out.append("\n## 2. Where the memory goes: %s (%s), AdamW\n" % (k7, dict((s[0], s[2]) for s in sizes)[k7]))
    total7 = static(k7, "adamw") + acts(k7, "adamw")
    st7 = static(k7, "adamw")
    out.append("| component | article B/param | article GB (7e9 params) | ours bytes | ours GB | ours B/param | share of the four | share incl. activations |")
    out.append("|---|---|---|---|---|---|---|---|")
    n7 = led[k7, "adamw"]["params"]
    art = {"params": 2, "master": 4, "grads": 2, "optimizer": 8}
    for c in STATIC + ["activations"]:
        b = cat_bytes(led[k7, "adamw"], c)
        out.append("| %s | %s | %s | %s | %.2f | %.4f | %s | %.1f%% |" % (
            c, g(art.get(c), "d") if c in art else "—", g(art[c] * 7.0) if c in art else "—", format(b, ","),
            b / GB, b / n7, ("%.1f%%" % (100.0 * b / st7)) if c in art else "—", 100.0 * b / total7))
    out.append("| total | 16 | 112.0 | %s | %.2f | %.4f | 100%% | 100%% |" % (format(total7, ","), total7 / GB, total7 / n7))

    # 3. state bytes per parameter, article vs ours
    out.append("\n## 3. Optimizer state bytes/param: the article's figure vs ours\n")
    small = sizes[0][0]
    out.append("| optimizer | article | ours, %s | ours, %s | where they differ |" % (small, k7))
    out.append("|---|---|---|---|---|")
    why = {
        "adafactor": "Without momentum (HF's default) Adafactor keeps only a row and a column vector per matrix "
                     "plus a full v for biases and LayerNorm gains: about 0.01 B/param or less on GPT shapes (0.0103 on d12, less as models widen), not {a}.",
        "came": "CAME factors its confidence (instability) statistic like the second moment; only the first "
                "moment is full size, so ~4 B/param (plus the small row/column vectors), not {a}.",
        "adam8bit": "1 byte each for m and v plus one fp32 absmax per 256-element block and per state "
                    "(2 + 8/256 = 2.03); tensors under 4096 elements keep fp32 state, hence a little more than {a}.",
        "adalomo": "Factored second moment like Adafactor: row/column vectors plus a full v for vectors.",
        "muon": "Muon keeps one fp32 momentum (4 B/param) on the hidden matrices only; the embeddings and vectors "
                "get AdamW's m and v (8 B/param), hence a little over {a}.",
        "adam_mini": "Adam-mini's m is full size (4 B/param); its v is one value per block (per head for q and k, "
                     "per row elsewhere, per token for wte), hence a little over {a}.",
        "adamw4bit": "4 bits each for m and v plus their scales (m: one fp32 per 128 elements; v: a row and a column "
                     "maximum per matrix); tensors of 4096 elements or fewer keep fp32 state, hence a little over {a}.",
        "lion8bit": "1 byte per element plus one fp32 absmax per 256-element block (1 + 4/256 = 1.0156); tensors "
                    "under 4096 elements keep fp32 state.",
        "galore_adamw": "No single figure: Adam runs in the rank-128 projected space of each block matrix (m and v of "
                        "the projected gradient, plus the fp32 projector), the embeddings and vectors keep plain "
                        "AdamW (8 B/param); so it falls as the model widens.",
    }
    why["sgdm8bit"] = why["lion8bit"]
    why["adamw8bit"] = why["paged_adamw8bit"] = why["adam8bit"]
    for o in opts:
        n_s, n_7 = led[small, o]["params"], led[k7, o]["params"]
        ours_s = cat_bytes(led[small, o], "optimizer") / n_s
        ours_7 = cat_bytes(led[k7, o], "optimizer") / n_7
        a = fig.get(o, (None, ""))[0]
        differs = a is None or abs(ours_7 - a) > 0.005
        note = why.get(o, "").format(a=g(a, "g")) if differs else ""
        if differs and not note:
            note = "ours %.4f vs %s" % (ours_7, g(a, "g"))
        out.append("| %s | %s | %.4f | %.4f | %s |" % (o, g(a, "g"), ours_s, ours_7, note or "same"))
    out.append("\nThe ledger also shows what no state figure does: lomo and adalomo update inside the backward "
               "pass and never hold the model's full gradient (their grads line is one layer and the "
               "embedding, fp32), so their totals in table 1 are below 2 + 4 + 2 + state.\n")

    # 4. minimum number of 80 GB GPUs for full fine-tuning of 7B: the trainer's ZeRO-1 plan
    def fewest(o, with_acts):
        """(n, GB on the largest GPU) for the fewest ZeRO-1 ranks whose largest rank fits in 80 GB."""
        plans = zled[o] if zled[o] is not None else {1: led[k7, o]}
        for n in sorted(plans):
            L = plans[n]
            b = sum(cat_bytes(L, c) for c in STATIC) + (cat_bytes(L, "activations") if with_acts else 0)
            if b <= 80 * GB:
                return n, b / GB
        return None, None

    out.append("## 4. Minimum number of 80 GB GPUs for full fine-tuning of a 7B model\n")
    out.append("Formula: ceil(the article's total / 80 GB) for nominal 7e9 parameters, the memory spread evenly over "
               "the GPUs (the article's division). Ours: data parallel with ZeRO-1 as the trainer runs it (`-zero 1`: "
               "every GPU keeps the bf16 params and grads whole, its shard of the fp32 master and of the optimizer "
               "state), from the trainer's own plan of N ranks (`-memory-only 1 -zero 1 -plan-world N` on the 6.7B "
               "shape): the fewest N whose largest rank fits in 80 GB, and that rank's GB. lomo and adalomo do not "
               "shard (every GPU keeps everything). '>16': not within 16 GPUs; ZeRO-1 never goes below the "
               "unsharded params + grads (4 B/param, %.1f GB here).\n" % (
                   (cat_bytes(led[k7, "adamw"], "params") + cat_bytes(led[k7, "adamw"], "grads")) / GB))
    out.append("| optimizer | formula GB | GPUs (formula) | ours GB, 1 GPU (4 components) | GPUs (ours, ZeRO-1) | GB per GPU there | GPUs (ours + activations) | GB per GPU there |")
    out.append("|---|---|---|---|---|---|---|---|")
    gpus_rows = []
    for o in opts:
        fb = formula_bpp(fig, o)
        fgb = fb * 7e9 / GB if fb is not None else None
        n1, g1 = fewest(o, False)
        n2, g2 = fewest(o, True)
        out.append("| %s | %s | %s | %.1f | %s | %s | %s | %s |" % (
            o, g(fgb), g(math.ceil(fgb / 80 - 1e-12), "d") if fgb is not None else "—", static(k7, o) / GB,
            n1 if n1 else ">16", g(g1), n2 if n2 else ">16", g(g2)))
        gpus_rows.append(o)

    # 5. memory per GPU with ZeRO-1, 7B
    ns = [1, 2, 4, 8]
    C7 = int(dict((x[0], x[2]) for x in sizes)[k7].split(":")[1])
    wte7 = 50304 * C7
    out.append("\n## 5. Memory per GPU with ZeRO-1, 7B: the largest rank's params + master + grads + state, GB\n")
    out.append("The trainer's plan of N data-parallel ranks with `-zero 1` (`-memory-only 1 -zero 1 -plan-world N`), the "
               "ledger of the rank that keeps the most; activations (%.1f GB per GPU at the B, T above) come on top. "
               "The sharded part (fp32 master + state) shrinks as 1/N; the bf16 params and grads do not. "
               "Whole-tensor shards (muon, adam_mini, adamw4bit, galore_adamw) keep the %.0fM-parameter token "
               "embedding on one rank, so their largest rank sits above the even share.\n" % (
                   acts(k7, "adamw") / GB, wte7 / 1e6))
    out.append("| optimizer | " + " | ".join("%d GPU%s" % (n, "s" if n > 1 else "") for n in ns) + " |")
    out.append("|---|" + "---|" * len(ns))
    for o in opts:
        cells = []
        for n in ns:
            if zled[o] is None:
                cells.append("%.1f (no shard)" % (static(k7, o) / GB) if n > 1 else "%.1f" % (static(k7, o) / GB))
            elif n in zled[o]:
                cells.append("%.1f" % (sum(cat_bytes(zled[o][n], c) for c in STATIC) / GB))
            else:
                cells.append("—")
        out.append("| %s | %s |" % (o, " | ".join(cells)))

    # plot data: stacked components for 7B; totals per size
    pd = os.path.join(d, "plot")
    os.makedirs(pd, exist_ok=True)
    with open(os.path.join(pd, "memory_7b.dat"), "w") as f:
        f.write("opt params master grads optimizer activations\n")
        for o in opts:
            f.write("%s %s\n" % (o, " ".join("%.4f" % (cat_bytes(led[k7, o], c) / GB)
                                             for c in STATIC + ["activations"])))
    with open(os.path.join(pd, "memory_sizes.dat"), "w") as f:
        f.write("size %s\n" % " ".join(opts))
        for key, _, _, _ in sizes:
            f.write("%s %s\n" % (key, " ".join("%.4f" % (static(key, o) / GB) for o in opts)))
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(main(sys.argv[1]))

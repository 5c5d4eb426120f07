#!/usr/bin/env python3
"""scripts/reproduce.py: writes the article's tables beside ours (results/article/README.md); called by
scripts/reproduce.sh (`make reproduce`), which first makes the ledgers and the runs. Standard library.

  python3 scripts/reproduce.py --memory DIR --loss LABEL=PRESET=DIR [--loss ...] --out FILE
        [--seeds N] [--steps N] [--plant TABLE.KEY=VALUE ...] [--command C] [--machine M] [--git G]

--memory DIR: DIR/SIZE__OPT.txt, one `train_cpu -memory-only 1 -model SHAPE -b 1 -t 1024 -opt OPT`
printout each (SIZE: 1B 7B 13B 70B 175B, the shapes of scripts/memory_table.sh). --loss: one section of
loss tables per source: a label ("GPU", "CPU, small version", ...), the scripts/loss_sweep.py preset
whose trainer flags the runs used, and the table folder (OUT/pretrain of scripts/loss_table.sh).
--plant replaces one of the article's numbers (a test shows the verdict column can say "differs"):
TABLE is breakdown, state, sizes, gpus, eightbit or factored; KEY a row (e.g. eightbit.adamw8bit=30).

Every number of ours is read here from the ledgers and the run logs (scripts/results.py reads them);
the article's numbers are the ARTICLE dict below, from its tables, cited by title and link.
"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import results as R  # noqa: E402
import loss_sweep as LS  # noqa: E402  (its presets: the trainer flags of each kind of run)

TITLE = "The Hidden Cost of Adaptive Optimizers"
LINK = "https://fridayswithfaraday.com/posts/memory-efficient-adam-optimizer-implementations-2019"
GB = 1e9
NOMINAL = {"1B": 1e9, "7B": 7e9, "13B": 13e9, "70B": 70e9, "175B": 175e9}
SHAPES = {"1B": "24:2048:16", "7B": "32:4096:32", "13B": "40:5120:40", "70B": "80:8192:64", "175B": "96:12288:96"}

# The article's numbers, from its tables (see /work/shared/reference/article.md for where each lives).
ARTICLE = {
    # Adam in mixed precision, bytes per parameter ("Adam memory breakdown")
    "breakdown": {"params": 2.0, "master": 4.0, "grads": 2.0, "optimizer": 8.0},
    # optimizer state bytes per parameter ("Optimizer Comparison Summary")
    "state": {"sgd": 0.0, "sgdm": 4.0, "adamw": 8.0, "adamw8bit": 2.0, "adafactor": 1.5, "came": 2.0,
              "lion": 4.0, "sophia": 8.0},
    # training memory with Adam, total GB ("Training Memory Breakdown by Optimizer")
    "sizes": {"1B": 16.0, "7B": 112.0, "13B": 208.0, "70B": 1120.0, "175B": 2800.0},
    # LLaMA-7B full fine-tuning without activations: total GB and min 80 GB GPUs
    "gpus": {"adamw": 2, "adamw8bit": 1, "adafactor": 1, "sgdm": 2},
    "gpus_gb": {"adamw": 112.0, "adamw8bit": 70.0, "adafactor": 66.5, "sgdm": 84.0},
    # 8-bit Adam vs Adam: GPT-2 (117M) on WikiText, perplexity
    "eightbit": {"adamw": 21.1, "adamw8bit": 21.2, "adam8bit": 21.2, "paged_adamw8bit": 21.2},
    # Adam vs Adafactor vs CAME: GPT-2 Medium on OpenWebText, loss
    "factored": {"adamw": 3.18, "adafactor-default": 3.25, "adafactor": 3.25, "came": 3.19},
}
STATE_NAMES = {"sgd": "SGD", "sgdm": "SGD + momentum", "adamw": "Adam / AdamW", "adamw8bit": "8-bit Adam",
               "adafactor": "Adafactor", "came": "CAME", "lion": "Lion", "sophia": "Sophia"}
GPU_NAMES = {"adamw": "AdamW", "adamw8bit": "8-bit AdamW", "adafactor": "Adafactor", "sgdm": "SGD+Momentum"}
# (our row key, the article's name for it, our label) of the two quality tables
EIGHTBIT_ROWS = [("adamw", "Standard Adam", "adamw"), ("adamw8bit", "8-bit Adam", "adamw8bit"),
                 ("adam8bit", "8-bit Adam", "adam8bit (no decoupled wd)"),
                 ("paged_adamw8bit", "8-bit Adam (paged)", "paged_adamw8bit"),
                 ("adamw4bit", "(not in the article)", "adamw4bit")]
FACTORED_ROWS = [("adamw", "Adam", "adamw"), ("adafactor-default", "Adafactor", "adafactor (relative step)"),
                 ("adafactor", "Adafactor", "adafactor (fixed lr, swept)"), ("came", "CAME", "came")]


def plant(specs):
    for s in specs:
        k, _, v = s.partition("=")
        table, _, key = k.partition(".")
        if table not in ARTICLE or not key or not v:
            sys.exit("error: --plant %r: give TABLE.KEY=VALUE, TABLE one of %s" % (s, ", ".join(ARTICLE)))
        ARTICLE[table][key] = float(v)


def sgn(x, spec):
    return "n/a" if x is None else ("+" if x >= 0 else "") + format(x, spec)


# ---------------------------------------------------------------- memory
def ledgers(d):
    led = {}
    for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if f.endswith(".txt") and "__" in f:
            size, _, opt = f[:-4].partition("__")
            led[size, opt] = R.parse_ledger(open(os.path.join(d, f)).read())
    return led


def four(led):
    """params, master, grads, optimizer bytes of one ledger (the article's four components)."""
    return [R.cat_bytes(led, c) for c in ("params", "master", "grads", "optimizer")]


def memory_sections(d):
    led = ledgers(d)
    out = []
    a = led.get(("7B", "adamw"))
    out.append("## Memory: Adam's 16 bytes per parameter (mixed precision)\n")
    if a is None:
        return out + ["no ledger in %s: run scripts/reproduce.sh\n" % d]
    n = a["params"]
    out.append("The article's breakdown against our trainer's ledger for the 7B shape (%s, %s parameters, "
               "AdamW, bf16 with fp32 master weights; `train_cpu -memory-only 1`: exact bytes, nothing "
               "allocated). Verdict: agrees when our bytes/param equal the article's to 0.005.\n" % (SHAPES["7B"], format(n, ",")))
    out.append("| component | article B/param | article GB (7e9 params) | ours B/param | ours GB (this shape) | verdict |")
    out.append("|---|---|---|---|---|---|")
    names = {"params": "bf16 params", "master": "fp32 master weights", "grads": "bf16 gradients", "optimizer": "optimizer state (m + v)"}
    tot_a = tot_o = 0.0
    for c, b in zip(("params", "master", "grads", "optimizer"), four(a)):
        art = ARTICLE["breakdown"][c]
        tot_a += art
        tot_o += b
        out.append("| %s | %g | %.0f | %.4f | %.2f | %s |" % (names[c], art, art * 7, b / n, b / GB, bpp_verdict(b / n, art, 0.005)))
    out.append("| total | %g | %.0f | %.4f | %.2f | %s |\n" % (tot_a, tot_a * 7, tot_o / n, tot_o / GB, bpp_verdict(tot_o / n, tot_a, 0.005)))

    out.append("## Memory: optimizer state bytes per parameter\n")
    out.append("The article's summary figures against the ledger's optimizer-state bytes on the 7B and 1B shapes. "
               "Its figures are rounded (\"~2\"), so the verdict allows 5% (0.05 B for a zero).\n")
    out.append("| optimizer | article | ours, 7B | ours, 1B | verdict |")
    out.append("|---|---|---|---|---|")
    for o, art in ARTICLE["state"].items():
        l7, l1 = led.get(("7B", o)), led.get(("1B", o))
        if l7 is None:
            out.append("| %s | %g | not computed | | |" % (o, art))
            continue
        b7 = R.cat_bytes(l7, "optimizer") / l7["params"]
        b1 = "n/a" if l1 is None else "%.4f" % (R.cat_bytes(l1, "optimizer") / l1["params"])
        out.append("| %s (%s) | %g | %.4f | %s | %s |" % (o, STATE_NAMES.get(o, o), art, b7, b1, bpp_verdict(b7, art, max(0.05 * art, 0.05))))
    out.append("\nWhere they differ: Adafactor here keeps no first moment (HuggingFace's default) and only a row and a "
               "column vector per matrix, so its state is near zero, not 1.5; CAME factors its confidence "
               "statistic like the second moment and keeps one full fp32 first moment, about 4 B/param, not 2 "
               "(the article's own CAME code keeps a full-size confidence tensor, which would make it 8).\n")

    out.append("## Memory: training memory by model size, Adam (params + master + grads + state, no activations)\n")
    out.append("The article multiplies 16 B/param by a nominal size; ours is the ledger of a GPT shape near that "
               "size (scripts/memory_table.sh's shapes), so the GB differ by the shapes' parameter counts and the "
               "verdict compares bytes per parameter (to 0.005).\n")
    out.append("| size | article GB | our shape | its parameters | ours GB | article B/param | ours B/param | ours at the nominal size, GB | verdict |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for size, art in ARTICLE["sizes"].items():
        l = led.get((size, "adamw"))
        if l is None:
            out.append("| %s | %g | not computed | | | | | | |" % (size, art))
            continue
        b = sum(four(l))
        bpp, abpp = b / l["params"], art * GB / NOMINAL[size]
        out.append("| %s | %s | %s | %s | %.1f | %.2f | %.4f | %.1f | %s |" % (
            size, format(art, ",g"), SHAPES[size], format(l["params"], ","), b / GB, abpp, bpp,
            bpp * NOMINAL[size] / GB, bpp_verdict(bpp, abpp, 0.005)))
    out.append("")

    out.append("## Memory: 80 GB GPUs needed for a full fine-tune of a 7B model\n")
    out.append("The article's totals (params + master + grads + state, no activations) for LLaMA-7B and its GPU "
               "counts, the memory spread evenly (total / 80 GB, rounded up). Ours: the ledger's bytes per "
               "parameter on the 7B shape times 7e9 (the article's size), the same division; and the total of "
               "our exact 6.65B shape. (The trainer's own ZeRO-1 plan, which keeps the bf16 params and grads "
               "whole on every GPU, is results/memory table 4.)\n")
    out.append("| optimizer | article GB | article GPUs | ours GB at 7e9 | ours GPUs | ours GB, our shape | verdict |")
    out.append("|---|---|---|---|---|---|---|")
    for o, gpus in ARTICLE["gpus"].items():
        l = led.get(("7B", o))
        if l is None:
            out.append("| %s | | %d | not computed | | | |" % (o, gpus))
            continue
        b = sum(four(l))
        gb7 = b / l["params"] * 7e9 / GB
        ours = math.ceil(gb7 / 80.0 - 1e-9)
        art_gb = ARTICLE["gpus_gb"].get(o)
        v = ("agrees: %d GPU%s" % (ours, "s" if ours > 1 else "")) if ours == int(gpus) else "differs: %d GPUs, not %d" % (ours, gpus)
        if art_gb and abs(gb7 - art_gb) > 0.01 * art_gb:
            v += "; the total differs by %s GB" % sgn(gb7 - art_gb, ".1f")
        out.append("| %s (%s) | %s | %d | %.1f | %d | %.1f | %s |" % (o, GPU_NAMES.get(o, o), "n/a" if art_gb is None else "%g" % art_gb,
                                                               gpus, gb7, ours, b / GB, v))
    out.append("")
    return out


def bpp_verdict(ours, art, tol):
    d = ours - art
    return "agrees" + (" (exact)" if abs(d) < 5e-5 else " (%s)" % sgn(d, ".4f")) if abs(d) <= tol else "differs by %s B/param" % sgn(d, ".2f")


# ---------------------------------------------------------------- loss tables
def preset_facts(preset, steps):
    fl = LS.PRESETS[preset]["pretrain"].split()
    get = lambda f, dflt: fl[fl.index(f) + 1] if f in fl else dflt  # noqa: E731
    x = int(steps or get("-x", 200))
    b, t = int(get("-b", 8)), int(get("-t", 64))
    fl2 = list(fl)
    if steps:
        fl2[fl2.index("-x") + 1] = str(steps)
    return {"model": get("-model", "d4"), "B": b, "T": t, "steps": x, "tokens": x * b * t, "flags": " ".join(fl2),
            "val": int(get("-m", 8)) * b * t}


def loss_verdict(r, base, art_d):
    """(our Δ val loss vs AdamW, its se, the verdict) for one row."""
    if r is None or r["val"] is None:
        return None, None, "not run yet"
    if r is base:
        return None, None, "baseline (absolute values: other model, data and tokens)"
    if base is None or base["val"] is None:
        return None, None, "no AdamW baseline yet"
    d = r["val"] - base["val"]
    se = None
    if r["val_sd"] is not None and base["val_sd"] is not None:
        se = math.sqrt(r["val_sd"] ** 2 / r["nseeds"] + base["val_sd"] ** 2 / base["nseeds"])
    if art_d is None:
        return d, se, "not in the article"
    diff = d - art_d
    if se is None:
        return d, se, "no seed spread yet (differs from the article's Δ by %s)" % sgn(diff, ".4f")
    tol = 2 * se
    if abs(diff) <= tol:
        return d, se, "agrees within our seed spread (off by %s; 2 se = %.4f)" % (sgn(diff, ".4f"), tol)
    return d, se, "differs by %s (beyond 2 se = %.4f)" % (sgn(diff, ".4f"), tol)


def status_note(r, nseeds):
    notes = []
    if r is None:
        return ""
    if not r["complete"]:
        notes.append(r["note"] or "sweep incomplete")
    elif r["note"]:
        notes.append(r["note"])
    if r["nseeds"] + r["diverged_seeds"] < nseeds:
        notes.append("%d of %d seeds" % (r["nseeds"] + r["diverged_seeds"], nseeds))
    if r["diverged_seeds"]:
        notes.append("%d seed(s) diverged" % r["diverged_seeds"])
    if r["failed"] and r["val"] is None:
        notes.append("failed: " + r["failed"])
    return " (" + "; ".join(notes) + ")" if notes else ""


def loss_section(label, preset, d, nseeds, steps, grids=None):
    f = preset_facts(preset, steps)
    rows = {r["key"]: r for r in R.table_rows(d, R.SWEEP_SEED, nseeds, grids)} if os.path.isdir(d) else {}
    base = rows.get("adamw")
    out = ["## Loss: %s\n" % label,
           "GPT-2 `-model %s`, B=%d, T=%d, %d steps: **%s training tokens per run** (val: %s tokens of the GCIDE "
           "val split); trainer flags `%s` (+ `-opt`, `-l`, `-seed`). Each optimizer at its best lr of a sweep "
           "with seed %d, then that lr with the other seeds: val loss mean ± sample sd over the seeds; Δ = our "
           "mean minus AdamW's ± its standard error. The verdict compares Δ val loss with the article's Δ as a "
           "loss (for perplexities ln(ppl / ppl_Adam)): it agrees when they are within 2 standard errors. "
           "Runs: `%s`.\n" % (f["model"], f["B"], f["T"], f["steps"], format(f["tokens"], ","), format(f["val"], ","),
                            f["flags"], R.SWEEP_SEED, d)]
    if not rows:
        return out + ["No runs yet.\n"], rows
    reused = sorted(os.path.relpath(os.path.join(dp), d) for dp, _, fs in os.walk(d) if "run.txt" in fs
                    and open(os.path.join(dp, "run.txt")).read().startswith("reused:"))
    if reused:
        out.append("Reused finished runs (the same trainer flags; their run.txt says from where): %s.\n" % ", ".join(reused))
    if any(not r["complete"] or not r["seeds_complete"] for r in rows.values()):
        out.append("**Partial:** rows marked \"sweep incomplete\" or \"k of %d seeds\" are not finished; the same "
                   "command continues them (`--plan` lists what is left).\n" % nseeds)

    a8 = ARTICLE["eightbit"]
    out.append("### 8-bit Adam vs 32-bit Adam (article: GPT-2 117M on WikiText, perplexity)\n")
    out.append("| ours | article's row | article ppl | article Δ ppl (as loss) | best lr | seeds | our val loss | our ppl | our Δ ppl | our Δ loss vs AdamW ± se | verdict |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, aname, ours in EIGHTBIT_ROWS:
        r = rows.get(key)
        art = a8.get(key)
        art_d = None if art is None or key == "adamw" else math.log(art / a8["adamw"])
        out.append(quality_row(r, base, ours, aname, art, None if art is None else ("(baseline)" if key == "adamw" else
                   "%s (%s)" % (sgn(art - a8["adamw"], ".2f"), sgn(art_d, ".4f"))), art_d, nseeds, ppl=True))
    out.append("")
    af = ARTICLE["factored"]
    out.append("### Adam vs Adafactor vs CAME (article: GPT-2 Medium on OpenWebText, loss)\n")
    out.append("| ours | article's row | article loss | article Δ loss | best lr | seeds | our val loss | our ppl | our Δ ppl | our Δ loss vs AdamW ± se | verdict |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, aname, ours in FACTORED_ROWS:
        r = rows.get(key)
        if r is None and key == "adafactor":
            continue   # the fixed-lr Adafactor row is an extra (scripts/reproduce.sh --extras)
        art = af.get(key)
        art_d = None if art is None or key == "adamw" else art - af["adamw"]
        if r is not None and key == "adafactor-default":
            r = dict(r, lr="relative step")
        out.append(quality_row(r, base, ours, aname, art, None if art is None else ("(baseline)" if key == "adamw" else sgn(art_d, ".2f")),
                               art_d, nseeds, ppl=False))
    out.append("")
    return out, rows


EXTRA_ROWS = ("adam8bit", "paged_adamw8bit", "adamw4bit", "adafactor")
EXTRAS = [0]


def quality_row(r, base, ours, aname, art, art_dtxt, art_d, nseeds, ppl):
    d, se, v = loss_verdict(r, base, art_d)
    if r is None and ours.split()[0] in EXTRA_ROWS and not EXTRAS[0]:
        v = "not run (an extra: scripts/reproduce.sh --extras)"
    if r is None or r["val"] is None:
        return "| %s%s | %s | %s | %s | | | not run yet | | | | %s |" % (ours, status_note(r, nseeds), aname, "n/a" if art is None else "%g" % art, art_dtxt or "n/a", v)
    vtxt = "%.4f ± %s" % (r["val"], "n/a" if r["val_sd"] is None else "%.4f" % r["val_sd"])
    dp = None if base is None or base["val"] is None else math.exp(r["val"]) - math.exp(base["val"])
    dtxt = "(baseline)" if r is base else ("n/a" if d is None else sgn(d, ".4f") + (" ± %.4f" % se if se is not None else ""))
    return "| %s%s | %s | %s | %s | %s | %d | %s | %.2f | %s | %s | %s |" % (
        ours, status_note(r, nseeds), aname, "n/a" if art is None else "%g" % art, art_dtxt or "n/a", r["lr"], r["nseeds"], vtxt,
        math.exp(r["val"]), "(baseline)" if r is base else sgn(dp, ".2f"), dtxt, v)


def findings(rows, label):
    """One paragraph of what this section's numbers show, from the numbers."""
    base = rows.get("adamw")
    if not base or base["val"] is None:
        return []
    bits = []
    for key, name in (("adamw8bit", "8-bit AdamW"), ("adafactor-default", "Adafactor (relative step)"), ("came", "CAME")):
        r = rows.get(key)
        if r and r["val"] is not None:
            d, se, _ = loss_verdict(r, base, None)
            bits.append("%s %s AdamW by %.4f%s" % (name, "ends above" if d > 0 else "ends below", abs(d),
                                                   "" if se is None else " (± %.4f)" % se))
    return ["In the %s: %s.\n" % (label, "; ".join(bits))] if bits else []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", required=True)
    ap.add_argument("--loss", action="append", default=[], help="LABEL=PRESET=DIR")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--plant", action="append", default=[])
    ap.add_argument("--grid", action="append", default=[], help="OPT=LR,LR,...: a planned sweep (as loss_table.sh's)")
    ap.add_argument("--command", default="scripts/reproduce.sh")
    ap.add_argument("--machine", default="")
    ap.add_argument("--git", default="")
    ap.add_argument("--date", default="")
    ap.add_argument("--extras", type=int, default=0, help="1: the extra rows were asked for")
    ap.add_argument("--gpu-command", default="", help="what to run for the GPU version (when it has not run)")
    args = ap.parse_args()
    plant(args.plant)
    EXTRAS[0] = args.extras

    head = ["# The article's tables beside ours\n",
            "The article: [%s](%s). Its tables that concern this trainer, each beside our numbers and a verdict "
            "per row. Written by `%s` on %s (%s; git %s). Every number of ours is read from the trainer's ledger "
            "(`-memory-only 1`) or from the run logs under the folders named below; rerunning the command redoes "
            "nothing that is finished.\n" % (TITLE, LINK, args.command, args.date or "?", args.machine or "?", args.git or "?")]
    if args.plant:
        head.append("**Planted values (a test, not the article): %s.**\n" % ", ".join(args.plant))
    body = memory_sections(args.memory)
    para = []
    have_gpu = False
    for spec in args.loss:
        label, preset, d = spec.split("=", 2)
        grids = {o: [R.lr_index(x) for x in lrs.split(",")] for o, _, lrs in (g.partition("=") for g in args.grid)
                 if lrs != "default"}
        sec, rows = loss_section(label, preset, d, args.seeds, args.steps, grids)
        body += sec
        para += findings(rows, label)
        have_gpu |= preset == "gpu" and bool(rows)
    if not have_gpu and args.gpu_command:
        body += ["## Loss: GPT-2 124M on a GPU (not run yet)\n",
                 "The same tables at d12 (124M parameters), B=32, T=1024, 300 steps: %s training tokens per run "
                 "(`scripts/loss_table.sh --gpu`'s pre-training flags). On a machine with a CUDA GPU, each call of "
                 "at most 9 minutes runs what fits and the next call resumes:\n" % format(300 * 32 * 1024, ","),
                 "```\n%s\n```\n" % args.gpu_command]
    body += ["## What differs from the article's setup, and what our numbers show\n",
             "The article's quality rows are GPT-2 117M fine-tuned or trained on WikiText (8-bit Adam) and GPT-2 "
             "Medium (345M) pre-trained on OpenWebText (CAME), for token counts it does not give; ours train "
             "GPT-2-shaped models from scratch on the GCIDE dictionary text for the tokens per run stated above "
             "(a few hundred steps: the start of training, where the losses are still far above the article's), "
             "each optimizer at its own swept learning rate and %d seeds. So the absolute losses and perplexities "
             "are not comparable and are shown only for reference; the verdicts compare the difference to Adam, "
             "in loss units (a perplexity ratio is a loss difference), against our seed-to-seed spread. They can "
             "show whether, at our scale, 8-bit state costs nothing measurable and whether Adafactor and CAME "
             "fall behind Adam by about the article's margins; they cannot show what happens over a long run, on "
             "the article's data, or at its model sizes. The memory tables are exact bytes of our trainer, not "
             "measurements of the article's setup; where our layouts differ from the article's (Adafactor without "
             "a first moment, CAME's factored confidence) the verdict says so.\n" % args.seeds] + para
    body += ["Out of scope (other models and tasks): the article's BERT-Base, RoBERTa-Large, T5-3B, LLaMA-7B and "
             "ViT-Large rows of its 8-bit table, and the T5-Base, T5-Large and ViT-Base rows of its CAME table. Its "
             "decision framework is `./train -advise 1` (README, \"The decision guide\").\n"]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(head + body))
    print("wrote %s" % args.out, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

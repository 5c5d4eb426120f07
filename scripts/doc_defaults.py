#!/usr/bin/env python3
"""scripts/doc_defaults.py: the defaults the documentation states, checked against the code's (`-opt list`).

Where docs and optimizer headers state an optimizer's defaults, they must be the ones the trainer uses
(as scripts/doc_links.py keeps links on the code). Checked:
  - docs/*.md: in each section whose heading names optimizers (## came, ## sgd and sgdm), the paragraph
    that starts with **Defaults: its first "lr X", first "β = (a, b[, c])" and first "ε X" must equal
    the first named optimizer's lr, betas and eps (lr "relative": the paragraph must say "relative");
  - optim/*.c headers: the comment paragraph that starts with "// Defaults", against the file's first
    optimizer (its OPT_ entry's name);
  - any `NAME k=v ...` code span (NAME an optimizer): every k=v must be what -opt list prints.
Standard library only.

  python3 scripts/doc_defaults.py --check [--train ./train_cpu] FILE...   exit 1, a line per mismatch
"""
import re
import subprocess
import sys

NUM = r"([0-9][0-9.]*(?:e-?[0-9]+)?)"


def opt_list(train):
    out = subprocess.run([train, "-opt", "list"], capture_output=True, text=True, check=True).stdout
    d = {}
    for line in out.splitlines()[1:]:
        f = line.split()
        kv = {}
        for tok in f[2:]:
            m = re.match(r"^([a-z_0-9]+)=(\S+)$", tok)
            if not m:
                break
            kv[m.group(1)] = m.group(2)
        d[f[0]] = kv
    return d


def same(a, b):
    try:
        return float(a) == float(b)
    except ValueError:
        return a == b


def check_paragraph(where, opt, text, defaults):
    """Mismatches between a Defaults paragraph and opt's defaults."""
    bad = []
    want = defaults[opt]
    m = re.search(r"\blr (?:is )?" + NUM, text)
    if want.get("lr") == "relative":
        if "relative" not in text:
            bad.append("%s: %s's lr is the relative step; the Defaults paragraph does not say so" % (where, opt))
    elif m and not same(m.group(1), want.get("lr", "")):
        bad.append("%s: %s's default lr is stated as %s; the code's is %s" % (where, opt, m.group(1), want.get("lr")))
    m = re.search(r"β = \(([^)]*)\)", text)
    if m and "betas" in want:
        stated = [x.strip() for x in m.group(1).split(",")]
        ours = want["betas"].strip("()").split(",")
        if len(stated) != len(ours) or not all(same(a, b) for a, b in zip(stated, ours)):
            bad.append("%s: %s's betas are stated as (%s); the code's are %s" % (where, opt, m.group(1), want["betas"]))
    m = re.search(r"ε " + NUM + r"\b", text)
    if m and "eps" in want and not same(m.group(1), want["eps"]):
        bad.append("%s: %s's eps is stated as %s; the code's is %s" % (where, opt, m.group(1), want["eps"]))
    return bad


def check_md(path, text, defaults):
    bad = []
    names = sorted(defaults, key=len, reverse=True)
    opt = None
    paras = text.split("\n\n")
    line = 1
    for p in paras:
        for l in p.split("\n"):
            if l.startswith("#"):
                found = [(l.find(n), n) for n in names if re.search(r"(?<![a-z_0-9])" + n + r"(?![a-z_0-9])", l)]
                opt = min(found)[1] if found else None
        s = p.lstrip("\n")
        body = s[s.find("**Defaults"):] if "**Defaults" in s else None
        if body is not None and opt:
            bad += check_paragraph("%s:%d" % (path, line + s[:s.find("**Defaults")].count("\n")), opt, body, defaults)
        m = re.search(r"default lr[^.]*?ours is \**" + NUM, p)
        if m and opt and defaults[opt].get("lr") != "relative" and not same(m.group(1), defaults[opt]["lr"]):
            bad.append("%s:%d: %s's default lr is stated as %s; the code's is %s" % (path, line, opt, m.group(1), defaults[opt]["lr"]))
        bad += check_spans(path, line, p, defaults)
        line += p.count("\n") + 2
    return bad


def check_spans(path, line, text, defaults):
    bad = []
    for m in re.finditer(r"`([a-z_0-9]+)((?: [a-z_0-9]+=\S+)+)`", text):
        n = m.group(1)
        if n not in defaults:
            continue
        for tok in m.group(2).split():
            k, v = tok.split("=", 1)
            if k not in defaults[n] or not same(defaults[n][k], v):
                bad.append("%s:%d: `%s ...` states %s; -opt list says %s" % (path, line, n, tok, defaults[n].get(k, "(none)")))
    return bad


def check_c(path, text, defaults):
    m = re.search(r'\.name = "([a-z_0-9]+)"', text)
    if not m or m.group(1) not in defaults:
        return []
    lines = text.split("\n")
    bad = []
    for i, l in enumerate(lines):
        if l.startswith("// Defaults"):
            para = []
            for l2 in lines[i:]:
                if not l2.startswith("//") or l2.strip() == "//":
                    break
                para.append(l2[2:])
            para = re.sub(r"\beps ", "ε ", " ".join(para).replace("betas (", "β = ("))
            bad += check_paragraph("%s:%d" % (path, i + 1), m.group(1), para, defaults)
    return bad


def main(argv):
    if len(argv) < 3 or argv[1] != "--check":
        sys.stderr.write(__doc__)
        return 2
    args = argv[2:]
    train = "./train_cpu"
    if args[:1] == ["--train"]:
        train, args = args[1], args[2:]
    defaults = opt_list(train)
    bad = []
    for path in args:
        text = open(path, encoding="utf-8").read()
        bad += check_c(path, text, defaults) if path.endswith(".c") else check_md(path, text, defaults)
    for b in bad:
        print(b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

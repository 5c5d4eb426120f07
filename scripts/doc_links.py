#!/usr/bin/env python3
"""scripts/doc_links.py: the documentation's links to lines of code, kept on the code they name.

A link to a line, [`name` ...](../path/file.c#L123), must name what it points at: the first
identifier in backticks in its text is looked up in the file, and the link must point at its
definition (a line that starts at column 0 and has `name(` on it, not a declaration ending in `;`,
or `#define name`, or `struct name` / `typedef struct ... name`). Line numbers drift with every
edit; this finds them again. Standard library only.

  python3 scripts/doc_links.py --check FILE.md ...   exit 1, one line per link that is off or names
                                                   nothing it can find (test/sh/users.sh runs it)
  python3 scripts/doc_links.py --fix FILE.md ...     rewrites each link's #L to its name's definition
"""
import os
import re
import sys

LINK = re.compile(r"\[([^\]]*)\]\(([^)#\s]+)#L(\d+)\)")
NAME = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)")


def definition_line(path, name):
    """1-based line of name's definition in path, or 0."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    call = re.compile(r"\b" + re.escape(name) + r"\s*\(")
    macro = re.compile(r"^#\s*define\s+" + re.escape(name) + r"\b")
    for i, line in enumerate(lines):
        if macro.match(line):
            return i + 1
        if line[:1].isspace() or not line[:1] or line.startswith(("//", "#", "*", "/*")):
            continue
        if call.search(line) and not line.rstrip().endswith(";"):
            return i + 1
    return 0


def main(argv):
    if len(argv) < 3 or argv[1] not in ("--check", "--fix"):
        sys.stderr.write(__doc__)
        return 2
    fix = argv[1] == "--fix"
    problems = 0
    for doc in argv[2:]:
        with open(doc, encoding="utf-8") as f:
            text = f.read()
        base = os.path.dirname(doc)
        out, pos = [], 0
        for m in LINK.finditer(text):
            label, target, line = m.group(1), m.group(2), int(m.group(3))
            where = "%s:%d" % (doc, text.count("\n", 0, m.start()) + 1)
            path = os.path.normpath(os.path.join(base, target))
            nm = NAME.search(label)
            want = 0
            if not nm:
                print("%s: the link [%s] names no `identifier` to find in %s" % (where, label, target))
                problems += 1
            elif not os.path.isfile(path):
                print("%s: %s: no such file" % (where, target))
                problems += 1
            else:
                want = definition_line(path, nm.group(1))
                if not want:
                    print("%s: no definition of %s in %s" % (where, nm.group(1), target))
                    problems += 1
                elif want != line:
                    if not fix:
                        print("%s: %s is defined at %s#L%d, the link says #L%d" % (where, nm.group(1), target, want, line))
                        problems += 1
            out.append(text[pos:m.start()])
            out.append("[%s](%s#L%d)" % (label, target, want if fix and want else line))
            pos = m.end()
        out.append(text[pos:])
        if fix:
            new = "".join(out)
            if new != text:
                with open(doc, "w", encoding="utf-8") as f:
                    f.write(new)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

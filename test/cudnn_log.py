#!/usr/bin/env python3
"""test/cudnn_log.py: cuDNN's API log (CUDNN_LOGLEVEL_DBG=3) -> the one-line-per-call format of the
record in ../shared/reference/cudnn_sdpa/*_backend_calls.txt, then both made comparable.

  cudnn_log.py raw LOG        print the log's calls in the record's format
  cudnn_log.py canon FILE     print a file already in that format (the record, or raw's output),
                              canonicalized: the form test/sh/cudnn_graph.sh diffs

Record format (one line each):
  create CUDNN_BACKEND_X_DESCRIPTOR
  set X ATTRIBUTE TYPE n=COUNT [VALUES]           descriptor pointers written @dN
  finalize TENSOR uid=.. type=.. dims=[..] strides=[..] virtual=.. byval=..
  finalize OPERATION_X name=uidN.. mode=.. mathPrec=..   (the operation's tensors by uid)
  finalize POINTWISE|MATMUL|REDUCTION                     (attribute descriptors: nothing after)
  finalize OPERATIONGRAPH (the operations above, in the order of its OPS list)
  cudnnGraphLibraryConfigInit, cudnnBackendFinalizeGraphVisualize   (cuDNN's own, logged in between)
Everything else in the log (status returns, cudnnGetVersion, cudnnGetErrorString, destroy calls,
warnings) is left out, as the record leaves it out. Output stops after the operation graph's
finalize: the comparison covers the graph, not what follows.
"""
import re
import sys

HEAD = re.compile(r'^([IWE])! CuDNN \(v\d+[^)]*\) function (\w+)\(\) called:')
# an attribute's values: "[0]: type=..; val=..;"; cuDNN 9.19 writes indexes from 10 on as "[10:"
VAL = re.compile(r'^i!     \[(\d+)\]?: type=([^;]*); val=(.*);$')
FIELD = re.compile(r'^i!     (\w+): type=([^;]*); val=(.*);$')
SHORT = lambda t: re.sub(r'^CUDNN_BACKEND_|_DESCRIPTOR:?$', '', t)


def blocks(path):
    """(function name, body lines) for each call block of the log; warning and error blocks (W!, E!:
    a traceback about the call just logged, not a call) are skipped."""
    name, body = None, []
    with open(path, errors='replace') as f:
        for line in f:
            line = line.rstrip('\n')
            m = HEAD.match(line)
            if m:
                if name: yield name, body
                name, body = (m.group(2) if m.group(1) == 'I' else None), []
            elif name and line.startswith(('i!', 'w!', 'e!')):
                body.append(line)
    if name: yield name, body


def descriptor_tree(body):
    """The 'descriptor:' dump of a block as (depth, key, type, value) rows, depth 0 = its fields."""
    rows, inside = [], False
    for line in body:
        if line.startswith('i!     descriptor: type='):
            inside = True
            continue
        if not inside: continue
        m = re.match(r'^i!( +)(\w*): type=([^;]*?)(?:; val=(.*);|:)$', line)
        if not m or len(m.group(1)) < 9: break
        rows.append(((len(m.group(1)) - 9) // 4, m.group(2), m.group(3), m.group(4)))
    return rows


def desc_type(body):
    for line in body:
        m = re.match(r'^i!     descriptor: type=(\w+):', line)
        if m: return m.group(1)
    return '?'


def finalize_line(body):
    t = desc_type(body)
    rows = descriptor_tree(body)
    short = SHORT(t)
    top = {k: v for d, k, ty, v in rows if d == 0}
    if t == 'CUDNN_BACKEND_TENSOR_DESCRIPTOR':
        return 'finalize TENSOR uid=%s type=%s dims=%s strides=%s virtual=%s byval=%s' % (
            top['uid'], top['type'], top['dimA'], top['strideA'], top['isVirtual'], top['isByVal'])
    if t == 'CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR':
        return 'finalize OPERATIONGRAPH (the operations above, in the order of its OPS list)'
    if not t.startswith('CUDNN_BACKEND_OPERATION_'):
        return 'finalize %s ' % short    # an attribute descriptor: the record states nothing more
    # an operation: each field that is a descriptor, in dump order; a tensor as name=uidN, an
    # attribute descriptor as its mode and math precision (CUDNN_ and the enum number dropped)
    fields, i = [], 0
    while i < len(rows):
        d, k, ty, v = rows[i]
        if d == 0 and ty.startswith('CUDNN_BACKEND_'):
            kids = []
            i += 1
            while i < len(rows) and rows[i][0] > 0:
                kids.append(rows[i])
                i += 1
            if ty == 'CUDNN_BACKEND_TENSOR_DESCRIPTOR':
                uid = [kv for kd, kk, kt, kv in kids if kd == 1 and kk == 'uid']
                fields.append('%s=uid%s' % (k, uid[0] if uid else '?'))
            else:
                for kd, kk, kt, kv in kids:
                    if kd == 1 and kk in ('mode', 'mathPrec'):
                        fields.append('%s=%s' % (kk, re.sub(r'^CUDNN_| \(\d+\)$', '', kv)))
            continue
        i += 1
    return 'finalize %s %s' % (short, ' '.join(fields))


def raw(path):
    out = []
    for name, body in blocks(path):
        is_call = not any(l.startswith('i!     status: ') for l in body)
        if name == 'cudnnBackendCreateDescriptor' and is_call:
            m = [re.search(r'val=(\w+) \(\d+\);', l) for l in body if 'descriptorType:' in l]
            out.append('create %s' % m[0].group(1))
        elif name == 'cudnnBackendSetAttribute' and is_call:
            f = {}
            vals = []
            for l in body:
                m = VAL.match(l)
                if m:
                    ty, v = m.group(2), m.group(3)
                    vals.append(v if not ty.startswith('CUDNN_BACKEND_') else '@' + v)   # a pointer
                    continue
                m = FIELD.match(l)
                if m: f[m.group(1)] = m.group(3)
            strip = lambda s: re.sub(r' \(\d+\)$', '', s)
            out.append('set %s %s %s n=%s [%s]' % (SHORT(desc_type(body)), strip(f['attributeName']),
                                                   strip(f['attributeType']), f['elementCount'], ','.join(vals)))
        elif name == 'cudnnBackendFinalize' and is_call:
            out.append(finalize_line(body))
        elif name in ('cudnnGraphLibraryConfigInit', 'cudnnBackendFinalizeGraphVisualize') and is_call:
            out.append(name)
        if out and out[-1] == 'cudnnBackendFinalizeGraphVisualize':
            break
    return out


def canon(lines):
    """Pointers renamed @dN in order of first appearance, after two rules (applied to both sides):
    - the attribute descriptor an operation takes (PW_DESCRIPTOR, REDUCTION_DESC, MATMUL_DESC) is
      written @attr: the frontend frees each one once its operation is finalized, so the allocator
      hands the next one the same address and the record numbers them all alike (every pointwise op
      names @d4 in the forward's record); we keep ours until the graph is freed, so ours differ. What
      it holds is checked anyway: it is the create/set/finalize block just above, and the
      operation's finalize line states its mode and precision.
    - cudnnGraphLibraryConfigInit is dropped: cuDNN logs it once per process, at the first finalize,
      whoever calls; it is not a call of ours (the record has it because it was made one graph per
      process, as this test also runs, so it matches today; the rule keeps the test from depending on
      that)."""
    names, out = {}, []
    for l in lines:
        if l == 'cudnnGraphLibraryConfigInit': continue
        if re.match(r'^set \w+ CUDNN_ATTR_\w+_(PW_DESCRIPTOR|REDUCTION_DESC|MATMUL_DESC) ', l):
            l = re.sub(r'\[@[^\]]*\]', '[@attr]', l)
        def rename(m):
            return names.setdefault(m.group(1), '@d%d' % len(names))
        out.append(re.sub(r'(@(?:d\d+|0x[0-9a-f]+|\(nil\)|0))\b', rename, l) if '@attr' not in l else l)
    return out


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('raw', 'canon'):
        sys.exit(__doc__)
    if sys.argv[1] == 'raw':
        print('\n'.join(raw(sys.argv[2])))
    else:
        with open(sys.argv[2]) as f:
            print('\n'.join(canon([l.rstrip('\n') for l in f])))

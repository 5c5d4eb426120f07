#!/usr/bin/env python3
"""test/export_check.py: reads a -export safetensors file back, independently of the C code, and checks it
against the checkpoint it came from.

    python3 test/export_check.py MODEL.safetensors CHECKPOINT.bin [--tokens SHARD.bin --B B --T T --loss L]

Checks (each prints PASS or FAIL):
  - the container: 8-byte little-endian header length, the header is JSON, every tensor F32 with
    data_offsets contiguous from 0 to the end of the file (the safetensors rules), tensors 8-byte aligned;
  - the names and shapes HuggingFace's GPT2LMHeadModel (GPT-2, Conv1D layers) expects, nothing more;
  - every value equal, bit for bit (a copy: no tolerance), to the checkpoint's "weights fp32" blob read
    with its own parser of common/checkpoint.h, with Conv1D's (in, out) = our (out, in) transposed and the
    vocabulary rows past V left out;
  - with --tokens and torch installed: a GPT-2 forward written here from the HF names alone (Conv1D:
    x @ W + b, tanh GELU, layernorm eps 1e-5, tied head) gives the loss the trainer's -eval printed on the
    first B*T+1 tokens of the shard. Tolerance 2e-4 nats: both sides are fp32 with different summation
    orders over C <= 4C terms, relative error ~1e-6 per matmul, a few 1e-5 on a loss near 10; a wrong
    transpose or name moves the loss by > 0.01.
Standard library only (json, struct, array); torch only for the optional forward check.
"""
import array
import json
import math
import struct
import sys

fails = 0


def check(name, ok, why=""):
    global fails
    print(("PASS export: %s" % name) if ok else ("FAIL export: %s: %s" % (name, why)))
    if not ok:
        fails += 1
    return ok


def read_checkpoint(path):
    """common/checkpoint.h: CkptHeader (152 bytes), nblobs table entries (version 1: char[40], u64 = 48
    bytes; version 2: char[40], u64, u32 crc, u32 reserved = 56 bytes), then the blobs."""
    b = open(path, "rb").read()
    magic = b[:8]
    (version, L, C, NH, V, Vp, maxT, precision) = struct.unpack_from("<8i", b, 8)
    opt = b[40:72].split(b"\0")[0].decode()
    (step, total, skipped, nblobs) = struct.unpack_from("<4i", b, 72)
    (seed, datapos, nparams, seen) = struct.unpack_from("<4Q", b, 88)
    assert magic == b"GPT2CKPT", "not a checkpoint: %r" % magic
    assert version in (1, 2), "checkpoint version %d: this reader knows 1 and 2" % version
    entry = 48 if version == 1 else 56
    off = 152
    blobs = []
    for i in range(nblobs):
        name = b[off:off + 40].split(b"\0")[0].decode()
        (nb,) = struct.unpack_from("<Q", b, off + 40)
        blobs.append((name, nb))
        off += entry
    data = {}
    for name, nb in blobs:
        data[name] = b[off:off + nb]
        off += nb
    assert off == len(b), "checkpoint size %d, blobs end at %d" % (len(b), off)
    w = array.array("f")
    w.frombytes(data["weights fp32"])
    assert len(w) == nparams
    return dict(L=L, C=C, NH=NH, V=V, Vp=Vp, maxT=maxT, w=w, opt=opt, step=step)


def our_tensors(ck):
    """Our 16 tensors in storage order (trainer/model.c), as (name, shape per layer, layers)."""
    L, C, Vp, maxT = ck["L"], ck["C"], ck["Vp"], ck["maxT"]
    spec = [("wte", (Vp, C), 0), ("wpe", (maxT, C), 0), ("ln1.w", (C,), L), ("ln1.b", (C,), L),
            ("qkv.w", (3 * C, C), L), ("qkv.b", (3 * C,), L), ("proj.w", (C, C), L), ("proj.b", (C,), L),
            ("ln2.w", (C,), L), ("ln2.b", (C,), L), ("fc.w", (4 * C, C), L), ("fc.b", (4 * C,), L),
            ("fcproj.w", (C, 4 * C), L), ("fcproj.b", (C,), L), ("lnf.w", (C,), 0), ("lnf.b", (C,), 0)]
    out, off = {}, 0
    for name, shape, layers in spec:
        n = math.prod(shape)
        for l in range(max(layers, 1)):
            out[(name, l if layers else -1)] = (off, shape)
            off += n
    assert off == len(ck["w"]), "layout %d params, checkpoint %d" % (off, len(ck["w"]))
    return out


def expected(ck):
    """HF name -> (our tensor, layer, HF shape, transposed?)."""
    L, C, V, maxT = ck["L"], ck["C"], ck["V"], ck["maxT"]
    e = {"transformer.wte.weight": ("wte", -1, [V, C], False),
         "transformer.wpe.weight": ("wpe", -1, [maxT, C], False),
         "transformer.ln_f.weight": ("lnf.w", -1, [C], False),
         "transformer.ln_f.bias": ("lnf.b", -1, [C], False)}
    block = [("ln_1.weight", "ln1.w", [C], False), ("ln_1.bias", "ln1.b", [C], False),
             ("attn.c_attn.weight", "qkv.w", [C, 3 * C], True), ("attn.c_attn.bias", "qkv.b", [3 * C], False),
             ("attn.c_proj.weight", "proj.w", [C, C], True), ("attn.c_proj.bias", "proj.b", [C], False),
             ("ln_2.weight", "ln2.w", [C], False), ("ln_2.bias", "ln2.b", [C], False),
             ("mlp.c_fc.weight", "fc.w", [C, 4 * C], True), ("mlp.c_fc.bias", "fc.b", [4 * C], False),
             ("mlp.c_proj.weight", "fcproj.w", [4 * C, C], True), ("mlp.c_proj.bias", "fcproj.b", [C], False)]
    for l in range(L):
        for hf, ours, shape, tr in block:
            e["transformer.h.%d.%s" % (l, hf)] = (ours, l, shape, tr)
    return e


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        print(__doc__)
        sys.exit(2)
    st_path, ck_path = args[0], args[1]
    opt = dict(zip(args[2::2], args[3::2]))
    raw = open(st_path, "rb").read()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    check("header length fits the file", 8 + hlen <= len(raw), "header %d, file %d" % (hlen, len(raw)))
    header = json.loads(raw[8:8 + hlen].decode("utf-8"))
    check("data 8-byte aligned", (8 + hlen) % 8 == 0, "header length %d" % hlen)
    meta = header.pop("__metadata__", {})
    check("metadata format pt (transformers needs it)", meta.get("format") == "pt", str(meta))
    body = raw[8 + hlen:]
    spans = sorted((v["data_offsets"][0], v["data_offsets"][1], k) for k, v in header.items())
    pos, contiguous = 0, True
    for a, b, k in spans:
        contiguous &= a == pos
        pos = b
    check("data_offsets contiguous and cover the data", contiguous and pos == len(body), "end %d, data %d" % (pos, len(body)))
    check("dtype F32 everywhere", all(v["dtype"] == "F32" for v in header.values()))
    ck = read_checkpoint(ck_path)
    ours = our_tensors(ck)
    exp = expected(ck)
    check("names are HF GPT-2's, all of them", set(header) == set(exp),
          "missing %s, extra %s" % (sorted(set(exp) - set(header))[:3], sorted(set(header) - set(exp))[:3]))
    bad_shape, bad_val = [], []
    w = ck["w"]
    tensors = {}
    for name, (our, layer, shape, tr) in exp.items():
        if name not in header:
            continue
        h = header[name]
        if h["shape"] != shape:
            bad_shape.append("%s %s != %s" % (name, h["shape"], shape))
            continue
        got = array.array("f")
        got.frombytes(body[h["data_offsets"][0]:h["data_offsets"][1]])
        tensors[name] = (got, shape)
        off, oshape = ours[(our, layer)]
        n = math.prod(shape)
        if not tr:
            want = w[off:off + n]  # wte: the first V rows of Vp
        else:
            rows, cols = oshape  # ours (out, in); HF (in, out)
            src = w[off:off + rows * cols]
            want = array.array("f", [src[j * cols + i] for i in range(cols) for j in range(rows)])
        if got != want:
            bad_val.append(name)
    check("shapes (Conv1D weights (in, out); wte V rows)", not bad_shape, "; ".join(bad_shape[:3]))
    check("values equal the checkpoint's fp32 weights", not bad_val, ", ".join(bad_val[:3]))
    if "--tokens" in opt:
        forward_check(tensors, ck, opt)
    print("export_check: %s, %d tensors, model L=%d C=%d, checkpoint of %s at step %d: %s" %
          (st_path, len(header), ck["L"], ck["C"], ck["opt"], ck["step"], "FAILED" if fails else "ok"))
    sys.exit(1 if fails else 0)


def forward_check(tensors, ck, opt):
    try:
        import torch
    except ImportError:
        print("SKIP export: HF-style forward against -eval: python3-torch missing")
        return
    B, T, want = int(opt["--B"]), int(opt["--T"]), float(opt["--loss"])
    raw = open(opt["--tokens"], "rb").read()
    toks = array.array("H")
    toks.frombytes(raw[1024:1024 + 2 * (B * T + 1)])  # llm.c shard: 256 int32 header, then uint16 tokens
    t = torch.tensor(list(toks), dtype=torch.long)
    x_ids, y_ids = t[:-1].view(B, T), t[1:].view(B, T)

    def P(name):
        a, shape = tensors[name]
        return torch.tensor(a, dtype=torch.float32).view(*shape)

    C, NH = ck["C"], ck["NH"]
    hs = C // NH
    ln = lambda x, p: torch.nn.functional.layer_norm(x, (C,), P(p + ".weight"), P(p + ".bias"), 1e-5)
    conv1d = lambda x, p: x @ P(p + ".weight") + P(p + ".bias")  # HF Conv1D: weight (in, out)
    with torch.no_grad():
        x = P("transformer.wte.weight")[x_ids] + P("transformer.wpe.weight")[:T]
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for l in range(ck["L"]):
            h = "transformer.h.%d." % l
            q, k, v = conv1d(ln(x, h + "ln_1"), h + "attn.c_attn").split(C, dim=2)
            q, k, v = (z.view(B, T, NH, hs).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + conv1d(y, h + "attn.c_proj")
            m = torch.nn.functional.gelu(conv1d(ln(x, h + "ln_2"), h + "mlp.c_fc"), approximate="tanh")
            x = x + conv1d(m, h + "mlp.c_proj")
        logits = ln(x, "transformer.ln_f") @ P("transformer.wte.weight").T
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y_ids.reshape(-1)).item()
    check("HF-style forward loss %.6f matches the trainer's -eval %.6f (tol 2e-4)" % (loss, want),
          abs(loss - want) <= 2e-4, "differ by %.2e" % abs(loss - want))


if __name__ == "__main__":
    main()

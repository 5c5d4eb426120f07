"""test/reference.py: PyTorch reference for the GPT-2 model of train_gpt2.c.

Writes test/vectors/gpt2_tiny.bin: a tiny GPT-2 (L=2, C=32, 4 heads, vocabulary 97 padded to 128,
16 positions), its parameters in the trainer's flat layout (16 tensors, storage order), a batch of
tokens, and the reference logits, loss and every parameter gradient, computed in float64 by an
independent PyTorch implementation of GPT-2 (nn.functional ops, autograd). The same is done with
the parameters rounded to bf16 first (what the trainer's bf16 mode computes with).
Also writes a table of float32 values and their bf16 roundings by torch, for the rounding test.

Run with Debian's python3-torch:  /usr/bin/python3 test/reference.py   (or `make reference`).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from vecio import write_vectors  # noqa: E402

L, C, NH, V, VP, MAXT = 2, 32, 4, 97, 128, 16
B, T = 2, 8


def shapes():
    # must match param_sizes() in train_gpt2.c
    return [
        ("wte", (VP, C)), ("wpe", (MAXT, C)),
        ("ln1w", (L, C)), ("ln1b", (L, C)),
        ("qkvw", (L, 3 * C, C)), ("qkvb", (L, 3 * C)),
        ("attprojw", (L, C, C)), ("attprojb", (L, C)),
        ("ln2w", (L, C)), ("ln2b", (L, C)),
        ("fcw", (L, 4 * C, C)), ("fcb", (L, 4 * C)),
        ("fcprojw", (L, C, 4 * C)), ("fcprojb", (L, C)),
        ("lnfw", (C,)), ("lnfb", (C,)),
    ]


def make_params(gen):
    p = {}
    for name, shp in shapes():
        if name in ("ln1w", "ln2w", "lnfw"):
            t = 1.0 + 0.1 * torch.randn(shp, generator=gen, dtype=torch.float64)
        elif name.endswith("b"):
            t = 0.05 * torch.randn(shp, generator=gen, dtype=torch.float64)
        else:
            # larger than GPT-2's 0.02 so that attention is not uniform and every path matters
            t = 0.15 * torch.randn(shp, generator=gen, dtype=torch.float64)
        p[name] = t
    p["wte"][V:] = 0.0  # padded rows are never used
    # round to fp32 so that C (fp32) and this reference start from identical values
    return {k: v.float().double() for k, v in p.items()}


def gpt2(p, idx, targets):
    """Plain GPT-2: token + position embedding, pre-LN blocks, causal attention, tanh-GELU MLP,
    final LN, LM head tied to wte (real vocabulary rows only)."""
    x = p["wte"][idx] + p["wpe"][:T]
    hs = C // NH
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        h = F.layer_norm(x, (C,), p["ln1w"][l], p["ln1b"][l], eps=1e-5)
        qkv = h @ p["qkvw"][l].T + p["qkvb"][l]
        q, k, v = qkv.split(C, dim=-1)
        q = q.view(B, T, NH, hs).transpose(1, 2)
        k = k.view(B, T, NH, hs).transpose(1, 2)
        v = v.view(B, T, NH, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p["attprojw"][l].T + p["attprojb"][l]
        h = F.layer_norm(x, (C,), p["ln2w"][l], p["ln2b"][l], eps=1e-5)
        h = F.gelu(h @ p["fcw"][l].T + p["fcb"][l], approximate="tanh")
        x = x + h @ p["fcprojw"][l].T + p["fcprojb"][l]
    x = F.layer_norm(x, (C,), p["lnfw"], p["lnfb"], eps=1e-5)
    logits = x @ p["wte"][:V].T
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))
    return logits, loss


def run(p, idx, targets, prefix):
    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    logits, loss = gpt2(leaves, idx, targets)
    loss.backward()
    out = [(prefix + "logits", logits), (prefix + "loss", loss.reshape(1))]
    for name, _ in shapes():
        out.append((prefix + "grad_" + name, leaves[name].grad))
    return out


def main():
    gen = torch.Generator().manual_seed(20240520)
    p = make_params(gen)
    idx = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    arrays = [("config", torch.tensor([L, C, NH, V, VP, MAXT, B, T], dtype=torch.float64)),
              ("inputs", idx.double()), ("targets", targets.double())]
    arrays += [("param_" + name, p[name]) for name, _ in shapes()]
    arrays += run(p, idx, targets, "fp32_")
    # bf16 mode computes in fp32 with the bf16-rounded weights
    pb = {k: v.float().bfloat16().double() for k, v in p.items()}
    arrays += run(pb, idx, targets, "bf16_")
    # torch's float32 -> bfloat16 rounding (round to nearest even) on awkward values
    vals = torch.cat([torch.randn(2000, generator=gen) * 10.0 ** torch.randint(-30, 30, (2000,), generator=gen).float(),
                      torch.tensor([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 3.0e38, -3.0e38, 1e-40, 65504.0])]).float()
    arrays += [("round_in", vals), ("round_out", vals.bfloat16().float())]
    path = os.path.join(os.path.dirname(__file__), "vectors", "gpt2_tiny.bin")
    write_vectors(path, arrays)
    print(f"wrote {path}: loss fp32 {arrays[3 + 16 + 1][1].item():.6f}")


if __name__ == "__main__":
    main()

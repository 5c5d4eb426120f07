#!/usr/bin/python3
"""test/ref_optim_beyond1.py: reference vectors for test/test_optim_beyond1.c (muon, adam_mini, lion8bit,
sgdm8bit).

Run with Debian's python3-torch (torch 1.13), which lives at /usr/bin/python3:
    /usr/bin/python3 test/ref_optim_beyond1.py        # writes test/vectors/optim_beyond1.bin

Every case runs STEPS steps on a few tensors of awkward shapes with gradients from the integer hash of
test/ref_optim_8bit.py (hash_uniform, mirrored in the C test, so no inputs are stored) and a per-step lr
(warmup then decay), and records every parameter and state tensor after every step.

References, written from the official code (read, not copied):
  muon       KellerJordan/Muon muon.py: muon_update (momentum lerp, Nesterov lerp, shape scale), the
             AdamW adam_update and the SingleDeviceMuonWithAuxAdam step, as torch ops; its
             zeropower_via_newtonschulz5 transcribed op by op in bf16 (every bf16 tensor of the official
             code is an fp32 tensor rounded to bf16 after every op). The Python scalars a, b, c, 1e-7
             and the shape scale stay fp32, as CUDA (and PyTorch >= 2.1 on the CPU) applies them to bf16
             tensors. PyTorch 1.13 on the CPU rounds such a scalar to bf16 first; the script shows that
             the literal official function on this torch equals the transcription with bf16-rounded
             coefficients, i.e. the transcription's matmuls and roundings are the official ones.
  adam_mini  zyushun/Adam-mini adam_mini.py v1.1.1: its four branches (Adam for "bias", per head for
             q/k, per output neuron for v/attn.proj/mlp/embedding, one block for the rest), as torch ops
             in its order; the fused qkv is split into q|k (per head) and v (per neuron).
  lion8bit,  bitsandbytes kOptimizerStatic8bit1StateBlockwise (LION, MOMENTUM) and kOptimizer32bit1State
  sgdm8bit   for tensors under 4096 elements, transcribed in fp32 torch ops in the kernels' order, with
             the dynamic map, nearest search and sign guard of test/ref_optim_8bit.py.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vecio import write_vectors  # noqa: E402
from ref_optim_8bit import hash_uniform, dynamic_map, quantize, T  # noqa: E402

F32 = np.float32
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "optim_beyond1.bin")
STEPS = 10
LR_SCALE = [0.25, 0.5, 0.75, 1.0, 1.0, 0.9, 0.75, 0.5, 0.3, 0.1]   # fp32 values; lr_t = f32(lr * scale)
assert len(LR_SCALE) == STEPS

torch.set_num_threads(1)


def f32(x):
    return float(F32(x))


def lr_t(lr, t):
    """The C test's lr of step t (1-based): fp32 product of the peak lr and the schedule scale."""
    return float(F32(lr) * F32(LR_SCALE[t - 1]))


# ---- the tensors of each case (mirrored in test_optim_beyond1.c) ---------------------------------
# (name, rows, cols, role, decay, grad seed, row scales). role: 0 matrix, 1 qkv, 2 embedding, 3 vector.
# Gradient of step t, element (r, c): hash_uniform(seed, t) * ROW_SCALE[r % len] (+ a fixed column
# direction for the 2-D ones, so the momentum has a consistent low-rank part as real gradients do).
MUON_TENSORS = [("h0.mlp.fc.w", 29, 41, 0, 1, 11, [1.0, 0.3, 3.0]),     # wide: X = G
                ("h0.mlp.proj.w", 41, 29, 0, 1, 12, [1.0, 0.1, 10.0]),  # tall: X = G^T, scale sqrt(41/29)
                ("h0.attn.qkv.w", 36, 12, 1, 1, 13, [1.0, 2.0]),        # fused qkv: one matrix, sqrt(3)
                ("wte", 17, 12, 2, 1, 14, [1.0, 0.01, 0.1]),            # AdamW part
                ("h0.ln1.w", 1, 37, 3, 0, 15, [1.0])]                   # AdamW part, no decay
MINI_HEADS = 3
MINI_TENSORS = [("h0.attn.qkv.w", 36, 12, 1, 1, 21, [1.0, 0.2, 5.0, 0.05]),   # 3 heads of 4 rows
                ("h0.mlp.fc.w", 13, 29, 0, 1, 22, [1.0, 0.1, 10.0]),         # per row
                ("wte", 17, 12, 2, 1, 23, [1.0, 0.01, 0.1]),                 # per row (token)
                ("wpe", 9, 12, 2, 1, 24, [1.0, 3.0]),                        # one block
                ("h0.attn.qkv.b", 1, 37, 3, 0, 25, [1.0]),                   # Adam
                ("h0.ln1.w", 1, 37, 3, 0, 26, [1.0])]                        # one block
Q8_TENSORS = [("big", 33, 131, 0, 1, 31, [1.0, 0.1, 10.0]),   # 4323 elements: 17 blocks of 256, last 227
              ("small", 7, 9, 0, 1, 32, [1.0, 0.1]),          # 63 < 4096: fp32 state, decays (coupled)
              ("vec", 1, 37, 3, 0, 33, [1.0])]                # fp32 state, no decay
ZERO_HEAD = 300   # the 8-bit tensor's first 300 gradients are 0: sgn(0) = 0, an all-zero block


def grad(spec, t):
    name, rows, cols, role, decay, seed, scales = spec
    n = rows * cols
    g = hash_uniform(seed, t, n)
    r = np.arange(n) // cols
    sc = np.array([F32(s) for s in scales], dtype=F32)[r % len(scales)]
    if rows > 1:
        col_dir = hash_uniform(seed + 100, 0, cols)
        g = (g + F32(0.5) * col_dir[np.arange(n) % cols]) * sc
    else:
        g = g * sc
    if name == "big":
        g[:ZERO_HEAD] = 0.0
    return torch.tensor(g.astype(F32)).reshape(rows, cols) if rows > 1 else torch.tensor(g.astype(F32))


def theta0(spec):
    name, rows, cols, role, decay, seed, scales = spec
    p = hash_uniform(seed + 200, 0, rows * cols) * F32(0.5)
    return torch.tensor(p).reshape(rows, cols) if rows > 1 else torch.tensor(p)


# ---- muon -----------------------------------------------------------------------------------------
def bf(x):
    """An fp32 tensor rounded to bf16 values (held in fp32)."""
    return x.bfloat16().float()


def zeropower_transcribed(G, steps=5, coef=(3.4445, -4.7750, 2.0315)):
    """zeropower_via_newtonschulz5, op by op: X is a bf16 tensor there, so every op's fp32 result is
    rounded to bf16 here. Matmuls are fp32 products of bf16 values rounded once (a bf16 GEMM with fp32
    accumulation). The norm accumulates in double and rounds to fp32, then bf16."""
    a, b, c = coef
    X = bf(G)
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.T.contiguous()
    norm = bf(torch.tensor(float(torch.sqrt((X.double() ** 2).sum())), dtype=torch.float32))
    X = bf(X / bf(norm + 1e-7))
    for _ in range(steps):
        A = bf(X @ X.T)
        B = bf(bf(b * A) + bf(bf(c * A) @ A))      # b * A + c * A @ A, and c * A @ A is (c * A) @ A
        X = bf(bf(a * X) + bf(B @ X))
    if tall:
        X = X.T.contiguous()
    return X


def zeropower_official(G, steps=5):
    """The official function as written, run on this torch's bf16 CPU ops (for the cross-check only)."""
    assert G.ndim >= 2
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()
    if G.size(-2) > G.size(-1):
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(-2) > G.size(-1):
        X = X.mT
    return X


def muon_update(grad, momentum, beta, nesterov):
    """The official muon_update (grad is consumed, as there)."""
    momentum.lerp_(grad, 1 - beta)
    update = grad.lerp_(momentum, beta) if nesterov else momentum
    update = zeropower_transcribed(update)
    update = bf(update * (max(1, grad.size(-2) / grad.size(-1)) ** 0.5))  # update is bf16 there
    return update


def adam_update(grad, buf1, buf2, step, betas, eps):
    """The official adam_update of the AdamW part."""
    buf1.lerp_(grad, 1 - betas[0])
    buf2.lerp_(grad.square(), 1 - betas[1])
    buf1c = buf1 / (1 - betas[0] ** step)
    buf2c = buf2 / (1 - betas[1] ** step)
    return buf1c / (buf2c.sqrt() + eps)


def run_muon(case, hp, out):
    """SingleDeviceMuonWithAuxAdam's step: Muon on roles 0/1 (2-D), AdamW on the rest."""
    for spec in MUON_TENSORS:
        name, rows, cols, role, decay, seed, scales = spec
        p = theta0(spec)
        wd = hp["wd"] if decay else 0.0
        use_muon = role in (0, 1)
        st = [torch.zeros_like(p)] if use_muon else [torch.zeros_like(p), torch.zeros_like(p)]
        rec = {"param": [], "s0": [], "s1": []}
        for t in range(1, STEPS + 1):
            g = grad(spec, t)
            if use_muon:
                lr = lr_t(hp["lr"], t)
                update = muon_update(g.clone(), st[0], hp["momentum"], hp["nesterov"])
                p.mul_(1 - lr * wd)
                p.add_(update.reshape(p.shape), alpha=-lr)
            else:
                lr = f32(hp["aux_lr"] * LR_SCALE[t - 1])   # the C side: (double)aux_lr * lr_scale, rounded once
                update = adam_update(g, st[0], st[1], t, (hp["beta1"], hp["beta2"]), hp["eps"])
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr)
            rec["param"].append(p.clone().reshape(-1))
            for k, s in enumerate(st):
                rec["s%d" % k].append(s.clone().reshape(-1))
        for k, v in rec.items():
            if v:
                out.append(("%s.%s.%s" % (case, name, k), torch.stack(v)))


def muon_crosscheck():
    """How the transcription relates to the official function on this torch (printed, not stored)."""
    torch.manual_seed(0)
    for shape in [(29, 41), (41, 29), (36, 12), (256, 768)]:
        G = torch.randn(shape)
        lit = zeropower_official(G).float()
        same_coef = zeropower_transcribed(G, coef=(float(bf(torch.tensor(3.4445))), float(bf(torch.tensor(-4.7750))),
                                                   float(bf(torch.tensor(2.0315)))))
        fp32_coef = zeropower_transcribed(G)
        print("  NS %-10s official(torch 1.13 CPU) vs transcription with bf16 coefficients: %d of %d differ; "
              "vs fp32 coefficients (CUDA): max |diff| %.3g (|X| <= %.3g)" % (
                  str(shape), int((lit != same_coef).sum()), lit.numel(), float((lit - fp32_coef).abs().max()),
                  float(lit.abs().max())))


# ---- adam_mini ------------------------------------------------------------------------------------
def mini_adam(p, st, g, t, lr, b1, b2, eps, wd):
    """The "bias" branch (plain AdamW)."""
    st["v"].mul_(b2).addcmul_(g, g.conj(), value=1 - b2)
    if wd > 0.0:
        p.mul_(1 - lr * wd)
    st["m"].lerp_(g, 1 - b1)
    bc1 = 1 - b1 ** t
    bc2 = 1 - b2 ** t
    h = (st["v"].sqrt() / math.sqrt(bc2)).add_(eps)
    p.addcdiv_(st["m"], h, value=-(lr / bc1))


def mini_blocks(p, st, g, t, lr, b1, b2, eps, wd, block_numel):
    """The per-head / per-neuron branches: p viewed as (blocks, block_numel), one vmean per block."""
    m = st["m"].view(-1, block_numel)
    gv = g.reshape(-1, block_numel)
    tmp = torch.mean(gv * gv, dim=1, keepdim=True)
    st["vmean"].mul_(b2).add_(tmp, alpha=1 - b2)
    if wd > 0.0:
        p.mul_(1 - lr * wd)
    m.lerp_(gv, 1 - b1)
    bc1 = 1 - b1 ** t
    bc2 = 1 - b2 ** t
    h = (st["vmean"].sqrt() / math.sqrt(bc2)).add_(eps)
    stepsize = ((1 / bc1) / h).view(-1, 1)
    update = (m * stepsize).view(p.size())
    update.mul_(lr)
    p.add_(-update)


def mini_single(p, st, g, t, lr, b1, b2, eps, wd):
    """The "other blocks" branch: one vmean for the whole tensor."""
    tmp = torch.sum(g * g) / float(p.numel())
    if wd > 0.0:
        p.mul_(1 - lr * wd)
    st["m"].lerp_(g, 1 - b1)
    bc1 = 1 - b1 ** t
    bc2 = 1 - b2 ** t
    st["vmean"].mul_(b2).add_(tmp, alpha=1 - b2)
    h = (st["vmean"].sqrt() / math.sqrt(bc2)).add_(eps)
    stepsize = (1 / bc1) / h
    update = st["m"] * stepsize
    update.mul_(lr)
    p.add_(-update)


def run_mini(case, hp, out):
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    for spec in MINI_TENSORS:
        name, rows, cols, role, decay, seed, scales = spec
        p = theta0(spec).reshape(-1).clone()
        wd = hp["wd"] if decay else 0.0
        n = rows * cols
        # the partition as views of p: (view start, view end, kind, block_numel)
        if role == 1:
            C = rows // 3
            parts = [(0, 2 * C * cols, "blocks", (C // MINI_HEADS) * cols), (2 * C * cols, n, "blocks", cols)]
        elif role == 0 or name == "wte":
            parts = [(0, n, "blocks", cols)]
        elif name.endswith(".b"):
            parts = [(0, n, "adam", None)]
        else:
            parts = [(0, n, "single", None)]
        states = []
        for lo, hi, kind, bn in parts:
            s = {"m": torch.zeros(hi - lo)}
            if kind == "adam":
                s["v"] = torch.zeros(hi - lo)
            else:
                s["vmean"] = torch.zeros((hi - lo) // bn, 1) if kind == "blocks" else torch.zeros(())
            states.append(s)
        rec = {"param": [], "m": [], "v": []}
        for t in range(1, STEPS + 1):
            g = grad(spec, t).reshape(-1)
            lr = lr_t(hp["lr"], t)
            for (lo, hi, kind, bn), s in zip(parts, states):
                pv, gv = p[lo:hi], g[lo:hi]
                if kind == "adam":
                    mini_adam(pv, s, gv, t, lr, b1, b2, eps, wd)
                elif kind == "blocks":
                    mini_blocks(pv, s, gv, t, lr, b1, b2, eps, wd, bn)
                else:
                    mini_single(pv, s, gv, t, lr, b1, b2, eps, wd)
            rec["param"].append(p.clone())
            rec["m"].append(torch.cat([s["m"] for s in states]))
            rec["v"].append(torch.cat([(s["v"] if "v" in s else s["vmean"]).reshape(-1) for s in states]))
        for k, v in rec.items():
            out.append(("%s.%s.%s" % (case, name, k), torch.stack(v)))


# ---- lion8bit and sgdm8bit ------------------------------------------------------------------------
def run_q8(case, opt, hp, qblock, out):
    mapS = torch.tensor(dynamic_map(True))
    lr0, wd0 = hp["lr"], hp["wd"]
    for spec in Q8_TENSORS:
        name, rows, cols, role, decay, seed, scales = spec
        n = rows * cols
        p = theta0(spec).reshape(-1).clone()
        wd = F32(wd0 if decay else 0.0)
        quantized = n >= 4096
        block = torch.arange(n) // qblock
        nb = (n + qblock - 1) // qblock
        codes = torch.zeros(n, dtype=torch.int64)   # zero bytes, absmax 0: decodes to 0
        absmax = torch.zeros(nb)
        s32 = torch.zeros(n)
        rec = {"param": [], "s0": [], "s1": []}
        for t in range(1, STEPS + 1):
            g = grad(spec, t).reshape(-1)
            lr = F32(lr_t(lr0, t))
            if opt == "lion8bit":
                b1, b2 = F32(hp["beta1"]), F32(hp["beta2"])
                omb1, omb2 = F32(1.0) - b1, F32(1.0) - b2
                if quantized:   # kOptimizerStatic8bit1StateBlockwise<LION>
                    if wd > 0:
                        p = p * T(F32(1.0) - lr * wd)
                    s = mapS[codes] * absmax[block]
                    upd = T(lr) * torch.sign(s * T(b1) + T(omb1) * g)
                    s = s * T(b2) + T(omb2) * g
                    p = p - upd
                else:           # kOptimizer32bit1State<LION>: decay coupled into g
                    if wd > 0:
                        g = g + p * T(wd)
                    p = p - T(lr) * torch.sign(s32 * T(b1) + T(omb1) * g)
                    s32 = s32 * T(b2) + T(omb2) * g
            else:
                mu = F32(hp["momentum"])
                if wd > 0:
                    g = g + p * T(wd)
                if quantized:   # kOptimizerStatic8bit1StateBlockwise<MOMENTUM>
                    s = g.clone() if t == 1 else (mapS[codes] * absmax[block]) * T(mu) + g
                    p = p - T(lr) * s
                else:           # kOptimizer32bit1State<MOMENTUM>
                    s32 = g.clone() if t == 1 else s32 * T(mu) + g
                    p = p - T(lr) * s32
            if quantized:
                absmax = torch.zeros(nb).scatter_reduce(0, block, s.abs(), reduce="amax")
                codes = quantize(mapS, s, absmax[block], True)
                rec["s0"].append(codes.float())
                rec["s1"].append(absmax.clone())
            else:
                rec["s0"].append(s32.clone())
            rec["param"].append(p.clone())
        for k, v in rec.items():
            if v:
                out.append(("%s.%s.%s" % (case, name, k), torch.stack(v)))


# ---- the cases (hyperparameters mirrored in test_optim_beyond1.c) -----------------------------------
MUON_HP = dict(lr=0.02, momentum=0.95, nesterov=True, wd=0.1, aux_lr=3e-3, beta1=0.9, beta2=0.95, eps=1e-10)
MUON_PLAIN_HP = dict(MUON_HP, nesterov=False, momentum=0.9, wd=0.0)
MINI_HP = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, wd=0.1)
LION8_HP = dict(lr=1e-3, beta1=0.9, beta2=0.99, wd=0.5)
SGDM8_HP = dict(lr=1e-2, momentum=0.9, wd=0.05)


def main():
    for hp in (MUON_HP, MUON_PLAIN_HP, MINI_HP, LION8_HP, SGDM8_HP):   # the C side holds fp32 values
        for k, v in hp.items():
            if isinstance(v, float):
                hp[k] = f32(v)
    out = []
    print("muon: the transcription vs the official zeropower_via_newtonschulz5 on this torch:")
    muon_crosscheck()
    run_muon("muon", MUON_HP, out)
    run_muon("muon_plain", MUON_PLAIN_HP, out)
    run_mini("mini", MINI_HP, out)
    run_q8("lion8", "lion8bit", LION8_HP, 256, out)
    run_q8("sgdm8", "sgdm8bit", SGDM8_HP, 256, out)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_vectors(OUT, out)
    print("wrote %s: %d arrays, %d bytes" % (OUT, len(out), os.path.getsize(OUT)))


if __name__ == "__main__":
    main()

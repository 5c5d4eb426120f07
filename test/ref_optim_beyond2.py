#!/usr/bin/python3
"""test/ref_optim_beyond2.py: reference vectors for test/test_optim_beyond2.c (adamw4bit, galore_adamw).

Run with Debian's python3-torch (torch 1.13), which lives at /usr/bin/python3:
    /usr/bin/python3 test/ref_optim_beyond2.py     # writes test/vectors/optim_beyond2.bin

What it computes, independently of the C code, from the official implementations:
  adamw4bit (thu-ml/low-bit-optimizers, lpmm.optim.AdamW, non-fused path, configs/default.yml):
    1. The signed 4-bit dynamic map, create_dynamic_map(True, 3, 4), with this torch's linspace.
    2. A PyTorch transcription of `_single_tensor_adamw4bit` with lpmm's vectorwise quant/dequant:
       m grouped by 128 (max |m| per group) in the signed map, v rank-1 normalized (min of row and
       column maxima) for matrices and grouped by 128 for vectors, in the linear map without zero;
       nearest rounding as the kernel's quantize_bsearch<false> (ties down, NaN -> 15). 12 steps on
       a (67, 129) and a (97, 61) matrix (the first 300 gradients 0, so whole groups and rows are
       all-zero), a 4099-vector, and below the 4096 threshold a (21, 37) matrix and a 301-vector
       (fp32 state). Stored after every step: parameters, codes, scales (fp32 m, v for small ones).
  galore_adamw (jiaweizzhao/GaLore, galore_torch/adamw.py + GaLoreProjector "std"):
    3. SVDs for the C Jacobi SVD test: torch.linalg.svd in float64 of (20, 12), (12, 20), (67, 129)
       and (129, 67) matrices: singular values and the sign-normalized top singular vectors.
    4. A PyTorch transcription of GaLore's AdamW step, 12 steps, update_proj_gap 5 (refreshes at
       steps 1, 6, 11), scale 0.25, wd 0.1, on (37, 83) rank 12 ("left"), (83, 37) rank 12
       ("right"), (40, 24) rank 128 (capped to 24), an unprojected (21, 37) embedding-like matrix and
       a 301-vector. The projector is torch.linalg.svd of the gradient in float64 (the official code
       runs it in the gradient's fp32; float64 makes the reference the exact projector rounded once,
       so the test measures our SVD rather than LAPACK's fp32 noise), with each singular vector's
       sign fixed as the C code fixes it (largest-magnitude component positive): LAPACK's signs are
       arbitrary, and since m persists across a refresh, the signs change the result.
Gradients and initial values come from a 32-bit integer hash that the C test implements identically.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vecio import write_vectors  # noqa: E402

F32 = np.float32
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "optim_beyond2.bin")
STEPS = 12
ZERO_HEAD = 300
ROW_SCALES = [0.1, 1.0, 10.0]
LR = 1e-3


def f32(x):
    """A hyperparameter rounded to fp32, used as a double: how these vectors were made (the optimizer
    tables held float literals then); test_optim_beyond2.c sets the same betas for the adamw4bit cases."""
    return float(F32(x))


BETA1, BETA2 = f32(0.9), f32(0.999)


# ---- deterministic inputs (mirrored in test_optim_beyond2.c) -------------------------------------
def fmix32(h):
    h = h.copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def hash_uniform(seed, t, n):
    """n fp32 values in [-1, 1): element i of stream (seed, t), exact in fp32."""
    with np.errstate(over="ignore"):
        key = fmix32(np.array([(seed * 65536 + t) & 0xFFFFFFFF], dtype=np.uint32))[0]
        i = np.arange(n, dtype=np.uint32)
        h = fmix32(i * np.uint32(0x9E3779B1) + key)
    return ((h >> np.uint32(8)).astype(np.int64) - 8388608).astype(F32) * F32(1.0 / 8388608.0)


def lr_at(t):
    """Warmup over 5 steps, then constant, in fp32 as the C test computes it."""
    return F32(LR) * F32(t) / F32(5.0) if t < 5 else F32(LR)


def grad_of(seed, t, rows, cols, zero_head):
    """(rows*cols) gradient: row scale * (noise + half a fixed column direction); first zero_head 0."""
    n = rows * cols
    col_bias = hash_uniform(seed + 1, 0, cols)
    noise = hash_uniform(seed, t, n)
    r = np.arange(n) // cols
    c = np.arange(n) % cols
    scale = np.array([F32(s) for s in ROW_SCALES], dtype=F32)[r % 3]
    g = (noise + F32(0.5) * col_bias[c]) * scale
    g[:zero_head] = 0.0
    return g.astype(F32)


def init_of(seed, n):
    return hash_uniform(seed, 0, n)


# ---- 1. the 4-bit maps --------------------------------------------------------------------------
def dynamic_map4():
    """lpmm create_dynamic_map(signed=True, max_exponent_bits=3, total_bits=4), with torch ops."""
    data = []
    for i in range(3):
        boundaries = torch.linspace(0.1, 1, 2 ** i + 1)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-2 + i)) * means).tolist()
        data += (-(10 ** (-2 + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def linear_map4():
    """lpmm create_pow_map(4, signed=False, 1): linspace(0, 1, 17)[1:], no zero."""
    return torch.linspace(0, 1, 17)[1:].clone()


def q4_nearest(qmap, x):
    """quantize_bsearch<STOCHASTIC=false> of lpmm's kernel, vectorized."""
    lo = (qmap.unsqueeze(0) <= x.unsqueeze(1)).sum(1)       # first index with qmap > x
    loc = lo.clamp(1, 15)
    mid = (qmap[loc - 1] + qmap[loc]) * 0.5
    code = torch.where(mid < x, loc, loc - 1)
    code = torch.where(x <= qmap[0], torch.zeros_like(code), code)
    code = torch.where(qmap[15] <= x, torch.full_like(code, 15), code)
    code = torch.where(torch.isnan(x), torch.full_like(code, 15), code)
    return code


def group_max(x, gp=128):
    """lpmm group_tensor + _max_reduce_except_dim: max |x| per group of 128 (zero padded)."""
    flat = x.flatten()
    pad = (-flat.numel()) % gp
    grp = torch.cat([flat, torch.zeros(pad)]).view(-1, gp)
    return grp.abs().amax(dim=1)


class Q4State:
    """One tensor's 4-bit (or fp32, below the threshold) state, as lpmm holds it."""

    def __init__(self, shape, maps):
        self.shape = shape
        self.n = int(np.prod(shape))
        self.quant = self.n > 4096
        self.rank1 = len(shape) == 2
        self.maps = maps
        self.m = None   # fp32 state (small) or None before the first step
        self.v = None
        self.mc = self.vc = self.ms = self.vs = self.vrow = self.vcol = None

    def v_scale(self):
        if self.rank1:
            return torch.min(self.vrow.view(-1, 1), self.vcol.view(1, -1)).flatten()
        return self.vs.repeat_interleave(128)[:self.n]

    def dequant(self):
        if self.mc is None:
            return torch.zeros(self.shape), torch.zeros(self.shape)
        m = self.maps[0][self.mc] * self.ms.repeat_interleave(128)[:self.n]
        v = self.maps[1][self.vc] * self.v_scale()
        return m.view(self.shape), v.view(self.shape)

    def quantize(self, m, v):
        self.ms = group_max(m)
        self.mc = q4_nearest(self.maps[0], (m.flatten().view(-1) / self.ms.repeat_interleave(128)[:self.n]))
        if self.rank1:
            self.vrow = v.abs().amax(dim=1)
            self.vcol = v.abs().amax(dim=0)
        else:
            self.vs = group_max(v)
        self.vc = q4_nearest(self.maps[1], v.flatten() / self.v_scale())


def pack5(codes):
    """4-bit codes stored 5 to a float (code k of a group times 16^k; exact below 2^24) to keep the
    vector file small; test_optim_beyond2.c unpacks them."""
    c = codes.long()
    pad = (-c.numel()) % 5
    c = torch.cat([c, torch.zeros(pad, dtype=torch.long)]).view(-1, 5)
    w = torch.tensor([1, 16, 256, 4096, 65536], dtype=torch.long)
    return (c * w).sum(dim=1).float()


def step4(p, g, st, t, lr, wd):
    """lpmm _single_tensor_adamw4bit for one tensor (p, g torch fp32 of st.shape)."""
    p.mul_(1 - lr * wd)
    if st.quant:
        m, v = st.dequant()
    else:
        if st.m is None:
            st.m, st.v = torch.zeros(st.shape), torch.zeros(st.shape)
        m, v = st.m, st.v
    m.lerp_(g, 1 - BETA1)
    v.mul_(BETA2).addcmul_(g, g, value=1 - BETA2)
    bias_correction1 = 1 - BETA1 ** t
    bias_correction2 = 1 - BETA2 ** t
    step_size = lr / bias_correction1
    denom = (v.sqrt() / math.sqrt(bias_correction2)).add_(f32(1e-8))
    p.addcdiv_(m, denom, value=-step_size)
    if st.quant:
        st.quantize(m, v)


def run4(name, shape, seed, zero_head, wd, maps, out):
    rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
    p = torch.tensor(init_of(seed + 7, rows * cols)).view(shape)
    st = Q4State(shape, maps)
    for t in range(1, STEPS + 1):
        g = torch.tensor(grad_of(seed, t, rows, cols, zero_head)).view(shape)
        step4(p, g, st, t, float(lr_at(t)), f32(wd))
        out.append((f"{name}_p_{t}", p.clone()))
        if st.quant:
            out += [(f"{name}_mc_{t}", pack5(st.mc)), (f"{name}_vc_{t}", pack5(st.vc)),
                    (f"{name}_ms_{t}", st.ms)]
            if st.rank1:
                out += [(f"{name}_vrow_{t}", st.vrow), (f"{name}_vcol_{t}", st.vcol)]
            else:
                out.append((f"{name}_vs_{t}", st.vs))
        else:
            out += [(f"{name}_m_{t}", st.m.clone()), (f"{name}_v_{t}", st.v.clone())]


# ---- 3, 4. GaLore --------------------------------------------------------------------------------
def sign_fix(vecs):
    """vecs: (k, s) rows. Flip each so its largest-magnitude component (first on a tie) is positive."""
    idx = vecs.abs().argmax(dim=1)
    sgn = torch.sign(vecs[torch.arange(vecs.shape[0]), idx])
    return vecs * sgn.view(-1, 1)


def projector(G, r):
    """GaLoreProjector.get_orthogonal_matrix, float64 SVD, sign-fixed, rounded to fp32.
    rows >= cols: Vh[:r] (r, cols); else U[:, :r] (rows, r)."""
    U, S, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    if G.shape[0] >= G.shape[1]:
        return sign_fix(Vh[:r, :]).float(), S
    return sign_fix(U[:, :r].t()).t().contiguous().float(), S


class Galore:
    def __init__(self, shape, rank, gap, scale, projected):
        self.shape, self.gap, self.scale, self.projected = shape, gap, scale, projected
        self.rank = min(rank, min(shape)) if projected else 0
        self.P = None
        self.m = self.v = None
        self.step = 0

    def project(self, G):
        if self.P is None or self.step % self.gap == 0:
            self.P, _ = projector(G, self.rank)
        if G.shape[0] >= G.shape[1]:
            return torch.matmul(G, self.P.t())
        return torch.matmul(self.P.t(), G)

    def project_back(self, N):
        if N.shape[0] >= N.shape[1]:
            full = torch.matmul(N, self.P)
        else:
            full = torch.matmul(self.P, N)
        return full * self.scale


def step_galore(p, g, s, lr, wd, eps=f32(1e-6)):
    """galore_torch AdamW.step for one parameter."""
    grad = s.project(g) if s.projected else g
    if s.m is None:
        s.m, s.v = torch.zeros_like(grad), torch.zeros_like(grad)
    s.step += 1
    s.m.mul_(BETA1).add_(grad, alpha=(1.0 - BETA1))
    s.v.mul_(BETA2).addcmul_(grad, grad, value=1.0 - BETA2)
    denom = s.v.sqrt().add_(eps)
    bias_correction1 = 1.0 - BETA1 ** s.step
    bias_correction2 = 1.0 - BETA2 ** s.step
    step_size = lr * math.sqrt(bias_correction2) / bias_correction1
    norm_grad = s.m / denom
    if s.projected:
        norm_grad = s.project_back(norm_grad)
    p.add_(norm_grad, alpha=-step_size)
    if wd > 0.0:
        p.add_(p, alpha=(-lr * wd))


def run_galore(name, shape, seed, rank, projected, wd, out):
    rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
    p = torch.tensor(init_of(seed + 7, rows * cols)).view(shape)
    s = Galore(shape, rank, 5, 0.25, projected)
    for t in range(1, STEPS + 1):
        g = torch.tensor(grad_of(seed, t, rows, cols, 0)).view(shape)
        step_galore(p, g, s, float(lr_at(t)), f32(wd))
        out += [(f"{name}_p_{t}", p.clone()), (f"{name}_m_{t}", s.m.clone()), (f"{name}_v_{t}", s.v.clone())]
        if projected:
            out.append((f"{name}_P_{t}", s.P.clone()))


def main():
    torch.set_num_threads(1)
    out = []
    maps = (dynamic_map4(), linear_map4())
    print("signed 4-bit map:", " ".join(f"{x:.6g}" for x in maps[0].tolist()))
    out += [("map4_signed", maps[0]), ("map4_linear", maps[1])]

    # 2. adamw4bit
    run4("a4_mat", (67, 129), 1, ZERO_HEAD, 0.01, maps, out)
    run4("a4_tall", (97, 61), 3, ZERO_HEAD, 0.01, maps, out)
    run4("a4_vec", (4099,), 5, 0, 0.0, maps, out)
    run4("a4_small", (21, 37), 7, 0, 0.01, maps, out)
    run4("a4_svec", (301,), 9, 0, 0.0, maps, out)

    # 3. SVDs
    for k, (r, c) in enumerate(((20, 12), (12, 20), (67, 129), (129, 67))):
        G = torch.tensor(grad_of(11 + 2 * k, 1, r, c, 0)).view(r, c)
        P, S = projector(G, min(r, c))
        out += [(f"svd{k}_S", S.float()), (f"svd{k}_P", P)]
        print(f"svd {r}x{c}: sigma {S[0]:.4g} .. {S[-1]:.4g}, min relative gap "
              f"{float(((S[:-1] - S[1:]) / S[0]).min()):.3g}")

    # 4. galore_adamw
    run_galore("g_left", (37, 83), 21, 12, True, 0.1, out)
    run_galore("g_right", (83, 37), 23, 12, True, 0.1, out)
    run_galore("g_cap", (40, 24), 25, 128, True, 0.1, out)
    run_galore("g_emb", (21, 37), 27, 16, False, 0.1, out)
    run_galore("g_vec", (301,), 29, 16, False, 0.0, out)

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    write_vectors(OUT, out)
    print(f"wrote {OUT}: {len(out)} arrays")


if __name__ == "__main__":
    main()

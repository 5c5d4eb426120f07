#!/usr/bin/python3
"""test/ref_optim_8bit.py: reference vectors for test/test_optim_8bit.c (adam8bit, adamw8bit).

Run with Debian's python3-torch (torch 1.13), which lives at /usr/bin/python3:
    /usr/bin/python3 test/ref_optim_8bit.py        # writes test/vectors/optim_8bit.bin

What it computes, independently of the C code (written from shared/reference/eightbit.md and
bitsandbytes' create_dynamic_map / quantize_2D / kOptimizerStatic8bit2StateBlockwise):
  1. The two 256-entry dynamic maps, built as bitsandbytes' create_dynamic_map builds them, with
     torch.linspace as PyTorch >= 2.0 computes it (the scalar two-sided formula, every op in fp32).
     It also builds them with this machine's torch 1.13 linspace (vectorized, since removed) and
     prints how many entries differ (by 1-2 ulp): the values bitsandbytes gets depend on that detail.
  2. Codes for fixed blocks (ties, zeros, a negative absmax, a block of zeros) by bitsandbytes' search
     with its sign guard, checked here against a brute-force nearest search.
  3. A PyTorch transcription of the block-wise 8-bit step, same fp32 ops in the kernel's order, run
     for 12 steps on a (67, 129) matrix (rows != cols, 8643 elements: not a multiple of any block) at
     qblock 256 and 2048, on a 4100-vector (adam8bit, -c 0.1), and on a 4100-vector with NaN/Inf
     gradient elements.
  4. torch.optim.AdamW for 100 steps on a quadratic with noise (the 8-bit step should track it; the
     transcription's own 100 steps are stored too), and for 12 steps on tensors below 4096 elements
     (which keep fp32 state: AdamW up to fp32 rounding and bitsandbytes' fp32 1 - beta).
Gradients and initial values come from a 32-bit integer hash (hash_uniform) that test_optim_8bit.c
implements identically, so only results are stored and the vector file stays small.
"""
import math
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vecio import write_vectors  # noqa: E402

F32 = np.float32
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "optim_8bit.bin")

ROWS, COLS = 67, 129        # the test matrix: 8643 elements, 34 blocks of 256, 5 of 2048
NVEC = 4100                 # a quantized vector, just above bitsandbytes' 4096 floor
STEPS = 12                  # steps of the transcription comparison
TRACK_STEPS = 100           # steps of the comparison with fp32 AdamW
ZERO_HEAD = 300             # the matrix's first 300 gradients are 0: block 0 (at 256) stays all zero
ROW_SCALES = [0.1, 1.0, 10.0]   # gradient scale of row r: ROW_SCALES[r % 3] (see matrix_grad)
QUAD_CURV = [0.25, 1.0, 4.0, 16.0]  # curvature of row r in the tracking quadratic: QUAD_CURV[r % 4]
SMALL_SCALES = [F32(1e-2), F32(1e-1), F32(1.0), F32(10.0)]          # small matrix, step t: [t % 4]
VEC_SCALES = [F32(1.0), F32(1e-1), F32(1e-2), F32(1e-3), F32(1e-4)]  # quantized vector, step t: [t % 5]
LR = 1e-3
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


# ---- deterministic inputs (mirrored in test_optim_8bit.c) ---------------------------------------
def fmix32(h):
    """murmur3's 32-bit finalizer on a uint32 numpy array."""
    h = h.copy()
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def hash_uniform(seed, t, n):
    """n fp32 values in [-1, 1): element i of stream (seed, t). Exact in fp32 (24-bit integers / 2^23)."""
    with np.errstate(over="ignore"):
        key = fmix32(np.array([(seed * 65536 + t) & 0xFFFFFFFF], dtype=np.uint32))[0]
        i = np.arange(n, dtype=np.uint32)
        h = fmix32(i * np.uint32(0x9E3779B1) + key)
    return ((h >> np.uint32(8)).astype(np.int64) - 8388608).astype(F32) * F32(1.0 / 8388608.0)


def lr_at(t):
    """Warmup over 5 steps, then constant: lr_t = LR * t / 5 in fp32, as the C test computes it."""
    return F32(LR) * F32(t) / F32(5.0) if t < 5 else F32(LR)


def matrix_grad(t):
    """(ROWS*COLS) gradient of step t: row scale * (noise + half a fixed column direction).
    A block of 256 spans 2-3 rows, so blocks mix scales 100x apart. (Wider spreads inside one block,
    1e3 or more in |g|, make bitsandbytes' algorithm itself blow up: v of the small elements falls
    below the unsigned map's first midpoint, 1.6e-7 of the block's absmax, and is stored as 0, while
    m survives, so m / (sqrt(v) + eps) explodes. The transcription does the same.)"""
    n = ROWS * COLS
    col_bias = hash_uniform(2, 0, COLS)
    noise = hash_uniform(1, t, n)
    rows = np.arange(n) // COLS
    cols = np.arange(n) % COLS
    scale = np.array([F32(s) for s in ROW_SCALES], dtype=F32)[rows % len(ROW_SCALES)]
    g = (noise + F32(0.5) * col_bias[cols]) * scale
    g[:ZERO_HEAD] = 0.0
    return g.astype(F32)


# ---- 1. the dynamic maps ------------------------------------------------------------------------
def linspace_f32(start, end, steps):
    """torch.linspace in fp32 as PyTorch >= 2.0 computes it on the CPU: up from start for the first
    half, down from end for the second (every op rounded to fp32)."""
    start, end = F32(start), F32(end)
    step = (end - start) / F32(steps - 1)
    half = steps // 2
    out = [start + step * F32(i) if i < half else end - step * F32(steps - 1 - i) for i in range(steps)]
    return np.array(out, dtype=F32)


def dynamic_map(signed, linspace=linspace_f32):
    """bitsandbytes' create_dynamic_map(signed, max_exponent_bits=7, total_bits=8), from its
    description: for exponent i = 0..6 the midpoints of k+1 evenly spaced boundaries in [0.1, 1]
    (k = 2^i signed, 2^(i+1) unsigned) times 10^(i-6); negatives too if signed; then 0 and 1; sorted."""
    values = []
    for i in range(7):
        k = 2 ** i if signed else 2 ** (i + 1)
        bounds = np.asarray(linspace(0.1, 1.0, k + 1), dtype=F32)
        means = (bounds[:-1] + bounds[1:]) / F32(2.0)
        scale = F32(10.0 ** (i - 6))      # a Python double meeting an fp32 tensor: rounded once
        values += list(scale * means)
        if signed:
            values += list(F32(-scale) * means)
    values += [F32(0.0), F32(1.0)]
    assert len(values) == 256
    return np.array(sorted(values), dtype=F32)


def torch113_linspace(start, end, steps):
    return torch.linspace(start, end, steps).numpy()


# ---- 2. bitsandbytes' nearest search and sign guard --------------------------------------------
def nearest(code, x):
    """quantize_2D: 7-step binary search from 127 to an even index p, then the midpoint test against
    p-1 and p+1 (ties stay at p). code: (256) fp32 tensor, x: fp32 tensor. Returns int64 indices."""
    p = torch.full(x.shape, 127, dtype=torch.int64)
    for step in (64, 32, 16, 8, 4, 2, 1):
        p = torch.where(x > code[p], p + step, p - step)
    cp = code[p]
    up = p + 1                                 # p <= 254 always
    lo = torch.clamp(p - 1, min=0)
    go_up = x > (code[up] + cp) * 0.5
    go_lo = (p > 0) & (x < (code[lo] + cp) * 0.5)
    return torch.where(x > cp, torch.where(go_up, up, p), torch.where(go_lo, lo, p))


def quantize(code, s, absmax, sign_guard):
    """Codes of state values s (fp32) given each element's block absmax; NaN (0/0) lands on 0."""
    c = nearest(code, s / absmax)
    if sign_guard:
        flip = torch.signbit(code[c]) != torch.signbit(s)
        c = torch.where(flip, torch.where(s > 0, c + 1, c - 1), c)
        c = torch.remainder(c, 256)            # bitsandbytes' unsigned char wraps
    return c


def check_nearest(code, x, c):
    """Independent check of the search: the chosen code is the true nearest (float64 distances),
    except where x sits within 1 ulp of a midpoint. Returns the number of such near-ties."""
    x64 = x.double().numpy()[:, None]
    d = np.abs(x64 - code.double().numpy()[None, :])
    best = d.min(axis=1)
    chosen = d[np.arange(len(c)), c.numpy()]
    finite = np.isfinite(x64[:, 0])
    # the search compares with fp32-rounded midpoints: it may pick the farther code by up to 1 ulp of x
    slack = np.spacing(np.abs(x.numpy())).astype(np.float64)
    assert np.all(chosen[finite] <= best[finite] + slack[finite]), "search is not nearest"
    return int(np.sum((chosen > best) & finite))


def roundtrip_blocks(mapS):
    """Fixed blocks for the exact code comparison: 4 blocks of 256 with different shapes."""
    u = [hash_uniform(40 + b, 0, 256) for b in range(4)]
    blocks = [
        u[0],                                                       # uniform in [-1, 1)
        np.sign(u[1]) * np.power(F32(10.0), F32(-8.0) * np.abs(hash_uniform(50, 0, 256))),  # 8 decades
        np.concatenate([np.zeros(64, F32), -np.abs(u[2][64:])]),    # zeros, negative absmax
        np.zeros(256, F32),                                         # all zero: absmax 0, 0/0 = NaN
    ]
    x = np.concatenate(blocks).astype(F32)
    # Exact ties in block 0: a midpoint times an absmax would not stay a tie after the division, so
    # block 0's absmax is made exactly 1.0 and elements 1..127 are the fp32 midpoints the search uses.
    x[0] = F32(1.0)
    for j in range(127):
        x[1 + j] = (mapS[2 * j + 1] + mapS[2 * j + 2]) * F32(0.5)
    return x


# ---- 3. the 8-bit step, transcribed ------------------------------------------------------------
class State8:
    def __init__(self, n, qblock):
        self.n, self.qblock = n, qblock
        nb = (n + qblock - 1) // qblock
        self.cm = torch.zeros(n, dtype=torch.int64)   # all-zero bytes, as the trainer allocates
        self.cv = torch.zeros(n, dtype=torch.int64)
        self.am = torch.zeros(nb, dtype=torch.float32)
        self.av = torch.zeros(nb, dtype=torch.float32)
        self.block = torch.arange(n) // qblock


def scalars(t, lr, wd):
    """The kernel's per-step fp32 scalars; beta^t in double, rounded once (as adam8bit.c does)."""
    b1, b2, eps, lr, wd = F32(BETA1), F32(BETA2), F32(EPS), F32(lr), F32(wd)
    c1 = F32(1.0 - math.pow(float(b1), t))
    c2 = F32(math.sqrt(1.0 - math.pow(float(b2), t)))
    return dict(b1=b1, b2=b2, omb1=F32(1.0) - b1, omb2=F32(1.0) - b2,
                step_size=(-lr * c2) / c1, eps_hat=c2 * eps, decay=F32(1.0) - lr * wd, decays=wd > 0)


def T(x):
    """An fp32 scalar as a 0-dim fp32 tensor, so torch never rounds it differently."""
    return torch.tensor(float(x), dtype=torch.float32)


def step8(p, g, st, t, lr, wd, maps):
    """One step of bitsandbytes' kOptimizerStatic8bit2StateBlockwise (ADAM) on fp32 tensors."""
    mapS, mapU = maps
    k = scalars(t, lr, wd)
    finite = torch.isfinite(g)
    gz = torch.where(finite, g, torch.zeros_like(g))
    v = mapU[st.cv] * st.av[st.block]
    v = v * T(k["b2"]) + T(k["omb2"]) * gz * gz
    m = mapS[st.cm] * st.am[st.block]
    m = m * T(k["b1"]) + T(k["omb1"]) * gz
    v = torch.where(finite, v, torch.zeros_like(v))
    m = torch.where(finite, m, torch.zeros_like(m))
    nb = st.am.numel()
    am = torch.zeros(nb).scatter_reduce(0, st.block, m.abs(), reduce="amax")
    av = torch.zeros(nb).scatter_reduce(0, st.block, v.abs(), reduce="amax")
    pn = p + T(k["step_size"]) * (m / (torch.sqrt(v) + T(k["eps_hat"])))
    if k["decays"]:
        pn = pn * T(k["decay"])
    p = torch.where(finite, pn, p)
    st.cm = quantize(mapS, m, am[st.block], True)
    st.cv = quantize(mapU, v, av[st.block], False)
    st.am, st.av = am, av
    return p, int((~finite).sum())


def run8(p0, grads, qblock, wd, maps, lrs):
    p = torch.tensor(p0)
    st = State8(p.numel(), qblock)
    counts = []
    for t, g in enumerate(grads, start=1):
        p, nf = step8(p, torch.tensor(g), st, t, lrs(t), wd, maps)
        counts.append(nf)
    return p, st, counts


# ---- 4. fp32 AdamW -------------------------------------------------------------------------------
def quad_target():
    return hash_uniform(4, 0, ROWS * COLS)


def quad_curv():
    """Curvature per element: QUAD_CURV[row % 4], 0.25 .. 16."""
    rows = np.arange(ROWS * COLS) // COLS
    return np.array([F32(c) for c in QUAD_CURV], dtype=F32)[rows % len(QUAD_CURV)]


def quad_grad(p, t):
    """Gradient of a noisy quadratic: a * ((p - target) + 0.5 * noise_t), fp32 (C: same ops)."""
    noise = torch.tensor(hash_uniform(5, t, ROWS * COLS))
    return torch.tensor(quad_curv()) * ((p - torch.tensor(quad_target())) + T(0.5) * noise)


def quad_loss(p):
    """The noiseless quadratic: sum a/2 (p - target)^2, in float64 (a report, not a test value)."""
    d = p.double() - torch.tensor(quad_target()).double()
    return float((torch.tensor(quad_curv()).double() * d * d).sum() / 2)


def track_adamw(p0):
    p = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.AdamW([p], lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=1e-2, foreach=False)
    for t in range(1, TRACK_STEPS + 1):
        p.grad = quad_grad(p.detach(), t)
        opt.step()
    return p.detach()


def track_8bit(p0, qblock, maps):
    p = torch.tensor(p0)
    st = State8(p.numel(), qblock)
    for t in range(1, TRACK_STEPS + 1):
        p, _ = step8(p, quad_grad(p, t), st, t, LR, 1e-2, maps)
    return p


def small_adamw():
    """torch.optim.AdamW on a (37, 53) matrix (wd 1e-2) and a 768-vector (wd 0), 12 steps, warmup lr."""
    pm = torch.nn.Parameter(torch.tensor(hash_uniform(60, 0, 37 * 53)))
    pv = torch.nn.Parameter(torch.tensor(hash_uniform(61, 0, 768) * F32(0.1)))
    opt = torch.optim.AdamW([{"params": [pm], "weight_decay": 1e-2}, {"params": [pv], "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2), eps=EPS, foreach=False)
    for t in range(1, STEPS + 1):
        for grp in opt.param_groups:
            grp["lr"] = float(lr_at(t))
        scale_m = SMALL_SCALES[t % 4]                  # 1e-2 .. 10, changing every step
        pm.grad = torch.tensor(hash_uniform(62, t, 37 * 53) * scale_m)
        pv.grad = torch.tensor(hash_uniform(63, t, 768) * F32(1e-3))
        opt.step()
    sm, sv = opt.state[pm], opt.state[pv]
    return pm.detach(), pv.detach(), sm["exp_avg"], sm["exp_avg_sq"], sv["exp_avg"], sv["exp_avg_sq"]


def nan_grads():
    """Gradients of the NaN case on the 4100-vector: NaN at 10 and +Inf at 4000 in step 2, -Inf at 11
    in step 3, finite elsewhere (uniform scale, so every finite element keeps a nonzero v)."""
    grads = []
    for t in range(1, 5):
        g = hash_uniform(70, t, NVEC) * F32(0.01)
        if t == 2:
            g[10], g[4000] = np.nan, np.inf
        if t == 3:
            g[11] = -np.inf
        grads.append(g)
    return grads


def main():
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="scatter_reduce")  # torch 1.13: "in beta"
    out = []

    # 1. maps
    mapS, mapU = dynamic_map(True), dynamic_map(False)
    assert mapS[127] == 0.0 and mapS[255] == 1.0 and (mapS < 0).sum() == 127
    assert abs(mapS[0] + 0.99297) < 1e-5 and abs(mapS[128] - 5.5e-7) < 1e-12
    assert mapU[0] == 0.0 and mapU[255] == 1.0 and abs(mapU[1] - 3.25e-7) < 1e-12
    assert abs(mapU[254] - 0.99648) < 1e-5 and np.all(np.diff(mapU) > 0) and np.all(np.diff(mapS) > 0)
    for name, mp, signed in (("signed", mapS, True), ("unsigned", mapU, False)):
        old = dynamic_map(signed, torch113_linspace)
        diff = old != mp
        ulps = np.abs(old.view(np.int32).astype(np.int64) - mp.view(np.int32).astype(np.int64))
        print(f"{name} map: {int(diff.sum())} of 256 entries differ with torch 1.13's linspace, "
              f"max {int(ulps.max())} ulp")
        assert ulps.max() <= 2
    out += [("map_signed", mapS), ("map_unsigned", mapU)]
    maps = (torch.tensor(mapS), torch.tensor(mapU))

    # 2. fixed blocks: codes with the sign guard (m) and of |x| (v), per block of 256
    x = torch.tensor(roundtrip_blocks(mapS))
    blk = torch.arange(x.numel()) // 256
    amax = torch.zeros(4).scatter_reduce(0, blk, x.abs(), reduce="amax")
    cS = quantize(maps[0], x, amax[blk], True)
    cU = quantize(maps[1], x.abs(), amax[blk], False)
    plain = nearest(maps[0], x / amax[blk])
    ties = check_nearest(maps[0], (x / amax[blk])[:768], plain[:768])
    ties += check_nearest(maps[1], (x.abs() / amax[blk])[:768], nearest(maps[1], (x.abs() / amax[blk])[:768]))
    print(f"fixed blocks: search == brute-force nearest ({ties} near-ties resolved by the fp32 midpoint), "
          f"{int((cS != plain).sum())} codes moved by the sign guard")
    out += [("rt_x", x), ("rt_absmax", amax), ("rt_codes_signed", cS.float()), ("rt_codes_unsigned", cU.float())]

    # 3. the transcription on the matrix (adamw8bit: wd 1e-2) at both block sizes, and the vector
    p0 = hash_uniform(3, 0, ROWS * COLS) * F32(0.5)
    grads = [matrix_grad(t) for t in range(1, STEPS + 1)]
    for qb in (256, 2048):
        p, st, _ = run8(p0, grads, qb, 1e-2, maps, lr_at)
        out += [(f"mat{qb}_p", p), (f"mat{qb}_m_q8", st.cm.float()), (f"mat{qb}_v_q8", st.cv.float()),
                (f"mat{qb}_m_absmax", st.am), (f"mat{qb}_v_absmax", st.av)]
        print(f"matrix qblock {qb}: {STEPS} steps, |p - p0| max {float((p - torch.tensor(p0)).abs().max()):.3g}, "
              f"m codes at 127 (zero): {int((st.cm == 127).sum())}")
    # Sanity check of the transcription's arithmetic: on step 1 the old state decodes to exactly 0 and
    # p is updated from the unquantized fp32 m, v, so one 8-bit step must equal one AdamW step (up to
    # fp32 rounding and the order of weight decay, lr^2*wd*|update| ~ 1e-11 here).
    p1, _, _ = run8(p0, grads[:1], 256, 1e-2, maps, lambda t: LR)
    pa = torch.nn.Parameter(torch.tensor(p0))
    opt = torch.optim.AdamW([pa], lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=1e-2, foreach=False)
    pa.grad = torch.tensor(grads[0])
    opt.step()
    step1 = float((p1 - pa.detach()).abs().max())
    print(f"step 1 of the transcription vs torch AdamW: max |diff| = {step1:.3g}")
    assert step1 < 1e-6
    # adam8bit on the vector with -c 0.1 and a 10x lr: its weight decay is decoupled and comes after
    # the step (the order shows at lr * wd * |update| ~ 1e-5 per step, far above the C test's 1e-7)
    pv0 = hash_uniform(30, 0, NVEC)
    vgrads = [hash_uniform(31, t, NVEC) * VEC_SCALES[t % 5] for t in range(1, STEPS + 1)]
    p, st, _ = run8(pv0, vgrads, 256, 0.1, maps, lambda t: lr_at(t) * F32(10.0))
    out += [("vec_p", p), ("vec_m_q8", st.cm.float()), ("vec_v_q8", st.cv.float()),
            ("vec_m_absmax", st.am), ("vec_v_absmax", st.av)]

    # 6. NaN / Inf gradient elements (adamw8bit, wd 1e-2, constant lr)
    pn0 = hash_uniform(71, 0, NVEC)
    p, st, counts = run8(pn0, nan_grads(), 256, 1e-2, maps, lambda t: LR)
    assert counts == [0, 2, 1, 0], counts
    out += [("nan_p", p), ("nan_m_q8", st.cm.float()), ("nan_v_q8", st.cv.float()),
            ("nan_m_absmax", st.am), ("nan_v_absmax", st.av)]

    # 4. tracking fp32 AdamW over 100 steps
    pq0 = hash_uniform(3, 0, ROWS * COLS) * F32(0.5)
    p32 = track_adamw(pq0)
    out += [("track_adamw_p", p32)]
    moved = float(torch.linalg.norm(p32 - torch.tensor(pq0)))
    for qb in (256, 2048):
        p8 = track_8bit(pq0, qb, maps)
        err = float(torch.linalg.norm(p8 - p32)) / moved
        print(f"tracking: transcribed 8-bit (qblock {qb}) vs fp32 AdamW after {TRACK_STEPS} steps: "
              f"|p8 - p32| / |p32 - p0| = {err:.4g}, max |p8 - p32| = {float((p8 - p32).abs().max()):.3g}, "
              f"loss {quad_loss(p8):.6g} vs {quad_loss(p32):.6g} (start {quad_loss(torch.tensor(pq0)):.6g})")
        out += [(f"track{qb}_p", p8)]

    # 5. small tensors: fp32 state, torch.optim.AdamW
    pm, pv, mm, vm, mv, vv = small_adamw()
    out += [("small_mat_p", pm), ("small_mat_exp_avg", mm), ("small_mat_exp_avg_sq", vm),
            ("small_vec_p", pv), ("small_vec_exp_avg", mv), ("small_vec_exp_avg_sq", vv)]

    write_vectors(OUT, out)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()

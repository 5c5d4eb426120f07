"""test/ref_optim_factored.py: PyTorch references for the factored optimizers (adafactor, came, adalomo).

Run with Debian's torch (1.13 has no torch.optim.Adafactor, and its Adafactor is not HF's anyway):
    /usr/bin/python3 test/ref_optim_factored.py      -> test/vectors/optim_factored.bin

The three step functions below are our own PyTorch transcriptions of the reference update rules:
  - HuggingFace transformers' Adafactor (src/transformers/optimization.py),
  - the official CAME (yangluo7/CAME, came_pytorch/CAME.py),
  - AdaLomo's per-parameter update (OpenLMLab/LOMO, lomo_optim/adalomo.py, fuse_update).
They run on the same fp32 tensors as the C test:
  - a (9, 6) matrix (rows != cols, so a row/column mix-up fails), values over four decades;
  - a 13-vector over three decades below 1e-3, so its RMS is under eps2 and parameter scaling uses
    the floor eps2 (the matrix uses its RMS);
  - 12 fixed gradients whose scale jumps between steps, so update clipping binds on some steps only,
    with exact zeros, including a whole zero row on steps 1-2 and a zero column on step 1, so that
    eps1 (and CAME's eps2) alone decide those row/column states and keep the rsqrt finite.
After every step the parameters and every state tensor are written under the names the C layouts use.
Variant "adafactor_late" starts at step 40000, where the relative step is 1/sqrt(t), not its 1e-2 cap.
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vecio import write_vectors  # noqa: E402

STEPS = 12
ROWS, COLS, NVEC = 9, 6, 13


# ---- shared pieces -------------------------------------------------------------------------------

def rms(x):
    return x.norm(2) / math.sqrt(x.numel())


def inv_sqrt_factored(row, col):
    """V^-1/2 of the rank-1 reconstruction V = row col^T / mean(row), as rsqrt factors."""
    row_factor = torch.rsqrt(row / row.mean(dim=-1, keepdim=True)).unsqueeze(-1)  # (rows, 1)
    col_factor = torch.rsqrt(col).unsqueeze(-2)                                   # (1, cols)
    return row_factor * col_factor                                                # (rows, cols)


def ema_(state, x, beta):
    """state = state*beta + (1-beta)*x, beta a Python float (as the references write it)."""
    state.mul_(beta).add_(x, alpha=1.0 - beta)


def second_moment(g, st, beta, eps1):
    """Unclipped Adafactor update U = g / sqrt(V) with V factored (2-D) or full (1-D)."""
    u = g * g + eps1
    if g.dim() >= 2:
        ema_(st["v_row"], u.mean(dim=-1), beta)
        ema_(st["v_col"], u.mean(dim=-2), beta)
        return inv_sqrt_factored(st["v_row"], st["v_col"]) * g
    ema_(st["v"], u, beta)
    return torch.rsqrt(st["v"]) * g


def clip_update(U, threshold):
    return U / torch.clamp(rms(U) / threshold, min=1.0)


def new_v_state(p):
    if p.dim() >= 2:
        return {"v_row": torch.zeros(p.shape[0]), "v_col": torch.zeros(p.shape[1])}
    return {"v": torch.zeros(p.shape[0])}


# ---- HF Adafactor --------------------------------------------------------------------------------

def adafactor_step(p, g, st, t, lr, hp, decays):
    # step size: relative step min(1e-2, 1/sqrt(t)) ignores lr; parameter scale uses RMS(p) before the step
    rho = min(1e-2, 1.0 / math.sqrt(t)) if hp["relative_step"] else lr
    scale = max(hp["eps2"], rms(p)) if hp["scale_parameter"] else 1.0
    lr_t = scale * rho
    beta2t = 1.0 - math.pow(t, hp["decay_rate"])
    U = clip_update(second_moment(g, st, beta2t, hp["eps1"]), hp["clip_threshold"]) * lr_t
    if hp["beta1"] is not None:
        ema_(st["exp_avg"], U, hp["beta1"])
        U = st["exp_avg"]
    wd = hp["weight_decay"] if decays else 0.0
    if wd != 0.0:
        p.add_(p * (-wd * lr_t))
    p.sub_(U)


def adafactor_state(p, hp):
    st = new_v_state(p)
    if hp["beta1"] is not None:
        st["exp_avg"] = torch.zeros_like(p)
    return st


# ---- official CAME -------------------------------------------------------------------------------

def came_step(p, g, st, t, lr, hp, decays):
    b1, b2, b3 = hp["betas"]
    U = clip_update(second_moment(g, st, b2, hp["eps1"]), hp["clip_threshold"])
    ema_(st["exp_avg"], U, b1)
    m = st["exp_avg"]
    if p.dim() >= 2:
        res = (U - m) ** 2 + hp["eps2"]
        ema_(st["res_row"], res.mean(dim=-1), b3)
        ema_(st["res_col"], res.mean(dim=-2), b3)
        update = inv_sqrt_factored(st["res_row"], st["res_col"]) * m
    else:
        update = m.clone()
    wd = hp["weight_decay"] if decays else 0.0
    if wd != 0.0:
        p.add_(p, alpha=-wd * lr)
    p.sub_(update * lr)


def came_state(p, hp):
    st = {"exp_avg": torch.zeros_like(p)}
    st.update(new_v_state(p))
    if p.dim() >= 2:
        st["res_row"] = torch.zeros(p.shape[0])
        st["res_col"] = torch.zeros(p.shape[1])
    return st


# ---- AdaLomo's update ----------------------------------------------------------------------------

def adalomo_step(p, g, st, t, lr, hp, decays):
    beta2t = 1.0 - math.pow(t, hp["decay_rate"])
    U = clip_update(second_moment(g, st, beta2t, hp["eps1"]), hp["clip_threshold"])
    lr_t = lr * max(hp["eps2"], p.norm(2.0) / math.sqrt(p.numel()))
    wd = hp["weight_decay"] if decays else 0.0
    if wd > 0.0:
        p.mul_(1.0 - lr_t * wd)
    p.add_(-lr_t * U)


def adalomo_state(p, hp):
    return new_v_state(p)


# ---- the fixed problem ---------------------------------------------------------------------------

def mixed_scale(gen, shape, lo, hi):
    """Gaussian values times 10^uniform(lo, hi) per element: four decades in one tensor."""
    x = torch.randn(shape, generator=gen)
    e = torch.rand(shape, generator=gen) * (hi - lo) + lo
    return (x * torch.pow(10.0, e)).float()


def schedule(t):
    """A warmup-then-cosine multiplier, so the test sees OptStep.lr change every step."""
    if t <= 3:
        return t / 3.0
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * (t - 3) / (STEPS - 3)))


# HF / CAME / AdaLomo defaults, written out here independently of the C tables.
HF_DEFAULTS = dict(eps1=1e-30, eps2=1e-3, clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                   weight_decay=0.0, scale_parameter=True, relative_step=True)
CAME_DEFAULTS = dict(eps1=1e-30, eps2=1e-16, clip_threshold=1.0, betas=(0.9, 0.999, 0.9999),
                     weight_decay=0.0)
ADALOMO_DEFAULTS = dict(eps1=1e-30, eps2=1e-3, clip_threshold=1.0, decay_rate=-0.8, weight_decay=0.0)

# name: (step, state, hyperparameters, peak lr or None when the optimizer ignores it, first step t)
VARIANTS = {
    "adafactor_default": (adafactor_step, adafactor_state, dict(HF_DEFAULTS), None, 1),
    # late in training: t > 10^4, so the relative step is 1/sqrt(t), not its 1e-2 cap
    "adafactor_late": (adafactor_step, adafactor_state, dict(HF_DEFAULTS), None, 40000),
    "adafactor_lr": (adafactor_step, adafactor_state,
                     dict(HF_DEFAULTS, relative_step=False, beta1=0.9, weight_decay=0.1), 0.05, 1),
    "came": (came_step, came_state, dict(CAME_DEFAULTS, weight_decay=0.1), 2e-4, 1),
    "adalomo": (adalomo_step, adalomo_state, dict(ADALOMO_DEFAULTS, weight_decay=0.1), 1e-3, 1),
}


def main():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(20240531)
    W0 = mixed_scale(gen, (ROWS, COLS), -3.0, 1.0)
    b0 = mixed_scale(gen, (NVEC,), -6.0, -3.0)   # RMS below eps2 = 1e-3: parameter scaling's floor
    step_scale = [1.0, 1.0, 10.0, 0.1, 1.0, 100.0, 1.0, 0.01, 1.0, 1.0, 5.0, 1.0]
    grads = []
    for t in range(STEPS):
        gW = mixed_scale(gen, (ROWS, COLS), -2.0, 0.0) * step_scale[t]
        gb = mixed_scale(gen, (NVEC,), -2.0, 0.0) * step_scale[t]
        gW[2, 3] = 0.0               # exact zeros: eps1 keeps rsqrt finite
        gW[(t * 5) % ROWS, t % COLS] = 0.0
        gb[4] = 0.0
        if t < 2:
            gW[5, :] = 0.0           # a row with no gradient (an embedding row of an unseen token):
        if t < 1:
            gW[:, 2] = 0.0           # its row state is eps1 alone, and CAME's residual there is eps2 alone
        grads.append((gW.float(), gb.float()))

    out = [("W0", W0), ("b0", b0)]
    for t, (gW, gb) in enumerate(grads, start=1):
        out += [(f"g.t{t}.W", gW), (f"g.t{t}.b", gb)]

    for name, (step_fn, state_fn, hp, peak, t0) in VARIANTS.items():
        W, b = W0.clone(), b0.clone()
        sW, sb = state_fn(W, hp), state_fn(b, hp)
        out += [(f"{name}.W.nstates", [len(sW)]), (f"{name}.b.nstates", [len(sb)]), (f"{name}.t0", [t0])]
        for t, (gW, gb) in enumerate(grads, start=1):
            # the lr the trainer would pass: peak * schedule, rounded to fp32 like OptStep.lr
            lr = float(np.float32(peak * schedule(t))) if peak is not None else None
            out.append((f"{name}.t{t}.lr", [lr if lr is not None else 0.0]))
            step = t0 + t - 1                                  # the optimizer's step number
            step_fn(W, gW, sW, step, lr, hp, decays=True)     # the matrix decays (ParamShape.decay 1)
            step_fn(b, gb, sb, step, lr, hp, decays=False)    # the vector does not (a bias / LN gain)
            # snapshots: the tensors change in place on the next step
            out += [(f"{name}.t{t}.W", W.clone()), (f"{name}.t{t}.b", b.clone())]
            out += [(f"{name}.t{t}.W.{k}", v.clone()) for k, v in sW.items()]
            out += [(f"{name}.t{t}.b.{k}", v.clone()) for k, v in sb.items()]
            for x in [W, b] + list(sW.values()) + list(sb.values()):
                assert torch.isfinite(x).all(), f"{name} step {t}: non-finite reference"

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "optim_factored.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_vectors(path, out)
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()

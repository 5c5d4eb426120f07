#!/usr/bin/python3
"""test/ref_optim_basic.py: reference vectors for test/test_optim_basic.c.

Run with Debian's python3-torch (torch 1.13), which lives at /usr/bin/python3:
    /usr/bin/python3 test/ref_optim_basic.py        # writes test/vectors/optim_basic.bin

Every case runs STEPS optimizer steps on two fixed tensors, a matrix (7, 5) that takes weight decay
and a vector (11,) that does not (as the trainer decays 2-D weights only), with a fixed gradient per
step and a per-step learning rate (a warmup/decay shape, so an optimizer that reads the peak lr
instead of the scheduled one fails). After every step it records the parameters and every state
tensor, which the C test compares after each of its own steps.

References:
  sgd, sgdm, adam, adamw: torch.optim.SGD / Adam / AdamW themselves (foreach=False: the per-tensor
    loop, the same op order as our C loop).
  lomo with wd 0: torch.optim.SGD too (LOMO's update is plain SGD).
  lion, sophia, lomo with wd: a PyTorch transcription, below, of the equations in
    shared/reference/optimizers.md (sections 3, 4, 5), using the same torch ops in the same order as
    the reference implementations (so fp32 rounding matches to a few ulps).

Every hyperparameter is the Python float as typed (0.999, not the float32 nearest to it), as a user
passes it to torch; the C side reads the same doubles ("<case>.hyper64": each double's 8 bytes stored
as two float32 words) into OptHyper, which keeps doubles, so derived scalars (1 - beta, 1 - lr*wd, the
bias corrections) are the same doubles on both sides, rounded to fp32 once. Only the per-step lr is a
float32 value ("<case>.lr"), the same on both sides.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vecio import write_vectors  # noqa: E402

STEPS = 12
SHAPES = {"mat": (7, 5), "vec": (11,)}
DECAYS = {"mat": True, "vec": False}          # weight decay applies to the matrix only
LR_SCALE = [0.1, 0.4, 0.7, 1.0, 1.0, 0.95, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1]
assert len(LR_SCALE) == STEPS
# Order of the per-case "hyper" array; test_optim_basic.c reads the same order.
HYPER_FIELDS = ["lr", "beta1", "beta2", "eps", "weight_decay", "momentum", "nesterov", "rho", "bs",
                "hess_interval"]


def f32(x):
    """The float32 value nearest x, as a Python float (exactly what the C side holds)."""
    return float(np.float32(x))


# ---- fixed inputs ---------------------------------------------------------------------------------
torch.set_num_threads(1)
gen = torch.Generator().manual_seed(20240520)


def mixed(shape, lo, hi):
    """Normal values times a per-element scale 10^U(lo, hi): magnitudes over several decades."""
    z = torch.randn(shape, generator=gen, dtype=torch.float64)
    e = torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo
    return (z * torch.pow(10.0, e)).float()


THETA0 = {k: mixed(s, -2, 1) for k, s in SHAPES.items()}            # 0.01 .. 10
GRADS = {k: mixed((STEPS,) + s, -3, 2) for k, s in SHAPES.items()}   # 0.001 .. 100
HGRADS = {k: mixed((STEPS,) + s, -3, 1) for k, s in SHAPES.items()}  # Sophia's GNB gradients
# One matrix element whose gradient is always exactly zero: Lion's and Sophia's sign(0) = 0 path,
# and Adam's 0/(0 + eps).
GRADS["mat"][:, 2, 3] = 0.0

# ---- cases ----------------------------------------------------------------------------------------
# (name, optimizer, reference, hyperparameters). Unlisted hyperparameters are 0.
CASES = [
    ("sgd", "sgd", "torch", dict(lr=1e-2)),
    ("sgd_wd", "sgd", "torch", dict(lr=1e-2, weight_decay=0.1)),
    ("sgdm", "sgdm", "torch", dict(lr=1e-2, momentum=0.9)),
    ("sgdm_nesterov", "sgdm", "torch", dict(lr=1e-2, momentum=0.9, nesterov=1)),
    ("sgdm_wd", "sgdm", "torch", dict(lr=1e-2, momentum=0.8, weight_decay=0.05)),
    ("sgdm_nesterov_wd", "sgdm", "torch", dict(lr=1e-2, momentum=0.85, nesterov=1, weight_decay=0.05)),
    ("adam", "adam", "torch", dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)),
    # eps 1e-4 is comparable to sqrt(v_hat) of the small gradients, so its place (after the bias
    # correction) matters; non-default betas catch an optimizer that ignores the hyperparameters.
    ("adam_wd", "adam", "torch", dict(lr=1e-2, beta1=0.85, beta2=0.98, eps=1e-4, weight_decay=0.1)),
    ("adamw", "adamw", "torch", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2)),
    ("adamw_wd", "adamw", "torch", dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-4, weight_decay=0.1)),
    ("lion", "lion", "equations", dict(lr=1e-3, beta1=0.95, beta2=0.98)),
    ("lion_wd", "lion", "equations", dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.5)),
    # The reference's rho and bs (5120) put the clipped ratio on both sides of 1 for these gradient
    # scales (asserted below); a Hessian update after steps 3, 6, 9, 12.
    ("sophia", "sophia", "equations", dict(lr=1e-3, beta1=0.965, beta2=0.99, rho=0.04, bs=5120,
                                            weight_decay=0.1, hess_interval=3)),
    ("lomo", "lomo", "torch", dict(lr=1e-2)),
    ("lomo_wd", "lomo", "equations", dict(lr=1e-2, weight_decay=0.1)),
]
STATE_NAMES = {"sgd": [], "sgdm": ["momentum_buffer"], "adam": ["exp_avg", "exp_avg_sq"],
               "adamw": ["exp_avg", "exp_avg_sq"], "lion": ["exp_avg"],
               "sophia": ["exp_avg", "hessian"], "lomo": []}


# ---- the transcriptions (shared/reference/optimizers.md) ------------------------------------------
# Each updates theta and its state in place for one step. Scalars are Python floats (double), as in
# the reference implementations; torch rounds them to fp32 when they meet an fp32 tensor.
def lion_update(theta, m, g, lr, beta1, beta2, wd, margins, seen):
    """Lion (section 3): decay; c = beta1*m + (1-beta1)*g; theta -= lr*sign(c); m = EMA_beta2(g)."""
    theta.mul_(1.0 - lr * wd)
    a, b = m * beta1, g * (1.0 - beta1)
    c = a + b
    margins.append(sign_margin(c, a.abs() + b.abs(), seen))
    theta.add_(torch.sign(c), alpha=-lr)
    m.mul_(beta2).add_(g, alpha=1.0 - beta2)


def sophia_update(theta, m, h, g, lr, beta1, rho, bs, wd, margins, seen, clipped, t):
    """SophiaG step(bs) (section 4): decay; m = EMA_beta1(g); theta -= lr*sign(m)*min(|m|/(rho*bs*h+1e-15), 1)."""
    theta.mul_(1.0 - lr * wd)
    a, b = m * beta1, g * (1.0 - beta1)
    m.mul_(beta1).add_(g, alpha=1.0 - beta1)
    margins.append(sign_margin(m, a.abs() + b.abs(), seen))
    ratio = (m.abs() / (rho * bs * h + 1e-15)).clamp(max=1.0)
    live = (m != 0) & (h != 0)
    clipped.append((t, (live & (ratio == 1.0)).sum().item(), live.sum().item()))
    theta.addcmul_(torch.sign(m), ratio, value=-lr)


def sophia_hessian(h, ghat, beta2):
    """SophiaG update_hessian (section 4): h = beta2*h + (1-beta2)*ghat*ghat."""
    h.mul_(beta2).addcmul_(ghat, ghat, value=1.0 - beta2)


def lomo_update(theta, g, lr, wd):
    """LOMO (section 5): theta = theta*(1 - lr*wd) (only when wd > 0) - lr*g."""
    if wd > 0:
        theta.mul_(1.0 - lr * wd)
    theta.add_(g, alpha=-lr)


def sign_margin(x, terms, seen):
    """Smallest |x| / (largest term magnitude seen so far) over the elements where x != 0.
    x is a sum whose fp32 rounding error is a few ulps of the largest term that ever entered it
    (`seen`, a running max kept per element); when this margin is far above an ulp (1.2e-7), a C
    result that differs by a few ulps cannot flip sign(x)."""
    torch.maximum(seen, terms, out=seen)
    nz = x != 0
    if not nz.any():
        return float("inf")
    return (x[nz].abs() / seen[nz]).min().item()


# ---- running a case -------------------------------------------------------------------------------
def run_case(name, opt, ref, hp):
    hp = {k: float(hp.get(k, 0.0)) for k in HYPER_FIELDS}   # Python floats, as typed
    lrs = [f32(hp["lr"] * s) for s in LR_SCALE]
    wd_of = {k: (hp["weight_decay"] if DECAYS[k] else 0.0) for k in SHAPES}
    theta = {k: THETA0[k].clone() for k in SHAPES}
    out = {(k, s): [] for k in SHAPES for s in ["param"] + STATE_NAMES[opt]}
    margins, clipped = [], []
    seen = {k: torch.zeros(SHAPES[k]) for k in SHAPES}   # running max of sign-argument terms
    nstates = None

    if ref == "torch":
        for k in SHAPES:
            theta[k].requires_grad_(True)
        groups = [{"params": [theta[k]], "weight_decay": wd_of[k]} for k in SHAPES]
        if opt in ("sgd", "sgdm", "lomo"):
            o = torch.optim.SGD(groups, lr=hp["lr"], momentum=hp["momentum"],
                                nesterov=bool(hp["nesterov"]), foreach=False)
        elif opt == "adam":
            o = torch.optim.Adam(groups, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                                 foreach=False)
        elif opt == "adamw":
            o = torch.optim.AdamW(groups, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                                  foreach=False)
        else:
            raise ValueError(opt)
        for t in range(STEPS):
            for gi, k in enumerate(SHAPES):
                o.param_groups[gi]["lr"] = lrs[t]
                theta[k].grad = GRADS[k][t].clone()
            o.step()
            for k in SHAPES:
                st = o.state[theta[k]]
                kept = [s for s in STATE_NAMES[opt] if st.get(s) is not None]
                assert kept == STATE_NAMES[opt], (name, list(st.keys()))
                out[(k, "param")].append(theta[k].detach().clone())
                for s in STATE_NAMES[opt]:
                    out[(k, s)].append(st[s].clone())
        nstates = len(STATE_NAMES[opt])
    else:
        state = {(k, s): torch.zeros(SHAPES[k]) for k in SHAPES for s in STATE_NAMES[opt]}
        for t in range(STEPS):
            for k in SHAPES:
                g = GRADS[k][t]
                if opt == "lion":
                    lion_update(theta[k], state[(k, "exp_avg")], g, lrs[t], hp["beta1"], hp["beta2"],
                                wd_of[k], margins, seen[k])
                elif opt == "sophia":
                    sophia_update(theta[k], state[(k, "exp_avg")], state[(k, "hessian")], g, lrs[t],
                                  hp["beta1"], hp["rho"], hp["bs"], wd_of[k], margins, seen[k], clipped, t)
                    # the trainer's schedule: a GNB gradient folded in after every k-th step
                    if (t + 1) % int(hp["hess_interval"]) == 0:
                        sophia_hessian(state[(k, "hessian")], HGRADS[k][t], hp["beta2"])
                elif opt == "lomo":
                    lomo_update(theta[k], g, lrs[t], wd_of[k])
                else:
                    raise ValueError(opt)
                out[(k, "param")].append(theta[k].clone())
                for s in STATE_NAMES[opt]:
                    out[(k, s)].append(state[(k, s)].clone())
        nstates = len(STATE_NAMES[opt])

    # No sign() argument within 1e-4 (relative) of a tie: a few-ulp difference in C cannot flip one.
    if margins:
        assert min(margins) > 1e-4, (name, min(margins))
        print(f"  {name}: smallest sign() margin {min(margins):.2g} (relative to its terms)")
    # Sophia: the ratio must be clipped for some elements and not for others, or the test would not
    # tell a wrong rho/bs/h from a right one.
    if clipped:
        first = int(hp["hess_interval"])    # 0-based index of the first step that sees h != 0
        n_clip = sum(c for t, c, _ in clipped if t >= first)
        n_all = sum(a for t, _, a in clipped if t >= first)
        frac = n_clip / n_all
        assert 0.1 < frac < 0.9, (name, frac)
        print(f"  {name}: ratio clipped to 1 in {frac:.0%} of elements after the first Hessian update")

    hyper64 = np.array([hp[f] for f in HYPER_FIELDS], dtype="<f8").view("<f4")   # exact doubles
    arrays = [(f"{name}.hyper64", hyper64), (f"{name}.lr", lrs),
              (f"{name}.nstates", [nstates])]
    for (k, s), seq in out.items():
        arrays.append((f"{name}.{k}.{s}", torch.stack([x.reshape(-1) for x in seq])))
    return arrays


def main():
    arrays = []
    for k in SHAPES:
        arrays += [(f"theta0.{k}", THETA0[k]), (f"grad.{k}", GRADS[k].reshape(STEPS, -1)),
                   (f"hgrad.{k}", HGRADS[k].reshape(STEPS, -1))]
    arrays.append(("steps", [STEPS]))
    for name, opt, ref, hp in CASES:
        arrays += run_case(name, opt, ref, hp)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "optim_basic.bin")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_vectors(path, arrays)
    print(f"wrote {path}: {len(CASES)} cases x {STEPS} steps, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()

"""optim.py OUT.h5: the PyTorch oracle for src/nn/optim.c (read by tests/test_optim.c).

Three parameter tensors of awkward sizes (7x5, 13, 3x3x3x2) train for STEPS steps on random
gradients under torch.optim's default single-tensor paths (PyTorch 1.13). Hyperparameters are
float32 values (float(np.float32(x))), so C's float fields hold exactly what PyTorch used.

    /init/p0, /init/p1, /init/p2      initial weights in their shapes
    /run/<name>                       one optimiser run; attrs kind ("adam", "adamw", "radam"),
                                      lr, beta1, beta2, eps, weight_decay, warmup (steps, 0: none),
                                      max_norm (0: no clipping)
        grads   [STEPS, N]            the gradient of each step, tensors concatenated (N = 102)
        w       [STEPS, N]            the weights after each step
        m, v    [N]                   exp_avg and exp_avg_sq after the last step
        lr      [STEPS] float64       the learning rate each step used (warm-up runs)
        norm    [STEPS]               clip_grad_norm_'s returned total norm (clipping runs)
        rho     [STEPS] float64       RAdam's rho_t as radam.py computes it (RAdam runs)
    /ema                              attrs rates (float32 array), halflife_images, rampup_ratio,
                                      batch
        w       [STEPS, N]            the online weights fed to the EMAs at each step
        rate_<i> [STEPS, N]           the EMA of rate rates[i] after each step, starting from
                                      /init, updated as consistency_models' update_ema:
                                      targ.mul_(rate).add_(src, alpha=1 - rate)
        halflife [STEPS, N]           EDM's half-life EMA after each step (training_loop.py:
                                      p_ema.copy_(p_net.lerp(p_ema, beta)))
        beta    [STEPS] float64       EDM's beta at each step
"""
import sys

import h5py
import numpy as np
import torch

torch.set_num_threads(1)
RNG = np.random.default_rng(20240704)
STEPS = 20
SHAPES = [(7, 5), (13,), (3, 3, 3, 2)]


def f32(x):
    """The float32 value of x as a Python float: what cmlab's float fields hold."""
    return float(np.float32(x))


def concat(tensors):
    return np.concatenate([t.detach().numpy().ravel() for t in tensors]).astype(np.float32)


def split(flat):
    out, off = [], 0
    for s in SHAPES:
        n = int(np.prod(s))
        out.append(torch.from_numpy(flat[off:off + n].reshape(s).copy()))
        off += n
    return out


INIT = [RNG.standard_normal(s).astype(np.float32) for s in SHAPES]
N = sum(int(np.prod(s)) for s in SHAPES)


def make_grads(step_scale=None):
    """Gradients of very different scales per tensor (1, 1e-3, 30), with exact zeros: element 3
    of p1 always (its moments stay zero unless weight decay feeds them) and p0[0, 0] every other
    step."""
    grads = []
    for k in range(STEPS):
        g = [RNG.standard_normal(s).astype(np.float32) * np.float32(sc)
             for s, sc in zip(SHAPES, (1.0, 1e-3, 30.0))]
        g[1][3] = 0
        if k % 2 == 0:
            g[0][0, 0] = 0
        flat = np.concatenate([x.ravel() for x in g])
        if step_scale is not None:
            flat = flat * np.float32(step_scale[k])
        grads.append(flat.astype(np.float32))
    return np.stack(grads)


def run(out, name, kind, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup=0,
        max_norm=0.0, grads=None):
    hp = dict(lr=f32(lr), betas=(f32(betas[0]), f32(betas[1])), eps=f32(eps),
              weight_decay=f32(weight_decay))
    params = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in INIT]
    if kind == "adam":
        opt = torch.optim.Adam(params, **hp)
    elif kind == "adamw":
        opt = torch.optim.AdamW(params, **hp)
    else:
        opt = torch.optim.RAdam(params, **hp)
    sched = None
    if warmup > 0:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / warmup))
    if grads is None:
        grads = make_grads()
    ws, lrs, norms, rhos = [], [], [], []
    b2 = hp["betas"][1]
    for k in range(STEPS):
        for p, g in zip(params, split(grads[k])):
            p.grad = g.clone()
        if max_norm > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, max_norm)))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
        ws.append(concat(params))
        t = float(k + 1)
        rho_inf = 2 / (1 - b2) - 1
        rhos.append(rho_inf - 2 * t * (b2 ** t) / (1 - b2 ** t))
    g = out.create_group(f"run/{name}")
    g.attrs["kind"] = kind
    g.attrs["lr"] = hp["lr"]
    g.attrs["beta1"], g.attrs["beta2"] = hp["betas"]
    g.attrs["eps"] = hp["eps"]
    g.attrs["weight_decay"] = hp["weight_decay"]
    g.attrs["warmup"] = warmup
    g.attrs["max_norm"] = max_norm
    g["grads"] = grads
    g["w"] = np.stack(ws)
    g["m"] = concat([opt.state[p]["exp_avg"] for p in params])
    g["v"] = concat([opt.state[p]["exp_avg_sq"] for p in params])
    g["lr"] = np.array(lrs, dtype=np.float64)
    if max_norm > 0:
        g["norm"] = np.array(norms, dtype=np.float32)
    if kind == "radam":
        g["rho"] = np.array(rhos, dtype=np.float64)


def emas(out, rates, halflife_images, rampup_ratio, batch):
    rates = [f32(r) for r in rates]
    online = [split(RNG.standard_normal(N).astype(np.float32)) for _ in range(STEPS)]
    const = [[torch.from_numpy(x.copy()) for x in INIT] for _ in rates]
    edm = [torch.from_numpy(x.copy()) for x in INIT]
    hist = {f"rate_{i}": [] for i in range(len(rates))}
    hist["halflife"], betas = [], []
    cur_nimg = 0
    for k in range(STEPS):
        for i, r in enumerate(rates):
            for targ, src in zip(const[i], online[k]):
                targ.detach().mul_(r).add_(src, alpha=1 - r)
            hist[f"rate_{i}"].append(concat(const[i]))
        # EDM training_loop.py, "Update EMA", with cur_nimg the images before this step.
        ema_halflife_nimg = halflife_images
        if rampup_ratio is not None:
            ema_halflife_nimg = min(ema_halflife_nimg, cur_nimg * rampup_ratio)
        ema_beta = 0.5 ** (batch / max(ema_halflife_nimg, 1e-8))
        for p_ema, p_net in zip(edm, online[k]):
            p_ema.copy_(p_net.detach().lerp(p_ema, ema_beta))
        cur_nimg += batch
        betas.append(ema_beta)
        hist["halflife"].append(concat(edm))
    g = out.create_group("ema")
    g.attrs["rates"] = np.array(rates, dtype=np.float32)
    g.attrs["halflife_images"] = float(halflife_images)
    g.attrs["rampup_ratio"] = float(rampup_ratio)
    g.attrs["batch"] = batch
    g["w"] = np.stack([concat(w) for w in online])
    for key, h in hist.items():
        g[key] = np.stack(h)
    g["beta"] = np.array(betas, dtype=np.float64)


def main():
    with h5py.File(sys.argv[1], "w") as out:
        for i, x in enumerate(INIT):
            out[f"init/p{i}"] = x
        run(out, "adam", "adam", 1e-2)
        run(out, "adam_wd", "adam", 1e-2, weight_decay=0.01)
        run(out, "adamw", "adamw", 1e-2, weight_decay=0.01)
        run(out, "radam", "radam", 1e-2)
        run(out, "radam_wd", "radam", 1e-2, weight_decay=0.1)
        run(out, "adam_warmup", "adam", 1e-2, warmup=5)
        # Steps scaled by log-uniform factors over [0.1, 10] and max_norm at the median norm:
        # about half the steps clip.
        scale = np.exp(RNG.uniform(np.log(0.1), np.log(10.0), STEPS))
        grads = make_grads(scale)
        max_norm = float(np.median(np.linalg.norm(grads.astype(np.float64), axis=1)))
        run(out, "adam_clip", "adam", 1e-2, max_norm=max_norm, grads=grads)
        # EDM's schedule with a small half-life and batch, so that beta runs from 0 through values
        # below and above 0.5 (the two formulas of torch.lerp) to the half-life's 0.5^(8/64).
        emas(out, [0.9, 0.999], halflife_images=64, rampup_ratio=0.5, batch=8)


if __name__ == "__main__":
    main()

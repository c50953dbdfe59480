"""ct_step.py OUT.h5: the PyTorch twin of one consistency training step, CT/iCT (src/train/ct.c,
ct_step_loss; reference/cm.md §2, §4, §5) and CD (cd_teacher_step + ct_step_loss; §3.1), in
float64, for tests/test_ct_step.c.

Per case group /<case>:
  attrs   the U-Net config (as tests/torch/unet.py), param_count, B, loss ("l2" | "pseudo_huber"),
          huber_c, sigma_data, eps (= sigma_min), sigma_min, sigma_max, rho, N, mu,
          target_is_online (1: iCT, the target is the online weights with stop-gradient),
          dropout_seed / dropout_stream / dropout_step (when dropout > 0)
  weights/online/<name>   the online weights (every parameter re-randomised)
  weights/target/<name>   the target weights (a separate random set; absent for iCT)
  x0, z [B,C,H,W]; idx [B] (int32, ascending-grid interval i); t1, t0, lam [B]
  loss (scalar as [1]); grad/<name> the gradient of the loss w.r.t. every online parameter
  ema/<name>   (separate targets) target' = mu * target + (1 - mu) * w in float32, PyTorch's op
               order targ.mul_(mu).add_(w, alpha = 1 - mu)
CD cases (method = "cd") also hold
  attrs   solver ("heun" | "euler")
  weights/teacher/<name>   the EDM teacher's weights (a third random set)
  xt [B,C,H,W]             the teacher's ODE step from x0 + t1 z down to t0 (the target's input)

The twin: a = f(x0 + t1 z, t1) with the online weights (gradients), b = f(xt, t0) under
torch.no_grad() with the target weights, the same cmlab dropout masks in both passes; CT:
xt = x0 + t0 z; CD: x1 = x0 + t1 z, d1 = (x1 - D(x1; t1))/t1, xe = x1 + (t0 - t1) d1 (euler: xt = xe),
d2 = (xe - D(xe; t0))/t0, xt = x1 + (t0 - t1)(d1 + d2)/2 (heun), with D the teacher under EDM's
preconditioning (c_skip = sd^2/(t^2+sd^2), c_out = t sd/sqrt(t^2+sd^2), c_in as below), no dropout;
f = c_skip x + c_out F(c_in x; c_noise) with the consistency preconditioning
  c_skip = sd^2/((t-eps)^2+sd^2), c_out = sd (t-eps)/sqrt(t^2+sd^2), c_in = 1/sqrt(t^2+sd^2),
  c_noise = ln(t)/4;
per-sample distance l2: mean over pixels of (a-b)^2; pseudo-Huber: sqrt(sum (a-b)^2 + c^2) - c;
loss = mean_b lam_b d_b. Every input is rounded to float32 first; references are float64 and
stored as float32.
"""
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, HERE)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import cmlab_torch  # noqa: E402
from unet import write_config_attrs  # noqa: E402

torch.set_num_threads(2)
RNG = np.random.default_rng(20240722)

SIGMA_MIN, SIGMA_MAX, RHO, SIGMA_DATA = 0.002, 80.0, 7.0, 0.5
B = 3

BASE_CFG = dict(img_channels=1, img_h=16, img_w=16, base_channels=8, channel_mult=[1, 2],
                num_blocks=1, attn_resolutions=[], mid_attn=True, attn_heads=1, dropout=0.0,
                emb_type="positional", skip_scale=math.sqrt(0.5), two_times=False, seed=0)

CASES = {
    # CT: l2, uniform weight, a separate target (EMA) weight set, target update with mu.
    "ct": dict(cfg=dict(BASE_CFG), loss="l2", N=18, idx=[0, 7, 16], weighting="uniform",
               target="separate", mu=0.9),
    # iCT: pseudo-Huber, lam = 1/(t1 - t0), target = online weights (stop-gradient), dropout 0.2
    # with the same cmlab masks in both passes.
    "ict": dict(cfg=dict(BASE_CFG, dropout=0.2), loss="pseudo_huber", N=11, idx=[1, 4, 9],
                weighting="ict", target="online", mu=0.0, dropout=(0xC0FFEE1234, 7000, 42)),
    # CD, the CIFAR-10 recipe: Heun teacher step on the N = 18 grid, l2, target = online weights;
    # the intervals include the lowest (t0 = eps) and the highest (t1 = T).
    "cd": dict(cfg=dict(BASE_CFG), loss="l2", N=18, idx=[0, 9, 16], weighting="uniform",
               target="online", mu=0.0, method="cd", solver="heun"),
    # CD with an Euler teacher step, pseudo-Huber, a separate target network (mu = 0.95, the
    # ImageNet-64 recipe) and dropout masks shared by the student and target passes.
    "cd_euler": dict(cfg=dict(BASE_CFG, dropout=0.1), loss="pseudo_huber", N=40, idx=[3, 20, 38],
                     weighting="uniform", target="separate", mu=0.95, method="cd", solver="euler",
                     dropout=(77, 7000, 5)),
}


def f32(a):
    return np.asarray(a, dtype=np.float32)


def f64(a):
    """float32-rounded, as float64 torch tensor."""
    return torch.from_numpy(f32(a).astype(np.float64))


def random_weights(net):
    """Every parameter redrawn as in tests/torch/unet.py (weights N(0, 1/fan_in), GroupNorm
    weights 1 + N(0, 0.3^2), biases N(0, 0.3^2)), float32-rounded; returns {name: float32}."""
    out = {}
    for name, p in net.named_parameters():
        if p.dim() > 1:
            v = RNG.standard_normal(p.shape) / math.sqrt(p[0].numel())
        elif name.endswith("norm.weight") or name.endswith("norm1.weight") or name.endswith("norm2.weight") \
                or name == "norm_out.weight":
            v = 1.0 + 0.3 * RNG.standard_normal(p.shape)
        else:
            v = 0.3 * RNG.standard_normal(p.shape)
        out[name] = f32(v)
    return out


def load(net, weights):
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(weights[name].astype(np.float64)))


def karras_ascending(N):
    i = np.arange(N, dtype=np.float64)
    lo, hi = SIGMA_MIN ** (1 / RHO), SIGMA_MAX ** (1 / RHO)
    s = (lo + i / (N - 1) * (hi - lo)) ** RHO
    s[0], s[-1] = SIGMA_MIN, SIGMA_MAX
    return s


def consistency_fn(net, x, t, dropout):
    """f(x, t) = c_skip x + c_out F(c_in x; c_noise), t [B] float64 (float32-rounded values)."""
    sd, eps = SIGMA_DATA, SIGMA_MIN
    r = torch.sqrt(t * t + sd * sd)
    c_skip = sd * sd / ((t - eps) ** 2 + sd * sd)
    c_out = sd * (t - eps) / r
    c_in = 1.0 / r
    c_noise = torch.log(t) / 4.0
    v = (slice(None), None, None, None)
    F = net(x * c_in[v], c_noise, dropout=dropout, sample0=0)
    return c_skip[v] * x + c_out[v] * F


def edm_denoiser(net, x, t):
    """D(x; t) = c_skip x + c_out F(c_in x; c_noise), EDM's preconditioning, no dropout."""
    sd = SIGMA_DATA
    r = torch.sqrt(t * t + sd * sd)
    v = (slice(None), None, None, None)
    F = net(x / r[v], torch.log(t) / 4.0)
    return (sd * sd / (r * r))[v] * x + (t * sd / r)[v] * F


def teacher_step(teacher, x1, t1, t0, solver):
    """One Euler or Heun step of the teacher's PF-ODE dx/dt = (x - D(x; t))/t from t1 to t0."""
    v = (slice(None), None, None, None)
    h = (t0 - t1)[v]
    d1 = (x1 - edm_denoiser(teacher, x1, t1)) / t1[v]
    xe = x1 + h * d1
    if solver == "euler":
        return xe
    d2 = (xe - edm_denoiser(teacher, xe, t0)) / t0[v]
    return x1 + h * (d1 + d2) / 2


def case(f, label, spec):
    cfg = spec["cfg"]
    online = cmlab_torch.UNet(cfg).double()
    target = cmlab_torch.UNet(cfg).double()
    online.eval()
    target.eval()
    w = random_weights(online)
    wt = random_weights(online) if spec["target"] == "separate" else w
    load(online, w)
    load(target, wt)
    for p in target.parameters():
        p.requires_grad_(False)

    C, H, W = cfg["img_channels"], cfg["img_h"], cfg["img_w"]
    dim = C * H * W
    x0 = f32(RNG.uniform(-1, 1, (B, C, H, W)))
    z = f32(RNG.standard_normal((B, C, H, W)))
    sigma = karras_ascending(spec["N"])
    idx = np.asarray(spec["idx"], np.int32)
    t1, t0 = f32(sigma[idx + 1]), f32(sigma[idx])
    if spec["weighting"] == "uniform":
        lam = f32(np.ones(B))
    else:
        lam = f32(1.0 / (sigma[idx + 1] - sigma[idx]))
    huber_c = 0.00054 * math.sqrt(dim)
    dropout = spec.get("dropout") if cfg["dropout"] > 0 else None

    X0, Z, T1, T0, LAM = f64(x0), f64(z), f64(t1), f64(t0), f64(lam)
    v = (slice(None), None, None, None)
    cd = spec.get("method") == "cd"
    if cd:
        teacher = cmlab_torch.UNet(dict(cfg, dropout=0.0)).double()
        teacher.eval()
        wte = random_weights(teacher)
        load(teacher, wte)
        with torch.no_grad():
            XT = teacher_step(teacher, f64(X0 + T1[v] * Z), T1, T0, spec["solver"])
    else:
        XT = X0 + T0[v] * Z
    a = consistency_fn(online, X0 + T1[v] * Z, T1, dropout)
    with torch.no_grad():
        b = consistency_fn(target, XT, T0, dropout)
    diff2 = ((a - b) ** 2).reshape(B, -1)
    if spec["loss"] == "l2":
        d = diff2.mean(dim=1)
    else:
        d = torch.sqrt(diff2.sum(dim=1) + huber_c ** 2) - huber_c
    loss = (LAM * d).mean()
    loss.backward()

    g = f.create_group(label)
    write_config_attrs(g, cfg)
    g.attrs["param_count"] = sum(p.numel() for p in online.parameters())
    g.attrs["B"] = B
    g.attrs["loss"] = spec["loss"]
    g.attrs["huber_c"] = huber_c
    g.attrs["sigma_data"], g.attrs["eps"] = SIGMA_DATA, SIGMA_MIN
    g.attrs["sigma_min"], g.attrs["sigma_max"], g.attrs["rho"] = SIGMA_MIN, SIGMA_MAX, RHO
    g.attrs["N"] = spec["N"]
    g.attrs["mu"] = spec["mu"]
    g.attrs["target_is_online"] = int(spec["target"] == "online")
    g.attrs["method"] = spec.get("method", "ct")
    if cd:
        g.attrs["solver"] = spec["solver"]
        for name in wte:
            g["weights/teacher/" + name] = wte[name]
        g["xt"] = f32(XT.numpy())
    if dropout:
        g.attrs["dropout_seed"] = np.uint64(dropout[0])
        g.attrs["dropout_stream"], g.attrs["dropout_step"] = dropout[1], dropout[2]
    for name, p in online.named_parameters():
        g["weights/online/" + name] = w[name]
        g["grad/" + name] = f32(p.grad.numpy())
        if spec["target"] == "separate":
            g["weights/target/" + name] = wt[name]
            # target' = mu target + (1 - mu) w, float32, PyTorch's op order (CM's update_ema)
            targ = torch.from_numpy(wt[name].copy())
            targ.mul_(float(np.float32(spec["mu"]))).add_(torch.from_numpy(w[name]),
                                                          alpha=1 - float(np.float32(spec["mu"])))
            g["ema/" + name] = targ.numpy()
    g["x0"], g["z"], g["idx"] = x0, z, idx
    g["t1"], g["t0"], g["lam"] = t1, t0, lam
    g["loss"] = f32([loss.item()])
    g["a"], g["b"] = f32(a.detach().numpy()), f32(b.numpy())
    print("ct_step.py: %-8s %s, loss %.6e, t1 %s, t0 %s, lam %s" % (label, spec["loss"], loss.item(),
          np.array2string(t1, precision=4), np.array2string(t0, precision=4),
          np.array2string(lam, precision=4)))


def main(path):
    with h5py.File(path, "w") as f:
        for label, spec in CASES.items():
            case(f, label, spec)


if __name__ == "__main__":
    main(sys.argv[1])

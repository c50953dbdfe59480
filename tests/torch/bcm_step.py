"""bcm_step.py OUT.h5: the PyTorch twin of one Bidirectional Consistency Training step
(src/train/bcm.c, bcm_step_loss; reference/bcm.md §2.1, §3.2), in float64, for tests/test_bcm.c.

Per case group /<case>:
  attrs   the U-Net config (as tests/torch/unet.py, two_times = 1), param_count, B, huber_c,
          sigma_data, eps (= sigma_min), N, dropout_seed / dropout_stream / dropout_step (when
          dropout > 0)
  weights/online/<name>   the online weights (every parameter re-randomised, map_align included)
  x0, z [B,C,H,W]; i, j [B] (int32: t = sigma[i+1], t' = sigma[i], u = sigma[j] on the ascending
          Karras grid of N points); t, t_prev, u [B]
  loss (scalar as [1]); grad/<name> the gradient of the loss w.r.t. every online parameter
  grad_leak/<name>  the same gradient when the target passes share the online module, so that
          the gradient also reaches the weights through f_target (what BCM must NOT do): a test
          that compared against it, or a C step that leaked, would show the difference

The twin: f(x, t, u) = c_skip x + c_out F(c_in x; ln(t)/4, ln(u)/4) with
  c_skip = (t u + sd^2)/(t^2 + sd^2), c_out = sd (t - u)/sqrt(t^2 + sd^2), c_in = 1/sqrt(t^2 + sd^2),
f(x, t) = f(x, t, eps). The target is a separate module holding a copy of the online weights with
requires_grad off (BCM's target: the online weights, frozen, yet differentiable in its input):
  A = f_target(x0 + t' z, t') under no_grad;  y = f(x0 + t z, t);  x_u = f(x0 + t z, t, u);
  y_u = f_target(x_u, u);  d(a, b) = (sqrt(sum (a - b)^2 + c^2) - c) / sqrt(D);
  loss = mean_b [ d(y, A)/(t - t') + d(y_u, A)/|t - u| ],
all four passes with the same cmlab dropout masks (the same (seed, stream, step), sample0 = 0).
Every input is rounded to float32 first; references are float64 stored as float32.
"""
import copy
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
from ct_step import f32, f64, karras_ascending, load, random_weights  # noqa: E402
from unet import write_config_attrs  # noqa: E402

torch.set_num_threads(2)
RNG = np.random.default_rng(20261206)

SIGMA_MIN, SIGMA_DATA = 0.002, 0.5

BASE_CFG = dict(img_channels=1, img_h=16, img_w=16, base_channels=8, channel_mult=[1, 2],
                num_blocks=1, attn_resolutions=[], mid_attn=True, attn_heads=1, dropout=0.0,
                emb_type="positional", skip_scale=math.sqrt(0.5), two_times=True, seed=0)

CASES = {
    # dropout 0.2 with cmlab's masks in all four passes; u above t (j = 5, 9 = N-2, the highest
    # u), at eps (j = 0), below t; t at the highest allowed interval (i = N-3 = 8) and the lowest.
    "bcm": dict(cfg=dict(BASE_CFG, dropout=0.2), N=11, i=[0, 3, 8, 5], j=[5, 0, 2, 9],
                huber_c=0.00054 * 16, dropout=(0xBC3, 7000, 11)),
    # the official fine-tune grid (N = 321), Fourier features, no dropout, c = 0.06 (ImageNet-64's)
    "bcm_fourier": dict(cfg=dict(BASE_CFG, emb_type="fourier", fourier_scale=16.0, seed=3), N=321,
                        i=[318, 100, 40], j=[0, 319, 42], huber_c=0.06),
}


def bcm_fn(net, x, t, u, dropout):
    sd = SIGMA_DATA
    r = torch.sqrt(t * t + sd * sd)
    v = (slice(None), None, None, None)
    F = net(x / r[v], torch.log(t) / 4.0, torch.log(u) / 4.0, dropout=dropout, sample0=0)
    return ((t * u + sd * sd) / (t * t + sd * sd))[v] * x + (sd * (t - u) / r)[v] * F


def step(online, target, X0, Z, T, TP, U, huber_c, dropout):
    v = (slice(None), None, None, None)
    B = X0.shape[0]
    D = X0[0].numel()
    eps = torch.full_like(T, float(np.float32(SIGMA_MIN)))
    xt = X0 + T[v] * Z
    with torch.no_grad():
        A = bcm_fn(target, X0 + TP[v] * Z, TP, eps, dropout)
    y = bcm_fn(online, xt, T, eps, dropout)
    xu = bcm_fn(online, xt, T, U, dropout)
    yu = bcm_fn(target, xu, U, eps, dropout)

    def d(a, b):
        s = ((a - b) ** 2).reshape(B, -1).sum(dim=1)
        return (torch.sqrt(s + huber_c ** 2) - huber_c) / math.sqrt(D)

    return (d(y, A) / (T - TP) + d(yu, A) / torch.abs(T - U)).mean()


def case(f, label, spec):
    cfg = spec["cfg"]
    online = cmlab_torch.UNet(cfg).double()
    online.eval()
    w = random_weights(online)
    load(online, w)
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)

    C, H, W = cfg["img_channels"], cfg["img_h"], cfg["img_w"]
    B = len(spec["i"])
    x0 = f32(RNG.uniform(-1, 1, (B, C, H, W)))
    z = f32(RNG.standard_normal((B, C, H, W)))
    sigma = karras_ascending(spec["N"])
    i, j = np.asarray(spec["i"], np.int32), np.asarray(spec["j"], np.int32)
    assert np.all(i <= spec["N"] - 3) and np.all(j != i + 1) and np.all(j <= spec["N"] - 2)
    t, tp, u = f32(sigma[i + 1]), f32(sigma[i]), f32(sigma[j])
    dropout = spec.get("dropout") if cfg["dropout"] > 0 else None
    args = (f64(x0), f64(z), f64(t), f64(tp), f64(u), spec["huber_c"], dropout)

    loss = step(online, target, *args)
    loss.backward()
    grads = {name: f32(p.grad.numpy()) for name, p in online.named_parameters()}
    online.zero_grad()
    leak = step(online, online, *args)
    leak.backward()

    g = f.create_group(label)
    write_config_attrs(g, cfg)
    g.attrs["param_count"] = sum(p.numel() for p in online.parameters())
    g.attrs["B"] = B
    g.attrs["huber_c"] = spec["huber_c"]
    g.attrs["sigma_data"], g.attrs["eps"] = SIGMA_DATA, SIGMA_MIN
    g.attrs["N"] = spec["N"]
    if dropout:
        g.attrs["dropout_seed"] = np.uint64(dropout[0])
        g.attrs["dropout_stream"], g.attrs["dropout_step"] = dropout[1], dropout[2]
    for name, p in online.named_parameters():
        g["weights/online/" + name] = w[name]
        g["grad/" + name] = grads[name]
        g["grad_leak/" + name] = f32(p.grad.numpy())
    g["x0"], g["z"], g["i"], g["j"] = x0, z, i, j
    g["t"], g["t_prev"], g["u"] = t, tp, u
    g["loss"] = f32([loss.item()])
    print("bcm_step.py: %-12s loss %.6e, t %s, t' %s, u %s" % (label, loss.item(),
          np.array2string(t, precision=4), np.array2string(tp, precision=4), np.array2string(u, precision=4)))


def main(path):
    with h5py.File(path, "w") as f:
        for label, spec in CASES.items():
            case(f, label, spec)


if __name__ == "__main__":
    main(sys.argv[1])

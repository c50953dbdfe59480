"""precond.py OUT.h5: the PyTorch twin of the preconditioned network (src/train/precond.c,
precond_forward; reference/cm.md §1.2 and §2, reference/bcm.md §2.1), in float64, for
tests/test_precond.c: the gradients with respect to the time inputs.

Per case group /<case> (edm, cm, bcm):
  attrs   the U-Net config (as tests/torch/unet.py), param_count, kind ("edm" | "cm" | "bcm"),
          sigma_data, eps
  weights/online/<name>   random weights (tests/torch/unet.py's randomize: every parameter redrawn,
                          so conv_out is not near zero and F matters)
  x [N,C,H,W], t [N], [u [N]] (bcm), gout [N,C,H,W]
  out       f = c_skip x + c_out F(c_in x; c_noise(t)[, c_noise(u)])
  grad_x, grad_t, [grad_u], grad/<name>   d sum(out * gout) / d input
with, r = sqrt(t^2 + sd^2):
  edm  c_skip = sd^2/r^2, c_out = t sd/r
  cm   c_skip = sd^2/((t - eps)^2 + sd^2), c_out = sd (t - eps)/r
  bcm  c_skip = (t u + sd^2)/r^2, c_out = sd (t - u)/r, and the U-Net's second input ln(u)/4
  all  c_in = 1/r, c_noise = ln(t)/4.
The times span the range a sampler and a trainer use (0.002 .. 80; for bcm u on both sides of t).
Every input is rounded to float32 first; references are float64, stored as float32.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
sys.path.insert(0, HERE)

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import cmlab_torch  # noqa: E402
import unet  # noqa: E402

torch.set_num_threads(2)
RNG = np.random.default_rng(20261206)
SIGMA_DATA, EPS = 0.5, 0.002

CFG = dict(img_channels=1, img_h=8, img_w=8, base_channels=8, channel_mult=[1, 2], num_blocks=1,
           attn_resolutions=[], mid_attn=True, attn_heads=1, dropout=0.0, emb_type="positional",
           skip_scale=0.7071067811865476, two_times=False, seed=0)

CASES = {
    "edm": dict(cfg=CFG, t=[0.002, 0.1, 0.9, 80.0]),
    "cm": dict(cfg=CFG, t=[0.003, 0.25, 2.5, 80.0]),
    # u below t, u = eps (one-step generation), u above t (inversion), u far above t.
    "bcm": dict(cfg=dict(CFG, two_times=True, emb_type="fourier", fourier_scale=16.0, seed=5),
                t=[1.5, 80.0, 0.07, 0.3], u=[0.4, 0.002, 15.0, 40.0]),
}


def precond(net, kind, x, t, u):
    sd = SIGMA_DATA
    r = torch.sqrt(t * t + sd * sd)
    if kind == "edm":
        c_skip, c_out = sd * sd / (r * r), t * sd / r
    elif kind == "cm":
        c_skip, c_out = sd * sd / ((t - EPS) ** 2 + sd * sd), sd * (t - EPS) / r
    else:
        c_skip, c_out = (t * u + sd * sd) / (t * t + sd * sd), sd * (t - u) / r
    v = (slice(None), None, None, None)
    cu = torch.log(u) / 4.0 if kind == "bcm" else None
    F = net(x / r[v], torch.log(t) / 4.0, cu)
    return c_skip[v] * x + c_out[v] * F


def case(f, label, spec):
    cfg = spec["cfg"]
    net = cmlab_torch.UNet(cfg).double()
    unet.randomize(net)
    N = len(spec["t"])
    x = unet.leaf(RNG.standard_normal((N, cfg["img_channels"], cfg["img_h"], cfg["img_w"])))
    t = unet.leaf(spec["t"])
    u = unet.leaf(spec["u"]) if "u" in spec else None
    out = precond(net, label, x, t, u)
    gout = torch.from_numpy(unet.f32(RNG.standard_normal(out.shape)).astype(np.float64))
    (out * gout).sum().backward()

    g = f.create_group(label)
    unet.write_config_attrs(g, cfg)
    g.attrs["kind"], g.attrs["sigma_data"], g.attrs["eps"] = label, SIGMA_DATA, EPS
    unet.write_weights_and_grads(g, net)
    for name, v in (("x", x), ("t", t), ("u", u)):
        if v is not None:
            g[name], g["grad_" + name] = unet.f32(v.detach().numpy()), unet.f32(v.grad.numpy())
    g["gout"], g["out"] = unet.f32(gout.numpy()), unet.f32(out.detach().numpy())
    print("precond.py: %-4s |grad t| max %.3e" % (label, float(t.grad.abs().max())))


if __name__ == "__main__":
    with h5py.File(sys.argv[1], "w") as out:
        for label, spec in CASES.items():
            case(out, label, spec)

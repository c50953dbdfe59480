"""unet.py OUT.h5: the PyTorch oracle for the U-Net and the AMED MLP (read by tests/test_unet.c).

The networks are the twins of tools/cmlab_torch.py, whose state_dict keys are cmlab's parameter
names. For every U-Net config a group /<config> holds
    attrs    the UNetConfig fields (channel_mult, attn_resolutions as int arrays with *_count,
             emb_type as a string, booleans as ints), param_count (sum of numel), batch;
             for cmlab dropout masks: dropout_seed, dropout_stream, dropout_step, sample0
    weights/online/<name>   random weights, NOT the near-zero init: every parameter is redrawn so
                            every gradient is meaningful
    x, cnoise_t, [cnoise_u], gout          inputs and the upstream gradient
    out                                    F(x; cnoise_t[, cnoise_u])
    grad/<name>, grad_x, grad_cnoise_t, [grad_cnoise_u]   d sum(out * gout) / d input
    [fourier_freqs]                        W of the Fourier embedding (cmlab regenerates it)
The AMED MLP groups /amed_<heads> hold its config attrs (in_dim, hidden, out_dim, noise_channels,
scale_dir, scale_time, sigma_cur, sigma_next, param_count), weights/online/<name>, bottleneck,
gout_<head>, out_<head> for each head present (r, c, a), grad/<name> and grad_bottleneck of
sum_head sum(out_head * gout_head).
References are computed in float64 from the float32-rounded inputs and stored as float32.
Then tools/cmlab_torch.load_checkpoint is checked on files in the checkpoint layout built from
these weights (exit 1 if it does not reproduce `out`).
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

torch.set_num_threads(2)
RNG = np.random.default_rng(20240613)

UNET_CONFIGS = {
    # 1-channel 28x28, no attention at all.
    "mnist28": dict(img_channels=1, img_h=28, img_w=28, base_channels=16, channel_mult=[1, 2, 2],
                    num_blocks=1, attn_resolutions=[], mid_attn=False, attn_heads=1, dropout=0.0,
                    emb_type="positional", skip_scale=math.sqrt(0.5), two_times=False, seed=0),
    # 3-channel 32x32, two-head attention at 16x16 and in the middle, dropout off, skip scale 1.
    "cifar32_attn": dict(img_channels=3, img_h=32, img_w=32, base_channels=16, channel_mult=[1, 2, 2],
                         num_blocks=1, attn_resolutions=[16], mid_attn=True, attn_heads=2, dropout=0.0,
                         emb_type="positional", skip_scale=1.0, two_times=False, seed=0),
    # BCM: two time inputs, Gaussian Fourier features (NCSN++ scale 16), attention at 8x8.
    "bcm_two_times": dict(img_channels=3, img_h=16, img_w=16, base_channels=16, channel_mult=[1, 2],
                          num_blocks=2, attn_resolutions=[8], mid_attn=True, attn_heads=1, dropout=0.0,
                          emb_type="fourier", fourier_scale=16.0, skip_scale=math.sqrt(0.5),
                          two_times=True, seed=7),
    # Dropout 0.3 with cmlab's masks (counter RNG, one stream per ResBlock), sample0 != 0.
    "dropout": dict(img_channels=1, img_h=16, img_w=16, base_channels=8, channel_mult=[1, 2],
                    num_blocks=1, attn_resolutions=[], mid_attn=True, attn_heads=1, dropout=0.3,
                    emb_type="positional", skip_scale=math.sqrt(0.5), two_times=False, seed=0),
}
DROPOUT_RNG = (0x1234567890ABCDEF, 1000, 17)   # seed, stream, step
SAMPLE0 = 3
BATCH = 2

AMED_CONFIGS = {
    "amed_rc": dict(scale_dir=0.01, scale_time=0.0),       # the AMED-Solver default: 8,950
    "amed_rca": dict(scale_dir=0.05, scale_time=0.2),      # all three heads: 8,971
}


def f32(a):
    return np.asarray(a, dtype=np.float32)


def randomize(net):
    """Every parameter redrawn at a scale that keeps activations O(1): weights N(0, 1/fan_in),
    GroupNorm weights 1 + N(0, 0.3^2), biases N(0, 0.3^2); rounded to float32."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.dim() > 1:
                v = RNG.standard_normal(p.shape) / math.sqrt(p[0].numel())
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".norm.weight" in name \
                    or name == "norm_out.weight":
                v = 1.0 + 0.3 * RNG.standard_normal(p.shape)
            else:
                v = 0.3 * RNG.standard_normal(p.shape)
            p.copy_(torch.from_numpy(f32(v).astype(np.float64)))


def leaf(a):
    return torch.from_numpy(f32(a).astype(np.float64)).requires_grad_(True)


def write_config_attrs(g, cfg):
    for k, v in cfg.items():
        if isinstance(v, list):
            g.attrs[k + "_count"] = len(v)
            if v:
                g.attrs[k] = np.asarray(v, np.int32)
        elif isinstance(v, bool):
            g.attrs[k] = int(v)
        elif isinstance(v, str):
            g.attrs[k] = v
        elif isinstance(v, float):
            g.attrs[k] = np.float32(v)
        else:
            g.attrs[k] = np.int64(v)


def write_weights_and_grads(g, net):
    for name, p in net.named_parameters():
        g["weights/online/" + name] = f32(p.detach().numpy())
        g["grad/" + name] = f32(p.grad.numpy())
    g.attrs["param_count"] = sum(p.numel() for p in net.parameters())


def unet_case(f, label, cfg):
    net = cmlab_torch.UNet(cfg).double()
    randomize(net)
    N, C, H, W = BATCH, cfg["img_channels"], cfg["img_h"], cfg["img_w"]
    x = leaf(RNG.standard_normal((N, C, H, W)))
    ct = leaf(RNG.uniform(-1.5, 1.1, N))               # c_noise = ln(sigma)/4 for sigma in [0.002, 80]
    cu = leaf(RNG.uniform(-1.5, 1.1, N)) if cfg["two_times"] else None
    dropout = DROPOUT_RNG if cfg["dropout"] > 0 else None
    out = net(x, ct, cu, dropout=dropout, sample0=SAMPLE0)
    gout = torch.from_numpy(f32(RNG.standard_normal(out.shape)).astype(np.float64))
    (out * gout).sum().backward()

    g = f.create_group(label)
    write_config_attrs(g, cfg)
    g.attrs["batch"] = N
    if dropout:
        g.attrs["dropout_seed"] = np.uint64(DROPOUT_RNG[0])
        g.attrs["dropout_stream"], g.attrs["dropout_step"] = DROPOUT_RNG[1], DROPOUT_RNG[2]
        g.attrs["sample0"] = SAMPLE0
    write_weights_and_grads(g, net)
    for name, t in (("x", x), ("cnoise_t", ct), ("cnoise_u", cu)):
        if t is not None:
            g[name] = f32(t.detach().numpy())
            g["grad_" + name] = f32(t.grad.numpy())
    g["gout"], g["out"] = f32(gout.numpy()), f32(out.detach().numpy())
    if cfg["emb_type"] == "fourier":
        g["fourier_freqs"] = cmlab_torch.fourier_W(cfg["base_channels"], cfg["fourier_scale"], cfg["seed"])
    return g.attrs["param_count"]


def amed_case(f, label, cfg):
    net = cmlab_torch.AmedMLP(cfg).double()
    randomize(net)
    N = 3
    sigma_cur, sigma_next = float(np.float32(2.5)), float(np.float32(1.3))
    b = leaf(RNG.standard_normal((N, net.cfg["in_dim"])))
    out = net(b, sigma_cur, sigma_next)
    gouts = {k: torch.from_numpy(f32(RNG.standard_normal(N)).astype(np.float64)) for k in out}
    sum((out[k] * gouts[k]).sum() for k in out).backward()

    g = f.create_group(label)
    write_config_attrs(g, net.cfg)
    g.attrs["sigma_cur"], g.attrs["sigma_next"] = np.float32(sigma_cur), np.float32(sigma_next)
    write_weights_and_grads(g, net)
    g["bottleneck"], g["grad_bottleneck"] = f32(b.detach().numpy()), f32(b.grad.numpy())
    for k in out:
        g["out_" + k], g["gout_" + k] = f32(out[k].detach().numpy()), f32(gouts[k].numpy())
    return g.attrs["param_count"]


# UNetConfig fields that are no experiment key: cmlab takes them from the data (image shape) or
# the method (two_times: BCM); load_checkpoint gets them through its config argument.
NOT_KEYS = ("img_channels", "img_h", "img_w", "two_times")


def ini_text(cfg):
    """cfg as the resolved experiment file a checkpoint carries: [experiment] seed, [model] keys
    (base_channels is model.channels; skip_scale is the enum's name), plus a key of another
    section that must be ignored."""
    names = {math.sqrt(0.5): "sqrt_half", 1.0: "one"}
    model = {("channels" if k == "base_channels" else k): (names[v] if k == "skip_scale" else v)
             for k, v in cfg.items() if k != "seed" and k not in NOT_KEYS}
    lines = ["[experiment]", "seed = %d" % cfg["seed"], "", "[model]"]
    for k, v in model.items():
        lines.append("%s = %s" % (k, ", ".join(map(str, v)) if isinstance(v, list) else str(v)))
    return "\n".join(lines + ["", "[train]", "lr = 0.0002", ""])


def check_load_checkpoint(fixture, ckpt_path):
    """tools/cmlab_torch.load_checkpoint on a file in the checkpoint layout (/weights/<set>/<name>,
    root attribute config) must rebuild each net and reproduce the fixture's output in float32."""
    worst = 0.0
    for label, cfg in UNET_CONFIGS.items():
        g = fixture[label]
        with h5py.File(ckpt_path, "w") as ck:
            ck.attrs["config"] = ini_text(cfg)
            for name, d in g["weights/online"].items():
                ck["weights/ema/0.9999/" + name] = d[()]
        net = cmlab_torch.load_checkpoint(ckpt_path, weights="ema/0.9999",
                                          config={k: cfg[k] for k in NOT_KEYS})
        args = [torch.from_numpy(g[k][()]) for k in ("x", "cnoise_t")]
        u = torch.from_numpy(g["cnoise_u"][()]) if "cnoise_u" in g else None
        dropout = DROPOUT_RNG if cfg["dropout"] > 0 else None
        with torch.no_grad():
            out = net(*args, u, dropout=dropout, sample0=SAMPLE0).numpy()
        ref = g["out"][()]
        worst = max(worst, float(np.abs(out - ref).max() / np.abs(ref).max()))
    os.remove(ckpt_path)
    print("unet.py: load_checkpoint reproduces every config, worst rel error %.1e (float32)" % worst)
    if not worst <= 1e-4:
        sys.exit("unet.py: load_checkpoint output differs from the fixture by %.3e" % worst)


def main(path):
    with h5py.File(path, "w") as f:
        for label, cfg in UNET_CONFIGS.items():
            n = unet_case(f, label, cfg)
            print("unet.py: %-14s %8d parameters" % (label, n))
        for label, cfg in AMED_CONFIGS.items():
            n = amed_case(f, label, cfg)
            print("unet.py: %-14s %8d parameters" % (label, n))
    with h5py.File(path, "r") as f:
        check_load_checkpoint(f, path + ".ckpt.h5")


if __name__ == "__main__":
    main(sys.argv[1])

"""amed_step.py TEACHER.h5 DIR: the PyTorch twin of two AMED training substeps (tests/test_amed.c (d)).

Written from the AMED reference (reference/amed.md §2, §4; diff-sampler amed-solver-main
solvers_amed.py amed_sampler and training/loss.py), not from cmlab's code, in float64:
  teacher   tools/cmlab_torch.py's U-Net twin with the checkpoint's online weights, EDM
            preconditioning (sigma_data 0.5): D(x, t) = c_skip x + c_out F(c_in x, ln(t)/4)
  schedule  time_uniform, rho 1, sigma 0.002..80 (DPM-Solver's VP time mapped to VE)
  settings  the test's: N = 3 student points, M = 1 (a Heun teacher on K = 5 points, no AFS),
            AMED-Solver student with AFS, S_dir 0.01, S_time 0.2 (three heads), batch 3
  latents   DIR/twin_z.bin (cmlab's STREAM_NOISE draws of the batch), x_0 = float32(80 z)
  predictor cmlab_torch.AmedMLP with the flat weights DIR/twin_w.bin laid out as
            DIR/twin_params.txt (name offset count per line)
Substep 0 is the AFS step from x_0 (d = x / sqrt(1 + t^2), zero bottleneck), substep 1 starts
from the teacher's point 2 (float32, as cmlab keeps the trajectory) with the channel mean of the
bottleneck of D(x, t_1). Each: s = t_{n+1}^r t_n^(1-r), x_s = x + (s - t_n) d,
d_s = (x_s - D(x_s, a s)) / s, x_hat = x + c (t_{n+1} - t_n) d_s, loss = sum((x_hat - y)^2) / B
against teacher point 2(k+1), gradients by autograd into the predictor's weights; no update
between the substeps (the test calls the loss twice with the same weights).
Writes DIR/twin_out.bin: float32 [loss0, loss1, grads0 (flat layout), grads1].
"""
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import cmlab_torch  # noqa: E402

N, M, B, S = 3, 1, 3, 32
SIGMA_MIN, SIGMA_MAX, SD = 0.002, 80.0, 0.5


def time_uniform(n, smin, smax, rho=1.0, eps_s=1e-3):
    L = lambda s: math.log(1 + s * s)
    beta_d = 2 * (L(smin) / eps_s - L(smax)) / (eps_s - 1)
    beta_min = L(smax) - beta_d / 2
    t = []
    for i in range(n):
        u = i / (n - 1)
        tau = (1 + u * (eps_s ** (1 / rho) - 1)) ** rho
        t.append(math.sqrt(math.exp(beta_d * tau * tau / 2 + beta_min * tau) - 1))
    t[0], t[-1] = smax, smin
    return t


def f32(v):
    return float(np.float32(v))


def denoise(net, x, t, bottleneck=False):
    """t: a float or a [B] tensor (values rounded to float32, as cmlab passes them)."""
    t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0]).float().double()
    v = t.reshape(-1, 1, 1, 1)
    c_skip = SD * SD / (v * v + SD * SD)
    c_out = v * SD / torch.sqrt(v * v + SD * SD)
    c_in = 1 / torch.sqrt(v * v + SD * SD)
    F, mid = net(c_in * x, torch.log(t) / 4, return_bottleneck=True)
    D = c_skip * x + c_out * F
    return (D, cmlab_torch.bottleneck_input(mid)) if bottleneck else D


def main():
    teacher_path, d = sys.argv[1], sys.argv[2]
    net = cmlab_torch.load_checkpoint(teacher_path, "online").double()
    for p in net.parameters():
        p.requires_grad_(False)
    mlp = cmlab_torch.AmedMLP(dict(in_dim=64, scale_dir=0.01, scale_time=0.2)).double()
    flat = np.fromfile(os.path.join(d, "twin_w.bin"), dtype=np.float32)
    layout = [line.split() for line in open(os.path.join(d, "twin_params.txt"))]
    state = mlp.state_dict()
    for name, off, n in layout:
        off, n = int(off), int(n)
        state[name] = torch.from_numpy(flat[off:off + n].astype(np.float64)).reshape(state[name].shape)
    mlp.load_state_dict(state)

    z = torch.from_numpy(np.fromfile(os.path.join(d, "twin_z.bin"), dtype=np.float32)).reshape(B, 1, S, S)
    x0 = (SIGMA_MAX * z.double()).float().double()
    K = (M + 1) * (N - 1) + 1
    tt, ts = time_uniform(K, SIGMA_MIN, SIGMA_MAX), time_uniform(N, SIGMA_MIN, SIGMA_MAX)
    traj = [x0]
    with torch.no_grad():
        x = x0
        for i in range(K - 1):
            h = tt[i + 1] - tt[i]
            dc = (x - denoise(net, x, tt[i])) / tt[i]
            xp = x + h * dc
            dn = (xp - denoise(net, xp, tt[i + 1])) / tt[i + 1]
            x = x + h * 0.5 * (dc + dn)
            traj.append(x.float().double())

    out = [None, None]
    grads = []
    for k in range(N - 1):
        mlp.zero_grad()
        t_cur, t_next = ts[k], ts[k + 1]
        x = x0 if k == 0 else traj[(M + 1) * k]
        with torch.no_grad():
            if k == 0:
                dcur = x / math.sqrt(1 + t_cur ** 2)
                feat = torch.zeros(B, 64, dtype=torch.float64)
            else:
                D, feat = denoise(net, x, t_cur, bottleneck=True)
                dcur = (x - D) / t_cur
        o = mlp(feat, f32(t_cur), f32(t_next))
        r, c, a = o["r"], o["c"], o["a"]
        s = (t_next ** r) * (t_cur ** (1 - r))
        s4 = s.reshape(-1, 1, 1, 1)
        xs = x + (s4 - t_cur) * dcur
        ds = (xs - denoise(net, xs, a * s)) / s4
        xh = x + c.reshape(-1, 1, 1, 1) * (t_next - t_cur) * ds
        y = traj[(M + 1) * (k + 1)]
        loss = ((xh - y) ** 2).sum() / B
        loss.backward()
        out[k] = loss.item()
        g = np.zeros(flat.shape[0], dtype=np.float32)
        params = dict(mlp.named_parameters())
        for name, off, n in layout:
            g[int(off):int(off) + int(n)] = params[name].grad.reshape(-1).numpy()
        grads.append(g)
    res = np.concatenate([np.array(out, dtype=np.float32)] + grads)
    res.tofile(os.path.join(d, "twin_out.bin"))
    print("amed_step.py: losses %.6g %.6g" % tuple(out))


if __name__ == "__main__":
    main()

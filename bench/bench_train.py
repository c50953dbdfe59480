"""bench_train.py: the PyTorch twin of bench_train.c (same configurations, modes, default batches,
data shapes, optimisers and update order; the networks are tools/cmlab_torch.py's UNet and
AmedMLP, cmlab's twins). Written from the methods' definitions (tests/torch/ct_step.py,
bcm_step.py, amed_step.py hold the same formulas as the tests' oracles).

    train         one Consistency Training step: online forward + backward, target forward under
                  no_grad, l2 loss (mean over pixels, then over the batch), the gradient norm, Adam
                  (lr 1e-4, PyTorch's default implementation), the evaluation EMA (0.999) and the
                  target EMA (mu = 0.9), each as CM's update_ema: targ.mul_(rate).add_(w, alpha=1-rate)
    sample        one-step consistency sampling: x = clamp(f(T z, T), -1, 1), the batch in one call
    heun          EDM's sampler: D(x, t) with EDM preconditioning, Heun on the 18-point Karras grid
                  (rho 7), the last step Euler to 0: 35 NFE (EDM's edm_sampler, S_churn = 0)
    bcm-train     one BCM step: f(x, t, u) = c_skip x + c_out F(c_in x; ln t/4, ln u/4) with
                  c_skip = (t u + sd^2)/(t^2 + sd^2), c_out = sd (t - u)/sqrt(t^2 + sd^2);
                  A = f_target(x0 + t' z, t') under no_grad, y = f(x_t, t), x_u = f(x_t, t, u),
                  y_u = f_target(x_u, u) (the online weights, frozen: a second module sharing them
                  with requires_grad off), pseudo-Huber loss d(y, A)/(t - t') + d(y_u, A)/|t - u|,
                  the gradient norm, Adam, the evaluation EMA (0.99)
    bcm-sample    BCM 2-step sampling: x = f(80 z, 80, 0.821), x = f(x, 0.821, eps), clamp
    amed-teacher  AMED's teacher: Heun over the time-uniform schedule (rho 1) of 7 points, 12 NFE,
                  every point kept (float32)
    amed-train    AMED's predictor on one batch of latents: 3 substeps (AFS, then from the
                  teacher's points 2 and 4 with the bottleneck of D(x, t_k)), each the MLP,
                  s = t_next^r t_cur^(1-r), x_s = x + (s - t_cur) d, d_s = (x_s - D(x_s, s))/s,
                  x_hat = x + c (t_next - t_cur) d_s, loss sum((x_hat - y)^2)/B, backward (teacher
                  frozen) and Adam (lr 5e-3)

--channels-last runs the U-Net and its inputs in torch.channels_last memory format (PyTorch's
faster layout on some CPUs); bench.py runs each row at batch 64 and 256 with and without it.

--bf16 runs the network calls (and the losses on their outputs) under
torch.autocast("cpu", dtype=torch.bfloat16), the peer of cmlab's --precision bf16 (issue 19): bf16
inputs to convolutions, linear layers and matmuls; fp32 weights, optimiser and EMAs; backward outside
the autocast region, as PyTorch's AMP recipe says; group norm in fp32 (autocast leaves it out and
it refuses bf16 inputs with fp32 weights). train, sample and heun only. PyTorch 1.13 sends a
bf16 matmul to oneDNN only when m n k >= 16^3 (smaller ones take a slower fallback).

Usage: /usr/bin/python3 bench/bench_train.py S|M MODE [--batch B] [--threads T] [--iters N]
       [--warmup W] [--channels-last] [--bf16]
Prints one line in bench_train.c's format (side=torch; gflop is left to cmlab's count; layout=
channels_last or contiguous; precision=fp32 or bf16).
"""
import argparse
import math
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))

import torch  # noqa: E402

import cmlab_torch  # noqa: E402

SIGMA_MIN, SIGMA_MAX, SIGMA_DATA = 0.002, 80.0, 0.5

# Keep in sync with bench_config in bench_train.c.
CONFIGS = {
    "S": dict(img_channels=1, img_h=28, img_w=28, base_channels=32, channel_mult=[1, 2, 2],
              num_blocks=1, attn_resolutions=[], mid_attn=False),
    "M": dict(img_channels=3, img_h=32, img_w=32, base_channels=64, channel_mult=[1, 2, 2],
              num_blocks=2, attn_resolutions=[16], mid_attn=False),
}


MODES = ["train", "sample", "heun", "bcm-train", "bcm-sample", "amed-teacher", "amed-train"]
# bench_train.c's mode_batch
BATCH = {"train": 64, "sample": 64, "heun": 256, "bcm-train": 64, "bcm-sample": 64, "amed-teacher": 128,
         "amed-train": 128}
V = (slice(None), None, None, None)


def consistency_fn(net, x, t):
    """f(x, t) = c_skip x + c_out F(c_in x; c_noise) (src/sample/precond.c, PRECOND_CM)."""
    sd, eps = SIGMA_DATA, SIGMA_MIN
    r = torch.sqrt(t * t + sd * sd)
    c_skip = (sd * sd / ((t - eps) ** 2 + sd * sd))[V]
    c_out = (sd * (t - eps) / r)[V]
    F = net(x * (1.0 / r)[V], torch.log(t) / 4.0)
    return c_skip * x + c_out * F


def bcm_fn(net, x, t, u):
    """f(x, t, u) of a two-time network (PRECOND_BCM)."""
    sd = SIGMA_DATA
    r = torch.sqrt(t * t + sd * sd)
    F = net(x / r[V], torch.log(t) / 4.0, torch.log(u) / 4.0)
    return ((t * u + sd * sd) / (t * t + sd * sd))[V] * x + (sd * (t - u) / r)[V] * F


def edm_denoise(net, x, t, bottleneck=False):
    """D(x, t) with EDM's preconditioning; t a float or [B]; with the bottleneck's channel mean."""
    sd = SIGMA_DATA
    t = torch.as_tensor(t, dtype=torch.float32).expand(x.shape[0])
    r = torch.sqrt(t * t + sd * sd)
    out = net(x / r[V], torch.log(t) / 4.0, return_bottleneck=bottleneck)
    F, mid = out if bottleneck else (out, None)
    D = (sd * sd / (t * t + sd * sd))[V] * x + (t * sd / r)[V] * F
    return (D, cmlab_torch.bottleneck_input(mid)) if bottleneck else D


def karras(N, rho=7.0):
    lo, hi = SIGMA_MIN ** (1 / rho), SIGMA_MAX ** (1 / rho)
    return [(lo + i / (N - 1) * (hi - lo)) ** rho for i in range(N)]


def time_uniform(n, smin=SIGMA_MIN, smax=SIGMA_MAX, rho=1.0, eps_s=1e-3):
    """DPM-Solver's VP time grid mapped to VE sigmas, descending (schedule.h time_uniform)."""
    L = lambda s: math.log(1 + s * s)
    beta_d = 2 * (L(smin) / eps_s - L(smax)) / (eps_s - 1)
    beta_min = L(smax) - beta_d / 2
    t = []
    for i in range(n):
        tau = (1 + i / (n - 1) * (eps_s ** (1 / rho) - 1)) ** rho
        t.append(math.sqrt(math.exp(beta_d * tau * tau / 2 + beta_min * tau) - 1))
    t[0], t[-1] = smax, smin
    return t


def heun(net, x, ts, to_zero, keep=None):
    """Heun over the descending times ts; then D(x, ts[-1]) when to_zero; keep gets every point."""
    for i in range(len(ts) - 1):
        h = ts[i + 1] - ts[i]
        d = (x - edm_denoise(net, x, ts[i])) / ts[i]
        xp = x + h * d
        x = x + h * 0.5 * (d + (xp - edm_denoise(net, xp, ts[i + 1])) / ts[i + 1])
        if keep is not None:
            keep.append(x.float())
    return edm_denoise(net, x, ts[-1]) if to_zero else x


def frozen_copy(net):
    """A module with net's weights (shared storage) and no gradient slots: BCM's target."""
    twin = cmlab_torch.UNet(net.cfg)
    for pt, pn in zip(twin.parameters(), net.parameters()):
        pt.data = pn.data
        pt.requires_grad_(False)
    return twin


def ema_update(pairs, net):
    with torch.no_grad():
        for rate, avg in pairs:
            for pa, pw in zip(avg.parameters(), net.parameters()):
                pa.mul_(rate).add_(pw, alpha=1 - rate)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (train, sample, heun)")
    a = ap.parse_args()
    if a.bf16 and a.mode not in ("train", "sample", "heun"):
        ap.error("--bf16: modes train, sample and heun only")
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.bf16)
    if a.bf16:
        # PyTorch 1.13's CPU autocast casts no group norm, and F.group_norm refuses a bf16 input
        # with fp32 weights: it runs in fp32 here, as cmlab's does (the next conv casts again).
        gn_forward = torch.nn.GroupNorm.forward
        torch.nn.GroupNorm.forward = lambda self, x: gn_forward(self, x.float())
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    mode = a.mode
    B = a.batch or BATCH[mode]
    cfg = dict(CONFIGS[a.config], two_times=mode.startswith("bcm"))
    C, H, W = cfg["img_channels"], cfg["img_h"], cfg["img_w"]
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format

    def img(t):
        return t.contiguous(memory_format=fmt)

    net = cmlab_torch.UNet(cfg).to(memory_format=fmt)
    ema = cmlab_torch.UNet(cfg).to(memory_format=fmt)
    ema.load_state_dict(net.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)

    x0 = img(torch.rand(B, C, H, W) * 2 - 1)
    z = img(torch.randn(B, C, H, W))
    s = karras(18)
    t1 = torch.tensor([s[i % 17 + 1] for i in range(B)], dtype=torch.float32)
    t0 = torch.tensor([s[i % 17] for i in range(B)], dtype=torch.float32)
    u = torch.tensor([s[(i % 17 + 5) % 17] for i in range(B)], dtype=torch.float32)

    if mode == "train":
        target = cmlab_torch.UNet(cfg).to(memory_format=fmt)
        target.load_state_dict(net.state_dict())
        for p in target.parameters():
            p.requires_grad_(False)

    def train_step():
        opt.zero_grad(set_to_none=False)
        with amp:
            a_ = consistency_fn(net, x0 + t1[V] * z, t1)
            with torch.no_grad():
                b_ = consistency_fn(target, x0 + t0[V] * z, t0)
            loss = ((a_.float() - b_.float()) ** 2).reshape(B, -1).mean(dim=1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), math.inf)
        opt.step()
        ema_update(((0.999, ema), (0.9, target)), net)

    def sample_step():
        with torch.no_grad(), amp:
            T = torch.full((B,), SIGMA_MAX)
            consistency_fn(ema, SIGMA_MAX * img(torch.randn(B, C, H, W)), T).clamp_(-1, 1)

    def heun_step():
        with torch.no_grad(), amp:
            heun(ema, SIGMA_MAX * img(torch.randn(B, C, H, W)), list(reversed(s)), True)

    D = C * H * W
    huber_c = 0.00054 * math.sqrt(D)
    bcm_target = frozen_copy(net) if mode == "bcm-train" else None
    eps = torch.full((B,), SIGMA_MIN)

    def bcm_train_step():
        opt.zero_grad(set_to_none=False)
        xt = x0 + t1[V] * z
        with torch.no_grad():
            A = bcm_fn(bcm_target, x0 + t0[V] * z, t0, eps)
        y = bcm_fn(net, xt, t1, eps)
        yu = bcm_fn(bcm_target, bcm_fn(net, xt, t1, u), u, eps)

        def d(p, q):
            return (torch.sqrt(((p - q) ** 2).reshape(B, -1).sum(dim=1) + huber_c ** 2) - huber_c) / math.sqrt(D)

        loss = (d(y, A) / (t1 - t0) + d(yu, A) / torch.abs(t1 - u)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), math.inf)
        opt.step()
        ema_update(((0.99, ema),), net)

    def bcm_sample_step():
        with torch.no_grad():
            T, mid = torch.full((B,), SIGMA_MAX), torch.full((B,), 0.821)
            x = bcm_fn(ema, SIGMA_MAX * img(torch.randn(B, C, H, W)), T, mid)
            bcm_fn(ema, x, mid, eps).clamp_(-1, 1)

    # AMED (experiments/amed_solver_fashion_mnist.ini): N = 4 student points, M = 1, AFS, S_dir 0.01.
    N, M = 4, 1
    tt, ts = time_uniform((M + 1) * (N - 1) + 1), time_uniform(N)
    if mode.startswith("amed"):
        for p in net.parameters():
            p.requires_grad_(False)
        side = H >> (len(cfg["channel_mult"]) - 1)
        fdim = side * side
        mlp = cmlab_torch.AmedMLP(dict(in_dim=fdim))
        mopt = torch.optim.Adam(mlp.parameters(), lr=5e-3, betas=(0.9, 0.999), eps=1e-8)
        xT = (SIGMA_MAX * z).float()
        traj = []
        if mode == "amed-train":
            with torch.no_grad():
                heun(net, xT, tt, False, traj)

    def amed_teacher_step():
        with torch.no_grad():
            heun(net, xT, tt, False, [])

    def amed_train_step():
        for k in range(N - 1):
            mopt.zero_grad(set_to_none=False)
            t_cur, t_next = ts[k], ts[k + 1]
            x = xT if k == 0 else traj[(M + 1) * k - 1]
            with torch.no_grad():
                if k == 0:
                    dcur, feat = x / math.sqrt(1 + t_cur ** 2), torch.zeros(B, fdim)
                else:
                    Dx, feat = edm_denoise(net, x, t_cur, bottleneck=True)
                    dcur = (x - Dx) / t_cur
            o = mlp(feat, t_cur, t_next)
            s4 = ((t_next ** o["r"]) * (t_cur ** (1 - o["r"])))[V]
            xs = x + (s4 - t_cur) * dcur
            ds = (xs - edm_denoise(net, xs, s4.reshape(B))) / s4
            xh = x + o["c"][V] * (t_next - t_cur) * ds
            loss = ((xh - traj[(M + 1) * (k + 1) - 1]) ** 2).sum() / B
            loss.backward()
            mopt.step()

    step = {"train": train_step, "sample": sample_step, "heun": heun_step, "bcm-train": bcm_train_step,
            "bcm-sample": bcm_sample_step, "amed-teacher": amed_teacher_step, "amed-train": amed_train_step}[mode]
    ema.eval()
    times = []
    for i in range(a.warmup + a.iters):
        t = time.perf_counter()
        step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t)
    times.sort()
    n = len(times)
    med = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("side=torch config=%s mode=%s threads=%d batch=%d ms=%.2f ms_min=%.2f img_s=%.2f "
          "gflop=nan rss_mb=%.1f arena_mb=nan core=%s layout=%s precision=%s" % (
              a.config, mode, a.threads, B, 1e3 * med, 1e3 * times[0], B / med, rss,
              os.environ.get("OPENBLAS_CORETYPE", "-"), "channels_last" if a.channels_last else "contiguous",
              "bf16" if a.bf16 else "fp32"),
          flush=True)


if __name__ == "__main__":
    main()

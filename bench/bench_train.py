"""bench_train.py: the PyTorch twin of bench_train.c (same configurations, batch, data shapes,
optimiser and update order; the network is tools/cmlab_torch.py's UNet, cmlab's twin).

    train   one Consistency Training step: online forward + backward, target forward under
            no_grad, l2 loss (mean over pixels, then over the batch), the gradient norm, Adam
            (lr 1e-4, PyTorch's default implementation), the evaluation EMA (0.999) and the
            target EMA (mu = 0.9), each as CM's update_ema: targ.mul_(rate).add_(w, alpha=1-rate)
    sample  one-step consistency sampling: x = clamp(f(T z, T), -1, 1), the batch in one call

Usage: /usr/bin/python3 bench/bench_train.py S|M train|sample [--batch B] [--threads T]
       [--iters N] [--warmup W]
Prints one line in bench_train.c's format (side=torch; gflop is left to cmlab's count).
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


def consistency_fn(net, x, t):
    """f(x, t) = c_skip x + c_out F(c_in x; c_noise) (src/sample/precond.c, PRECOND_CM)."""
    sd, eps = SIGMA_DATA, SIGMA_MIN
    r = torch.sqrt(t * t + sd * sd)
    v = (slice(None), None, None, None)
    c_skip = (sd * sd / ((t - eps) ** 2 + sd * sd))[v]
    c_out = (sd * (t - eps) / r)[v]
    F = net(x * (1.0 / r)[v], torch.log(t) / 4.0)
    return c_skip * x + c_out * F


def karras(N):
    lo, hi = SIGMA_MIN ** (1 / 7.0), SIGMA_MAX ** (1 / 7.0)
    return [(lo + i / (N - 1) * (hi - lo)) ** 7.0 for i in range(N)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("mode", choices=["train", "sample"])
    ap.add_argument("--batch", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    train = a.mode == "train"
    B = a.batch or (64 if train else 256)
    cfg = CONFIGS[a.config]
    C, H, W = cfg["img_channels"], cfg["img_h"], cfg["img_w"]

    net = cmlab_torch.UNet(cfg)
    target = cmlab_torch.UNet(cfg)
    target.load_state_dict(net.state_dict())
    ema = cmlab_torch.UNet(cfg)
    ema.load_state_dict(net.state_dict())
    for p in list(target.parameters()) + list(ema.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)

    x0 = torch.rand(B, C, H, W) * 2 - 1
    z = torch.randn(B, C, H, W)
    s = karras(18)
    t1 = torch.tensor([s[i % 17 + 1] for i in range(B)], dtype=torch.float32)
    t0 = torch.tensor([s[i % 17] for i in range(B)], dtype=torch.float32)
    v = (slice(None), None, None, None)

    def train_step():
        opt.zero_grad(set_to_none=False)
        a_ = consistency_fn(net, x0 + t1[v] * z, t1)
        with torch.no_grad():
            b_ = consistency_fn(target, x0 + t0[v] * z, t0)
        loss = ((a_ - b_) ** 2).reshape(B, -1).mean(dim=1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), math.inf)
        opt.step()
        with torch.no_grad():
            for rate, avg in ((0.999, ema), (0.9, target)):
                for pa, pw in zip(avg.parameters(), net.parameters()):
                    pa.mul_(rate).add_(pw, alpha=1 - rate)

    def sample_step():
        with torch.no_grad():
            zz = torch.randn(B, C, H, W)
            T = torch.full((B,), SIGMA_MAX)
            consistency_fn(ema, SIGMA_MAX * zz, T).clamp_(-1, 1)

    step = train_step if train else sample_step
    if not train:
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
          "gflop=nan rss_mb=%.1f arena_mb=nan core=%s" % (a.config, a.mode, a.threads, B, 1e3 * med,
                                                          1e3 * times[0], B / med, rss,
                                                          os.environ.get("OPENBLAS_CORETYPE", "-")),
          flush=True)


if __name__ == "__main__":
    main()

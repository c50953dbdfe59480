"""step_twin.py RUN_DIR...: whole-step PyTorch twins of `cmlab train` (EDM, CT with the iCT
switches, CD, BCM), run by tests/test_step_twin.c after it trained each run for two steps.

A twin reads only what a user of the run has: the resolved experiment (RUN_DIR/config.ini), the
data set it names, the weights before the first update (RUN_DIR/init/step_00000000.h5, which the
C test writes; CD starts from its teacher checkpoint instead, cd.teacher, and a fine-tuned BCM
from its source, bcm.init) and, for CD, the teacher.
From these it redoes the first two optimiser steps in float64 and compares them with cmlab's
checkpoints RUN_DIR/ckpt/step_00000001.h5 and step_00000002.h5 and with metrics.jsonl (what is
compared how, and the bounds: the comment above TOL_MOMENTS).

The math is written from reference/cm.md and the key table (src/train/experiment.c), not from the
trainer: EDM's lognormal sigma and lambda(sigma) (§1.3), the consistency parametrisation (§2), the
Karras grid (§1.4), CT's curriculum N(k) and target rate mu(k) in the code convention (§4.2), iCT's
doubling curriculum, discretised lognormal index sampling and weighting (§5), the distances (§3.2,
§5), CD's teacher Heun/Euler step (§3.1), Adam/AdamW/RAdam (torch.optim), the evaluation EMAs, EDM's
half-life EMA (§1.3) and the target update (§3.1: after the optimiser, theta_minus <- mu theta_minus
+ (1 - mu) theta with mu = mu(k) of the same step k as the loss's N(k), as [PCM]
train_util.CMTrainLoop.run_step, which updates the evaluation EMAs first; both read only the new
online weights, so their relative order does not matter).
BCM (reference/bcm.md §2.1, §3.2, §4): f(x, t, u) with c_skip = (t u + sd^2)/(t^2 + sd^2), c_out =
sd (t - u)/sqrt(t^2 + sd^2); i drawn from the lognormal masses without the top interval, u =
sigma_j with j drawn from the masses with p_{i+1} = 0; loss = mean [d(f(x_t, t), A)/(t - t') +
d(f_target(f(x_t, t, u), u), A)/|t - u|] with d = pseudo-Huber / sqrt(D), A = f_target(x_t', t')
and f_target the online weights frozen (a copy of the module without gradients); fine-tuning copies
the source's t branch into the u branch and sets the align layer to [I, 0].

Conventions taken from cmlab because no paper fixes them (each documented in the header named):
  - random numbers (tests/torch/philox.py, autograd/rng.h, autograd/streams.h): experiment.seed;
    streams 2000 shuffle, 2001 flip, 2002 noise level, 2003 noise z, 3000 + i dropout of ResBlock i;
    step = training step k (0-based); sample = index in the batch; one draw per sample (element 0)
    for sigma or the interval (BCM: two, element 0 for i, element 1 for j), C*H*W elements of z
    per sample;
  - the data order (data/loader.h): epoch e sorts the rows by (u32(seed, 2000, e, row), row); the
    batches are consecutive windows over epoch 0, 1, ...; a sample is flipped iff the top bit of
    u32(seed, 2001, e, position) is set; pixels v/127.5 - 1, padding -1, centred;
  - the interval index (train/ct_schedule.h): ascending grid, interval i = (sigma_i, sigma_{i+1}),
    uniform i = floor(u (N-1)), lognormal: the smallest i with u < cdf(i); K' >= 1 in the doubling;
  - the EDM loss is a per-pixel MEAN (trainer.c edm_loss; EDM sums over pixels: a constant factor
    C*H*W on the loss, which Adam sees only through eps);
  - the learning-rate warm-up lr * min(1, k / warmup) with k the updates already done (nn/optim.h);
    the optimiser's hyperparameters held in float32 (nn/optim.h);
  - a target EMA with the doubling curriculum (iCT itself has none) takes mu = exp(s0 ln(mu0) /
    (N(k) - 1)), the code convention of §4.2 with iCT's N(k) (trainer.c ct_mu_at);
  - the checkpoint layout (train/checkpoint.h), the EMA group names (nn/optim.h), the metrics lines.

Prints one line per comparison and "FAIL ..." for each failure; exits 1 if any failed.
"""
import configparser
import gzip
import json
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
import philox  # noqa: E402

torch.set_num_threads(1)
# float64 is the oracle; STEP_TWIN_DTYPE=float32 runs the same twin in float32, which shows how far
# float32 rounding alone moves each compared quantity (how the tolerances below were chosen).
DTYPE = getattr(torch, os.environ.get("STEP_TWIN_DTYPE", "float64"))
torch.set_default_dtype(DTYPE)


def tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a)).to(DTYPE)


STREAM_SHUFFLE, STREAM_HFLIP, STREAM_NOISE_LEVEL, STREAM_NOISE = 2000, 2001, 2002, 2003
STREAM_DROPOUT_BASE = 3000

# What is compared, and the bounds. cmlab computes in float32 with its own summation orders; the
# twin in float64 from the same float32 inputs, on its own chain of states (its step 2 starts from
# its own step 1).
#   - Adam's m and v (linear and quadratic in the gradient, so they carry every noise level, index,
#     weight, distance, dropout mask and data sample of the step): per tensor, max|cmlab - twin| /
#     max|twin| <= TOL_MOMENTS. Measured: <= 3e-5 in every case here except CD with pseudo-Huber and
#     an Euler teacher step, 1.5e-4: that step's x1 - D(x1) cancels in float32 at the smallest
#     sigma, and the pseudo-Huber gradient has unit norm per sample whatever ||a - b||, so such a
#     sample weighs fully. The twin itself run in float32 (STEP_TWIN_DTYPE=float32) lands as far
#     from cmlab there (1e-4): rounding, not a difference of method. A changed sigma, lambda, index,
#     mu, sample or teacher step changes whole samples' gradients: 5e-3 to 3 in the breaks tried.
#   - The logged loss and gradient norm (printed with %.6g): relative TOL_LOSS.
#   - The weight sets after the update (online, target, every EMA), from cmlab's own previous
#     checkpoint and its new moments, by the update rules: Adam/AdamW/RAdam with the step's lr,
#     the EMAs and the target (with mu(k)). An independent chain would not do for these: Adam's
#     first updates lr m / (sqrt(v) + eps) are sign-like and an element whose gradient sits at its
#     tensor's rounding noise (|g| ~ eps) may move by anything in [-lr, lr] on either side. Given m
#     and v (checked above) the rules are smooth, so the bound is a few float32 roundings:
#     per element |cmlab - rule| <= ROUND (|previous| + |new|) + TOL_UPDATE |update|.
TOL_MOMENTS = 1e-3
TOL_LOSS = 2e-5
ROUND = 4 * 2.0 ** -24
TOL_UPDATE = 1e-5


failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


# ---- the experiment (resolved config.ini) ----

class Experiment:
    """The resolved configuration: every key is present (config.ini lists defaults too)."""

    def __init__(self, text):
        self.ini = configparser.ConfigParser(interpolation=None)
        self.ini.read_string(text)

    def s(self, sec, key):
        return self.ini.get(sec, key).strip()

    def f(self, sec, key):
        return float(self.s(sec, key))

    def i(self, sec, key):
        return int(self.s(sec, key))

    def b(self, sec, key):
        v = self.s(sec, key)
        if v not in ("true", "false"):
            raise ValueError("%s.%s = %r: not true/false" % (sec, key, v))
        return v == "true"

    def ints(self, sec, key):
        return [int(v) for v in self.s(sec, key).split(",") if v.strip()]

    def floats(self, sec, key):
        return [float(v) for v in self.s(sec, key).split(",") if v.strip()]


SKIP_SCALES = {"sqrt_half": math.sqrt(0.5), "one": 1.0}   # model.skip_scale


def unet_config(exp, C, H, W):
    return dict(img_channels=C, img_h=H, img_w=W, base_channels=exp.i("model", "channels"),
                channel_mult=exp.ints("model", "channel_mult"), num_blocks=exp.i("model", "num_blocks"),
                attn_resolutions=exp.ints("model", "attn_resolutions"), mid_attn=exp.b("model", "mid_attn"),
                attn_heads=exp.i("model", "attn_heads"), dropout=exp.f("model", "dropout"),
                emb_type=exp.s("model", "emb_type"), fourier_scale=exp.f("model", "fourier_scale"),
                skip_scale=SKIP_SCALES[exp.s("model", "skip_scale")],
                two_times=exp.s("experiment", "method") == "bcm",
                seed=exp.i("experiment", "seed"))


# ---- data ----

def read_idx(path):
    """An IDX file (optionally .gz) of unsigned bytes -> numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * d:8 + 4 * d], "big") for d in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_images(exp):
    if exp.s("data", "dataset") != "mnist":
        raise ValueError("step_twin: the twin reads data.dataset = mnist only")
    base = os.path.join(exp.s("data", "path"), "train-images-idx3-ubyte")
    return read_idx(base if os.path.exists(base) else base + ".gz")[:, None]   # [n, 1, h, w]


class Data:
    """The training batches: shuffled per epoch, flipped, scaled to [-1, 1], padded."""

    def __init__(self, exp):
        self.pix = load_images(exp)
        self.n, self.C, h, w = self.pix.shape
        pad = exp.i("data", "pad_to")
        self.H, self.W = (pad, pad) if pad else (h, w)
        self.seed = exp.i("experiment", "seed")
        self.hflip = exp.b("data", "hflip")
        self.B = exp.i("train", "batch_size")

    def order(self, epoch):
        keys = philox.u32(self.seed, STREAM_SHUFFLE, epoch, self.n, 0, 1)[:, 0]
        return np.lexsort((np.arange(self.n), keys))     # by key, ties by row

    def batch(self, k):
        """Batch of step k: the positions k B .. k B + B - 1 of the endless epoch sequence."""
        n, C, h, w = self.pix.shape
        x = np.full((self.B, C, self.H, self.W), -1.0, np.float32)
        top, left = (self.H - h) // 2, (self.W - w) // 2
        for j in range(self.B):
            epoch, index = divmod(k * self.B + j, n)
            img = self.pix[self.order(epoch)[index]]
            if self.hflip and philox.u32(self.seed, STREAM_HFLIP, epoch, 1, index, 1)[0, 0] >> 31:
                img = img[:, :, ::-1]
            x[j, :, top:top + h, left:left + w] = img.astype(np.float32) / np.float32(127.5) - np.float32(1)
        return tensor(x)

    def cursor(self, steps):
        return divmod(steps * self.B, self.n)


# ---- preconditioning (cm.md §1.2, §2) ----

def denoise(net, x, sigma, kind, sd, eps, dropout=None, u=None):
    """EDM's D(x; sigma) (kind "edm"), the consistency function f(x, sigma) ("cm"), or BCM's
    f(x, sigma, u) ("bcm", u = eps when None)."""
    s = sigma.reshape(-1, 1, 1, 1)
    r = torch.sqrt(s * s + sd * sd)
    if kind == "bcm":
        u = torch.full_like(sigma, eps) if u is None else u
        v = u.reshape(-1, 1, 1, 1)
        F = net(x / r, torch.log(sigma) / 4, torch.log(u) / 4, dropout=dropout)
        return (s * v + sd * sd) / (s * s + sd * sd) * x + sd * (s - v) / r * F
    if kind == "edm":
        c_skip, c_out = sd * sd / (r * r), s * sd / r
    else:
        c_skip, c_out = sd * sd / ((s - eps) ** 2 + sd * sd), sd * (s - eps) / r
    return c_skip * x + c_out * net(x / r, torch.log(sigma) / 4, dropout=dropout)


def distance(kind, a, b):
    """Per-sample d(a, b) (cm.md §3.2, §5): l2 / l1 means over pixels; pseudo-Huber over the
    whole sample's norm with c = 0.00054 sqrt(C H W)."""
    d = (a - b).flatten(1)
    if kind == "l2":
        return (d * d).mean(1)
    if kind == "l1":
        return d.abs().mean(1)
    if kind == "pseudo_huber":
        c = 0.00054 * math.sqrt(d.shape[1])
        return torch.sqrt((d * d).sum(1) + c * c) - c
    raise ValueError("distance %r" % kind)


# ---- CT / iCT schedules (cm.md §1.4, §4.2, §5) ----

def karras_ascending(N, smin, smax, rho=7.0):
    i = np.arange(N, dtype=np.float64)
    g = (smin ** (1 / rho) + i / (N - 1) * (smax ** (1 / rho) - smin ** (1 / rho))) ** rho
    g[0], g[-1] = smin, smax
    return g


def ct_s0_s1(exp):
    cur = exp.s("ct", "curriculum")
    s0, s1 = exp.i("ct", "s0"), exp.i("ct", "s1")
    return s0 or {"original": 2, "doubling": 10}[cur], s1 or {"original": 150, "doubling": 1280}[cur]


def ct_N(exp, k):
    """Grid points N(k): CT's square-root curriculum in the code convention (N = m + 1) or iCT's
    doubling N = min(s0 2^floor(k/K'), s1) + 1, K' = floor(K / (log2 floor(s1/s0) + 1))."""
    K = exp.i("train", "iterations")
    s0, s1 = ct_s0_s1(exp)
    if exp.s("ct", "curriculum") == "original":
        m = math.ceil(math.sqrt(k / K * ((s1 + 1) ** 2 - s0 ** 2) + s0 ** 2) - 1)
        return max(m, 1) + 1
    Kp = max(1, math.floor(K / (math.log2(s1 // s0) + 1)))
    return min(s0 * 2 ** (k // Kp), s1) + 1


def ct_mu(exp, k):
    """Target rate mu(k) = exp(s0 ln(mu0) / m(k)), m = N(k) - 1 (code convention, §4.2)."""
    mu0 = exp.f("ct", "target_mu")
    if mu0 == 0:
        return 0.0
    s0, _ = ct_s0_s1(exp)
    return math.exp(s0 * math.log(mu0) / (ct_N(exp, k) - 1))


def lognormal_interval_probs(grid, p_mean, p_std):
    """iCT: p(i) proportional to erf((ln s_{i+1} - Pm)/(sqrt2 Ps)) - erf((ln s_i - Pm)/(sqrt2 Ps))."""
    e = np.array([math.erf((math.log(s) - p_mean) / (math.sqrt(2) * p_std)) for s in grid])
    p = e[1:] - e[:-1]
    return p / p.sum()


def draw_without(v, probs, skip):
    """An index by inverse CDF of probs with probs[skip] = 0 (renormalised), one uniform v."""
    p = probs.copy()
    p[skip] = 0
    cdf = np.cumsum(p / p.sum())
    return min(int(np.searchsorted(cdf, np.float64(v), side="right")), len(p) - 1)


def draw_intervals(u, n, probs=None):
    """Interval indices for uniforms u over n intervals: uniform, or by inverse CDF of probs."""
    if probs is None:
        return np.minimum(np.floor(u.astype(np.float64) * n).astype(int), n - 1)
    cdf = np.cumsum(probs)
    return np.minimum(np.searchsorted(cdf, u.astype(np.float64), side="right"), n - 1)


# ---- the twin of one run ----

def first_ema_group(path):
    with h5py.File(path, "r") as f:
        emas = sorted(f["weights/ema"]) if "weights/ema" in f else []
    return "ema/" + emas[0] if emas else "online"


def read_group(g):
    """The datasets of an open h5py group, by name."""
    return {name: d[()] for name, d in g.items()}


def read_set(path, group):
    with h5py.File(path, "r") as f:
        return read_group(f[group])


def rate_group_name(rate):
    """The checkpoint group of a constant-rate EMA: the shortest %g that reads back to the same
    float32 (nn/optim.c names it so: "0.9999", not "0.999899983")."""
    r = np.float32(rate)
    for digits in range(1, 10):
        name = "%.*g" % (digits, r)
        if np.float32(float(name)) == r:
            return name
    return "%.9g" % r


class Twin:
    def __init__(self, run_dir):
        self.dir = run_dir
        with open(os.path.join(run_dir, "config.ini")) as f:
            exp = self.exp = Experiment(f.read())
        self.name = exp.s("experiment", "name")
        self.method = exp.s("experiment", "method")
        self.seed = exp.i("experiment", "seed")
        self.data = Data(exp)
        self.B, self.C, self.H, self.W = self.data.B, self.data.C, self.data.H, self.data.W
        self.sd, self.eps = exp.f("model", "sigma_data"), exp.f("model", "sigma_min")
        cfg = unet_config(exp, self.C, self.H, self.W)
        self.net = cmlab_torch.UNet(cfg)
        self.teacher = None
        if self.method == "cd":
            tpath = exp.s("cd", "teacher")
            tw = exp.s("cd", "teacher_weights")
            group = ("ema/" + tw[4:] if tw.startswith("ema:") else tw) if tw else first_ema_group(tpath)
            with h5py.File(tpath, "r") as f:
                texp = Experiment(f.attrs["config"].decode())   # the teacher's resolved experiment
            self.teacher_sd = texp.f("model", "sigma_data")
            self.teacher = cmlab_torch.UNet(unet_config(texp, self.C, self.H, self.W)).eval()
            start = read_set(tpath, "weights/" + group)   # the student starts at the teacher
            self.teacher.load_state_dict(self.to_state(start))
            self.target_mu = exp.f("cd", "target_mu")
        elif self.method == "bcm" and exp.s("bcm", "init"):
            src = exp.s("bcm", "init")
            tw = exp.s("bcm", "init_weights")
            group = ("ema/" + tw[4:] if tw.startswith("ema:") else tw) if tw else first_ema_group(src)
            start = dict(read_set(src, "weights/" + group))
            for part in ("layer0.weight", "layer0.bias", "layer1.weight", "layer1.bias"):
                start["map_u_" + part] = start["map_" + part].copy()
            E = start["map_layer1.bias"].shape[0]
            start["map_align.weight"] = np.concatenate([np.eye(E), np.zeros((E, E))], 1).astype(np.float32)
            self.target_mu = 0.0
        else:
            start = read_set(os.path.join(run_dir, "init", "step_00000000.h5"), "weights/online")
            self.target_mu = exp.f("ct", "target_mu") if self.method == "ct" else 0.0
        self.net.load_state_dict(self.to_state(start))
        self.net.train()
        self.start = {k: v.astype(np.float64) for k, v in start.items()}
        self.target = None
        if self.target_mu > 0:   # theta_minus <- theta (cm.md §3.1)
            self.target = cmlab_torch.UNet(cfg)
            self.target.load_state_dict(self.to_state(start))
            self.target.train()
        # Evaluation EMAs start as copies of the weights.
        self.emas = {}
        for r in exp.floats("train", "ema"):
            self.emas["ema/" + rate_group_name(r)] = ("rate", r, self.state_copy())
        hl = exp.f("train", "ema_halflife_kimg")
        if hl > 0:
            self.emas["ema/hl%.0f" % (hl * 1000)] = ("halflife", hl * 1000, self.state_copy())
        self.opt = self.make_optimizer()
        # cmlab's state before step 1 (the rule checks start from it): every set is a copy.
        self.prev = {g: self.start for g in ["online", "target"] + list(self.emas)}

    @staticmethod
    def to_state(arrays):
        return {k: tensor(v) for k, v in arrays.items()}

    def state_copy(self):
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def hyper(self):
        """lr, beta1, beta2, eps, weight decay. cmlab keeps the optimiser's hyperparameters in
        float32 (nn/optim.h): 1 - 0.999f is 1.3e-5 larger than 1 - 0.999, which shows in v and in
        the bias corrections of the first steps, so the twin rounds them the same way."""
        e = self.exp
        return [float(np.float32(e.f("train", k))) for k in ("lr", "beta1", "beta2", "eps", "weight_decay")]

    def make_optimizer(self):
        kind = self.opt_kind = self.exp.s("train", "optimizer")
        cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[kind]
        lr, b1, b2, eps, wd = self.hyper()
        return cls(self.net.parameters(), lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)

    # ---- the methods' losses at step k on batch x0 [B, C, H, W] ----

    def dropout(self, k):
        return (self.seed, STREAM_DROPOUT_BASE, k) if self.exp.f("model", "dropout") > 0 else None

    def noise(self, k):
        z = philox.normal(self.seed, STREAM_NOISE, k, self.B, 0, self.C * self.H * self.W)
        return tensor(z.reshape(self.B, self.C, self.H, self.W))

    def edm_loss(self, k, x0):
        """cm.md §1.3: ln sigma ~ N(P_mean, P_std^2), lambda = (s^2 + sd^2) / (s sd)^2,
        loss = mean_b lambda_b mean_pixels (D(x0 + s z; s) - x0)^2."""
        e, sd = self.exp, self.sd
        n = philox.normal(self.seed, STREAM_NOISE_LEVEL, k, self.B, 0, 1)[:, 0].astype(np.float64)
        sigma = tensor(np.exp(e.f("edm", "p_mean") + e.f("edm", "p_std") * n))
        lam = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
        D = denoise(self.net, x0 + sigma.reshape(-1, 1, 1, 1) * self.noise(k), sigma, "edm", sd, self.eps,
                    self.dropout(k))
        self.info = "sigma %s" % np.array2string(sigma.numpy(), precision=4)
        return (lam * ((D - x0) ** 2).flatten(1).mean(1)).mean()

    def pair_loss(self, k, x0, xt, t1, t0, lam, loss_kind):
        """mean_b lam_b d(f_theta(x0 + t1 z, t1), stopgrad f_target(xt, t0)), the same dropout masks."""
        z = self.noise(k)
        t1, t0 = tensor(t1), tensor(t0)
        x1 = x0 + t1.reshape(-1, 1, 1, 1) * z
        if xt is None:                      # CT: the target sees the same z at t0
            xt = x0 + t0.reshape(-1, 1, 1, 1) * z
        a = denoise(self.net, x1, t1, "cm", self.sd, self.eps, self.dropout(k))
        with torch.no_grad():
            b = denoise(self.target if self.target is not None else self.net, xt, t0, "cm", self.sd, self.eps, self.dropout(k))
        return (tensor(lam) * distance(loss_kind, a, b)).mean()

    def ct_loss(self, k, x0):
        e = self.exp
        N = ct_N(e, k)
        grid = karras_ascending(N, self.eps, e.f("model", "sigma_max"))
        probs = None
        if e.s("ct", "sampling") == "lognormal":
            probs = lognormal_interval_probs(grid, e.f("ct", "p_mean"), e.f("ct", "p_std"))
        u = philox.uniform(self.seed, STREAM_NOISE_LEVEL, k, self.B, 0, 1)[:, 0]
        i = draw_intervals(u, N - 1, probs)
        t1, t0 = grid[i + 1], grid[i]
        lam = 1.0 / (t1 - t0) if e.s("ct", "weighting") == "ict" else np.ones(self.B)
        self.N, self.mu = N, ct_mu(e, k)
        self.info = "N %d mu %.6g i %s lambda %s" % (N, self.mu, i, np.array2string(lam, precision=4))
        return self.pair_loss(k, x0, None, t1, t0, lam, e.s("ct", "loss"))

    def bcm_loss(self, k, x0):
        """bcm.md §3: N = bcm.N or the [ct] curriculum's; i without the top interval, j != i + 1;
        the target is a frozen copy of the online weights (gradient only through x_u)."""
        e, sd, eps = self.exp, self.sd, self.eps
        N = e.i("bcm", "N") or ct_N(e, k)
        grid = karras_ascending(N, eps, e.f("model", "sigma_max"))
        probs = lognormal_interval_probs(grid, e.f("ct", "p_mean"), e.f("ct", "p_std"))
        v = philox.uniform(self.seed, STREAM_NOISE_LEVEL, k, self.B, 0, 2)
        i = np.array([draw_without(v[b, 0], probs, N - 2) for b in range(self.B)])
        j = np.array([draw_without(v[b, 1], probs, i[b] + 1) for b in range(self.B)])
        t, tp, u = tensor(grid[i + 1]), tensor(grid[i]), tensor(grid[j])
        z = self.noise(k)
        V = (slice(None), None, None, None)
        xt = x0 + t[V] * z
        frozen = cmlab_torch.UNet(self.net.cfg)
        frozen.load_state_dict(self.net.state_dict())
        frozen.train()
        for p in frozen.parameters():
            p.requires_grad_(False)
        drop = self.dropout(k)
        with torch.no_grad():
            A = denoise(frozen, x0 + tp[V] * z, tp, "bcm", sd, eps, drop)
        y = denoise(self.net, xt, t, "bcm", sd, eps, drop)
        yu = denoise(frozen, denoise(self.net, xt, t, "bcm", sd, eps, drop, u), u, "bcm", sd, eps, drop)
        c = e.f("bcm", "huber_c") or 0.00054 * math.sqrt(self.C * self.H * self.W)

        def d(a, b):
            q = ((a - b) ** 2).flatten(1).sum(1)
            return (torch.sqrt(q + c * c) - c) / math.sqrt(self.C * self.H * self.W)

        self.N, self.mu = N, 0.0
        self.info = "N %d i %s j %s" % (N, i, j)
        return (d(y, A) / (t - tp) + d(yu, A) / torch.abs(t - u)).mean()

    def cd_loss(self, k, x0):
        """cm.md §3.1: one teacher ODE step (Heun or Euler, EDM preconditioning, eval mode) from
        x1 = x0 + t_{n+1} z down to t_n; weight 1."""
        e = self.exp
        N = e.i("cd", "N")
        grid = karras_ascending(N, self.eps, e.f("model", "sigma_max"))
        u = philox.uniform(self.seed, STREAM_NOISE_LEVEL, k, self.B, 0, 1)[:, 0]
        i = draw_intervals(u, N - 1)
        t1, t0 = grid[i + 1], grid[i]
        z = self.noise(k)
        T1, T0 = tensor(t1).reshape(-1, 1, 1, 1), tensor(t0).reshape(-1, 1, 1, 1)
        x1 = x0 + T1 * z
        with torch.no_grad():
            D = lambda x, t: denoise(self.teacher, x, tensor(t), "edm", self.teacher_sd, self.eps)  # noqa: E731
            d1 = (x1 - D(x1, t1)) / T1
            xt = x1 + (T0 - T1) * d1
            if e.s("cd", "solver") == "heun":
                d2 = (xt - D(xt, t0)) / T0
                xt = x1 + (T0 - T1) * (d1 + d2) / 2
        self.N, self.mu = N, self.target_mu
        self.info = "i %s solver %s" % (i, e.s("cd", "solver"))
        return self.pair_loss(k, x0, xt, t1, t0, np.ones(self.B), e.s("cd", "loss"))

    # ---- one whole step ----

    def step(self, k):
        e = self.exp
        self.N, self.mu = 0, 0.0
        x0 = self.data.batch(k)
        self.opt.zero_grad()
        losses = {"edm": self.edm_loss, "ct": self.ct_loss, "cd": self.cd_loss, "bcm": self.bcm_loss}
        loss = losses[self.method](k, x0)
        loss.backward()
        params = list(self.net.parameters())
        clip = e.f("train", "grad_clip")
        norm = math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        warmup = e.i("train", "warmup")
        lr = self.hyper()[0] * (min(1.0, k / warmup) if warmup > 0 else 1.0)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()
        w = self.net.state_dict()
        with torch.no_grad():
            for name, (kind, rate, ema) in self.emas.items():
                beta = self.ema_beta(kind, rate, k)
                for p in ema:
                    ema[p].mul_(beta).add_(w[p], alpha=1 - beta)
            if self.target is not None:
                tw = self.target.state_dict()
                for p in tw:
                    tw[p].mul_(self.mu).add_(w[p], alpha=1 - self.mu)
        return float(loss), norm, lr

    # ---- comparison with cmlab ----

    def report(self, label, worst, where, detail, bound):
        line = "%-20s %.2e at %s (%s)" % (label, worst, where, detail)
        if worst <= bound:
            print("  " + line)
        else:
            fail("%s step %d: %s: %.3e > %g" % (self.name, self.step_no, line, worst, bound))

    def compare_moments(self, label, cm, tw):
        """Per tensor max|cmlab - twin| / max|twin|; the worst tensor is reported."""
        worst, where, detail = -1.0, "", ""
        for name, ref in tw.items():
            err = np.abs(cm[name].astype(np.float64) - ref).max()
            scale = np.abs(ref).max()
            r = err / scale if scale > 0 else (0.0 if err == 0 else math.inf)
            if not r <= worst:
                worst, where, detail = r, name, "error %.2e, max %.2e" % (err, scale)
        self.report(label, worst, where, detail, TOL_MOMENTS)

    def compare_rule(self, label, cm, prev, new):
        """cmlab's weight set against new (the update rule applied to cmlab's own previous state):
        element-wise error / (ROUND (|prev| + |new|) + TOL_UPDATE |new - prev|), worst tensor."""
        worst, where, detail = -1.0, "", ""
        for name, ref in new.items():
            got = cm[name].astype(np.float64)
            err = np.abs(got - ref)
            allowed = ROUND * (np.abs(prev[name]) + np.abs(ref)) + TOL_UPDATE * np.abs(ref - prev[name])
            r = np.where(err == 0, 0.0, err / np.maximum(allowed, 1e-45)).max()
            if not r <= worst:
                worst, where = r, name
                detail = "error %.2e, update %.2e" % (err.max(), np.abs(ref - prev[name]).max())
        self.report(label + " (rule)", worst, where, detail, 1.0)

    def optimizer_rule(self, w, m, v, t, lr):
        """The update of step t (from 1) given the new moments, in PyTorch's conventions
        (torch.optim docs): Adam w - lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps); AdamW decays w by
        (1 - lr wd) first (Adam's L2 decay is already in m); RAdam w - lr m/bc1 (rho_t <= 5) or
        w - lr m/bc1 r_t sqrt(bc2) / (sqrt(v) + eps)."""
        _, b1, b2, eps, wd = self.hyper()
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        if self.opt_kind == "adamw":
            w = w * (1 - lr * wd)
        if self.opt_kind in ("adam", "adamw"):
            return w - lr / bc1 * m / (np.sqrt(v) / math.sqrt(bc2) + eps)
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2 ** t / bc2
        if rho_t <= 5:
            return w - lr * m / bc1
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        return w - lr * m / bc1 * r * math.sqrt(bc2) / (np.sqrt(v) + eps)

    def ema_beta(self, kind, rate, k):
        """The rate of an evaluation EMA at step k: constant, or EDM's half-life schedule
        0.5^(B / max(h, 1e-8)), h = min(halflife, rampup * images seen before this update)."""
        if kind == "rate":
            return rate
        h, ramp = rate, self.exp.f("train", "ema_rampup")
        if ramp > 0:
            h = min(h, ramp * k * self.B)
        return 0.5 ** (self.B / max(h, 1e-8))

    def check(self, k, loss, norm, lr):
        step = self.step_no = k + 1
        path = os.path.join(self.dir, "ckpt", "step_%08d.h5" % step)
        print("%s step %d: %s" % (self.name, step, self.info))
        with h5py.File(path, "r") as f:
            attrs = {a: f.attrs[a] for a in f.attrs}
            sets = {}
            for grp in ["online", "target"] + list(self.emas):
                if "weights/" + grp in f:
                    sets[grp] = read_group(f["weights/" + grp])
                elif grp != "target" or self.target is not None:
                    fail("%s step %d: %s has no /weights/%s" % (self.name, step, path, grp))
                    return
            og = f["optimizer/" + self.opt_kind]
            mom = {m: {n: a.astype(np.float64) for n, a in read_group(og[m]).items()} for m in ("m", "v")}
            opt_step = int(og.attrs["step"])
        if (self.target is None) != ("target" not in sets):
            fail("%s step %d: a target weight set %s" % (self.name, step,
                 "with target_mu = 0" if self.target is None else "missing"))
            return
        # The twin's own chain: moments, loss, gradient norm.
        named = dict(self.net.named_parameters())
        st = self.opt.state
        self.compare_moments("adam m", mom["m"], {n: st[p]["exp_avg"].numpy() for n, p in named.items()})
        self.compare_moments("adam v", mom["v"], {n: st[p]["exp_avg_sq"].numpy() for n, p in named.items()})
        # The update rules on cmlab's own state: previous checkpoint (or the start), new moments.
        prev = self.prev
        cm = {g: {n: a.astype(np.float64) for n, a in ws.items()} for g, ws in sets.items()}
        online = {n: self.optimizer_rule(prev["online"][n], mom["m"][n], mom["v"][n], step, lr) for n in cm["online"]}
        self.compare_rule("online", sets["online"], prev["online"], online)
        for name, (kind, rate, _) in self.emas.items():
            beta = self.ema_beta(kind, rate, k)
            new = {n: beta * prev[name][n] + (1 - beta) * cm["online"][n] for n in cm["online"]}
            self.compare_rule(name, sets[name], prev[name], new)
        if self.target is not None:
            new = {n: self.mu * prev["target"][n] + (1 - self.mu) * cm["online"][n] for n in cm["online"]}
            self.compare_rule("target", sets["target"], prev["target"], new)
        self.prev = cm
        # Scalars: step, schedule, data cursor, metrics.
        epoch, index = self.data.cursor(step)
        want = dict(step=step, data_epoch=epoch, data_index=index, sched_N=self.N)
        for key, v in want.items():
            if int(attrs[key]) != v:
                fail("%s step %d: checkpoint %s = %d, the twin's %d" % (self.name, step, key, int(attrs[key]), v))
        if abs(float(attrs["sched_mu"]) - self.mu) > 1e-12 * max(1.0, abs(self.mu)):
            fail("%s step %d: checkpoint sched_mu = %.17g, the twin's mu(k) = %.17g"
                 % (self.name, step, float(attrs["sched_mu"]), self.mu))
        if opt_step != step:
            fail("%s step %d: optimizer step %d" % (self.name, step, opt_step))
        rec = None
        with open(os.path.join(self.dir, "metrics.jsonl")) as f:
            for line in f:
                r = json.loads(line)
                if r.get("step") == step and "loss" in r:
                    rec = r
        if rec is None:
            fail("%s step %d: no metrics.jsonl line" % (self.name, step))
            return
        for key, ref in (("loss", loss), ("grad_norm", norm), ("lr", lr)):
            err = abs(rec[key] - ref) / max(abs(ref), 1e-30)
            msg = "%-20s cmlab %.6g twin %.8g (%.1e)" % ("logged " + key, rec[key], ref, err)
            if err <= TOL_LOSS or (ref == 0 and rec[key] == 0):
                print("  " + msg)
            else:
                fail("%s step %d: %s" % (self.name, step, msg))

    def run(self):
        for k in range(2):
            loss, norm, lr = self.step(k)
            self.check(k, loss, norm, lr)


def main(dirs):
    for d in dirs:
        try:
            Twin(d).run()
        except Exception as ex:   # a twin that cannot run must fail, naming the run
            fail("%s: %s: %s" % (d, type(ex).__name__, ex))
    print("step_twin: %d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: step_twin.py RUN_DIR...")
    sys.exit(main(sys.argv[1:]))

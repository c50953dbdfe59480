"""bench_eval.py: the eval row of bench.py: `cmlab eval` end to end against a PyTorch loop doing
the same work.

cmlab's side is the command users wait for, timed from the outside (wall time of the process,
its peak RSS from wait4): `cmlab eval CKPT --features CLF --n N --nfe 1 --no-stamp` on a
consistency model of the bench's S network, with a method = classifier feature network of
experiments/classifier_fashion_mnist.ini's architecture: N one-step samples (network batches of
64, model_sampler), their features (batches of 256), their mean and covariance, and the Frechet
distance to the training split's cached statistics. It also loads the checkpoints and the data set
(whose hash names the cache).

PyTorch's side, when this file runs as a script: the same checkpoints in cmlab_torch's U-Net twin
and this file's Classifier twin (src/nn/classifier.h: per level conv 3x3, GroupNorm (eps 1e-5),
SiLU, conv 3x3, GroupNorm, SiLU, 2x2 average pool; flatten, SiLU(fc), head), timed inside the
process from the loaded networks on: N samples x = clamp(f(80 z, 80), -1, 1) in batches of
--batch, rounded to 8 bits, the classifier's features, their mean and covariance (float64) and the
Frechet distance to cmlab's cached training-split statistics (numpy's symmetric eigensolver).

Usage (bench.py does this): Eval(build).prepare() trains the two networks for one step each into
BUILD/bench_eval (untimed: only their shapes matter) and runs cmlab eval once to fill the statistics
cache; Eval.cmlab(threads, env) times one cmlab eval; Eval.torch_cmd(batch, channels_last) is the
twin's command line:
  /usr/bin/python3 bench/bench_eval.py CKPT CLF STATS.h5 [--batch B] [--channels-last] [--threads T]
"""
import argparse
import glob
import math
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PY = os.environ.get("TORCH_PYTHON", "/usr/bin/python3")
# Samples per evaluation: the README's recipes evaluate n = 2000 (and 10000); at n = 512 (this
# row until session 22) the process's fixed costs (start, the waiting rule's probe, loading, about
# 0.1 s) were a fifth of cmlab's time, more than they are of any evaluation users run.
N = 2000
SIGMA_MIN, SIGMA_MAX, SIGMA_DATA = 0.002, 80.0, 0.5

# The bench's S network (bench_train.c), method ct; one training step, a checkpoint at the end.
CT_INI = """[experiment]
method = ct
name = ct_s
out_dir = {out}

[model]
channels = 32
channel_mult = 1,2,2
num_blocks = 1
mid_attn = false

[train]
iterations = 1
batch_size = 8
checkpoint_every = 1
sample_every = 0
ema = 0.999
"""
CLF_INI = """[experiment]
method = classifier
name = clf
out_dir = {out}

[classifier]
channels = 16,32
features = 256
classes = 10

[train]
iterations = 1
batch_size = 8
checkpoint_every = 1
sample_every = 0
ema = 0.99
"""


class Eval:
    def __init__(self, build):
        self.build = os.path.abspath(build)
        self.dir = os.path.join(self.build, "bench_eval")
        self.cmlab_bin = os.path.join(self.build, "cmlab")

    def _train(self, name, text):
        ini = os.path.join(self.dir, name + ".ini")
        with open(ini, "w") as f:
            f.write(text.format(out=self.dir))
        run_dir = os.path.join(self.dir, name)
        ckpts = sorted(glob.glob(os.path.join(run_dir, "ckpt", "*.h5")))
        if not ckpts:
            subprocess.run([self.cmlab_bin, "train", ini], check=True, stdout=subprocess.DEVNULL)
            ckpts = sorted(glob.glob(os.path.join(run_dir, "ckpt", "*.h5")))
        return ckpts[-1]

    def prepare(self):
        os.makedirs(self.dir, exist_ok=True)
        self.ckpt = self._train("ct_s", CT_INI)
        self.clf = self._train("clf", CLF_INI)
        print("eval row: %s, features %s; filling the statistics cache" % (self.ckpt, self.clf), flush=True)
        self.cmlab(2, dict(os.environ, OMP_NUM_THREADS="2"))
        self.stats = glob.glob(os.path.join(self.dir, "clf", "fd_stats", "*-train-*.h5"))[0]

    def cmlab(self, threads, env):
        """One `cmlab eval` timed from outside: a bench_train-format record. threads 0: no --threads
        (the command's default; the record says 0)."""
        cmd = [self.cmlab_bin, "eval", self.ckpt, "--features", self.clf, "--n", str(N), "--nfe", "1", "--no-stamp",
               "--out", os.path.join(self.dir, "eval_out")] + (["--threads", str(threads)] if threads > 0 else [])
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise subprocess.CalledProcessError(p.returncode, cmd)
        return dict(side="cmlab", config="S", mode="eval", threads=str(threads), batch=str(N), ms="%.2f" % (1e3 * dt),
                    img_s="%.2f" % (N / dt), gflop="nan", rss_mb="%.1f" % (ru.ru_maxrss / 1024.0))

    def torch_cmd(self, batch, channels_last):
        return [PY, os.path.abspath(__file__), self.ckpt, self.clf, self.stats, "--batch", str(batch),
                "--threads", "2"] + (["--channels-last"] if channels_last else [])


# ---- the PyTorch twin ----

def classifier_twin(path):
    import h5py
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(HERE, "..", "tools"))
    import cmlab_torch

    class Classifier(nn.Module):
        def __init__(self, state, C, H):
            super().__init__()
            self.L = sum(1 for k in state if k.startswith("conv") and k.endswith("a.weight"))
            cin = C
            for l in range(self.L):
                cout = state["conv%da.weight" % l].shape[0]
                for s, ci in (("a", cin), ("b", cout)):
                    setattr(self, "conv%d%s" % (l, s), nn.Conv2d(ci, cout, 3, padding=1))
                    setattr(self, "norm%d%s" % (l, s), nn.GroupNorm(cmlab_torch.gn_groups(cout), cout, eps=1e-5))
                cin = cout
            self.fc = nn.Linear(*reversed(state["fc.weight"].shape))
            self.head = nn.Linear(*reversed(state["head.weight"].shape))

        def features(self, x):
            for l in range(self.L):
                for s in "ab":
                    x = F.silu(getattr(self, "norm%d%s" % (l, s))(getattr(self, "conv%d%s" % (l, s))(x)))
                x = F.avg_pool2d(x, 2)
            return F.silu(self.fc(x.flatten(1)))

    with h5py.File(path, "r") as f:
        group = f["weights/ema"]
        ws = group[sorted(group)[0]]
        state = {k: torch.from_numpy(np.asarray(ws[k])) for k in ws}
    net = Classifier(state, 1, 28)
    net.load_state_dict(state)
    return net.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("clf")
    ap.add_argument("stats")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    import h5py
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(HERE, "..", "tools"))
    import cmlab_torch
    torch.set_num_threads(a.threads)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    with h5py.File(a.ckpt, "r") as f:
        ema = "ema/" + sorted(f["weights/ema"])[0]
    net = cmlab_torch.load_checkpoint(a.ckpt, ema).to(memory_format=fmt)
    clf = classifier_twin(a.clf).to(memory_format=fmt)
    with h5py.File(a.stats, "r") as f:
        mu_r, sg_r = np.asarray(f["mu"]), np.asarray(f["sigma"])
    cfg = net.cfg
    C, H, W = cfg["img_channels"], cfg["img_h"], cfg["img_w"]

    t0 = time.perf_counter()
    feats = []
    with torch.no_grad():
        for i0 in range(0, N, a.batch):
            nb = min(a.batch, N - i0)
            t = torch.full((nb,), SIGMA_MAX)
            r = math.sqrt(SIGMA_MAX ** 2 + SIGMA_DATA ** 2)
            x = (SIGMA_MAX * torch.randn(nb, C, H, W)).contiguous(memory_format=fmt)
            c_skip = SIGMA_DATA ** 2 / ((SIGMA_MAX - SIGMA_MIN) ** 2 + SIGMA_DATA ** 2)
            c_out = SIGMA_DATA * (SIGMA_MAX - SIGMA_MIN) / r
            x = (c_skip * x + c_out * net(x / r, torch.log(t) / 4.0)).clamp_(-1, 1)
            x = torch.round((x + 1) * 127.5) / 127.5 - 1
            feats.append(clf.features(x).double())
    X = torch.cat(feats).numpy()
    mu, sg = X.mean(axis=0), np.cov(X, rowvar=False)
    # tr (S1 S2)^1/2 from the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric), as frechet.h
    e, v = np.linalg.eigh(sg)
    s1h = (v * np.sqrt(np.clip(e, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(s1h @ sg_r @ s1h), 0, None)).sum()
    fd = ((mu - mu_r) ** 2).sum() + np.trace(sg) + np.trace(sg_r) - 2 * tr
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("side=torch config=S mode=eval threads=%d batch=%d ms=%.2f ms_min=%.2f img_s=%.2f gflop=nan rss_mb=%.1f "
          "arena_mb=nan core=%s layout=%s fd=%.4g" % (
              a.threads, a.batch, 1e3 * dt, 1e3 * dt, N / dt, rss, os.environ.get("OPENBLAS_CORETYPE", "-"),
              "channels_last" if a.channels_last else "contiguous", fd), flush=True)


if __name__ == "__main__":
    main()

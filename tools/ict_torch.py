"""ict_torch.py: the PyTorch twin of cmlab's iCT recipe, for comparing cmlab with PyTorch at equal
wall time (issue #20). It trains what `cmlab train EXP.ini` trains for a method = ct experiment
with iCT's switches, in PyTorch, and writes checkpoints that `cmlab sample` and `cmlab eval` read:

    /usr/bin/python3 tools/ict_torch.py experiments/ict_cifar10_cpu.ini \\
        --data /path/to/cifar-10-binary.tar.gz --out runs/ict_torch --seconds 3600 --every 600

The same as cmlab (src/train/methods/ct.c, src/train/ct_schedule.h, reference/cm.md §5):
  - the network: tools/cmlab_torch.py's UNet of the file's [model] (3x32x32), initialised by
    cmlab's scheme (uniform fan-in bound sqrt(3)/sqrt(fan_in); q, k, v times sqrt(0.2); conv2,
    attention proj and conv_out near zero, 1e-5; biases 0, norms 1) with torch's random numbers;
  - the loss: interval i of the ascending Karras grid of N(k) points (rho 7, sigma_min..max),
    N(k) by the doubling curriculum (s0, s1 over train.iterations), i drawn from iCT's discretised
    lognormal (ct.p_mean, ct.p_std), the same z in both terms,
        a = f(x + sigma[i+1] z, sigma[i+1])     online, dropout
        b = f(x + sigma[i] z, sigma[i])          the online weights without gradient (target_mu 0),
                                                 the same dropout masks (torch's RNG restored)
        loss = mean_b lambda_i (sqrt(|a - b|^2 + c^2) - c),   lambda_i = 1/(sigma[i+1] - sigma[i]),
    c = 0.00054 sqrt(3072), f the consistency preconditioning (c_skip, c_out with sigma_min);
  - the optimiser (train.optimizer: adam, adamw or radam; lr, beta1, beta2, eps, weight_decay,
    warm-up), the EMAs of train.ema (one weight set each), random horizontal flips (data.hflip).
Not the same: the random numbers (torch's, not cmlab's counter RNG), so the curves compare, the
weights do not; the data order (a fresh permutation per epoch). Only the ct method with ct.loss =
pseudo_huber, ct.sampling = lognormal, ct.curriculum = doubling, ct.weighting = ict and
ct.target_mu = 0 is implemented; anything else is refused.

Data: the official CIFAR-10 binary tarball (cifar-10-binary.tar.gz) or its cifar-10-batches-bin
directory, as cmlab's reader takes them.

Checkpoints: <out>/ckpt/step_XXXXXXXX.h5 every --every seconds of training wall time and at the end,
in cmlab's layout (src/io/checkpoint.h): root attributes format, format_version, step, method,
config (the resolved configuration: the file with --set applied, the rest cmlab's defaults), seed, data cursor, world_size, sched_N, sched_mu,
train_seconds (the loop's wall time, sample-free), complete = 1; /weights/online and
/weights/ema/<rate>; the cmlab seal (a 512-byte user block with the CRC-32 of the rest). No
optimiser state: a twin run does not resume. <out>/metrics.jsonl gets {"step", "loss", "N",
"img_per_s", "time"} lines, <out>/config.ini the resolved configuration.
"""
import argparse
import configparser
import io
import json
import math
import os
import sys
import tarfile
import time
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cmlab_torch  # noqa: E402

CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_RECORD = 3073
SEAL_BYTES = 512
RHO = 7.0


def read_cifar(path):
    """The 50000 training images, uint8 [50000, 3, 32, 32], from the tarball or the directory."""
    names = ["data_batch_%d.bin" % i for i in range(1, 6)]
    blobs = {}
    if os.path.isdir(path):
        d = path if os.path.basename(os.path.normpath(path)) == CIFAR_DIR else os.path.join(path, CIFAR_DIR)
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                blobs[n] = f.read()
    else:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                base = os.path.basename(m.name)
                if m.isfile() and os.path.dirname(m.name) == CIFAR_DIR and base in names:
                    blobs[base] = tar.extractfile(m).read()
    missing = [n for n in names if n not in blobs]
    if missing:
        sys.exit("ict_torch: %s has no %s" % (path, ", ".join(missing)))
    for n in names:
        if len(blobs[n]) != 10000 * CIFAR_RECORD:
            sys.exit("ict_torch: %s: %s holds %d bytes, not 10000 records" % (path, n, len(blobs[n])))
    raw = np.frombuffer(b"".join(blobs[n] for n in names), np.uint8).reshape(-1, CIFAR_RECORD)
    return raw[:, 1:].reshape(-1, 3, 32, 32).copy()


def experiment(path, sets):
    """(the resolved keys {"section.key": value}, the resolved configuration's text): the
    experiment file with `sets` applied, every other key at cmlab's default."""
    ini = configparser.ConfigParser(inline_comment_prefixes=("#", ";"), interpolation=None)
    ini.optionxform = str
    ini.read(path)
    for s in sets:
        key, _, value = s.partition("=")
        section, _, name = key.strip().partition(".")
        if not ini.has_section(section):
            ini.add_section(section)
        ini.set(section, name, value.strip())
    out = io.StringIO()
    ini.write(out)
    return cmlab_torch.resolved_config(out.getvalue()), cmlab_torch.resolved_text(out.getvalue())


def check_ict(cfg):
    want = {"experiment.method": "ct", "ct.loss": "pseudo_huber", "ct.sampling": "lognormal",
            "ct.curriculum": "doubling", "ct.weighting": "ict", "ct.target_mu": 0.0, "data.dataset": "cifar10"}
    bad = ["%s = %s (this twin: %s)" % (k, cfg[k], v) for k, v in want.items() if cfg[k] != v]
    if bad:
        sys.exit("ict_torch: only iCT on CIFAR-10 is implemented: " + "; ".join(bad))


def ct_N(k, K, s0, s1):
    """ct_schedule.h, CFG_CURRICULUM_DOUBLING."""
    Kp = max(K // (int(math.log2(s1 // s0)) + 1), 1)
    return min(s0 * 2 ** (k // Kp), s1) + 1


def karras(N, smin, smax):
    i = np.arange(N, dtype=np.float64)
    s = (smin ** (1 / RHO) + i / (N - 1) * (smax ** (1 / RHO) - smin ** (1 / RHO))) ** RHO
    s[0], s[-1] = smin, smax
    return s


def index_probs(sigma, p_mean, p_std):
    """ict_index_probs: the discretised lognormal over the N-1 intervals."""
    e = np.array([math.erf((math.log(s) - p_mean) / (math.sqrt(2) * p_std)) for s in sigma])
    p = e[1:] - e[:-1]
    return p / p.sum()


def precond(net, x, t, smin, sd):
    """The consistency model f(x, t) = c_skip x + c_out F(c_in x; ln(t)/4); t [B] float."""
    tt = t[:, None, None, None]
    c_skip = sd * sd / ((tt - smin) ** 2 + sd * sd)
    c_out = sd * (tt - smin) / torch.sqrt(tt * tt + sd * sd)
    c_in = 1 / torch.sqrt(tt * tt + sd * sd)
    return c_skip * x + c_out * net(c_in * x, torch.log(t) / 4)


def cmlab_init(net):
    """cmlab's initialisation scheme (src/nn/layers.c), with torch's random numbers."""
    near_zero = ("conv_out.weight", ".conv2.weight", ".proj.weight")
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".bias"):
                p.zero_()
            elif p.dim() == 1:
                p.fill_(1.0)
            else:
                scale = 1e-5 if name.endswith(near_zero) else math.sqrt(3)
                if name.endswith((".q.weight", ".k.weight", ".v.weight")):
                    scale *= math.sqrt(0.2)
                bound = scale / math.sqrt(p[0].numel())
                p.uniform_(-bound, bound)


def write_checkpoint(path, net, emas, attrs):
    """cmlab's checkpoint layout with its seal (src/io/checkpoint.h), written to a temporary name
    and renamed, so an interrupted write never leaves a file that looks like a checkpoint."""
    import h5py
    tmp = path + ".tmp"
    with h5py.File(tmp, "w", userblock_size=SEAL_BYTES, libver=("v110", "latest")) as f:
        for k, v in attrs.items():
            f.attrs[k] = np.bytes_(v) if isinstance(v, str) else v
        sets = {"online": {n: p.detach() for n, p in net.named_parameters()}}
        for rate, w in emas.items():
            sets["ema/" + rate] = w
        for group, ws in sets.items():
            g = f.create_group("weights/" + group)
            for n, t in ws.items():
                a = t.cpu().numpy().astype(np.float32)
                g.create_dataset(n, data=a, chunks=a.shape, shuffle=True, compression="gzip",
                                 compression_opts=1, fletcher32=True)
        f.attrs["complete"] = np.int64(1)
    with open(tmp, "r+b") as f:
        f.seek(SEAL_BYTES)
        body = f.read()
        seal = ("cmlab-seal 1 bytes %d crc32 %08x\n" % (len(body), zlib.crc32(body))).encode()
        f.seek(0)
        f.write(seal + b"\0" * (SEAL_BYTES - len(seal)))
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", help="a method = ct experiment with iCT's switches (ict_cifar10_cpu.ini)")
    ap.add_argument("--data", help="cifar-10-binary.tar.gz or cifar-10-batches-bin (default: data.path)")
    ap.add_argument("--out", required=True, help="the run directory")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this much training wall time (0: none)")
    ap.add_argument("--every", type=float, default=600, help="checkpoint every this many seconds of training")
    ap.add_argument("--set", action="append", default=[], metavar="K=V", help="override an experiment key")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.data:
        a.set.append("data.path=" + a.data)
    cfg, text = experiment(a.experiment, a.set)
    check_ict(cfg)
    torch.set_num_threads(a.threads)
    torch.manual_seed(cfg["experiment.seed"])
    rng = np.random.default_rng(cfg["experiment.seed"])

    images = read_cifar(cfg["data.path"])
    net_cfg = cmlab_torch.config_from_text(text)
    net_cfg.update(cmlab_torch.image_config(text))
    net = cmlab_torch.UNet(net_cfg)
    cmlab_init(net)
    net.train()
    params = list(net.parameters())
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam}[cfg["train.optimizer"]]
    opt = kind(params, lr=cfg["train.lr"], betas=(cfg["train.beta1"], cfg["train.beta2"]), eps=cfg["train.eps"],
               weight_decay=cfg["train.weight_decay"])
    rates = [repr(r) for r in cfg["train.ema"]]
    emas = {r: {n: p.detach().clone() for n, p in net.named_parameters()} for r in rates}

    K, B = cfg["train.iterations"], cfg["train.batch_size"]
    s0, s1 = cfg["ct.s0"], cfg["ct.s1"]
    smin, smax, sd = cfg["model.sigma_min"], cfg["model.sigma_max"], cfg["model.sigma_data"]
    c = 0.00054 * math.sqrt(3 * 32 * 32)
    os.makedirs(os.path.join(a.out, "ckpt"), exist_ok=True)
    with open(os.path.join(a.out, "config.ini"), "w") as f:
        f.write(text)
    metrics = open(os.path.join(a.out, "metrics.jsonl"), "w")

    def save(step, N, seconds):
        path = os.path.join(a.out, "ckpt", "step_%08d.h5" % step)
        write_checkpoint(path, net, emas, {
            "format": "cmlab-checkpoint", "format_version": np.int64(1), "step": np.int64(step), "method": "ct",
            "config": text, "seed": np.uint64(cfg["experiment.seed"]), "data_epoch": np.int64(0),
            "data_index": np.int64(0), "world_size": np.int64(1), "sched_N": np.int64(N), "sched_mu": 0.0,
            "train_seconds": float(seconds)})
        print("checkpoint %s (%.0f s of training)" % (path, seconds), flush=True)

    perm, pos = rng.permutation(len(images)), 0
    t0 = time.monotonic()
    next_save, tlog, step, N = a.every, t0, 0, ct_N(0, K, s0, s1)
    while step < K:
        if pos + B > len(perm):
            perm, pos = rng.permutation(len(images)), 0
        idx = perm[pos:pos + B]
        pos += B
        x = torch.from_numpy(images[idx]).float() / 127.5 - 1
        if cfg["data.hflip"]:
            flip = torch.from_numpy(rng.random(B) < 0.5)
            x[flip] = x[flip].flip(3)
        N = ct_N(step, K, s0, s1)
        sigma = karras(N, smin, smax)
        i = rng.choice(N - 1, size=B, p=index_probs(sigma, cfg["ct.p_mean"], cfg["ct.p_std"]))
        t1, t0_ = torch.from_numpy(sigma[i + 1]).float(), torch.from_numpy(sigma[i]).float()
        lam = torch.from_numpy(1 / (sigma[i + 1] - sigma[i])).float()
        z = torch.randn_like(x)
        state = torch.get_rng_state()
        a_out = precond(net, x + t1[:, None, None, None] * z, t1, smin, sd)
        torch.set_rng_state(state)       # the same dropout masks in the target pass
        with torch.no_grad():
            b_out = precond(net, x + t0_[:, None, None, None] * z, t0_, smin, sd)
        d = torch.sqrt(((a_out - b_out) ** 2).flatten(1).sum(1) + c * c) - c
        loss = (lam * d).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:       # optim_warmup_lr: lr k / warmup at step k < warmup
            g["lr"] = cfg["train.lr"] * min(1.0, step / cfg["train.warmup"]) if cfg["train.warmup"] else cfg["train.lr"]
        opt.step()
        with torch.no_grad():
            for r in rates:
                mu = float(r)
                for n, p in net.named_parameters():
                    emas[r][n].mul_(mu).add_(p.detach(), alpha=1 - mu)
        step += 1
        now = time.monotonic()
        seconds = now - t0
        if step % cfg["train.log_every"] == 0:
            ips = cfg["train.log_every"] * B / (now - tlog)
            metrics.write(json.dumps({"step": step, "loss": round(loss.item(), 6), "N": N,
                                      "img_per_s": round(ips, 1), "time": round(seconds, 2)}) + "\n")
            metrics.flush()
            print("step %d/%d  loss %.4f  N %d  %.0f img/s  %.0f s" % (step, K, loss.item(), N, ips, seconds),
                  flush=True)
            tlog = now
        stop = a.seconds > 0 and seconds >= a.seconds
        if seconds >= next_save or stop or step == K:
            save(step, N, seconds)
            next_save = seconds + a.every
        if stop:
            break
    metrics.close()
    print("done: step %d, %.0f s of training, run directory %s" % (step, time.monotonic() - t0, a.out))


if __name__ == "__main__":
    main()

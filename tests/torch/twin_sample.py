"""twin_sample.py CKPT WEIGHTS N SEED OUT.h5: the one-step sample of a cmlab consistency-model
checkpoint, computed by the PyTorch twin (read by tests/test_twin_load.c).

First every key of the checkpoint's resolved configuration (all of the key table's keys, defaults
included) and every choice of every enum must parse with cmlab_torch.parse_value.
Then the checkpoint is loaded as a user would, with tools/cmlab_torch.load_checkpoint and nothing else:
its network config comes from the resolved configuration stored in it (typed by cmlab's key
table), its weights from /weights/<WEIGHTS> ("online", "ema/0.99", ...). Then, in float64 on the
float32 weights, as `cmlab sample CKPT --steps 1 --n N --seed SEED` does (src/train/sample.c):
    z   = philox.normal(SEED, STREAM_SAMPLE = 4000, step 0, N samples, sample 0)   (float32)
    x   = float32(T) * z,  T = model.sigma_max
    out = clip(c_skip(T) x + c_out(T) F(c_in(T) x; c_noise(T)), -1, 1)
with the consistency-model preconditioning of reference/cm.md §2 (eps = model.sigma_min,
sd = model.sigma_data):
    c_skip = sd^2 / ((t - eps)^2 + sd^2),  c_out = sd (t - eps) / sqrt(t^2 + sd^2),
    c_in = 1 / sqrt(t^2 + sd^2),          c_noise = ln(t) / 4.
OUT.h5 gets
    x          [N, C, H, W] float32, the sample;
    x_other_skip  the same with the other choice of model.skip_scale (sqrt_half <-> one), so the
               test can show that its comparison tells the two apart;
    attrs      skip_scale (the config's choice), steps (the checkpoint's step).
"""
import configparser
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import cmlab_torch  # noqa: E402
import philox  # noqa: E402

STREAM_SAMPLE = 4000  # src/autograd/streams.h

torch.set_num_threads(2)


def one_step(net, z, T, eps, sd):
    x = torch.from_numpy(np.float32(T) * z).double()
    c_skip = sd * sd / ((T - eps) ** 2 + sd * sd)
    c_out = sd * (T - eps) / math.sqrt(T * T + sd * sd)
    c_in = 1.0 / math.sqrt(T * T + sd * sd)
    c_noise = torch.full((x.shape[0],), math.log(T) / 4.0, dtype=torch.float64)
    with torch.no_grad():
        out = c_skip * x + c_out * net(c_in * x, c_noise)
    return out.clamp(-1.0, 1.0).numpy().astype(np.float32)


def parse_everything(text):
    """Every key = value of the resolved configuration, typed by the key table; every enum choice."""
    ini = configparser.ConfigParser(interpolation=None)
    ini.optionxform = str
    ini.read_string(text)
    table = cmlab_torch.key_table()
    names = set()
    for section in ini.sections():
        if section == "sweep":        # lines of values of other keys, not keys
            continue
        for key, value in ini.items(section):
            cmlab_torch.parse_value("%s.%s" % (section, key), value)
            names.add("%s.%s" % (section, key))
    missing = set(table) - names
    if missing:
        sys.exit("twin_sample.py: the resolved configuration lacks keys of the table: %s" % ", ".join(sorted(missing)))
    choices = 0
    for name, (kind, options) in table.items():
        for c in options or []:
            assert cmlab_torch.parse_value(name, c) == c
            choices += 1
    return len(names), choices


def main(ckpt, weights, n, seed, out_path):
    with h5py.File(ckpt, "r") as f:
        text = f.attrs["config"]
        text = text.decode() if isinstance(text, bytes) else str(text)
        step = int(f.attrs["step"])
    nkeys, nchoices = parse_everything(text)
    model = cmlab_torch.config_from_text(text, "model")
    method = cmlab_torch.config_from_text(text, "experiment")["method"]
    if method not in ("ct", "cd"):
        sys.exit("twin_sample.py: %s is a method = %s checkpoint, not a consistency model" % (ckpt, method))
    net = cmlab_torch.load_checkpoint(ckpt, weights=weights).double()
    cfg = net.cfg
    dim = cfg["img_channels"] * cfg["img_h"] * cfg["img_w"]
    z = philox.normal(seed, STREAM_SAMPLE, 0, n, 0, dim).reshape(n, cfg["img_channels"], cfg["img_h"], cfg["img_w"])
    T, eps, sd = model["sigma_max"], model["sigma_min"], model["sigma_data"]
    x = one_step(net, z, T, eps, sd)

    # The other skip scale: every residual sum of the same weights scaled by the other factor.
    other = "one" if model["skip_scale"] == "sqrt_half" else "sqrt_half"
    for m in net.modules():
        if hasattr(m, "skip_scale"):
            m.skip_scale = cmlab_torch.skip_scale(other)
    x_other = one_step(net, z, T, eps, sd)

    tmp = out_path + ".tmp"
    with h5py.File(tmp, "w") as h:
        h.create_dataset("x", data=x)
        h.create_dataset("x_other_skip", data=x_other)
        h.attrs["skip_scale"] = np.bytes_(model["skip_scale"])
        h.attrs["step"] = step
    os.replace(tmp, out_path)
    print("twin_sample.py: %s: its %d keys and the table's %d enum choices parse; %s, step %d, "
          "skip_scale %s: %d one-step samples -> %s"
          % (ckpt, nkeys, nchoices, weights, step, model["skip_scale"], n, out_path))


if __name__ == "__main__":
    if len(sys.argv) != 6:
        sys.exit("usage: twin_sample.py CKPT WEIGHTS N SEED OUT.h5")
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])

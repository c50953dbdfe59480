"""bf16.py OUT.h5: PyTorch's bf16 autocast results of conv2d and linear, forward and backward (read by
tests/test_bf16.c).

Each case is a group /<name> with
    attrs   op ("conv2d" or "linear"), stride, pad (conv2d), and k_y, k_dx, k_dw, k_db: the number
            of products summed into one element of y, dx, dw and db (the fp32 summation length);
    x, w, b, gout   float32 inputs (gout: the upstream gradient, shaped as y);
    y, dx, dw, db   under torch.autocast("cpu", dtype=torch.bfloat16): y = op(x, w, b) and the
            gradients of sum(y * gout). Autocast rounds x, w, b and gout to bf16, sums the products
            in fp32 (oneDNN) and rounds every result to bf16 as well; they are stored as float32;
    My, Mdx, Mdw, Mdb   the same op and gradients in float64 on |x|, |w|, |b|, |gout|: the sum of
            the magnitudes of the terms of each element, the scale of its rounding errors.
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(2)
RNG = np.random.default_rng(20261206)

# name, op, x shape, w shape, stride, pad. PyTorch 1.13 hands a bf16 matmul to oneDNN (fp32 sums,
# one rounding of the result) only when m n k >= 16^3; below that its fallback GEMM rounds partial
# sums to bf16 (errors of u times the terms' magnitudes, measured up to 2.5x that), a different
# computation: the linear cases stay above it in all three products (they share m n k).
CASES = [
    ("conv3x3_s1_16ch", "conv2d", (2, 16, 8, 8), (16, 16, 3, 3), 1, 1),  # Winograd shapes (forward)
    ("conv3x3_s1_17ch_odd", "conv2d", (2, 17, 5, 9), (18, 17, 3, 3), 1, 1),  # 15 tiles: odd pairs
    ("conv3x3_s2_odd", "conv2d", (2, 5, 9, 7), (6, 5, 3, 3), 2, 1),
    ("conv1x1", "conv2d", (3, 12, 5, 6), (7, 12, 1, 1), 1, 0),
    # AMX (16-row, 32-k tiles) and its tails: Winograd with K = 48 and 40 (a tile and 8 or 4 more
    # pairs), 3 vectors of outputs; im2col with M = 36, K = 360, dx's K = 36
    ("conv3x3_s1_48ch", "conv2d", (2, 48, 8, 8), (40, 48, 3, 3), 1, 1),
    ("conv3x3_s2_40ch", "conv2d", (2, 40, 9, 9), (36, 40, 3, 3), 2, 1),
    ("linear_small", "linear", (9, 37), (13, 37), 0, 0),
    ("linear_wide", "linear", (33, 130), (65, 130), 0, 0),
]


def run(op, x, w, b, gout, stride, pad, dtype=None):
    """y and the gradients of sum(y * gout); under bf16 autocast when dtype is None."""
    x, w, b = (t.clone().requires_grad_(True) for t in (x, w, b))
    if dtype is None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = F.conv2d(x, w, b, stride, pad) if op == "conv2d" else F.linear(x, w, b)
        assert y.dtype == torch.bfloat16, "autocast did not run the op in bf16"
    else:
        y = F.conv2d(x, w, b, stride, pad) if op == "conv2d" else F.linear(x, w, b)
    y.backward(gout.to(y.dtype))
    return [t.detach().float().numpy() for t in (y, x.grad, w.grad, b.grad)]


def main(out):
    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as h:
        for name, op, xs, ws, stride, pad in CASES:
            x = torch.tensor(RNG.standard_normal(xs), dtype=torch.float32)
            w = torch.tensor(RNG.standard_normal(ws) * 0.3, dtype=torch.float32)
            b = torch.tensor(RNG.standard_normal(ws[0]), dtype=torch.float32)
            with torch.no_grad():
                yshape = (F.conv2d(x, w, b, stride, pad) if op == "conv2d" else F.linear(x, w, b)).shape
            gout = torch.tensor(RNG.standard_normal(tuple(yshape)), dtype=torch.float32)
            got = run(op, x, w, b, gout, stride, pad)
            mag = run(op, *(t.double().abs() for t in (x, w, b, gout)), stride, pad, dtype=torch.float64)
            g = h.create_group(name)
            g.attrs["op"] = np.bytes_(op)
            g.attrs["stride"] = stride
            g.attrs["pad"] = pad
            if op == "conv2d":
                taps = ws[2] * ws[3]
                k = (ws[1] * taps, ws[0] * taps, xs[0] * yshape[2] * yshape[3], xs[0] * yshape[2] * yshape[3])
            else:
                k = (ws[1], ws[0], xs[0], xs[0])
                assert xs[0] * ws[0] * ws[1] >= 16 ** 3, f"{name}: below oneDNN's bf16 GEMM size"
            for key, v in zip(("k_y", "k_dx", "k_dw", "k_db"), k):
                g.attrs[key] = v
            for key, t in (("x", x), ("w", w), ("b", b), ("gout", gout)):
                g[key] = t.numpy()
            for key, a in zip(("y", "dx", "dw", "db"), got):
                g[key] = a.astype(np.float32)
            for key, a in zip(("My", "Mdx", "Mdw", "Mdb"), mag):
                g[key] = a.astype(np.float32)
    os.replace(tmp, out)


if __name__ == "__main__":
    main(sys.argv[1])

"""bench_conv.py: PyTorch twin of bench_conv.c: conv2d forward + backward (dx, dw, db) time per
iteration on the conv shapes of a small U-Net at batch 64, 2 threads.

Usage: /usr/bin/python3 bench/bench_conv.py [iterations]. Prints one line per shape:
"name<TAB>median ms", the same names and format as bench_conv.c.
"""
import sys
import time

import torch
import torch.nn.functional as F

# name, N, Cin, H, Cout, k, stride, pad -- keep in sync with SHAPES in bench_conv.c.
SHAPES = [
    ("32->32 28x28 3x3", 64, 32, 28, 32, 3, 1, 1),
    ("32->64 28->14 3x3 s2", 64, 32, 28, 64, 3, 2, 1),
    ("64->64 14x14 3x3", 64, 64, 14, 64, 3, 1, 1),
    ("64->32 28x28 1x1", 64, 64, 28, 32, 1, 1, 0),
]


def bench_shape(N, Cin, H, Cout, k, stride, pad, iters, warmup=3):
    x = torch.randn(N, Cin, H, H, requires_grad=True)
    w = torch.randn(Cout, Cin, k, k, requires_grad=True)
    b = torch.randn(Cout, requires_grad=True)
    gy = torch.randn_like(F.conv2d(x, w, b, stride, pad))
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        # x's gradient starts fresh each iteration; w and b accumulate, as in training.
        x.grad = None
        y = F.conv2d(x, w, b, stride, pad)
        y.backward(gy)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def main():
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    torch.set_num_threads(2)
    for name, *shape in SHAPES:
        print(f"{name}\t{1e3 * bench_shape(*shape, iters):.3f}", flush=True)


if __name__ == "__main__":
    main()

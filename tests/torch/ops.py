"""ops.py OUT.h5: the PyTorch oracle for every op of src/autograd/ops.h (read by tests/test_ops.c).

Each case is a group /cases/<op>.<label> with
    attrs   op (the name in op_table.c's OPS), label, iargs (int32[]), fargs (float32[]),
            and per op the presence flags of optional inputs (bias, weight);
    in0..inK  float32 inputs at fixed slots (attrs requires_grad 0/1, name); an absent optional
            input (a missing bias) is simply not there;
    gout    the upstream gradient (random normal, shape of out);
    out     PyTorch's forward;
    grad_inK  d sum(out * gout) / d inK, for the inputs that require a gradient.
The reference is computed in float64 from the float32-rounded inputs and stored as float32.
iargs/fargs absent mean empty. Scalar arguments are rounded to float32 before use, so PyTorch
sees exactly the value cmlab reads.

Slots and arguments (the same table heads tests/test_ops.c):
    op            slots                    iargs                               fargs
    conv2d        x, w, [b], [bn], [r], [nw], [nb]  [stride, pad(, groups)]  [scale(, eps)]
    linear        x, w, [b]                -                                   -
    matmul        a, b                     -                                   -
    bmm           a, b                     [ta, tb]                            -
    group_norm    x, [weight], [bias]      [groups]                            [eps]
    group_norm_silu  (as group_norm): silu(group_norm(x))
    softmax       x                        -                                   -
    add/sub/mul/div  a, b                  -                                   -
    scale         x                        -                                   [alpha, beta]
    exp/log/sin/cos/sqrt/silu/sigmoid  x   -                                   -
    pow           x                        -                                   [p]
    dropout       x                        [seed_lo, seed_hi, stream, step, sample0]  [p]
    reshape       x                        new shape                           -
    concat        x0..xk (dim 1, k <= 3)   -                                   -
    upsample, avgpool, sum, mean  x        -                                   -
    mse, l1       a, b                     -                                   -
    pseudo_huber  a, b                     -                                   [c]
    cross_entropy logits, labels (no grad)   -                                   -
Dropout: Rng {seed = seed_lo | seed_hi << 32 (seed_lo is stored as int32, read back as uint32),
stream, step}; the mask of sample n (x's dim 0) is bernoulli(seed, stream, step, N, sample0,
per_sample = numel/N, p = 1 - p_drop): an element is kept where the draw is 1; y = x*mask/(1-p).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import philox  # noqa: E402

torch.set_num_threads(2)
RNG = np.random.default_rng(20240611)
CASES = []


def f32(v):
    """A scalar argument as cmlab sees it (a float in TapeEntry.farg)."""
    return float(np.float32(v))


# ---- input generators (float64 draws, rounded to float32 when stored) ----

def normal(*shape, scale=1.0, shift=0.0):
    return RNG.standard_normal(shape) * scale + shift


def positive(*shape, lo=0.5, hi=2.0):
    """For log, sqrt, fractional and negative powers."""
    return RNG.uniform(lo, hi, shape)


def away_from_zero(*shape, lo=0.5, hi=2.0):
    """Denominators of div: |b| in [lo, hi], random sign."""
    return RNG.uniform(lo, hi, shape) * RNG.choice([-1.0, 1.0], shape)


def apart_from(a, lo=0.1, hi=1.0):
    """b with |a - b| >= lo everywhere: l1's kink stays farther than any finite-difference step."""
    return a + RNG.uniform(lo, hi, a.shape) * RNG.choice([-1.0, 1.0], a.shape)


def case(op, label, inputs, fn, iargs=(), fargs=(), attrs=None):
    """inputs: list of (name, array, requires_grad) or None for an absent optional slot.
    fn(list of float64 tensors or None) -> the output."""
    CASES.append(dict(op=op, label=label, inputs=inputs, fn=fn, iargs=list(iargs),
                      fargs=[f32(v) for v in fargs], attrs=attrs or {}))


def X(arr, rg=True, name="x"):
    return (name, arr, rg)


# ---- conv2d: x [N,Cin,H,W], w [Cout,Cin,k,k], b [Cout], bn [N,Cout], r [N,Cout,Ho,Wo],
#      nw, nb [Cin]; iargs [stride, pad] (+ [groups] with a fused input norm), fargs [scale]
#      (+ [eps]): out = scale * (conv2d(x', w, b) + bn[:, :, None, None] + r) with
#      x' = silu(group_norm(x, groups, nw, nb, eps)) when groups are given, else x

def conv_case(label, xs, ws, stride, pad, bias=True, rg=(True, True, True), bn=None, res=None,
              scale=1.0, norm=None, x_std=1.5, gc_eps=None):
    """bn, res: None (absent) or requires_grad of the per-sample bias and the residual;
    norm: None or (groups, eps, requires_grad of nw or None, requires_grad of nb or None);
    x_std: the input's standard deviation (mean 0.3 x_std / 1.5); gc_eps: the case's own
    finite-difference step (test_ops.c reads the attr)."""
    N, Cout = xs[0], ws[0]
    Ho = (xs[2] + 2 * pad - ws[2]) // stride + 1
    Wo = (xs[3] + 2 * pad - ws[3]) // stride + 1
    inputs = [("x", normal(*xs, scale=x_std, shift=0.2 * x_std), rg[0]), ("w", normal(*ws, scale=0.3), rg[1]),
              ("b", normal(Cout), rg[2]) if bias else None]
    if bn is not None or res is not None or norm is not None:
        inputs.append(("bn", normal(N, Cout), bn) if bn is not None else None)
        inputs.append(("r", normal(N, Cout, Ho, Wo), res) if res is not None else None)
    iargs, fargs = [stride, pad], [scale]
    if norm is not None:
        groups, eps, rg_nw, rg_nb = norm
        inputs.append(("nw", normal(xs[1], scale=0.5, shift=1.0), rg_nw) if rg_nw is not None else None)
        inputs.append(("nb", normal(xs[1], scale=0.5), rg_nb) if rg_nb is not None else None)
        iargs.append(groups)
        fargs.append(eps)
    s = f32(scale)

    def fn(t):
        x = t[0]
        if norm is not None:
            x = F.silu(F.group_norm(x, norm[0], t[5], t[6], f32(norm[1])))
        y = F.conv2d(x, t[1], t[2], stride, pad)
        if len(t) > 3 and t[3] is not None:
            y = y + t[3][:, :, None, None]
        if len(t) > 4 and t[4] is not None:
            y = y + t[4]
        return y * s
    attrs = {"bias": int(bias)}
    if gc_eps is not None:
        attrs["gc_eps"] = gc_eps
    case("conv2d", label, inputs, fn, iargs=iargs, fargs=fargs, attrs=attrs)
    return CASES[-1]


conv_case("3x3_pad1", (2, 5, 7, 7), (6, 5, 3, 3), 1, 1)
conv_case("stride2_odd", (3, 5, 9, 7), (8, 5, 3, 3), 2, 1)
conv_case("stride2_pad0_nobias", (2, 3, 8, 8), (4, 3, 3, 3), 2, 0, bias=False)
conv_case("1x1", (2, 6, 5, 7), (5, 6, 1, 1), 1, 0)
conv_case("1x1_stride2_odd_nobias", (2, 4, 7, 5), (3, 4, 1, 1), 2, 0, bias=False)
conv_case("1x1_pad1", (2, 3, 4, 4), (4, 3, 1, 1), 1, 1)
conv_case("batch1_pad0", (1, 8, 6, 5), (5, 8, 3, 3), 1, 0)
conv_case("frozen_weights", (2, 4, 5, 5), (5, 4, 3, 3), 1, 1, rg=(True, False, False))
conv_case("frozen_input", (2, 4, 6, 6), (3, 4, 3, 3), 2, 1, rg=(False, True, True))
# The fused tail (a ResBlock's conv1 + temb, conv2 + residual and skip scale) on each path:
# im2col, 1x1, stride 2 and Winograd (3x3 stride 1 with >= 16 channels, AVX-512 builds).
conv_case("temb_3x3", (2, 5, 7, 7), (6, 5, 3, 3), 1, 1, bn=True)
conv_case("residual_scale_3x3", (2, 5, 6, 7), (6, 5, 3, 3), 1, 1, res=True, scale=0.7071067811865476)
conv_case("residual_frozen_1x1", (2, 6, 5, 7), (5, 6, 1, 1), 1, 0, res=False, scale=0.5)
conv_case("both_stride2_nobias", (3, 4, 9, 7), (5, 4, 3, 3), 2, 1, bias=False, bn=True, res=True,
          scale=1.5)
conv_case("wino_temb", (2, 16, 6, 5), (17, 16, 3, 3), 1, 1, bn=True)
conv_case("wino_residual_scale", (2, 20, 5, 6), (16, 20, 3, 3), 1, 1, res=True,
          scale=0.7071067811865476)
conv_case("wino_both_frozen_x", (2, 16, 4, 4), (16, 16, 3, 3), 1, 1, rg=(False, True, True), bn=True,
          res=True, scale=0.5)
# A fused GN+SiLU input (a ResBlock's norm -> conv), on the im2col and Winograd paths.
conv_case("norm_3x3", (2, 6, 5, 7), (5, 6, 3, 3), 1, 1, bn=True, norm=(3, 1e-6, True, True))
conv_case("norm_stride2_frozen_norm", (2, 4, 7, 6), (3, 4, 3, 3), 2, 1, norm=(2, 1e-5, False, False))
conv_case("norm_1x1_noaffine_residual", (2, 4, 5, 5), (6, 4, 1, 1), 1, 0, res=True, scale=0.5,
          norm=(1, 1e-5, None, None))
conv_case("wino_norm_temb", (2, 16, 6, 5), (16, 16, 3, 3), 1, 1, bn=True, norm=(4, 1e-6, True, True))
conv_case("wino_norm_residual", (2, 20, 5, 4), (17, 20, 3, 3), 1, 1, res=True, scale=0.7071067811865476,
          norm=(5, 1e-6, True, True))
conv_case("wino_norm_frozen_w_x", (2, 16, 4, 4), (16, 16, 3, 3), 1, 1, rg=(False, False, True),
          norm=(8, 1e-6, True, True))
conv_case("wino_norm_only_weights", (2, 16, 4, 4), (16, 16, 3, 3), 1, 1, rg=(False, True, False),
          norm=(8, 1e-6, False, False))


# ---- linear: x [N,in] or [N,in,1,1], w [out,in], b [out] ----

def linear_case(label, xs, out, bias=True, rg=(True, True, True)):
    fin = xs[1]
    inputs = [("x", normal(*xs), rg[0]), ("w", normal(out, fin, scale=0.5), rg[1]),
              ("b", normal(out), rg[2]) if bias else None]
    case("linear", label, inputs, lambda t: F.linear(t[0].flatten(1), t[1], t[2]),
         attrs={"bias": int(bias)})


linear_case("2d_bias", (5, 7), 3)
linear_case("2d_nobias_batch1", (1, 4), 6, bias=False)
linear_case("4d_input", (3, 7, 1, 1), 5)
linear_case("4d_input_nobias", (2, 5, 1, 1), 4, bias=False)
linear_case("frozen_weights", (4, 6), 3, rg=(True, False, False))
linear_case("frozen_input", (4, 6), 3, rg=(False, True, True))


# ---- matmul: a [M,K], b [K,N] ----

def matmul_case(label, m, k, n, rg=(True, True)):
    case("matmul", label, [("a", normal(m, k), rg[0]), ("b", normal(k, n), rg[1])],
         lambda t: t[0] @ t[1])


matmul_case("5x7x3", 5, 7, 3)
matmul_case("1x4x6", 1, 4, 6)
matmul_case("7x1x5", 7, 1, 5)
matmul_case("frozen_b", 4, 5, 3, rg=(True, False))
matmul_case("frozen_a", 3, 6, 2, rg=(False, True))


# ---- bmm: a [B,M,K] ([B,K,M] if ta), b [B,K,N] ([B,N,K] if tb); iargs [ta, tb] ----

def bmm_case(label, B, m, k, n, ta, tb, rg=(True, True)):
    a = normal(B, k, m) if ta else normal(B, m, k)
    b = normal(B, n, k) if tb else normal(B, k, n)

    def fn(t):
        return torch.bmm(t[0].transpose(1, 2) if ta else t[0], t[1].transpose(1, 2) if tb else t[1])
    case("bmm", label, [("a", a, rg[0]), ("b", b, rg[1])], fn, iargs=[int(ta), int(tb)])


bmm_case("nn", 3, 5, 7, 4, 0, 0)
bmm_case("tn", 3, 5, 7, 4, 1, 0)
bmm_case("nt", 3, 5, 7, 4, 0, 1)
bmm_case("tt", 3, 5, 7, 4, 1, 1)
bmm_case("batch1_tn", 1, 6, 3, 5, 1, 0)
bmm_case("nt_frozen_b", 2, 4, 9, 3, 0, 1, rg=(True, False))
bmm_case("tn_frozen_a", 2, 3, 5, 6, 1, 0, rg=(False, True))


# ---- group_norm: x [N,C,H,W] or [N,C], weight/bias [C]; iargs [groups]; fargs [eps] ----

def gn_case(label, xs, groups, eps, weight=True, bias=True, rg=(True, True, True), silu=False,
            shift=0.5, std=2.0, gc_eps=None):
    """std, shift: the input's standard deviation and mean; gc_eps: the case's own
    finite-difference step (test_ops.c reads the attr)."""
    C = xs[1]
    inputs = [("x", normal(*xs, scale=std, shift=shift), rg[0]),
              ("weight", normal(C, scale=0.5, shift=1.0), rg[1]) if weight else None,
              ("bias", normal(C), rg[2]) if bias else None]
    e = f32(eps)
    post = F.silu if silu else (lambda h: h)
    attrs = {"weight": int(weight), "bias": int(bias)}
    if gc_eps is not None:
        attrs["gc_eps"] = gc_eps
    case("group_norm_silu" if silu else "group_norm", label, inputs,
         lambda t: post(F.group_norm(t[0], groups, t[1], t[2], e)),
         iargs=[groups], fargs=[eps], attrs=attrs)
    return CASES[-1]


gn_case("3groups_affine", (2, 6, 5, 7), 3, 1e-5)
gn_case("1group_noaffine_batch1", (1, 4, 3, 3), 1, 1e-5, weight=False, bias=False)
gn_case("1group_affine", (2, 3, 4, 5), 1, 1e-6)
gn_case("Cgroups_affine", (3, 5, 4, 4), 5, 1e-6)
gn_case("Cgroups_noaffine", (2, 4, 3, 5), 4, 1e-5, weight=False, bias=False)
gn_case("2d_2groups", (4, 8), 2, 1e-5)
gn_case("weight_only", (2, 4, 3, 3), 2, 1e-5, bias=False)
gn_case("frozen_input", (2, 6, 3, 3), 3, 1e-5, rg=(False, True, True))
gn_case("frozen_affine", (2, 6, 3, 3), 2, 1e-5, rg=(True, False, False))
gn_case("3groups_affine", (2, 6, 5, 7), 3, 1e-5, silu=True)
gn_case("1group_noaffine_batch1", (1, 4, 3, 3), 1, 1e-5, weight=False, bias=False, silu=True)
gn_case("Cgroups_affine_odd", (3, 5, 3, 7), 5, 1e-6, silu=True)
gn_case("2d_2groups", (4, 8), 2, 1e-5, silu=True)
gn_case("frozen_input", (2, 6, 3, 3), 3, 1e-5, rg=(False, True, True), silu=True)
gn_case("frozen_affine", (2, 6, 3, 3), 2, 1e-5, rg=(True, False, False), silu=True)
gn_case("weight_only", (2, 4, 5, 3), 2, 1e-6, bias=False, silu=True)
# |mean| / std = 100: a one-pass variance in float32 would be off by ~1e-3 (cmlab sums in double;
# a larger mean would defeat the float32 finite differences of the gradient check instead).
gn_case("mean_200_std_2", (2, 4, 6, 5), 2, 1e-6, silu=True, shift=200.0)


# ---- softmax over the last dim ----

def softmax_case(label, x):
    case("softmax", label, [X(x)], lambda t: torch.softmax(t[0], -1))


softmax_case("5x7", normal(5, 7))
softmax_case("4d", normal(2, 3, 4, 9, scale=2.0))
softmax_case("width1", normal(3, 1))
softmax_case("batch1", normal(1, 6))
# Logits near 100: exp overflows float32 unless the row maximum is subtracted first.
softmax_case("shifted_by_100", normal(4, 5, scale=3.0, shift=100.0))


# ---- add/sub/mul/div with numpy broadcasting ----

BINARY = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
          "mul": lambda a, b: a * b, "div": lambda a, b: a / b}


def binary_case(op, label, sa, sb, rg=(True, True)):
    a = normal(*sa)
    b = away_from_zero(*sb) if op == "div" else normal(*sb)
    f = BINARY[op]
    case(op, label, [("a", a, rg[0]), ("b", b, rg[1])], lambda t: f(t[0], t[1]))


for op in BINARY:
    binary_case(op, "same_shape", (2, 3, 4, 5), (2, 3, 4, 5))
    binary_case(op, "per_channel", (2, 3, 4, 5), (1, 3, 1, 1))
    binary_case(op, "per_sample", (3, 2, 3, 5), (3, 1, 1, 1))
    binary_case(op, "scalar", (5, 7), (1,))
    binary_case(op, "left_per_channel", (1, 4, 1, 1), (2, 4, 3, 3))
    binary_case(op, "left_scalar", (1,), (3, 5))
    binary_case(op, "both_broadcast", (2, 1, 3, 5), (1, 4, 1, 1))
    binary_case(op, "lower_rank", (2, 3, 4, 5), (3, 1, 1))
    binary_case(op, "frozen_b", (3, 4, 2, 2), (1, 4, 1, 1), rg=(True, False))
    binary_case(op, "frozen_a", (3, 4, 2, 2), (3, 1, 1, 1), rg=(False, True))


# ---- scale: alpha * x + beta ----

def scale_case(label, x, alpha, beta):
    al, be = f32(alpha), f32(beta)
    case("scale", label, [X(x)], lambda t: al * t[0] + be, fargs=[alpha, beta])


scale_case("3d", normal(3, 5, 4), 2.5, -0.5)
scale_case("negate", normal(7), -1.0, 0.0)
scale_case("4d", normal(2, 3, 2, 3), 0.3, 3.0)


# ---- unary ops ----

UNARY = {"exp": torch.exp, "log": torch.log, "sin": torch.sin, "cos": torch.cos,
         "sqrt": torch.sqrt, "silu": F.silu, "sigmoid": torch.sigmoid}


def unary_case(op, label, x):
    f = UNARY[op]
    case(op, label, [X(x)], lambda t: f(t[0]))


unary_case("exp", "4d", normal(2, 3, 4, 5))
unary_case("exp", "1d", normal(7, scale=2.0))
unary_case("log", "4d", positive(2, 3, 4, 5))
unary_case("log", "wide_range", positive(5, 7, lo=0.05, hi=20.0))
unary_case("sin", "4d", normal(2, 3, 4, 5, scale=2.0))
unary_case("sin", "batch1", normal(1, 1, 3, 3, scale=3.0))
unary_case("cos", "4d", normal(2, 3, 4, 5, scale=2.0))
unary_case("cos", "2d", normal(5, 7, scale=3.0))
unary_case("sqrt", "4d", positive(2, 3, 4, 5))
unary_case("sqrt", "2d", positive(5, 7, lo=0.1, hi=9.0))
unary_case("silu", "4d", normal(2, 3, 4, 5, scale=2.0))
unary_case("silu", "saturated", RNG.uniform(-30.0, 30.0, (5, 7)))
unary_case("sigmoid", "4d", normal(2, 3, 4, 5, scale=2.0))
unary_case("sigmoid", "saturated", RNG.uniform(-30.0, 30.0, (5, 7)))


# ---- pow: x^p ----

def pow_case(label, x, p):
    pp = f32(p)
    case("pow", label, [X(x)], lambda t: t[0] ** pp, fargs=[p])


pow_case("p2_signed", normal(3, 4, 5), 2.0)
pow_case("p3_signed", normal(2, 3, 2, 2), 3.0)
pow_case("p0.5", positive(2, 3, 4, 5), 0.5)
pow_case("p-1.5", positive(5, 7), -1.5)


# ---- dropout: iargs [seed_lo, seed_hi, stream, step, sample0]; fargs [p] ----

def dropout_case(label, xs, p, seed, stream, step, sample0):
    x = normal(*xs)
    N = xs[0]
    per = x.size // N
    keep = philox.bernoulli(seed, stream, step, N, sample0, per, f32(1.0 - f32(p)))
    mask = torch.tensor(keep.reshape(xs), dtype=torch.float64)
    q = f32(1.0 - f32(p))
    lo = np.array([seed & 0xFFFFFFFF], dtype=np.uint32).view(np.int32)[0]
    case("dropout", label, [X(x)], lambda t: t[0] * mask / q,
         iargs=[int(lo), seed >> 32, stream, step, sample0], fargs=[p])


dropout_case("p0.25", (4, 3, 5, 5), 0.25, (7 << 32) | 0x9E3779B9, 3, 11, 0)
dropout_case("p0.5_sample0_5", (2, 7), 0.5, 12345, 1, 2, 5)
dropout_case("p0.5_batch1", (1, 2, 3, 3), 0.5, 1, 0, 0, 0)
dropout_case("p0", (3, 4), 0.0, 42, 2, 3, 0)


# ---- shape ops ----

def reshape_case(label, xs, shape):
    case("reshape", label, [X(normal(*xs))], lambda t: t[0].reshape(shape), iargs=list(shape))


reshape_case("4d_to_2d", (2, 3, 4, 5), (6, 20))
reshape_case("2d_to_4d", (2, 12), (2, 3, 2, 2))
reshape_case("2d_to_1d", (5, 7), (35,))
reshape_case("drop_unit_dims", (3, 4, 1, 1), (3, 4))


def concat_case(label, shapes, rg=None):
    rg = rg or [True] * len(shapes)
    inputs = [("x%d" % i, normal(*s), r) for i, (s, r) in enumerate(zip(shapes, rg))]
    case("concat", label, inputs, lambda t: torch.cat(t, 1))


concat_case("two_4d", [(2, 3, 4, 5), (2, 1, 4, 5)])
concat_case("three_4d_middle_frozen", [(1, 2, 3, 3), (1, 4, 3, 3), (1, 1, 3, 3)],
            rg=[True, False, True])
concat_case("two_2d", [(4, 3), (4, 5)])
concat_case("four_first_frozen", [(2, 1, 2, 3)] * 4, rg=[False, True, True, True])


def upsample(t):
    return t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


case("upsample", "4d", [X(normal(2, 3, 4, 5))], lambda t: upsample(t[0]))
case("upsample", "1x1", [X(normal(1, 1, 1, 1))], lambda t: upsample(t[0]))
case("upsample", "odd", [X(normal(3, 2, 3, 1))], lambda t: upsample(t[0]))

case("avgpool", "even", [X(normal(2, 3, 6, 8))], lambda t: F.avg_pool2d(t[0], 2))
case("avgpool", "odd_floor", [X(normal(1, 2, 7, 5))], lambda t: F.avg_pool2d(t[0], 2))
case("avgpool", "2x2", [X(normal(2, 1, 2, 2))], lambda t: F.avg_pool2d(t[0], 2))


# ---- reductions and per-sample losses ----

for op, f in (("sum", torch.sum), ("mean", torch.mean)):
    case(op, "4d", [X(normal(2, 3, 4, 5))], lambda t, f=f: f(t[0]).reshape(1))
    case(op, "1d", [X(normal(7))], lambda t, f=f: f(t[0]).reshape(1))
    case(op, "single", [X(normal(1))], lambda t, f=f: f(t[0]).reshape(1))


def loss_case(op, label, shape, rg=(True, True), c=None):
    a = normal(*shape)
    b = apart_from(a)
    if op == "mse":
        fn = lambda t: ((t[0] - t[1]) ** 2).flatten(1).mean(1)  # noqa: E731
    elif op == "l1":
        fn = lambda t: (t[0] - t[1]).abs().flatten(1).mean(1)  # noqa: E731
    else:
        cc = f32(c)
        fn = lambda t: torch.sqrt(((t[0] - t[1]) ** 2).flatten(1).sum(1) + cc * cc) - cc  # noqa: E731
    case(op, label, [("a", a, rg[0]), ("b", b, rg[1])], fn, fargs=[] if c is None else [c])


for op in ("mse", "l1"):
    loss_case(op, "4d", (3, 2, 4, 4))
    loss_case(op, "batch1_2d", (1, 5), rg=(True, False))
    loss_case(op, "target_frozen", (4, 3, 5, 5), rg=(True, False))
    loss_case(op, "input_frozen", (2, 7), rg=(False, True))
loss_case("pseudo_huber", "4d_c0.03", (3, 2, 4, 4), c=0.03)
loss_case("pseudo_huber", "batch1_c1", (1, 5), rg=(True, False), c=1.0)
# iCT's c = 0.00054 sqrt(d) for d = 3*5*5 (reference/cm.md section 5).
loss_case("pseudo_huber", "ict_c_target_frozen", (4, 3, 5, 5), rg=(True, False),
          c=0.00054 * np.sqrt(75.0))
loss_case("pseudo_huber", "input_frozen", (2, 7), rg=(False, True), c=0.5)
# c = 0: ECT's un-squared l2 distance ||a - b||.
loss_case("pseudo_huber", "c0_ect_l2", (3, 2, 4, 4), c=0.0)


# ---- cross_entropy: logits [N,K], labels [N] (class indices as float32, never differentiated) ----

def xent_case(label, N, K, scale=1.0, shift=0.0):
    labels = RNG.integers(0, K, N).astype(np.float64)
    case("cross_entropy", label, [("logits", normal(N, K, scale=scale, shift=shift), True),
                                  ("labels", labels, False)],
         lambda t: F.cross_entropy(t[0], t[1].long(), reduction="none"))


xent_case("10_classes", 6, 10)
xent_case("batch1_3_classes", 1, 3)
xent_case("2_classes_confident", 5, 2, scale=4.0)
# Logits near 100: exp overflows float32 unless the row maximum is subtracted first.
xent_case("shifted_by_100", 4, 7, scale=2.0, shift=100.0)


# ---- past the OpenMP thresholds (PAR_MIN: 4096 elements in op_elementwise/op_shape/op_reduce,
# 32768 in op_norm and linear's bias sums), so the parallel loops and their race-free backward
# reductions are compared too. Per-sample losses keep 64 elements per sample: a float32 mean
# over thousands of elements would drown its finite differences in the output's rounding. ----

binary_case("add", "parallel_per_channel", (4, 8, 16, 16), (1, 8, 1, 1))
binary_case("mul", "parallel_both_broadcast", (4, 1, 32, 32), (1, 8, 1, 1))
binary_case("div", "parallel_per_sample", (4, 8, 16, 16), (4, 1, 1, 1))
unary_case("silu", "parallel", normal(4, 8, 16, 16, scale=2.0))
dropout_case("parallel", (4, 8, 16, 16), 0.25, 99, 4, 1000, 3)
reshape_case("parallel", (4, 8, 16, 16), (32, 256))
concat_case("parallel", [(2, 8, 16, 16), (2, 8, 16, 16)])
case("upsample", "parallel", [X(normal(2, 8, 16, 16))], lambda t: upsample(t[0]))
case("avgpool", "parallel", [X(normal(2, 8, 16, 16))], lambda t: F.avg_pool2d(t[0], 2))
case("sum", "parallel", [X(normal(4, 8, 16, 16))], lambda t: t[0].sum().reshape(1))
case("mean", "parallel", [X(normal(4, 8, 16, 16))], lambda t: t[0].mean().reshape(1))
loss_case("mse", "parallel", (64, 64))
loss_case("l1", "parallel", (64, 64))
loss_case("pseudo_huber", "parallel", (64, 64), c=0.03)
gn_case("parallel", (2, 16, 32, 32), 8, 1e-5)
gn_case("parallel", (2, 16, 32, 32), 8, 1e-5, silu=True)
softmax_case("parallel", normal(64, 512))
linear_case("parallel", (64, 96), 512)
xent_case("parallel", 512, 10)


# ---- inputs over decades, and group norm where eps matters. Last in the file, so that the draws
# of the cases above stay what they were. ----

# Outputs spanning decades: test_ops.c compares these ops element by element, so an error in an
# element of 1e-8 counts as much as one in an element of 1e4. log and sin/cos also pass through
# zero (log near x = 1, sin/cos near multiples of pi/2).
unary_case("exp", "decades", RNG.uniform(-20.0, 10.0, (6, 8)))
unary_case("log", "decades", 10.0 ** RNG.uniform(-2.0, 2.0, (6, 8)))
unary_case("log", "near_one", RNG.uniform(0.9, 1.1, (5, 7)))
unary_case("sqrt", "decades", 10.0 ** RNG.uniform(-2.0, 4.0, (6, 8)))
unary_case("sin", "wide", RNG.uniform(-50.0, 50.0, (6, 8)))
unary_case("cos", "wide", RNG.uniform(-50.0, 50.0, (6, 8)))
pow_case("p-1.5_decades", 10.0 ** RNG.uniform(-1.0, 2.0, (6, 8)), -1.5)
pow_case("p3_decades", 10.0 ** RNG.uniform(-2.0, 2.0, (6, 8)) * RNG.choice([-1.0, 1.0], (6, 8)), 3.0)


def eps_matters(k, fn_eps, other_eps):
    """Asserts that case k's output moves by far more than test_ops.c's tolerance (1e-4, relative
    to the largest value) when fn_eps(inputs, eps) runs it with GroupNorm eps other_eps instead:
    the case tells the two apart."""
    ts = [None if inp is None else torch.tensor(np.asarray(inp[1], dtype=np.float32), dtype=torch.float64)
          for inp in k["inputs"]]
    out, alt = k["fn"](ts), fn_eps(ts, f32(other_eps))
    moved = float((out - alt).abs().max() / out.abs().max())
    assert moved > 100 * 1e-4, "%s.%s: eps %g instead moves the output by only %.1e" % (
        k["op"], k["label"], other_eps, moved)
    print("ops.py: %s.%s: eps %g instead moves the output by %.2f (relative to its largest value)"
          % (k["op"], k["label"], other_eps, moved))


# Variance 1e-5 (std 3.2e-3), the scale of eps itself: 1/sqrt(var + eps) differs by 35% between
# eps 1e-5 and 1e-6, and a GroupNorm that drops eps or uses another gives outputs far outside the
# tolerance (eps_matters checks that on the reference). At variance 4 (the cases above) eps
# changes the output by ~1e-6, below the tolerance. The finite-difference step is 1e-4, 3% of the
# standard deviation: the default 1e-3 would be a third of it.
LOW_STD = float(np.sqrt(1e-5))
for eps, other in ((1e-5, 1e-6), (1e-6, 1e-5)):
    for silu in (False, True):
        k = gn_case("low_var_eps%g" % eps, (2, 8, 4, 4), 4, eps, silu=silu, shift=0.01, std=LOW_STD,
                    gc_eps=1e-4)
        post = F.silu if silu else (lambda h: h)
        eps_matters(k, lambda t, e, post=post: post(F.group_norm(t[0], 4, t[1], t[2], e)), other)
# The same through conv2d's fused input norm (a ResBlock's norm -> conv), on the im2col path and
# on the Winograd shapes (>= 16 channels; AVX-512 builds).
for label, xs, ws in (("norm_low_var_3x3", (2, 6, 5, 7), (5, 6, 3, 3)),
                      ("wino_norm_low_var", (2, 16, 4, 5), (16, 16, 3, 3))):
    groups = xs[1] // 2
    k = conv_case(label, xs, ws, 1, 1, norm=(groups, 1e-5, True, True), x_std=LOW_STD, gc_eps=1e-4)

    eps_matters(k, lambda t, e, groups=groups: F.conv2d(F.silu(F.group_norm(t[0], groups, t[5], t[6], e)),
                                                         t[1], t[2], 1, 1), 1e-6)

# The direct path (stride 1, at most 4 outputs: a U-Net's conv_out), plain and with every fusion.
# Last, with their own generator for the inputs, so that the cases above keep their data (and,
# their gout being drawn in order in write(), their output gradients).
_rng, RNG = RNG, np.random.default_rng(20261207)
conv_case("direct_out1", (3, 7, 6, 9), (1, 7, 3, 3), 1, 1)
conv_case("direct_5x3_pad0_nobias", (2, 3, 8, 7), (4, 3, 5, 3), 1, 0, bias=False)
conv_case("direct_norm_temb_residual", (2, 8, 5, 6), (3, 8, 3, 3), 1, 1, bn=True, res=True, scale=0.5,
          norm=(4, 1e-6, True, True))
RNG = _rng


def write(path):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as h:
        root = h.create_group("cases")
        for k in CASES:
            name = "%s.%s" % (k["op"], k["label"])
            assert name not in root, name
            g = root.create_group(name)
            # Fixed-length ASCII: fixture_attr_str reads those (h5py's default, a variable-length
            # UTF-8 string, does not convert to the C string type it reads with).
            g.attrs["op"] = np.bytes_(k["op"])
            g.attrs["label"] = np.bytes_(k["label"])
            if k["iargs"]:
                g.attrs["iargs"] = np.array(k["iargs"], dtype=np.int32)
            if k["fargs"]:
                g.attrs["fargs"] = np.array(k["fargs"], dtype=np.float32)
            for a, v in k["attrs"].items():
                g.attrs[a] = v
            ts = []
            for i, inp in enumerate(k["inputs"]):
                if inp is None:
                    ts.append(None)
                    continue
                nm, arr, rg = inp
                arr32 = np.asarray(arr, dtype=np.float32)
                d = g.create_dataset("in%d" % i, data=arr32)
                d.attrs["requires_grad"] = int(rg)
                d.attrs["name"] = np.bytes_(nm)
                ts.append(torch.tensor(arr32, dtype=torch.float64, requires_grad=rg))
            assert any(t is not None and t.requires_grad for t in ts), name
            out = k["fn"](ts)
            gout = RNG.standard_normal(tuple(out.shape)).astype(np.float32)
            (out * torch.tensor(gout, dtype=torch.float64)).sum().backward()
            g.create_dataset("gout", data=gout)
            g.create_dataset("out", data=out.detach().numpy().astype(np.float32))
            for i, t in enumerate(ts):
                if t is not None and t.requires_grad:
                    g.create_dataset("grad_in%d" % i, data=t.grad.numpy().astype(np.float32))
    os.replace(tmp, path)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: ops.py OUT.h5")
    write(sys.argv[1])
    print("ops.py: %d cases -> %s" % (len(CASES), sys.argv[1]))

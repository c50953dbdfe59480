/* conv_wino.h: 3x3 stride-1 convolution by Winograd's minimal filtering (Lavin and Gray, "Fast
 * Algorithms for Convolutional Neural Networks", 2016), forward and both gradients: the fast path
 * of op_conv2d for the U-Net's 3x3 convolutions (op_conv.c decides when).
 *
 * F(m x m, 3x3) computes each m x m output tile as Y = A^T [(G g G^T) . (B^T d B)] A for its
 * (m+2)x(m+2) input window d: (m+2)^2 multiplications per tile and channel pair instead of 9 m^2.
 * Since Y is linear in d and in g, the gradients are the adjoint transforms: dd = B [U . (A dY
 * A^T)] B^T summed over the overlapping windows, dg = G^T [(A dY A^T) . V] G summed over tiles. The
 * (m+2)^2 products of a tile, summed over channels, are independent GEMMs, run by an AVX-512
 * micro-kernel over channel-blocked layouts (16 channels in a vector); NCHW is transposed in and
 * out per sample.
 *
 * fp32 takes F(4x4, 3x3) everywhere: 36 multiplications per 4x4 tile, 4x fewer than direct (F(2x2,
 * 3x3): 16 per 2x2 tile, 2.25x), and cheaper transforms per output pixel. The forward pass runs it
 * as above; the input gradient is a conv of its own (dy padded by 2 - pad with each kernel of w^T
 * turned by 180 degrees), run by the same forward code; the weight gradient is F(4x4, 3x3)'s
 * adjoint. Against F(2x2, 3x3) (AMD EPYC Zen 5, 2 threads) S one-step sampling +24% (session
 * 20), training steps +9% (S CT) to +16% (AMED's predictor) (session 21). Its transforms have larger coefficients,
 * so it rounds more: about 7e-6 of the output's scale against 4e-7 on test_conv's shapes, dx 3-5e-6
 * and dw 1-3e-6 (F(2x2, 3x3): 1-4e-7), within every tolerance the tests hold them to (1e-4 against
 * float64 or PyTorch).
 *
 * In a bf16 context (tensor.h) the products take bf16 inputs (the transformed U, V, M' rounded as
 * they are written or packed) and sum in fp32 (gemm_bf16.h's micro-kernels); the transforms stay
 * fp32. The forward pass takes F(4x4, 3x3), the backward pass F(2x2, 3x3) (dx as its adjoint, with
 * dw from the same M'). F(4x4, 3x3)'s larger coefficients (up to 5 in B^T, 8 in A^T) spread the
 * bf16 rounding of U and V: a forward conv's rms error is 2-3e-2 of its rms output against F(2x2,
 * 3x3)'s 4e-3 (test_bf16; a float64 simulation agrees), but it does half the products per output.
 * Measured on AMD EPYC Zen 5 (2 threads, vdpbf16ps at twice the fp32 FMA rate), F(4x4, 3x3)'s
 * forward against F(2x2, 3x3)'s: bf16 one-step sampling +15% (S) and +14% (M), training +7% (S and
 * M), and sampling a trained Fashion-MNIST model moved its FD (n = 2000) by 0.05 (F(2x2, 3x3): 0.06).
 * dx as an F(4x4, 3x3) conv (as fp32 computes it) gained another 4% on training but moved the
 * weight gradients of test_bf16's U-Net 3.6 times further from fp32's, so dx stays F(2x2, 3x3).
 *
 * Built only where the compiler targets AVX-512 (-Dnative=true on such a CPU); elsewhere
 * conv_wino_usable is always false and op_conv2d keeps im2col + sgemm.
 *
 * Threads: like op_conv.c, one parallel region per pass (the backward: fp32's dx, then dw), each
 * thread on a fixed contiguous share of the samples (the forward pass and fp32's dx: dynamic units
 * of samples); dw partials are summed in thread order. For a given thread count the results are
 * the same bits on every run. */
#ifndef CM_CONV_WINO_H
#define CM_CONV_WINO_H

#include "tensor.h"

/* What a conv adds before it stores its output (op_conv2d_fused):
 *   y = scale * (conv + b[co] + bn[n, co] + r[n, co, :])
 * b [Cout], bn [N, Cout] (a per-sample bias), r [N, Cout, Ho, Wo] (a residual); each may be NULL. */
typedef struct ConvEpilogue {
    const float *b, *bn, *r;
    float scale;
    float *mean, *rstd;        /* not NULL: y's group-norm statistics [N * groups] (gn_stats) */
    int groups;
    float eps;
} ConvEpilogue;

/* How a conv may read its input (op_conv2d_fused): x as silu(GN(x)), GN with the statistics
 * mean, rstd [N * groups] and the per-channel weight w and bias b (either may be NULL). */
typedef struct ConvPrologue {
    const float *mean, *rstd, *w, *b;
    int groups;
} ConvPrologue;

/* Whether conv2d of these shapes runs here: 3x3, stride 1, pad at most 2 (dx's conv pads by
 * 2 - pad), at least 16 channels in and out. */
bool conv_wino_usable(int Cin, int Cout, int kh, int kw, int stride, int pad);

/* Bytes of one thread's transformed tiles per block (tests lower it to force several blocks). */
extern size_t conv_wino_block_bytes;

/* y [N,Cout,Ho,Wo] = the epilogue of conv(pro(x [N,Cin,H,W]), w [Cout,Cin,3,3]),
 * Ho = H + 2 pad - 2; pro NULL: x as it is. F(4x4, 3x3) in both precisions. */
void conv_wino_forward(Ctx *c, const float *x, const ConvPrologue *pro, const float *w,
                       const ConvEpilogue *ep, float *y, int N, int Cin, int H, int W, int Cout, int pad);

/* Between the two convs of conv_wino_pair_forward: silu(GN(h)), GN with groups (dividing Cmid), eps
 * and the per-channel weight w and bias b [Cmid] (either may be NULL). */
typedef struct ConvMiddle {
    const float *w, *b;
    int groups;
    float eps;
} ConvMiddle;

/* Whether conv_wino_pair_forward takes Cin -> Cmid -> Cout channels (both convs conv_wino_usable). */
bool conv_wino_pair_usable(int Cin, int Cmid, int Cout);

/* Two 3x3 pad-1 convs in a row, as a residual block's forward pass without gradients runs them:
 *   h = conv(pro1(x), w1) + ep1's b and bn (ep1's other fields unused)
 *   y = the epilogue ep2 of conv(silu(GN(h)), w2)       (GN: mid)
 * x [N,Cin,H,W], w1 [Cmid,Cin,3,3], w2 [Cout,Cmid,3,3], y [N,Cout,H,W]. h is never stored: per
 * sample, conv1's output tiles go straight into conv2's blocked, padded input, where GN's
 * statistics and silu(GN(h)) are taken in place. That skips the transposes of h to NCHW and back
 * and h's trips through the far caches: one-step sampling +4-6% in bf16, +1-3% in fp32, CT
 * training +2-3% (its target pass) on AMD EPYC Zen 5 at one thread. The same values as the two
 * convs apart up to the statistics' rounding (their double sums in another order; the same bits
 * in test_conv's and test_unet's cases). */
void conv_wino_pair_forward(Ctx *c, const float *x, const ConvPrologue *pro1, const float *w1,
                            const ConvEpilogue *ep1, const ConvMiddle *mid, const float *w2,
                            const ConvEpilogue *ep2, float *y, int N, int Cin, int H, int W, int Cmid, int Cout);

/* From dy [N,Cout,Ho,Wo]: dx, the gradient of the conv's input pro(x) (NULL: not needed), is
 * written (dx_fresh) or accumulated (+=); dw (NULL: not needed) is accumulated. Each gradient is
 * summed in full before its single store or +=, so two sweeps add exactly the same floats
 * (tensor.h). */
void conv_wino_backward(Ctx *c, const float *x, const ConvPrologue *pro, const float *w,
                        const float *dy, float *dx, bool dx_fresh, float *dw, int N, int Cin, int H,
                        int W, int Cout, int pad);

#endif

/* PLACEHOLDER: replaced by the real implementation. */
#include "ops.h"

Tensor *op_conv2d(Ctx *c, Tensor *x, Tensor *w, Tensor *b, int stride, int pad) { CM_ASSERT(0, "conv2d: not implemented"); }
void conv2d_ref_forward(const float *x, const float *w, const float *b, float *y, int N, int Cin,
                        int H, int W, int Cout, int kh, int kw, int stride, int pad) { CM_ASSERT(0, "conv2d_ref_forward: not implemented"); }
void conv2d_ref_backward(const float *x, const float *w, const float *dy, float *dx, float *dw,
                         float *db, int N, int Cin, int H, int W, int Cout, int kh, int kw,
                         int stride, int pad) { CM_ASSERT(0, "conv2d_ref_backward: not implemented"); }
void conv2d_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "conv2d backward: not implemented"); }

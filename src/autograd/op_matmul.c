/* PLACEHOLDER: replaced by the real implementation. */
#include "ops.h"

Tensor *op_linear(Ctx *c, Tensor *x, Tensor *w, Tensor *b) { CM_ASSERT(0, "linear: not implemented"); }
Tensor *op_matmul(Ctx *c, Tensor *a, Tensor *b) { CM_ASSERT(0, "matmul: not implemented"); }
Tensor *op_bmm(Ctx *c, Tensor *a, Tensor *b, bool ta, bool tb) { CM_ASSERT(0, "bmm: not implemented"); }
void linear_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "linear backward: not implemented"); }
void matmul_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "matmul backward: not implemented"); }
void bmm_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "bmm backward: not implemented"); }

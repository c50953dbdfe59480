/* PLACEHOLDER: replaced by the real implementation. */
#include "ops.h"

Tensor *op_add(Ctx *c, Tensor *a, Tensor *b) { CM_ASSERT(0, "add: not implemented"); }
Tensor *op_sub(Ctx *c, Tensor *a, Tensor *b) { CM_ASSERT(0, "sub: not implemented"); }
Tensor *op_mul(Ctx *c, Tensor *a, Tensor *b) { CM_ASSERT(0, "mul: not implemented"); }
Tensor *op_div(Ctx *c, Tensor *a, Tensor *b) { CM_ASSERT(0, "div: not implemented"); }
Tensor *op_scale(Ctx *c, Tensor *x, float alpha, float beta) { CM_ASSERT(0, "scale: not implemented"); }
Tensor *op_exp(Ctx *c, Tensor *x) { CM_ASSERT(0, "exp: not implemented"); }
Tensor *op_log(Ctx *c, Tensor *x) { CM_ASSERT(0, "log: not implemented"); }
Tensor *op_sin(Ctx *c, Tensor *x) { CM_ASSERT(0, "sin: not implemented"); }
Tensor *op_cos(Ctx *c, Tensor *x) { CM_ASSERT(0, "cos: not implemented"); }
Tensor *op_sqrt(Ctx *c, Tensor *x) { CM_ASSERT(0, "sqrt: not implemented"); }
Tensor *op_pow(Ctx *c, Tensor *x, float p) { CM_ASSERT(0, "pow: not implemented"); }
Tensor *op_silu(Ctx *c, Tensor *x) { CM_ASSERT(0, "silu: not implemented"); }
Tensor *op_sigmoid(Ctx *c, Tensor *x) { CM_ASSERT(0, "sigmoid: not implemented"); }
Tensor *op_dropout(Ctx *c, Tensor *x, float p, const Rng *rng, int sample0) { CM_ASSERT(0, "dropout: not implemented"); }
void add_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "add backward: not implemented"); }
void sub_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "sub backward: not implemented"); }
void mul_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "mul backward: not implemented"); }
void div_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "div backward: not implemented"); }
void scale_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "scale backward: not implemented"); }
void exp_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "exp backward: not implemented"); }
void log_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "log backward: not implemented"); }
void sin_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "sin backward: not implemented"); }
void cos_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "cos backward: not implemented"); }
void sqrt_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "sqrt backward: not implemented"); }
void pow_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "pow backward: not implemented"); }
void silu_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "silu backward: not implemented"); }
void sigmoid_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "sigmoid backward: not implemented"); }
void dropout_backward(Ctx *c, TapeEntry *e) { CM_ASSERT(0, "dropout backward: not implemented"); }

/* op_table.c: OPS[], the op table indexed by OpKind. Each backward is defined next to its
 * forward in the op family's file (ops.h lists which file holds which op). */
#include "ops.h"

#define OP_LIST(X)                                                                             \
    X(CONV2D, conv2d) X(LINEAR, linear) X(MATMUL, matmul) X(BMM, bmm)                          \
    X(GROUP_NORM, group_norm) X(GROUP_NORM_SILU, group_norm_silu) X(SOFTMAX, softmax)                                              \
    X(ADD, add) X(SUB, sub) X(MUL, mul) X(DIV, div) X(SCALE, scale)                            \
    X(EXP, exp) X(LOG, log) X(SIN, sin) X(COS, cos) X(SQRT, sqrt) X(POW, pow)                  \
    X(SILU, silu) X(SIGMOID, sigmoid) X(DROPOUT, dropout)                                      \
    X(RESHAPE, reshape) X(CONCAT, concat) X(UPSAMPLE, upsample) X(AVGPOOL, avgpool)            \
    X(SUM, sum) X(MEAN, mean) X(MSE, mse) X(L1, l1) X(PSEUDO_HUBER, pseudo_huber)              \
    X(CROSS_ENTROPY, cross_entropy)

#define DECLARE(kind, name) void name##_backward(Ctx *c, TapeEntry *e);
OP_LIST(DECLARE)

#define ENTRY(kind, name) [OP_##kind] = {#name, name##_backward},
const OpInfo OPS[OP_COUNT] = {OP_LIST(ENTRY)};

#define COUNT(kind, name) +1
_Static_assert(0 OP_LIST(COUNT) == OP_COUNT, "OPS[] must have one entry per OpKind");

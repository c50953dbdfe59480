/* test_conv.c: op_conv2d's fast paths (im2col + sgemm per thread share, chunked; the 1x1 path;
 * Winograd for 3x3 stride 1 with >= 16 channels, when the build has AVX-512: F(4x4, 3x3) in
 * fp32, dx as a conv of its own, dw by F(4x4, 3x3)'s adjoint; the direct forward path for stride 1
 * with at most 4 outputs)
 * against the naive direct kernels on awkward shapes and with 1, 2 and 3 threads, forward and
 * every gradient; frozen inputs get no gradient; gradients accumulate exactly across two sweeps;
 * the forward pass's bits do not depend on the dynamic schedule (nor, for Winograd, on the
 * thread count); the group-norm statistics a conv hands to the next; one finite-difference
 * check.
 *
 * Which path a shape takes is asked of the library at run time (conv_wino_usable, the predicate
 * op_conv2d itself uses), and each case asserts what holds for that path: Winograd's outputs are
 * the same bits at 1, 2 and 3 threads; im2col's are the same bits on every repeat at one thread
 * count and close across thread counts (its chunks, and so OpenBLAS's GEMM shapes and summation
 * order, follow the thread count). A build that should have Winograd (CMLAB_EXPECT_WINOGRAD:
 * tests/meson.build sets it for -Dnative=true on a CPU with AVX-512) fails if the library does
 * not take it, so its coverage cannot vanish with a printed note; the -Dnative=false build
 * (`./run.sh test-portable`) runs the same cases on im2col. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/conv_wino.h"
#include "autograd/gemm_bf16.h"
#include "autograd/gradcheck.h"
#include "autograd/ops.h"
#include "fixture.h"

#define TOL 1e-4
/* im2col across thread counts: the same products summed in another order (other chunk and GEMM
 * shapes), so float32 rounding of sums of Cin * 9 terms: a few ulps times the square root of the
 * term count relative to the largest output (~1e-6 for the 288 and 576 terms below); 1e-5
 * leaves a margin and is 10x tighter than the comparison with the direct kernels. */
#define ACROSS_TOL 1e-5

/* 1: this build must take the Winograd path (tests/meson.build: -Dnative=true and the compiler's
 * -march=native has AVX-512F). */
#ifndef CMLAB_EXPECT_WINOGRAD
#define CMLAB_EXPECT_WINOGRAD 0
#endif

typedef struct Case {
    const char *name;
    int N, Cin, H, W, Cout, kh, kw, stride, pad;
    bool bias;
    bool freeze;               /* also run with x frozen, then w and b, then w alone */
} Case;

static const Case CASES[] = {
    {"3x3 s1 p1 batch 1", 1, 3, 7, 9, 4, 3, 3, 1, 1, true, false},
    {"3x3 s1 p0 odd 7x9", 2, 2, 7, 9, 3, 3, 3, 1, 0, true, false},
    {"3x3 s2 p1 odd 7x9", 3, 4, 7, 9, 5, 3, 3, 2, 1, true, true},
    {"3x3 s2 p0 odd 9x7", 2, 3, 9, 7, 3, 3, 3, 2, 0, true, false},
    {"3x3 s2 p1 even 8x8", 2, 3, 8, 8, 6, 3, 3, 2, 1, true, false},
    {"1x1 s1 p0 (pointwise)", 3, 5, 7, 9, 3, 1, 1, 1, 0, true, true},
    {"1x1 s2 p0", 2, 4, 7, 9, 3, 1, 1, 2, 0, true, false},
    {"1x1 s1 p1", 2, 4, 5, 6, 3, 1, 1, 1, 1, true, false},
    {"Cin=1 3x3 s1 p1", 2, 1, 7, 9, 3, 3, 3, 1, 1, true, false},
    {"Cout=3 no bias", 2, 4, 7, 9, 3, 3, 3, 1, 1, false, false},
    {"1x1 no bias", 2, 4, 6, 5, 3, 1, 1, 1, 0, false, false},
    {"5x3 kernel s1 p2", 2, 3, 8, 7, 4, 5, 3, 1, 2, true, false},
    {"3x3 s3 p1", 2, 3, 10, 11, 4, 3, 3, 3, 1, true, false},
    {"U-Net-like 32->32 16x16", 4, 32, 16, 16, 32, 3, 3, 1, 1, true, true},
};

/* The path op_conv2d takes for a case, by the predicate it uses itself. */
static bool takes_wino(const Case *k)
{
    return conv_wino_usable(k->Cin, k->Cout, k->kh, k->kw, k->stride, k->pad);
}

/* The forward pass's direct path (stride 1, few outputs): the same bits at every thread count. */
static bool takes_direct(const Case *k)
{
    return !takes_wino(k) && conv2d_direct_usable(k->Cout, k->kh, k->kw, k->stride, k->pad);
}

static const char *path_name(const Case *k)
{
    return takes_wino(k) ? "winograd" : takes_direct(k) ? "direct" : "im2col";
}

static float *randn(size_t n, uint32_t stream)
{
    float *p = cm_malloc(n * sizeof(float));
    rng_normal(&(Rng){.seed = 7, .stream = stream}, p, 1, 0, n);
    return p;
}

typedef struct Data {
    const Case *k;
    int Ho, Wo;
    size_t nx, nw, ny;
    float *x, *w, *b, *gy;
    float *y_ref, *dx_ref, *dw_ref, *db_ref;
} Data;

static Data data_make(const Case *k)
{
    Data d = {.k = k};
    d.Ho = (k->H + 2 * k->pad - k->kh) / k->stride + 1;
    d.Wo = (k->W + 2 * k->pad - k->kw) / k->stride + 1;
    d.nx = (size_t)k->N * k->Cin * k->H * k->W;
    d.nw = (size_t)k->Cout * k->Cin * k->kh * k->kw;
    d.ny = (size_t)k->N * k->Cout * d.Ho * d.Wo;
    d.x = randn(d.nx, 1);
    d.w = randn(d.nw, 2);
    d.b = randn((size_t)k->Cout, 3);
    d.gy = randn(d.ny, 4);
    d.y_ref = cm_malloc(d.ny * sizeof(float));
    d.dx_ref = cm_malloc(d.nx * sizeof(float));
    d.dw_ref = cm_malloc(d.nw * sizeof(float));
    d.db_ref = cm_malloc((size_t)k->Cout * sizeof(float));
    conv2d_ref_forward(d.x, d.w, k->bias ? d.b : NULL, d.y_ref, k->N, k->Cin, k->H, k->W,
                       k->Cout, k->kh, k->kw, k->stride, k->pad);
    conv2d_ref_backward(d.x, d.w, d.gy, d.dx_ref, d.dw_ref, d.db_ref, k->N, k->Cin, k->H, k->W,
                        k->Cout, k->kh, k->kw, k->stride, k->pad);
    return d;
}

static void data_free(Data *d)
{
    free(d->x); free(d->w); free(d->b); free(d->gy);
    free(d->y_ref); free(d->dx_ref); free(d->dw_ref); free(d->db_ref);
}

static void check_grad(const char *what, const char *name, const Tensor *t, const float *ref,
                       bool needed)
{
    if (!needed) {
        CHECK(t->grad == NULL, "%s: %s is frozen but got a gradient", name, what);
        return;
    }
    CHECK(t->grad != NULL, "%s: %s needs a gradient but has none", name, what);
    if (!t->grad) return;
    double err = rel_error(t->grad, ref, t->n, 1e-6);
    printf("  %-26s %-3s rel err %.2e\n", name, what, err);
    CHECK(err < TOL, "%s: %s rel err %.2e >= %.0e", name, what, err, TOL);
}

/* A context whose arena is filled with NaN bit patterns, so that a workspace or gradient read
 * before it is written turns the result into NaN instead of passing on zeroed memory. */
static void ctx_init_poisoned(Ctx *c)
{
    const size_t bytes = (size_t)16 << 20;
    ctx_init(c, bytes);
    memset(arena_alloc(&c->arena, bytes), 0xff, bytes);
    ctx_reset(c);
}

/* Forward, one sweep, then a second sweep: leaf gradients must be exactly doubled. */
static void run_case(const Data *d, bool need_x, bool need_w, bool need_b)
{
    const Case *k = d->k;
    char name[96];
    snprintf(name, sizeof name, "%s%s%s%s", k->name, need_x ? "" : " [x frozen]",
             need_w ? "" : " [w frozen]", need_b || !k->bias ? "" : " [b frozen]");
    Ctx c;
    ctx_init_poisoned(&c);
    Tensor *x = tensor_wrap(&c, d->x, NULL, 4, SHAPE(k->N, k->Cin, k->H, k->W), need_x);
    Tensor *w = tensor_wrap(&c, d->w, NULL, 4, SHAPE(k->Cout, k->Cin, k->kh, k->kw), need_w);
    Tensor *b = k->bias ? tensor_wrap(&c, d->b, NULL, 1, SHAPE(k->Cout), need_b) : NULL;
    Tensor *y = op_conv2d(&c, x, w, b, k->stride, k->pad);
    CHECK(y->shape[2] == d->Ho && y->shape[3] == d->Wo, "%s: output %dx%d, want %dx%d", name,
          y->shape[2], y->shape[3], d->Ho, d->Wo);
    double err = rel_error(y->data, d->y_ref, d->ny, 1e-6);
    printf("  %-26s y   rel err %.2e\n", name, err);
    CHECK(err < TOL, "%s: y rel err %.2e", name, err);
    /* the same forward with no backward to follow (sampling) */
    ctx_no_grad_begin(&c);
    Tensor *yi = op_conv2d(&c, x, w, b, k->stride, k->pad);
    ctx_no_grad_end(&c);
    err = rel_error(yi->data, d->y_ref, d->ny, 1e-6);
    printf("  %-26s y   rel err %.2e (no grad)\n", name, err);
    CHECK(err < TOL, "%s: y rel err %.2e in a no-grad scope", name, err);

    tape_backward(&c, y, d->gy);
    check_grad("dx", name, x, d->dx_ref, need_x);
    check_grad("dw", name, w, d->dw_ref, need_w);
    if (b) check_grad("db", name, b, d->db_ref, need_b);

    Tensor *ts[3] = {x, w, b};
    float *first[3] = {0};
    for (int i = 0; i < 3; i++)
        if (ts[i] && ts[i]->grad) {
            first[i] = cm_malloc(ts[i]->n * sizeof(float));
            memcpy(first[i], ts[i]->grad, ts[i]->n * sizeof(float));
        }
    tape_backward(&c, y, d->gy);
    for (int i = 0; i < 3; i++) {
        if (!first[i]) continue;
        size_t bad = 0;
        for (size_t j = 0; j < ts[i]->n; j++) bad += ts[i]->grad[j] != 2 * first[i][j];
        CHECK(bad == 0, "%s: input %d: %zu of %zu gradient entries are not exactly 2x after two "
              "sweeps", name, i, bad, ts[i]->n);
        free(first[i]);
    }
    ctx_free(&c);
}

static void test_cases(void)
{
    for (size_t i = 0; i < CM_ARRAY_LEN(CASES); i++) {
        Data d = data_make(&CASES[i]);
        run_case(&d, true, true, true);
        if (CASES[i].freeze) {
            run_case(&d, false, true, true);
            run_case(&d, true, false, false);
            run_case(&d, true, false, true);
        }
        data_free(&d);
    }
}

/* A chunk budget smaller than the batch: 7 samples in chunks of 3, 3 and 1. */
static void test_chunks(void)
{
    static const Case k = {"chunked 7 samples by 3", 7, 3, 9, 7, 4, 3, 3, 2, 1, true, false};
    size_t saved = conv2d_chunk_bytes;
    int Ho = (k.H + 2 - 3) / 2 + 1, Wo = (k.W + 2 - 3) / 2 + 1;
    conv2d_chunk_bytes = 3 * (size_t)k.Cin * 9 * Ho * Wo * sizeof(float);
    Data d = data_make(&k);
    run_case(&d, true, true, true);
    data_free(&d);
    conv2d_chunk_bytes = saved;
}

/* Winograd's shapes: channel counts that are not whole vectors of 16 (and column chunks of 1 to
 * 4 vectors, rows of the register block left over), odd and tiny images (partial tiles, a
 * single tile), paddings 0, 1, 2; each with 1, 2 and 3 threads (shares of 0 samples included),
 * with the default block and with blocks small enough to split a sample's tiles, and to group
 * whole samples. */
static const Case WINO_CASES[] = {
    {"wino 16->16 8x8", 3, 16, 8, 8, 16, 3, 3, 1, 1, true, true},
    {"wino 20->17 odd 9x7", 2, 20, 9, 7, 17, 3, 3, 1, 1, true, false},
    {"wino 17->48 7x7 p0", 3, 17, 7, 7, 48, 3, 3, 1, 0, true, false},
    {"wino 33->80 5x6 p2", 2, 33, 5, 6, 80, 3, 3, 1, 2, false, false},
    {"wino 48->20 1x1 image", 2, 48, 1, 1, 20, 3, 3, 1, 1, true, false},
    {"wino 16->112 2x3", 1, 16, 2, 3, 112, 3, 3, 1, 1, true, false},
    {"wino 96->32 14x14", 2, 96, 14, 14, 32, 3, 3, 1, 1, true, true},
};

static void test_wino(void)
{
    size_t saved = conv_wino_block_bytes;
    for (size_t i = 0; i < CM_ARRAY_LEN(WINO_CASES); i++) {
        const Case *k = &WINO_CASES[i];
        printf("  %s: the %s path\n", k->name, path_name(k));
        Data d = data_make(k);
        /* Budgets (conv_wino.c: blocks of budget / (64 (ci16 + co16)) tiles, at least 16): the
         * default (whole samples, grouped when small); 1 byte, the 16-tile minimum (splits the
         * 9x7 and 14x14 samples); 48 tiles (groups of 2-3 samples of 8x8, 9x7, 5x6, 7x7 p0). */
        size_t v16 = (size_t)(k->Cin + 15) / 16 * 16 + (size_t)(k->Cout + 15) / 16 * 16;
        size_t budgets[3] = {saved, 1, 48 * 64 * v16};
        for (int bi = 0; bi < 3; bi++) {
            conv_wino_block_bytes = budgets[bi];
            for (int threads = 1; threads <= 3; threads++) {
                cm_set_threads(threads);
                printf("  [%d thread%s, block budget %zu bytes]\n", threads, threads > 1 ? "s" : "", budgets[bi]);
                run_case(&d, true, true, true);
                if (k->freeze && bi == 0) {
                    run_case(&d, false, true, true);
                    run_case(&d, true, false, false);
                }
            }
        }
        data_free(&d);
    }
    conv_wino_block_bytes = saved;
    cm_set_threads(2);
}

/* Every path hands work to threads dynamically (conv_wino.c, "Split between threads"; op_conv.c's
 * im2col chunks and direct samples): the output must not depend on the schedule. U-Net-sized
 * batches, so that every thread takes many units, 4 runs each at 2 and 3 threads (3 threads on 2
 * cores: one is descheduled now and then, which changes who takes what): every run of a thread
 * count gives the same bits (a race, two threads taking one unit or a unit skipped, fails it).
 * Winograd's outputs do not depend on the thread count at all (its blocks only group whole tiles),
 * so there 1 thread must agree to the bit, as on the direct path (one sample's sums in a fixed
 * order); im2col's chunk size, and so OpenBLAS's GEMM shape, follows the thread count, so there 2
 * and 3 threads must agree with 1 within ACROSS_TOL. The first two shapes take Winograd where the
 * build has it, the third (stride 2) always takes im2col, the last two (1 and 3 outputs) the
 * direct path.
 */
static void test_forward_schedule(void)
{
    static const Case cases[] = {
        {"32->32 14x14 batch 64", 64, 32, 14, 14, 32, 3, 3, 1, 1, true, false},
        {"64->64 7x7 batch 64 (groups)", 64, 64, 7, 7, 64, 3, 3, 1, 1, true, false},
        {"32->64 s2 batch 64", 64, 32, 14, 14, 64, 3, 3, 2, 1, true, false},
        {"32->1 28x28 batch 64 (conv_out)", 64, 32, 28, 28, 1, 3, 3, 1, 1, true, false},
        {"64->3 32x32 batch 32", 32, 64, 32, 32, 3, 3, 3, 1, 1, true, false},
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        const Case *k = &cases[i];
        const bool exact = takes_wino(k) || takes_direct(k);
        int Ho = (k->H + 2 * k->pad - k->kh) / k->stride + 1, Wo = (k->W + 2 * k->pad - k->kw) / k->stride + 1;
        size_t nx = (size_t)k->N * k->Cin * k->H * k->W, ny = (size_t)k->N * k->Cout * Ho * Wo;
        float *x = randn(nx, 21), *w = randn((size_t)k->Cout * k->Cin * 9, 22), *b = randn((size_t)k->Cout, 23);
        float *one = cm_malloc(ny * sizeof(float)), *first = cm_malloc(ny * sizeof(float));
        int runs = 0, differ = 0, across = 0;
        double across_err = 0;
        for (int threads = 1; threads <= 3; threads++) {
            cm_set_threads(threads);
            for (int rep = 0; rep < (threads == 1 ? 1 : 4); rep++) {
                Ctx c;
                ctx_init(&c, 1 << 24);
                Tensor *y = op_conv2d(&c, tensor_wrap(&c, x, NULL, 4, SHAPE(k->N, k->Cin, k->H, k->W), false),
                                      tensor_wrap(&c, w, NULL, 4, SHAPE(k->Cout, k->Cin, 3, 3), false),
                                      tensor_wrap(&c, b, NULL, 1, SHAPE(k->Cout), false), k->stride, k->pad);
                if (threads == 1) memcpy(one, y->data, ny * sizeof(float));
                else if (rep == 0) memcpy(first, y->data, ny * sizeof(float));
                else runs++, differ += memcmp(first, y->data, ny * sizeof(float)) != 0;
                if (threads > 1 && rep == 0) {
                    across += memcmp(one, y->data, ny * sizeof(float)) != 0;
                    across_err = fmax(across_err, rel_error(y->data, one, ny, 1e-6));
                }
                ctx_free(&c);
            }
        }
        printf("  %-30s %-8s forward: %d of %d repeats at 2-3 threads differ; 2 and 3 threads %s 1 "
               "(rel err %.1e)\n", k->name, path_name(k), differ, runs, across ? "differ from" : "equal",
               across_err);
        CHECK(differ == 0, "%s (%s): %d of %d forward repeats at 2-3 threads differ in their bits", k->name,
              path_name(k), differ, runs);
        if (exact)
            CHECK(across == 0, "%s (%s): forward bits depend on the thread count (rel err %.1e)", k->name,
                  path_name(k), across_err);
        else
            CHECK(across_err <= ACROSS_TOL, "%s (im2col): 2-3 threads differ from 1 by rel err %.1e > %.0e",
                  k->name, across_err, ACROSS_TOL);
        free(x); free(w); free(b); free(one); free(first);
    }
    cm_set_threads(2);
}

/* ConvFusion's statistics hand-off (a ResBlock's conv1 -> norm2 -> conv2): out_stats must hold
 * gn_stats' values of the output to the bit, and a conv reading them as norm_stats must give the
 * same output and gradients, to the bit, as one that takes the statistics itself. On the
 * Winograd path where the build has it (taken per sample as it is stored; the first shape) and
 * the im2col path (4 input channels: always; the first shape too without Winograd). */
static void test_stats_handoff(void)
{
    static const Case cases[] = {
        {"32->32 14x14", 8, 32, 14, 14, 32, 3, 3, 1, 1, true, false},
        {"4->32 9x7", 3, 4, 9, 7, 32, 3, 3, 1, 1, true, false},
    };
    const int G = 8;
    const float eps = 1e-5f;
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        const Case *k = &cases[i];
        size_t nx = (size_t)k->N * k->Cin * k->H * k->W, ny = (size_t)k->N * k->Cout * k->H * k->W;
        float *x = randn(nx, 31), *w1 = randn((size_t)k->Cout * k->Cin * 9, 32), *b1 = randn((size_t)k->Cout, 33);
        float *w2 = randn((size_t)k->Cout * k->Cout * 9, 34), *gy = randn(ny, 35);
        float *stats = cm_malloc(2 * sizeof(float) * (size_t)k->N * G), *want = cm_malloc(2 * sizeof(float) * (size_t)k->N * G);
        float *y_ref = cm_malloc(ny * sizeof(float)), *gw_ref = cm_malloc((size_t)k->Cout * k->Cout * 9 * sizeof(float));
        float *gx_ref = cm_malloc(nx * sizeof(float));
        int bad_y = 0, bad_g = 0;
        for (int reuse = 0; reuse < 2; reuse++) {
            Ctx c;
            ctx_init(&c, 1 << 24);
            Tensor *tx = tensor_wrap(&c, x, NULL, 4, SHAPE(k->N, k->Cin, k->H, k->W), true);
            Tensor *tw1 = tensor_wrap(&c, w1, NULL, 4, SHAPE(k->Cout, k->Cin, 3, 3), false);
            Tensor *tw2 = tensor_wrap(&c, w2, NULL, 4, SHAPE(k->Cout, k->Cout, 3, 3), true);
            Tensor *h = op_conv2d_fused(&c, tx, tw1, tensor_wrap(&c, b1, NULL, 1, SHAPE(k->Cout), false), 1, 1,
                                        &(ConvFusion){.out_stats = reuse ? stats : NULL, .out_groups = G, .out_eps = eps});
            if (reuse) {
                gn_stats(h->data, k->N, k->Cout, (size_t)k->H * k->W, G, eps, want, want + (size_t)k->N * G);
                size_t bad = 0;
                for (size_t j = 0; j < 2 * (size_t)k->N * G; j++) bad += stats[j] != want[j];
                printf("  %-14s %-8s out_stats: %zu of %d differ from gn_stats of the output\n", k->name,
                       path_name(k), bad, 2 * k->N * G);
                CHECK(bad == 0, "%s: %zu of %d out_stats values differ from gn_stats", k->name, bad, 2 * k->N * G);
            }
            Tensor *y = op_conv2d_fused(&c, h, tw2, NULL, 1, 1, &(ConvFusion){
                .norm_groups = G, .norm_eps = eps, .norm_stats = reuse ? stats : NULL});
            tape_backward(&c, y, gy);
            if (!reuse) {
                memcpy(y_ref, y->data, ny * sizeof(float));
                memcpy(gw_ref, tw2->grad, tw2->n * sizeof(float));
                memcpy(gx_ref, tx->grad, nx * sizeof(float));
            } else {
                bad_y = memcmp(y_ref, y->data, ny * sizeof(float)) != 0;
                bad_g = memcmp(gw_ref, tw2->grad, tw2->n * sizeof(float)) != 0 || memcmp(gx_ref, tx->grad, nx * sizeof(float)) != 0;
            }
            ctx_free(&c);
        }
        printf("  %-14s %-8s norm_stats: output %s, gradients %s\n", k->name, path_name(k), bad_y ? "DIFFER" : "equal",
               bad_g ? "DIFFER" : "equal");
        CHECK(!bad_y && !bad_g, "%s: reading norm_stats changes the output (%d) or the gradients (%d)", k->name, bad_y, bad_g);
        free(x); free(w1); free(b1); free(w2); free(gy); free(stats); free(want); free(y_ref); free(gw_ref); free(gx_ref);
    }
}

/* op_conv2d_pair (a residual block's two convs without gradients; conv_wino_pair_forward) against
 * the same two convs apart (op_conv2d_fused, each checked above against the direct kernels): input
 * norm and per-sample bias on the first, a norm of its output, residual and scale on the second.
 * The pair takes the middle's statistics in double sums of the same values in another order (per
 * channel, then per group), so its output may differ in the last bits where a statistic rounds
 * the other way: within PAIR_TOL of the largest output (1e-6, against ~6e-8 for one float
 * rounding; wrong tiles, a missed overhang or a stale sample give O(1)), and the count of
 * values that differ at all is printed. Shapes: an overhang (14x14 and 9x7 in 4x4 tiles),
 * channels that are not whole vectors in the middle (17, one group), in != middle != out; with 1,
 * 2 and 3 threads and the three block budgets of test_wino (one sample's tiles split into
 * blocks; groups of samples); fp32, and bf16 where the CPU has it (the same bf16 products on the
 * same values on both sides). */
#define PAIR_TOL 1e-6

typedef struct PairCase {
    const char *name;
    int N, Cin, H, W, Cmid, Cout, groups;
} PairCase;

static double pair_run(const PairCase *k, CmPrecision prec, float *const v[], float *y_pair, float *y_two)
{
    const size_t ny = (size_t)k->N * k->Cout * k->H * k->W;
    Ctx c;
    ctx_init(&c, 1 << 24);
    c.precision = prec;
    ctx_no_grad_begin(&c);
    Tensor *x = tensor_wrap(&c, v[0], NULL, 4, SHAPE(k->N, k->Cin, k->H, k->W), false);
    Tensor *w1 = tensor_wrap(&c, v[1], NULL, 4, SHAPE(k->Cmid, k->Cin, 3, 3), false);
    Tensor *b1 = tensor_wrap(&c, v[2], NULL, 1, SHAPE(k->Cmid), false);
    Tensor *temb = tensor_wrap(&c, v[3], NULL, 2, SHAPE(k->N, k->Cmid), false);
    Tensor *w2 = tensor_wrap(&c, v[4], NULL, 4, SHAPE(k->Cout, k->Cmid, 3, 3), false);
    Tensor *b2 = tensor_wrap(&c, v[5], NULL, 1, SHAPE(k->Cout), false);
    Tensor *res = tensor_wrap(&c, v[6], NULL, 4, SHAPE(k->N, k->Cout, k->H, k->W), false);
    Tensor *n1w = tensor_wrap(&c, v[7], NULL, 1, SHAPE(k->Cin), false);
    Tensor *n1b = tensor_wrap(&c, v[8], NULL, 1, SHAPE(k->Cin), false);
    Tensor *n2w = tensor_wrap(&c, v[9], NULL, 1, SHAPE(k->Cmid), false);
    Tensor *n2b = tensor_wrap(&c, v[10], NULL, 1, SHAPE(k->Cmid), false);
    const int g1 = k->Cin % 4 == 0 ? 4 : 1;
    ConvFusion f1 = {.norm_weight = n1w, .norm_bias = n1b, .norm_groups = g1, .norm_eps = 1e-5f, .bias = temb};
    ConvFusion f2 = {.norm_weight = n2w, .norm_bias = n2b, .norm_groups = k->groups, .norm_eps = 1e-6f,
                     .residual = res, .scale = 0.7f};
    memcpy(y_pair, op_conv2d_pair(&c, x, w1, b1, &f1, w2, b2, &f2)->data, ny * sizeof(float));
    Tensor *h = op_conv2d_fused(&c, x, w1, b1, 1, 1, &f1);
    memcpy(y_two, op_conv2d_fused(&c, h, w2, b2, 1, 1, &f2)->data, ny * sizeof(float));
    ctx_free(&c);
    double worst = 0, top = 0;
    for (size_t i = 0; i < ny; i++) {
        worst = fmax(worst, isfinite(y_pair[i]) ? fabs((double)y_pair[i] - y_two[i]) : INFINITY);
        top = fmax(top, fabs((double)y_two[i]));
    }
    return worst / top;
}

static void test_pair(void)
{
    static const PairCase cases[] = {
        {"16->32->32 14x14", 3, 16, 14, 14, 32, 32, 8},
        {"20->17->48 9x7", 2, 20, 9, 7, 17, 48, 1},
        {"32->32->32 28x28", 2, 32, 28, 28, 32, 32, 8},
    };
    const bool bf16 = gemm_precision_usable(CM_PRECISION_BF16) == CM_PRECISION_BF16;
    size_t saved = conv_wino_block_bytes;
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        const PairCase *k = &cases[i];
        CHECK(conv_wino_pair_usable(k->Cin, k->Cmid, k->Cout) || !CMLAB_EXPECT_WINOGRAD,
              "%s: this build should take the pair", k->name);
        if (!conv_wino_pair_usable(k->Cin, k->Cmid, k->Cout)) {
            printf("  pair %s: not taken in this build\n", k->name);
            continue;
        }
        const size_t n[11] = {(size_t)k->N * k->Cin * k->H * k->W, (size_t)k->Cmid * k->Cin * 9, (size_t)k->Cmid,
                              (size_t)k->N * k->Cmid, (size_t)k->Cout * k->Cmid * 9, (size_t)k->Cout,
                              (size_t)k->N * k->Cout * k->H * k->W, (size_t)k->Cin, (size_t)k->Cin,
                              (size_t)k->Cmid, (size_t)k->Cmid};
        float *v[11];
        for (int j = 0; j < 11; j++) v[j] = randn(n[j], 60 + (uint32_t)j);
        float *yp = cm_malloc(n[6] * sizeof(float)), *y2 = cm_malloc(n[6] * sizeof(float));
        size_t v16 = 2 * ((size_t)(CM_MAX(k->Cin, k->Cout) + 15) / 16 * 16);
        size_t budgets[3] = {saved, 1, 48 * 64 * v16};
        for (int prec = 0; prec < (bf16 ? 2 : 1); prec++) {
            double worst = 0;
            size_t differ = 0;
            for (int bi = 0; bi < 3; bi++)
                for (int threads = 1; threads <= 3; threads++) {
                    conv_wino_block_bytes = budgets[bi];
                    cm_set_threads(threads);
                    worst = fmax(worst, pair_run(k, prec ? CM_PRECISION_BF16 : CM_PRECISION_FP32, v, yp, y2));
                    for (size_t j = 0; j < n[6]; j++) differ += yp[j] != y2[j];
                }
            printf("  pair %-18s %s: against the two convs apart, worst %.1e of max |y|, %zu of %zu values differ\n",
                   k->name, prec ? "bf16" : "fp32", worst, differ, 9 * n[6]);
            CHECK(worst <= PAIR_TOL, "pair %s (%s): differs from the two convs by %.2e of max |y|", k->name,
                  prec ? "bf16" : "fp32", worst);
        }
        for (int j = 0; j < 11; j++) free(v[j]);
        free(yp);
        free(y2);
    }
    conv_wino_block_bytes = saved;
    cm_set_threads(2);
}

typedef struct GcArgs { int stride, pad; } GcArgs;

static Tensor *gc_conv(Ctx *c, Tensor **in, void *user)
{
    const GcArgs *a = user;
    return op_conv2d(c, in[0], in[1], in[2], a->stride, a->pad);
}

static void test_gradcheck(void)
{
    GcArgs a = {2, 1};
    float *x = randn(2 * 3 * 5 * 6, 11), *w = randn(4 * 3 * 3 * 3, 12), *b = randn(4, 13);
    GradInput in[3] = {
        {x, 4, {2, 3, 5, 6}, true},
        {w, 4, {4, 3, 3, 3}, true},
        {b, 1, {4}, true},
    };
    float *gout = randn(2 * 4 * 3 * 3, 14);
    double err = gradcheck(gc_conv, &a, 3, in, gout, 1e-2f, 200);
    printf("  gradcheck 3x3 s2 p1         rel err %.2e\n", err);
    CHECK(err < 1e-2, "conv2d gradcheck rel err %.2e", err);
    free(x); free(w); free(b); free(gout);
}

/* Which paths this build takes, and whether that is what the build promised. */
static void test_paths(void)
{
    static const Case u = {"U-Net 3x3", 1, 32, 8, 8, 32, 3, 3, 1, 1, true, false};
    bool built = takes_wino(&u);
    printf("conv paths: 3x3 stride-1 convolutions with >= 16 channels take %s in this build "
           "(CMLAB_EXPECT_WINOGRAD=%d)\n", path_name(&u), CMLAB_EXPECT_WINOGRAD);
    CHECK(built || !CMLAB_EXPECT_WINOGRAD, "this build should take the Winograd path (-Dnative=true on "
          "a CPU with AVX-512) but conv_wino_usable says no: Winograd would go untested");
}

int main(void)
{
    test_paths();
    cm_set_threads(2);
    test_cases();
    test_chunks();
    /* Each thread convolves its own share of the samples: with 1 and 3 threads the shares (7,
     * and 2/2/3) split into other chunks, and one thread's dw partial is the whole sum. */
    cm_set_threads(3);
    test_chunks();
    cm_set_threads(1);
    test_chunks();
    cm_set_threads(2);
    test_wino();
    test_forward_schedule();
    test_stats_handoff();
    test_pair();
    test_gradcheck();
    return test_summary("conv");
}

/* test_autograd.c: the tape's contracts (DESIGN.md "Autograd"), independent of any one op's
 * arithmetic: gradients accumulate across sweeps, a no-grad scope records nothing, inputs that
 * need no gradient get none, shape errors abort naming the op and both shapes, and the arena
 * reports its high-water mark and reuses its memory; intermediate gradients are released and
 * reused during a sweep; cm_expf against libm. (A no-grad U-Net pass keeping only its blocks'
 * outputs: test_unet.) */
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "autograd/fastmath.h"
#include "autograd/ops.h"
#include "fixture.h"

static float *randn(size_t n, uint32_t stream)
{
    float *p = malloc(n * sizeof(float));
    Rng r = {.seed = 7, .stream = stream, .step = 0};
    rng_normal(&r, p, 1, 0, n);
    return p;
}

/* loss = mean(mse(silu(conv(x, w) * s + x), target)) with every kind of input. */
static Tensor *small_net(Ctx *c, Tensor *x, Tensor *w, Tensor *s, Tensor *target)
{
    Tensor *h = op_conv2d(c, x, w, NULL, 1, 1);
    h = op_add(c, op_mul(c, h, s), x);
    return op_mean(c, op_mse(c, op_silu(c, h), target));
}

static void test_accumulate(void)
{
    float *xd = randn(2 * 3 * 5 * 5, 1), *wd = randn(3 * 3 * 3 * 3, 2), *sd = randn(3, 3);
    float *td = randn(2 * 3 * 5 * 5, 4);
    float *wg = calloc(81, sizeof(float)), *sg = calloc(3, sizeof(float));
    Ctx c;
    ctx_init(&c, 1 << 16);
    Tensor *x = tensor_wrap(&c, xd, NULL, 4, SHAPE(2, 3, 5, 5), true);
    Tensor *w = tensor_wrap(&c, wd, wg, 4, SHAPE(3, 3, 3, 3), true);
    Tensor *s = tensor_wrap(&c, sd, sg, 4, SHAPE(1, 3, 1, 1), true);
    Tensor *t = tensor_wrap(&c, td, NULL, 4, SHAPE(2, 3, 5, 5), false);
    Tensor *loss = small_net(&c, x, w, s, t);
    tape_backward(&c, loss, NULL);
    float w1[81], s1[3], x1[150];
    memcpy(w1, wg, sizeof w1);
    memcpy(s1, sg, sizeof s1);
    memcpy(x1, x->grad, sizeof x1);
    tape_backward(&c, loss, NULL);
    /* Twice, up to rounding: a GEMM that accumulates into an existing gradient (beta = 1) may
     * sum in another order than one that starts from zero. */
    float w2[81], s2[3], x2[150];
    for (int i = 0; i < 81; i++) w2[i] = 2 * w1[i];
    for (int i = 0; i < 3; i++) s2[i] = 2 * s1[i];
    for (int i = 0; i < 150; i++) x2[i] = 2 * x1[i];
    double e = fmax(rel_error(wg, w2, 81, 1e-12), fmax(rel_error(sg, s2, 3, 1e-12), rel_error(x->grad, x2, 150, 1e-12)));
    CHECK(e < 1e-6, "two sweeps should give twice the leaf gradients: relative error %.2e", e);
    printf("two sweeps vs twice one sweep: relative error %.2e\n", e);
    double norm = 0;
    for (int i = 0; i < 81; i++) norm += w1[i] * w1[i];
    CHECK(norm > 0, "the first sweep produced a zero weight gradient");
    CHECK(t->grad == NULL, "the target (requires_grad false) got a gradient buffer");
    ctx_free(&c);
    free(xd); free(wd); free(sd); free(td); free(wg); free(sg);
}

static void test_no_grad(void)
{
    float *xd = randn(2 * 3 * 5 * 5, 1), *wd = randn(81, 2), *sd = randn(3, 3), *td = randn(150, 4);
    Ctx c;
    ctx_init(&c, 1 << 16);
    Tensor *x = tensor_wrap(&c, xd, NULL, 4, SHAPE(2, 3, 5, 5), true);
    Tensor *w = tensor_wrap(&c, wd, NULL, 4, SHAPE(3, 3, 3, 3), true);
    Tensor *s = tensor_wrap(&c, sd, NULL, 4, SHAPE(1, 3, 1, 1), true);
    Tensor *t = tensor_wrap(&c, td, NULL, 4, SHAPE(2, 3, 5, 5), false);
    Tensor *with = small_net(&c, x, w, s, t);
    int recorded = c.tape_len;
    CHECK(recorded == 6, "grad mode recorded %d entries, expected 6", recorded);
    ctx_no_grad_begin(&c);
    ctx_no_grad_begin(&c);   /* scopes nest */
    Tensor *without = small_net(&c, x, w, s, t);
    ctx_no_grad_end(&c);
    Tensor *still = small_net(&c, x, w, s, t);
    ctx_no_grad_end(&c);
    CHECK(c.tape_len == recorded, "the no-grad scope recorded %d entries", c.tape_len - recorded);
    CHECK(!without->requires_grad && !still->requires_grad, "outputs in a no-grad scope require grad");
    CHECK(with->data[0] == without->data[0], "no-grad changed the value: %g vs %g",
          (double)with->data[0], (double)without->data[0]);
    small_net(&c, x, w, s, t);
    CHECK(c.tape_len == 2 * recorded, "recording did not resume after the scope");
    ctx_free(&c);
    free(xd); free(wd); free(sd); free(td);
}

/* Frozen weights (AMED, BCM): only the input gets a gradient; an op whose inputs all need none
 * is not recorded at all. */
static void test_requires_grad(void)
{
    float *xd = randn(150, 1), *wd = randn(81, 2), *sd = randn(3, 3), *td = randn(150, 4);
    Ctx c;
    ctx_init(&c, 1 << 16);
    Tensor *x = tensor_wrap(&c, xd, NULL, 4, SHAPE(2, 3, 5, 5), true);
    Tensor *w = tensor_wrap(&c, wd, NULL, 4, SHAPE(3, 3, 3, 3), false);
    Tensor *s = tensor_wrap(&c, sd, NULL, 4, SHAPE(1, 3, 1, 1), false);
    Tensor *t = tensor_wrap(&c, td, NULL, 4, SHAPE(2, 3, 5, 5), false);
    Tensor *loss = small_net(&c, x, w, s, t);
    tape_backward(&c, loss, NULL);
    CHECK(w->grad == NULL && s->grad == NULL && t->grad == NULL,
          "frozen inputs got gradient buffers (w %p s %p t %p)", (void *)w->grad, (void *)s->grad,
          (void *)t->grad);
    CHECK(x->grad != NULL, "the input that requires a gradient got none");

    ctx_reset(&c);
    x = tensor_wrap(&c, xd, NULL, 4, SHAPE(2, 3, 5, 5), false);
    w = tensor_wrap(&c, wd, NULL, 4, SHAPE(3, 3, 3, 3), false);
    s = tensor_wrap(&c, sd, NULL, 4, SHAPE(1, 3, 1, 1), false);
    t = tensor_wrap(&c, td, NULL, 4, SHAPE(2, 3, 5, 5), false);
    loss = small_net(&c, x, w, s, t);
    CHECK(c.tape_len == 0 && !loss->requires_grad, "ops on frozen inputs recorded %d entries", c.tape_len);
    ctx_free(&c);
    free(xd); free(wd); free(sd); free(td);
}

/* Runs fn in a child; it must die by SIGABRT with every expected string in its stderr. */
typedef void (*AbortFn)(void);
static void expect_abort(const char *what, AbortFn fn, const char *const *expect)
{
    int pfd[2];
    if (pipe(pfd) != 0) { CHECK(0, "pipe failed"); return; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pfd[1], 2);
        close(pfd[0]);
        fn();
        _exit(0);
    }
    close(pfd[1]);
    char buf[4096] = {0};
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = read(pfd[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "%s: the child did not abort", what);
    for (const char *const *s = expect; *s; s++)
        CHECK(strstr(buf, *s) != NULL, "%s: message lacks \"%s\": %s", what, *s, buf);
    printf("%s aborts with: %s", what, buf);
}

static Ctx abort_ctx;
static void bad_add(void)
{
    ctx_init(&abort_ctx, 1 << 12);
    op_add(&abort_ctx, TENSOR_NEW(&abort_ctx, 2, 3, 4, 5), TENSOR_NEW(&abort_ctx, 2, 4, 1, 1));
}
static void bad_mse(void)
{
    ctx_init(&abort_ctx, 1 << 12);
    op_mse(&abort_ctx, TENSOR_NEW(&abort_ctx, 2, 3), TENSOR_NEW(&abort_ctx, 2, 4));
}
static void bad_conv(void)
{
    ctx_init(&abort_ctx, 1 << 12);
    op_conv2d(&abort_ctx, TENSOR_NEW(&abort_ctx, 1, 3, 8, 8), TENSOR_NEW(&abort_ctx, 4, 2, 3, 3), NULL, 1, 1);
}
static void bad_matmul(void)
{
    ctx_init(&abort_ctx, 1 << 12);
    op_matmul(&abort_ctx, TENSOR_NEW(&abort_ctx, 3, 4), TENSOR_NEW(&abort_ctx, 5, 2));
}
static void bad_concat(void)
{
    ctx_init(&abort_ctx, 1 << 12);
    op_concat(&abort_ctx, 2, (Tensor *[]){TENSOR_NEW(&abort_ctx, 2, 3, 4, 4), TENSOR_NEW(&abort_ctx, 2, 3, 5, 4)});
}

static void test_shape_errors(void)
{
    expect_abort("add", bad_add, (const char *[]){"add", "[2,3,4,5]", "[2,4,1,1]", NULL});
    expect_abort("mse", bad_mse, (const char *[]){"mse", "[2,3]", "[2,4]", NULL});
    expect_abort("conv2d", bad_conv, (const char *[]){"conv2d", "[1,3,8,8]", "[4,2,3,3]", NULL});
    expect_abort("matmul", bad_matmul, (const char *[]){"matmul", "[3,4]", "[5,2]", NULL});
    expect_abort("concat", bad_concat, (const char *[]){"concat", "[2,3,4,4]", "[2,3,5,4]", NULL});
}

static void test_arena(void)
{
    Ctx c;
    ctx_init(&c, 4096);
    for (int step = 0; step < 3; step++) {
        for (int i = 0; i < 10; i++) TENSOR_NEW(&c, 1000);   /* 40 kB: overflows the 4 kB block */
        ctx_reset(&c);
    }
    size_t hw = c.arena.high_water;
    CHECK(hw >= 40000 && hw < 50000, "high-water mark %zu, expected about 40 kB", hw);
    CHECK(c.arena.cap >= hw && c.arena.extra == NULL, "the arena did not grow to its high-water mark");
    float *first = TENSOR_NEW(&c, 1000)->data;
    ctx_reset(&c);
    CHECK(TENSOR_NEW(&c, 1000)->data == first, "a reset arena does not reuse its memory");
    printf("arena high-water %zu bytes, block %zu bytes\n", hw, c.arena.cap);

    /* Workspaces released after each use do not add up: 10 ops of 40 kB each, with and without
     * overflow blocks, peak at one workspace. */
    ctx_reset(&c);
    Tensor *keep = TENSOR_NEW(&c, 100);
    for (int i = 0; i < 10; i++) {
        ArenaMark m = arena_mark(&c.arena);
        float *ws = arena_alloc(&c.arena, (i % 2 ? 40000 : 400000) * sizeof(float));
        ws[0] = 1;
        arena_release(&c.arena, m);
    }
    size_t peak = c.arena.step_peak;
    CHECK(peak < 1700000, "released workspaces still add up: step peak %zu bytes", peak);
    CHECK(TENSOR_NEW(&c, 100)->data == keep->data + 128, "allocation after release does not reuse the space");
    ctx_free(&c);

    /* Overflow blocks are address space that nobody fills: a step that outgrows a 4 kB arena by
     * 64 MB has only what it wrote in memory, whatever MALLOC_PERTURB_ (which `meson test` sets)
     * says. (Malloc'd 1 GB blocks were written whole by glibc under MALLOC_PERTURB_: this test
     * took 38 s on an EPYC; they would be resident here.) */
    ctx_init(&c, 4096);
    for (int i = 0; i < 64; i++) {
        Tensor *t = TENSOR_NEW(&c, 1 << 18);
        memset(t->data, 0, t->n * sizeof(float));
    }
    size_t used = arena_used(&c.arena), resident = arena_resident(&c.arena);
    CHECK(resident <= used + ((size_t)1 << 20) && resident >= used / 2,
          "%zu bytes in use, %zu resident in overflow blocks", used, resident);
    printf("arena overflow: %zu bytes in use, %zu resident (MALLOC_PERTURB_=%s)\n", used, resident,
           getenv("MALLOC_PERTURB_") ? getenv("MALLOC_PERTURB_") : "unset");
    ctx_free(&c);

    /* A step whose overflow is a workspace given back before the step ends (as an op's im2col
     * buffer is) still grows the main block at the reset, and the pages the first step touched are
     * those of the next steps: the block it overflowed into is the main block now. (Once the reset
     * grew only when an overflow block was still attached, and every step of `cmlab eval` mapped
     * and faulted its workspace afresh; a fresh main block would fault them all a second time.)
     * Page faults are counted over the three steps and their resets (glibc's MALLOC_PERTURB_ fill
     * of a malloc'd block happens in the reset). */
    const size_t ws = (size_t)64 << 20, pages = ws / 4096;   /* 64 MB: past glibc's largest mmap threshold */
    ctx_init(&c, 4096);
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    for (int step = 0; step < 3; step++) {
        ArenaMark m = arena_mark(&c.arena);
        memset(arena_alloc(&c.arena, ws), step + 1, ws);
        arena_release(&c.arena, m);
        ctx_reset(&c);
        CHECK(c.arena.cap >= ws, "after step %d of a released 64 MB workspace the main block has %zu bytes", step,
              c.arena.cap);
    }
    getrusage(RUSAGE_SELF, &r1);
    long faults = r1.ru_minflt - r0.ru_minflt;
    CHECK(faults < (long)(pages + pages / 4), "three steps of a released 64 MB workspace: %ld page faults (%zu pages)",
          faults, pages);
    printf("arena: three steps of a released 64 MB workspace: %ld page faults (%zu pages)\n", faults, pages);
    ctx_free(&c);
}

/* After a sweep only leaves hold gradients; a second, identical sweep reuses the released
 * buffers and so needs no more arena than the first, and gives exactly twice the leaf gradient. */
static void test_grad_reuse(void)
{
    Ctx c;
    ctx_init(&c, 1 << 16);
    float *xv = randn(4096, 40), gx[4096] = {0}, first[4096];
    Tensor *x = tensor_wrap(&c, xv, gx, 1, SHAPE(4096), true);
    Tensor *h = x, *mid[8];
    for (int i = 0; i < 8; i++) mid[i] = h = op_silu(&c, op_scale(&c, h, 0.9f, 0.1f));
    Tensor *loss = op_sum(&c, h);
    tape_backward(&c, loss, NULL);
    int held = 0;
    for (int i = 0; i < 8; i++) held += mid[i]->grad != NULL;
    CHECK(held == 0, "%d intermediates still hold a gradient after the sweep", held);
    memcpy(first, gx, sizeof first);
    size_t used = arena_used(&c.arena);
    tape_backward(&c, loss, NULL);
    /* The second sweep starts a fresh free list: at most one set of live buffers more. */
    CHECK(arena_used(&c.arena) - used <= 3 * 4096 * sizeof(float) + 1024,
          "a second sweep took %zu more bytes", arena_used(&c.arena) - used);
    int bad = 0;
    for (int i = 0; i < 4096; i++) bad += gx[i] != 2 * first[i];
    CHECK(bad == 0, "%d leaf gradients are not exactly doubled by the second sweep", bad);
    free(xv);
    ctx_free(&c);
}

/* cm_expf against libm's expf: relative error within 4 float ulps over the range, clamped
 * beyond it to finite, positive values. */
static void test_expf(void)
{
    double worst = 0;
    for (int i = 0; i <= 200000; i++) {
        float x = -87.0f + 175.0f * (float)i / 200000.0f;
        double ref = exp((double)x), e = fabs(cm_expf(x) - ref) / ref;
        if (e > worst) worst = e;
    }
    CHECK(worst < 4 * 6e-8, "cm_expf: worst relative error %.3g on [-87, 88]", worst);
    CHECK(isfinite(cm_expf(1000.0f)) && cm_expf(1000.0f) > 1e38f, "cm_expf(1000) = %g", cm_expf(1000.0f));
    CHECK(cm_expf(-1000.0f) >= 0 && cm_expf(-1000.0f) < 2e-38f, "cm_expf(-1000) = %g", cm_expf(-1000.0f));
    CHECK(cm_sigmoidf(-1000.0f) < 1e-37f && cm_sigmoidf(1000.0f) == 1.0f, "cm_sigmoidf saturates wrongly");
    printf("cm_expf: worst relative error %.3g on [-87, 88]\n", worst);
}

/* cm_set_threads(0) (train.threads = 0) is OpenMP's default: OMP_NUM_THREADS, else every core. */
static void test_default_threads(void)
{
    const char *saved = getenv("OMP_NUM_THREADS");
    char keep[32];
    snprintf(keep, sizeof keep, "%s", saved ? saved : "");
    unsetenv("OMP_NUM_THREADS");
    cm_set_threads(0);
    CHECK(cm_threads() == omp_get_num_procs(), "cm_set_threads(0) without OMP_NUM_THREADS: %d threads, %d cores",
          cm_threads(), omp_get_num_procs());
    setenv("OMP_NUM_THREADS", "3", 1);
    cm_set_threads(0);
    CHECK(cm_threads() == 3, "cm_set_threads(0) with OMP_NUM_THREADS=3: %d threads", cm_threads());
    if (saved) setenv("OMP_NUM_THREADS", keep, 1);
    else unsetenv("OMP_NUM_THREADS");
}

int main(void)
{
    test_default_threads();
    cm_set_threads(2);
    test_grad_reuse();
    test_expf();
    test_accumulate();
    test_no_grad();
    test_requires_grad();
    test_shape_errors();
    test_arena();
    return test_summary("autograd");
}

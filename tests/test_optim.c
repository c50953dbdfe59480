/* test_optim.c: Adam, AdamW, RAdam, lr warm-up, gradient clipping and the EMAs against PyTorch
 * 1.13 (tests/torch/optim.py, fixture in argv[1]): the same initial weights and 20 steps of the
 * same gradients, every step's weights compared, then the final moments, the clip norms, the
 * warm-up learning rates, RAdam's rho_t (its first steps take the un-rectified branch) and EDM's
 * half-life rates. Also: the checks can tell the optimisers apart, slice padding stays zero, and
 * results are bit-identical for 1, 2 and 3 threads.
 *
 * Tolerance: REL_TOL = 1e-6 on rel_error (max|a-b| / max|b|), per parameter slice, so that a
 * tensor of small gradients is not hidden by a large one. optim.c follows PyTorch op for op in
 * float32, so the errors seen are 0 or a few float32 ulps (6e-8 each); clipping adds the ulp of a
 * norm summed in another order, warm-up the float rounding of the learning rate.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fixture.h"
#include "nn/optim.h"
#include "nn/params.h"

#define STEPS 20
#define NPARAMS 3
#define REL_TOL 1e-6
#define REL_FLOOR 1e-12

/* The fixture's flat arrays concatenate the tensors without gaps; cmlab's buffer pads every
 * slice to 16 floats. */
typedef struct Layout {
    ParamSet ps;
    size_t n;                    /* unpadded floats in a fixture row */
    float *init;                 /* ps.total floats */
} Layout;

static void scatter(const Layout *L, const float *flat, float *buf)
{
    size_t off = 0;
    for (int i = 0; i < L->ps.count; i++) {
        const Param *p = &L->ps.items[i];
        memcpy(buf + p->offset, flat + off, p->n * sizeof(float));
        off += p->n;
    }
}

static double attr_required(Fixture *f, const char *obj, const char *attr)
{
    double x = fixture_attr_double(f, obj, attr, NAN);
    CM_ASSERT(!isnan(x), "fixture %s: %s has no attribute %s", f->path, obj, attr);
    return x;
}

/* fixture_read converts to float; rates and learning rates are compared in double. */
static double *read_f64(Fixture *f, const char *name, size_t n)
{
    hid_t d = H5Dopen2(f->file, name, H5P_DEFAULT);
    CM_ASSERT(d >= 0, "fixture %s: no dataset %s", f->path, name);
    hid_t sp = H5Dget_space(d);
    CM_ASSERT((size_t)H5Sget_simple_extent_npoints(sp) == n, "fixture %s: %s has %lld elements, "
              "expected %zu", f->path, name, (long long)H5Sget_simple_extent_npoints(sp), n);
    double *buf = cm_malloc(n * sizeof(double));
    CM_ASSERT(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0,
              "fixture %s: cannot read %s", f->path, name);
    H5Sclose(sp);
    H5Dclose(d);
    return buf;
}

static float *read_rows(Fixture *f, const char *name, int rows, size_t n)
{
    int ndim, shape[4];
    float *x = fixture_read(f, name, &ndim, shape);
    size_t got = 1;
    for (int d = 0; d < ndim; d++) got *= (size_t)shape[d];
    CM_ASSERT(got == (size_t)rows * n, "fixture %s: %s has %zu floats, expected %d x %zu",
              f->path, name, got, rows, n);
    return x;
}

static void layout_load(Layout *L, Fixture *f)
{
    params_init(&L->ps);
    L->n = 0;
    float *parts[NPARAMS];
    for (int i = 0; i < NPARAMS; i++) {
        char name[16];
        int ndim, shape[4];
        snprintf(name, sizeof name, "/init/p%d", i);
        parts[i] = fixture_read(f, name, &ndim, shape);
        params_add(&L->ps, name + 6, ndim, shape, PARAM_INIT_ZERO, 1);
        L->n += L->ps.items[i].n;
    }
    L->init = params_buffer(&L->ps);
    for (int i = 0; i < NPARAMS; i++) {
        const Param *p = &L->ps.items[i];
        memcpy(L->init + p->offset, parts[i], p->n * sizeof(float));
        free(parts[i]);
    }
}

/* Worst per-slice rel_error of got (padded) against want (a fixture row); counts the elements
 * that are bit-identical. */
static double compare(const Layout *L, const float *got, const float *want, size_t *identical)
{
    double worst = 0;
    size_t off = 0;
    for (int i = 0; i < L->ps.count; i++) {
        const Param *p = &L->ps.items[i];
        worst = fmax(worst, rel_error(got + p->offset, want + off, p->n, REL_FLOOR));
        for (size_t k = 0; k < p->n; k++)
            if (identical && got[p->offset + k] == want[off + k]) (*identical)++;
        off += p->n;
    }
    return worst;
}

static bool padding_is_zero(const Layout *L, const float *buf)
{
    for (int i = 0; i < L->ps.count; i++) {
        const Param *p = &L->ps.items[i];
        size_t end = i + 1 < L->ps.count ? L->ps.items[i + 1].offset : L->ps.total;
        for (size_t k = p->offset + p->n; k < end; k++)
            if (buf[k] != 0) return false;
    }
    return true;
}

typedef struct RunResult {
    double w_err;                /* worst over the steps */
    int w_worst_step;
    size_t identical, compared;
    double m_err, v_err;
    bool padding_zero;
} RunResult;

/* Replays /run/<name> with the optimiser `kind` (normally the run's own) and compares. Warm-up,
 * clipping and RAdam checks that depend only on the fixture run when `check` is set. */
static RunResult replay(Fixture *f, const Layout *L, const char *name, OptimKind kind, bool check)
{
    char obj[64], path[96], kind_name[16];
    snprintf(obj, sizeof obj, "/run/%s", name);
    CM_ASSERT(fixture_attr_str(f, obj, "kind", kind_name, sizeof kind_name),
              "fixture %s: %s has no kind", f->path, obj);
    float lr = (float)attr_required(f, obj, "lr");
    float beta1 = (float)attr_required(f, obj, "beta1"), beta2 = (float)attr_required(f, obj, "beta2");
    float eps = (float)attr_required(f, obj, "eps");
    float wd = (float)attr_required(f, obj, "weight_decay");
    long warmup = fixture_attr_int(f, obj, "warmup", -1);
    double max_norm = attr_required(f, obj, "max_norm");
    CM_ASSERT(warmup >= 0, "fixture %s: %s has no warmup", f->path, obj);

    snprintf(path, sizeof path, "%s/grads", obj);
    float *grads = read_rows(f, path, STEPS, L->n);
    snprintf(path, sizeof path, "%s/w", obj);
    float *w_ref = read_rows(f, path, STEPS, L->n);
    snprintf(path, sizeof path, "%s/m", obj);
    float *m_ref = read_rows(f, path, 1, L->n);
    snprintf(path, sizeof path, "%s/v", obj);
    float *v_ref = read_rows(f, path, 1, L->n);
    snprintf(path, sizeof path, "%s/lr", obj);
    double *lr_ref = read_f64(f, path, STEPS);
    float *norm_ref = NULL;
    if (max_norm > 0) {
        snprintf(path, sizeof path, "%s/norm", obj);
        norm_ref = read_rows(f, path, STEPS, 1);
    }
    double *rho_ref = NULL;
    if (strcmp(kind_name, "radam") == 0) {
        snprintf(path, sizeof path, "%s/rho", obj);
        rho_ref = read_f64(f, path, STEPS);
    }

    Adam a;
    optim_init(&a, kind, L->ps.total, lr, beta1, beta2, eps, wd);
    float *w = params_buffer(&L->ps), *g = params_buffer(&L->ps);
    memcpy(w, L->init, L->ps.total * sizeof(float));
    RunResult r = { .w_worst_step = 1 };
    double lr_err = 0, norm_err = 0, rho_err = 0;
    int clipped = 0, unrectified = 0, branch_mismatch = 0;
    for (int k = 0; k < STEPS; k++) {
        scatter(L, grads + (size_t)k * L->n, g);
        if (max_norm > 0) {
            double norm = grad_clip(g, L->ps.total, max_norm);
            norm_err = fmax(norm_err, fabs(norm - norm_ref[k]) / norm_ref[k]);
            clipped += max_norm / (norm + 1e-6) < 1;
        }
        if (warmup > 0) a.lr = optim_warmup_lr(lr, a.step, warmup);
        lr_err = fmax(lr_err, fabs(a.lr - lr_ref[k]) / lr);   /* relative to the base lr */
        if (rho_ref) {
            double rho = radam_rho(beta2, k + 1);
            rho_err = fmax(rho_err, fabs(rho - rho_ref[k]) / fabs(rho_ref[k]));
            unrectified += rho_ref[k] <= 5;
            branch_mismatch += (rho > 5) != (rho_ref[k] > 5);
        }
        adam_step(&a, w, g);
        double e = compare(L, w, w_ref + (size_t)k * L->n, &r.identical);
        if (e > r.w_err) {
            r.w_err = e;
            r.w_worst_step = k + 1;
        }
    }
    r.compared = (size_t)STEPS * L->n;
    r.m_err = compare(L, a.m, m_ref, NULL);
    r.v_err = compare(L, a.v, v_ref, NULL);
    r.padding_zero = padding_is_zero(L, w) && padding_is_zero(L, a.m) && padding_is_zero(L, a.v);

    if (check) {
        printf("  %-12s %-6s weights rel error %.2e", name, optim_kind_name(kind), r.w_err);
        if (r.w_err > 0) printf(" (worst at step %d)", r.w_worst_step);
        printf(", %zu of %zu floats bit-identical; m %.2e, v %.2e\n", r.identical, r.compared,
               r.m_err, r.v_err);
        CHECK(r.w_err <= REL_TOL, "%s: weights rel error %.2e at step %d > %.0e", name, r.w_err,
              r.w_worst_step, REL_TOL);
        CHECK(r.m_err <= REL_TOL, "%s: exp_avg rel error %.2e > %.0e", name, r.m_err, REL_TOL);
        CHECK(r.v_err <= REL_TOL, "%s: exp_avg_sq rel error %.2e > %.0e", name, r.v_err, REL_TOL);
        CHECK(r.padding_zero, "%s: the padding between slices of w, m or v is not zero", name);
        CHECK(a.step == STEPS, "%s: step counter %ld after %d steps", name, a.step, STEPS);
        CHECK(lr_err <= 1e-7, "%s: learning rate rel error %.2e against torch", name, lr_err);
        if (warmup > 0) {
            printf("  %-12s        warm-up lr rel error %.2e (lr of step 1: %g)\n", name, lr_err,
                   lr_ref[0]);
            CHECK(lr_ref[0] == 0 && optim_warmup_lr(lr, 0, warmup) == 0,
                  "%s: the first update of a warm-up should have lr 0 (torch %g, cmlab %g)",
                  name, lr_ref[0], optim_warmup_lr(lr, 0, warmup));
            CHECK(lr_ref[warmup] == (double)lr && optim_warmup_lr(lr, warmup, warmup) == lr,
                  "%s: the warm-up should end at step %ld", name, warmup + 1);
        }
        if (max_norm > 0) {
            printf("  %-12s        clip norm rel error %.2e; %d of %d steps clipped\n", name,
                   norm_err, clipped, STEPS);
            CHECK(norm_err <= REL_TOL, "%s: clip norm rel error %.2e", name, norm_err);
            CHECK(clipped > 0 && clipped < STEPS, "%s: %d of %d steps clipped: the fixture should "
                  "have steps on both sides of max_norm", name, clipped, STEPS);
        }
        if (rho_ref) {
            printf("  %-12s        rho_t rel error %.2e; steps 1-%d un-rectified\n", name,
                   rho_err, unrectified);
            CHECK(rho_err <= 1e-14, "%s: rho_t rel error %.2e", name, rho_err);
            CHECK(branch_mismatch == 0, "%s: %d steps took the other rectification branch",
                  name, branch_mismatch);
            CHECK(unrectified >= 2 && unrectified < STEPS, "%s: %d un-rectified steps: both "
                  "branches must be covered", name, unrectified);
        }
    }
    adam_free(&a);
    free(w);
    free(g);
    free(grads);
    free(w_ref);
    free(m_ref);
    free(v_ref);
    free(lr_ref);
    free(norm_ref);
    free(rho_ref);
    return r;
}

/* The comparisons can fail: replaying a run with the wrong optimiser misses by far. */
static void check_sensitivity(Fixture *f, const Layout *L)
{
    static const struct { const char *run; OptimKind wrong; } cases[] = {
        { "adamw", OPTIM_ADAM },         /* L2 in place of decoupled decay */
        { "adam_wd", OPTIM_ADAMW },
        { "radam", OPTIM_ADAM },
        { "radam_wd", OPTIM_ADAM },
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
        RunResult r = replay(f, L, cases[i].run, cases[i].wrong, false);
        printf("  %-12s as %-6s weights rel error %.2e (must exceed 1000 x tolerance)\n",
               cases[i].run, optim_kind_name(cases[i].wrong), r.w_err);
        CHECK(r.w_err > 1000 * REL_TOL, "%s replayed as %s: rel error only %.2e", cases[i].run,
              optim_kind_name(cases[i].wrong), r.w_err);
    }
}

static void test_emas(Fixture *f, const Layout *L)
{
    float rates[4];
    int nrates = fixture_attr_floats(f, "/ema", "rates", rates, 4);
    CM_ASSERT(nrates == 2, "fixture %s: /ema has %d rates, expected 2", f->path, nrates);
    double halflife = attr_required(f, "/ema", "halflife_images");
    double ramp = attr_required(f, "/ema", "rampup_ratio");
    long batch = fixture_attr_int(f, "/ema", "batch", -1);
    CM_ASSERT(batch > 0, "fixture %s: /ema has no batch", f->path);
    float *online = read_rows(f, "/ema/w", STEPS, L->n);
    float *ref[3];
    ref[0] = read_rows(f, "/ema/rate_0", STEPS, L->n);
    ref[1] = read_rows(f, "/ema/rate_1", STEPS, L->n);
    ref[2] = read_rows(f, "/ema/halflife", STEPS, L->n);
    double *beta_ref = read_f64(f, "/ema/beta", STEPS);

    EmaSet s;
    ema_set_init(&s, L->ps.total);
    int idx[3] = { ema_set_add_rate(&s, rates[0], L->init), ema_set_add_rate(&s, rates[1], L->init),
                   ema_set_add_halflife(&s, halflife, ramp, L->init) };
    float *w = params_buffer(&L->ps);
    double err[3] = { 0 }, beta_err = 0;
    int below_half = 0, above_half = 0;
    for (int k = 0; k < STEPS; k++) {
        double images = (double)k * (double)batch;
        double beta = ema_set_beta(&s, idx[2], images, batch);
        beta_err = fmax(beta_err, fabs(beta - beta_ref[k]));
        below_half += beta > 0 && beta < 0.5;
        above_half += beta >= 0.5;
        scatter(L, online + (size_t)k * L->n, w);
        ema_set_update(&s, w, images, batch);
        for (int e = 0; e < 3; e++)
            err[e] = fmax(err[e], compare(L, s.items[idx[e]].w, ref[e] + (size_t)k * L->n, NULL));
    }
    for (int e = 0; e < 3; e++) {
        const Ema *m = &s.items[idx[e]];
        printf("  ema %-9s weights rel error %.2e over %d steps\n", m->name, err[e], STEPS);
        CHECK(err[e] <= REL_TOL, "EMA %s: rel error %.2e > %.0e", m->name, err[e], REL_TOL);
        CHECK(padding_is_zero(L, m->w), "EMA %s: padding not zero", m->name);
    }
    printf("  ema %-9s beta abs error %.2e; %d steps with 0 < beta < 0.5, %d with beta >= 0.5\n",
           s.items[idx[2]].name, beta_err, below_half, above_half);
    CHECK(beta_err <= 1e-15, "EDM beta differs from training_loop.py's by %.2e", beta_err);
    CHECK(beta_ref[0] == 0, "EDM's first ramped update should copy the weights (beta %g)",
          beta_ref[0]);
    CHECK(below_half > 0 && above_half > 0, "both torch.lerp formulas must be covered (%d, %d)",
          below_half, above_half);
    CHECK(strcmp(s.items[idx[0]].name, "0.9") == 0 && strcmp(s.items[idx[2]].name, "hl64") == 0,
          "EMA names \"%s\", \"%s\"", s.items[idx[0]].name, s.items[idx[2]].name);

    ema_set_free(&s);
    free(w);
    free(online);
    for (int e = 0; e < 3; e++) free(ref[e]);
    free(beta_ref);
}

static void test_clip_semantics(void)
{
    float g[2] = { 3, 4 };
    double norm = grad_clip(g, 2, 0);
    CHECK(norm == 5 && g[0] == 3 && g[1] == 4, "max_norm 0 must not clip (norm %g, g %g %g)",
          norm, g[0], g[1]);
    grad_clip(g, 2, 10);
    CHECK(g[0] == 3 && g[1] == 4, "a norm below max_norm must not clip (g %g %g)", g[0], g[1]);
    grad_clip(g, 2, 5);
    CHECK(g[0] < 3 && g[0] > 2.999998f, "norm == max_norm clips by max_norm / (norm + 1e-6) as "
          "torch does (g %.9g)", g[0]);
    g[0] = 3;
    g[1] = 4;
    grad_clip(g, 2, 1);
    CHECK(fabsf(g[0] - 0.6f) < 1e-6f && fabsf(g[1] - 0.8f) < 1e-6f, "clip to 1: g %g %g",
          g[0], g[1]);
    CHECK(grad_clip(g, 0, 1) == 0, "the norm of nothing is 0");
}

static void test_api(void)
{
    Adam a;
    adam_init(&a, 8, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, true);
    CHECK(a.kind == OPTIM_ADAMW, "adam_init(decoupled) gives kind %d", (int)a.kind);
    adam_free(&a);
    adam_init(&a, 8, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, false);
    CHECK(a.kind == OPTIM_ADAM, "adam_init(!decoupled) gives kind %d", (int)a.kind);
    adam_free(&a);
    for (int k = 0; k < OPTIM_KIND_COUNT; k++)
        CHECK(optim_kind_parse(optim_kind_name(k)) == k, "kind %d does not round-trip", k);
    CHECK(optim_kind_parse("sgd") == -1, "an unknown optimiser name must be refused");
    CHECK(optim_warmup_lr(0.5f, 3, 0) == 0.5f && optim_warmup_lr(0.5f, 1, 4) == 0.125f,
          "warm-up lr: %g %g", optim_warmup_lr(0.5f, 3, 0), optim_warmup_lr(0.5f, 1, 4));
    EmaSet s;
    float w[3] = { 1, 2, 3 };
    ema_set_init(&s, 3);
    int i = ema_set_add_rate(&s, 0.9999f, w);
    int j = ema_set_add_rate(&s, 0.9999432f, w);
    CHECK(strcmp(s.items[i].name, "0.9999") == 0 && strcmp(s.items[j].name, "0.9999432") == 0,
          "EMA names \"%s\" \"%s\"", s.items[i].name, s.items[j].name);
    ema_set_free(&s);
}

/* Simple deterministic values in [-1, 1) for the thread test. */
static void fill(float *x, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)(seed >> 8) * (1.0f / 8388608.0f) - 1.0f;
    }
}

/* Buffers large enough for the OpenMP paths give the same bits for 1, 2 and 3 threads. */
static void test_threads(void)
{
    const size_t n = 3 * 16384 + 7;
    float *w0 = cm_malloc(n * sizeof(float)), *g = cm_malloc(n * sizeof(float));
    fill(w0, n, 1);
    fill(g, n, 2);
    int saved = omp_get_max_threads();
    for (int kind = 0; kind < OPTIM_KIND_COUNT; kind++) {
        float *w[3], *m[3], *v[3];
        for (int t = 0; t < 3; t++) {
            omp_set_num_threads(t + 1);
            Adam a;
            optim_init(&a, kind, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f);
            w[t] = cm_malloc(n * sizeof(float));
            memcpy(w[t], w0, n * sizeof(float));
            for (int k = 0; k < 8; k++) adam_step(&a, w[t], g);
            m[t] = a.m;
            v[t] = a.v;
        }
        bool same = true;
        for (int t = 1; t < 3; t++)
            same = same && !memcmp(w[t], w[0], n * 4) && !memcmp(m[t], m[0], n * 4) &&
                   !memcmp(v[t], v[0], n * 4);
        CHECK(same, "%s: results differ between 1, 2 and 3 threads", optim_kind_name(kind));
        for (int t = 0; t < 3; t++) {
            free(w[t]);
            free(m[t]);
            free(v[t]);
        }
    }
    double norm[3];
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1);
        norm[t] = grad_norm(g, n);
    }
    CHECK(norm[0] == norm[1] && norm[0] == norm[2], "grad_norm differs between thread counts: "
          "%.17g %.17g %.17g", norm[0], norm[1], norm[2]);
    omp_set_num_threads(saved);
    printf("  threads: Adam, AdamW, RAdam and grad_norm bit-identical for 1, 2, 3 threads "
           "(n = %zu)\n", n);
    free(w0);
    free(g);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s optim.h5 (written by tests/torch/optim.py)\n", argv[0]);
        return 2;
    }
    Fixture f;
    fixture_open(&f, argv[1]);
    Layout L;
    layout_load(&L, &f);
    printf("optimisers against PyTorch 1.13, %d steps, %zu floats in %d tensors (%zu padded)\n",
           STEPS, L.n, L.ps.count, L.ps.total);
    static const struct { const char *run; OptimKind kind; } runs[] = {
        { "adam", OPTIM_ADAM }, { "adam_wd", OPTIM_ADAM }, { "adamw", OPTIM_ADAMW },
        { "radam", OPTIM_RADAM }, { "radam_wd", OPTIM_RADAM }, { "adam_warmup", OPTIM_ADAM },
        { "adam_clip", OPTIM_ADAM },
    };
    for (size_t i = 0; i < CM_ARRAY_LEN(runs); i++) {
        char obj[64], kind[16];
        snprintf(obj, sizeof obj, "/run/%s", runs[i].run);
        CM_ASSERT(fixture_attr_str(&f, obj, "kind", kind, sizeof kind), "fixture: no %s", obj);
        CHECK(optim_kind_parse(kind) == (int)runs[i].kind, "%s: fixture kind %s", obj, kind);
        replay(&f, &L, runs[i].run, runs[i].kind, true);
    }
    check_sensitivity(&f, &L);
    test_emas(&f, &L);
    test_clip_semantics();
    test_api();
    test_threads();
    fixture_close(&f);
    free(L.init);
    params_free(&L.ps);
    return test_summary("optim");
}

/* eval.c: evaluating a checkpoint (eval.h): its samples' Frechet distance or a classifier's test
 * accuracy, each with its record; the metric's baselines. */
#include "eval.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/rundir.h"
#include "autograd/gemm_bf16.h"
#include "autograd/rng.h"
#include "autograd/streams.h"
#include "data/image.h"
#include "io/checkpoint.h"
#include "train/amed_predictor.h"
#include "train/model.h"
#include "sample/sample.h"
#include "sample/schedule.h"

enum { GRID_MAX = 64 };

static void now_utc(char *buf, size_t n)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Samples clamped to [-1, 1] and rounded to 8 bits, as saved PNGs would be (and as real images
 * reach the classifier). */
static void quantize(float *x, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        float v = x[k] < -1.0f || x[k] != x[k] ? -1.0f : x[k] > 1.0f ? 1.0f : x[k];
        x[k] = (float)(lrintf((v + 1.0f) * 127.5f) / 127.5 - 1.0);
    }
}

static void times_text(const double *t, int n, bool to_zero, char *out, size_t len)
{
    size_t k = 0;
    out[0] = '\0';
    for (int i = 0; i < n && k < len; i++) k += (size_t)snprintf(out + k, len - k, "%s%.6g", i ? "," : "", t[i]);
    if (to_zero && k < len) snprintf(out + k, len - k, ",0");
}

int eval_predictor_path(const Config *ev, int nfe, char *out, size_t len)
{
    const char *p = ev->eval.predictor, *at = strstr(p, "{nfe}");
    int n = at ? snprintf(out, len, "%.*s%d%s", (int)(at - p), p, nfe, at + strlen("{nfe}"))
               : snprintf(out, len, "%s", p);
    return n >= 0 && (size_t)n < len ? 0 : cm_fail("eval.predictor = %s: the path is too long", p);
}

/* The settings of the AMED predictor at `path` for the teacher of configuration mcfg; -1 after
 * cm_fail(). */
static int predictor_settings(const Config *mcfg, const char *path, AmedSettings *s)
{
    Config pc;
    if (model_read_config(path, &pc) != 0) return -1;
    if (pc.experiment.method != CFG_METHOD_AMED)
        return cm_fail("eval.predictor = %s: a method = %s checkpoint, not an AMED predictor", path,
                       config_method_name(pc.experiment.method));
    return amed_settings_from_config(&pc, mcfg, s);
}

/* eval_sampler of an eval.predictor: sampler "amed" (AMED-Solver) or "amed_<plugin>". */
static int eval_sampler_amed(const Config *mcfg, const Config *ev, int nfe, EvalRecord *r)
{
    AmedSettings s;
    char path[CFG_PATH_MAX + 16];
    if (eval_predictor_path(ev, nfe, path, sizeof path) != 0 || predictor_settings(mcfg, path, &s) != 0) return -1;
    if (nfe != amed_nfe(&s))
        return cm_fail("eval.predictor = %s samples at its own %d NFE, not %d (leave eval.nfe empty, or put {nfe} "
                       "in the path to pick one predictor per NFE)", path, amed_nfe(&s), nfe);
    double *grid = cm_malloc((size_t)s.N * sizeof(double));
    int rc = schedule_steps(s.schedule, s.N, s.sigma_min, s.sigma_max, s.rho, grid);
    if (rc == 0) times_text(grid, s.N, false, r->times, sizeof r->times);
    free(grid);
    if (s.plugin == AMED_PLUGIN_SOLVER) snprintf(r->sampler, sizeof r->sampler, "amed");
    else snprintf(r->sampler, sizeof r->sampler, "amed_%s", amed_plugin_names[s.plugin]);
    snprintf(r->schedule, sizeof r->schedule, "%s", schedule_kind_name(s.schedule));
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(r->options, sizeof r->options, "rho=%g,afs=%d,max_order=%d,predictor=%.100s", s.rho, s.afs, s.max_order,
             base);
    return rc;
}

int eval_nfes(const Config *mcfg, const Config *ev, ModelKind kind, int *nfe)
{
    for (int i = 0; i < ev->eval.nfe.n; i++) nfe[i] = ev->eval.nfe.v[i];
    if (ev->eval.nfe.n > 0) return ev->eval.nfe.n;
    if (!ev->eval.predictor[0]) return sample_default_nfes(kind, ev, nfe);
    AmedSettings s;
    if (strstr(ev->eval.predictor, "{nfe}"))
        return cm_fail("eval.predictor = %s names one predictor per NFE: list the NFEs in eval.nfe",
                       ev->eval.predictor);
    if (predictor_settings(mcfg, ev->eval.predictor, &s) != 0) return -1;
    nfe[0] = amed_nfe(&s);
    return 1;
}

/* eval_sampler without the precision. */
static int sampler_record(const Config *mcfg, const Config *ev, int nfe, ModelKind kind, EvalRecord *r)
{
    r->nfe = nfe;
    r->options[0] = '\0';
    if (ev->eval.predictor[0]) return eval_sampler_amed(mcfg, ev, nfe, r);
    SamplePlan p;
    if (sample_plan(&p, kind, mcfg, ev, nfe)) return -1;
    if (p.kind == MODEL_CONSISTENCY) {
        times_text(p.times, p.ntimes, false, r->times, sizeof r->times);
        snprintf(r->sampler, sizeof r->sampler, "%s", p.jumps ? "bcm_jumps" : "consistency");
        snprintf(r->schedule, sizeof r->schedule, "%s",
                 p.ntimes == 1 ? "T" : ev->sample.times.n >= p.ntimes ? "sample.times" : "T,mid_t");
        return 0;
    }
    SolverOpts o = p.o;
    int steps = solver_resolve_steps(p.solver, &o);
    if (steps < 0) return -1;
    double *grid = cm_malloc((size_t)steps * sizeof(double));
    int rc = schedule_steps(o.schedule, steps, o.sigma_min, o.sigma_max, o.rho, grid);
    if (rc == 0) times_text(grid, steps, o.denoise_to_zero, r->times, sizeof r->times);
    free(grid);
    snprintf(r->sampler, sizeof r->sampler, "%s", solver_kind_name(p.solver));
    snprintf(r->schedule, sizeof r->schedule, "%s", schedule_kind_name(o.schedule));
    /* What the times do not show; every solver's, so a record reads the same whichever it used. */
    snprintf(r->options, sizeof r->options,
             "rho=%g,afs=%d,denoise_to_zero=%d,ipndm_order=%d,lower_order_final=%d,thresholding=%d,"
             "dpmpp3m_corrected=%d", o.rho, o.afs, o.denoise_to_zero, o.ipndm_order, o.lower_order_final,
             o.thresholding, o.dpmpp3m_corrected);
    return rc;
}

int eval_sampler(const Config *mcfg, const Config *ev, int nfe, ModelKind kind, EvalRecord *r)
{
    if (sampler_record(mcfg, ev, nfe, kind, r)) return -1;
    if (gemm_precision_usable(ev->model.precision) == CM_PRECISION_BF16) {   /* fp32 records stay as they were */
        size_t len = strlen(r->options);
        snprintf(r->options + len, sizeof r->options - len, "%sprecision=bf16", len ? "," : "");
    }
    return 0;
}

/* Fills the parts of r common to every record of a checkpoint and feature network. */
static void record_begin(EvalRecord *r, const char *metric, const char *path, long step, const Config *mcfg,
                         const char *weights, const FeatureNet *f)
{
    memset(r, 0, sizeof *r);
    snprintf(r->metric, sizeof r->metric, "%s", metric);
    snprintf(r->checkpoint, sizeof r->checkpoint, "%s", path);
    r->step = step;
    snprintf(r->method, sizeof r->method, "%s", config_method_name(mcfg->experiment.method));
    snprintf(r->weights, sizeof r->weights, "%s", weights);
    snprintf(r->feature_net, sizeof r->feature_net, "%s", f->path);
    snprintf(r->feature_hash, sizeof r->feature_hash, "sha256:%s", f->hash);
    snprintf(r->feature_weights, sizeof r->feature_weights, "%s", f->weights);
    snprintf(r->dataset, sizeof r->dataset, "%s", config_enum_name("data.dataset", mcfg->data.dataset));
    r->value = NAN;
    r->sample_seconds = r->feature_seconds = 0;
    now_utc(r->date, sizeof r->date);
}

long eval_checkpoint_step(const char *path)
{
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    long step = -1;
    if (sscanf(base, "step_%ld.h5", &step) != 1) step = -1;
    return step;
}

/* Stores the record: eval.json, then the checkpoint. */
static int record_commit(const EvalRecord *r, const char *run_dir, bool stamp)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/eval.json", run_dir);
    if (eval_json_append(path, r, 1)) return -1;
    if (stamp && eval_record_stamp(r)) return -1;
    return 0;
}

static int eval_classifier(const char *path, const Config *mcfg, const Config *ev, const char *run_dir, bool stamp,
                           EvalRecord *r, Ctx *ctx)
{
    FeatureNet f;
    Dataset test = {0};
    int rc = feature_net_load(&f, path, ev->eval.weights);
    const char *kind = config_enum_name("data.dataset", mcfg->data.dataset);
    if (rc == 0) rc = dataset_load(&test, kind, mcfg->data.path[0] ? mcfg->data.path : NULL, "test");
    double acc = 0, t0 = cm_now();
    if (rc == 0) rc = eval_accuracy(&f.net, f.w, &test, ctx, &acc);
    if (rc == 0) {
        record_begin(r, "test_accuracy", path, eval_checkpoint_step(path), mcfg, f.weights, &f);
        r->value = acc;
        snprintf(r->reference, sizeof r->reference, "test");
        r->reference_n = test.n;
        r->feature_seconds = cm_now() - t0;
        printf("%s: test accuracy %.4f (%d images of %s, %s weights, sha256 %.16s...)\n", path, acc, test.n,
               test.source, f.weights, f.hash);
        rc = record_commit(r, run_dir, stamp);
    }
    dataset_free(&test);
    feature_net_free(&f);
    return rc;
}

int eval_checkpoint(const char *path, const Config *ev, const char *run_dir, bool stamp, EvalRecord *records,
                    int max, int *count)
{
    *count = 0;
    Config mcfg;
    if (model_read_config(path, &mcfg) || cm_mkdir_p(run_dir)) return -1;
    int rc;
    Ctx ctx;
    ctx_init(&ctx, 64u << 20);
    const Method *method;
    if (method_get(&mcfg, &method) != 0) {
        ctx_free(&ctx);
        return cm_fail("%s: %s", path, cm_errmsg());
    }
    if (mcfg.experiment.method == CFG_METHOD_AMED) {
        ctx_free(&ctx);
        return cm_fail("%s is an AMED predictor: evaluate its teacher (%s) with eval.predictor = %s", path,
                       mcfg.amed.teacher, path);
    }
    if (method->model == MODEL_FEATURE_NET) {
        EvalRecord r;
        rc = eval_classifier(path, &mcfg, ev, run_dir, stamp, &r, &ctx);
        if (rc == 0 && records && max > 0) records[0] = r;
        if (rc == 0) *count = 1;
        ctx_free(&ctx);
        return rc;
    }
    if (!ev->eval.features[0]) {
        ctx_free(&ctx);
        return cm_fail("no feature network: give --features CLASSIFIER.h5 (a method = classifier checkpoint "
                       "trained on %s) or set eval.features", config_enum_name("data.dataset", mcfg.data.dataset));
    }
    /* The NFEs, checked before anything expensive happens. */
    ModelKind mk = method->model;
    int nfes[CFG_LIST_MAX], nn = eval_nfes(&mcfg, ev, mk, nfes);
    if (nn < 0) {
        ctx_free(&ctx);
        return cm_fail("%s: %s", path, cm_errmsg());
    }
    for (int i = 0; i < nn; i++) {
        EvalRecord probe;
        if (eval_sampler(&mcfg, ev, nfes[i], mk, &probe)) {
            ctx_free(&ctx);
            return cm_fail("%s: %s", path, cm_errmsg());
        }
    }
    FeatureNet f;
    FdStats ref = {0};
    Model m = {0};
    Config lcfg;
    char cache[1100];
    rc = feature_net_load(&f, ev->eval.features, NULL);
    if (rc == 0 && f.cfg.data.dataset != mcfg.data.dataset)
        rc = cm_fail("%s was trained on %s, the checkpoint %s on %s: the feature network must know the data set",
                     f.path, config_enum_name("data.dataset", f.cfg.data.dataset), path,
                     config_enum_name("data.dataset", mcfg.data.dataset));
    const char *kind = config_enum_name("data.dataset", mcfg.data.dataset);
    if (rc == 0) rc = fd_reference_stats(&f, kind, mcfg.data.path, "train", &ctx, &ref, cache, sizeof cache, NULL);
    if (rc == 0) rc = model_load(&m, &lcfg, path, ev->eval.weights);
    if (rc != 0) {
        model_free(&m);
        fd_stats_free(&ref);
        feature_net_free(&f);
        ctx_free(&ctx);
        return -1;
    }
    int n = ev->eval.n, D = f.net.cfg.features;
    size_t dim = (size_t)m.C * m.H * m.W;
    float *x = cm_malloc((size_t)n * dim * sizeof(float)), *feat = cm_malloc((size_t)n * D * sizeof(float));
    Sampler s = model_sampler(&m, &ctx);
    const CmPrecision precision = gemm_precision_usable(ev->model.precision);
    char samples_dir[1100];
    snprintf(samples_dir, sizeof samples_dir, "%s/samples", run_dir);
    rc = cm_mkdir_p(samples_dir);
    for (int i = 0; i < nn && rc == 0; i++) {
        EvalRecord r;
        record_begin(&r, "fd", path, eval_checkpoint_step(path), &mcfg, m.weights_name, &f);
        snprintf(r.reference, sizeof r.reference, "train");
        r.reference_n = ref.n;
        r.n = n;
        r.seed = ev->eval.seed;
        double t0 = cm_now();
        rc = eval_sampler(&mcfg, ev, nfes[i], mk, &r);
        if (rc != 0) break;
        printf("%s: %d samples, %s, NFE %d ...\n", path, n, r.sampler, nfes[i]);
        fflush(stdout);
        /* The checkpoint's noise range, the evaluation's sampler. */
        SamplePlan p;
        SolverStats st = {0};
        AmedPredictor pred = {0};
        char ppath[CFG_PATH_MAX + 16];
        if (ev->eval.predictor[0]) {
            rc = eval_predictor_path(ev, nfes[i], ppath, sizeof ppath);
            if (rc == 0) rc = amed_predictor_load(&pred, ppath, &m, &lcfg, path);
            p = sample_plan_amed(&pred);
        } else {
            rc = sample_plan(&p, mk, &mcfg, ev, nfes[i]);
        }
        ctx.precision = precision;   /* the sampler's passes only: the feature network stays fp32 */
        if (rc == 0) rc = sample_draw(&s, &p, n, (uint64_t)ev->eval.seed, x, &st);
        ctx.precision = CM_PRECISION_FP32;
        amed_predictor_free(&pred);
        if (rc != 0) break;
        CM_ASSERT(st.nfe == r.nfe, "eval: the sampler made %d calls, not %d", st.nfe, r.nfe);
        r.sample_seconds = cm_now() - t0;
        quantize(x, (size_t)n * dim);
        /* Named as the record, so two samplers' grids never share a file. */
        char name[256];
        eval_record_name(&r, name, sizeof name);
        snprintf(r.grid, sizeof r.grid, "samples/eval_%s.png", name + strlen("/eval/"));
        char grid_path[1700];
        snprintf(grid_path, sizeof grid_path, "%s/%s", run_dir, r.grid);
        rc = image_write_grid(grid_path, x, CM_MIN(n, GRID_MAX), m.C, m.H, m.W, 8, 2);
        if (rc != 0) break;
        t0 = cm_now();
        eval_features(&f, x, n, m.C, m.H, m.W, &ctx, feat);
        FdStats gen;
        fd_stats_compute(feat, n, D, &gen);
        rc = fd_distance(&gen, &ref, &r.value);
        fd_stats_free(&gen);
        r.feature_seconds = cm_now() - t0;
        if (rc != 0) break;
        printf("  FD %.4f (n %d vs %ld training images; sampling %.1f s, features %.1f s)\n", r.value, n, ref.n,
               r.sample_seconds, r.feature_seconds);
        rc = record_commit(&r, run_dir, stamp);
        if (rc == 0 && records && *count < max) records[*count] = r;
        if (rc == 0) (*count)++;
    }
    free(x);
    free(feat);
    model_free(&m);
    fd_stats_free(&ref);
    feature_net_free(&f);
    ctx_free(&ctx);
    return rc;
}

/* ---- baselines ---- */

int eval_baselines(const FeatureNet *f, int n, int seed, Ctx *ctx)
{
    const char *kind = config_enum_name("data.dataset", f->cfg.data.dataset);
    const char *dpath = f->cfg.data.path;
    FdStats ref = {0};
    if (fd_reference_stats(f, kind, dpath, "train", ctx, &ref, NULL, 0, NULL)) return -1;
    Dataset test;
    if (dataset_load(&test, kind, dpath[0] ? dpath : NULL, "test") != 0) {
        fd_stats_free(&ref);
        return -1;
    }
    n = CM_MIN(n, test.n);
    int D = f->net.cfg.features;
    size_t dim = (size_t)test.c * f->H * f->W;
    float *x = cm_malloc((size_t)n * dim * sizeof(float)), *feat = cm_malloc((size_t)n * D * sizeof(float));
    const char *names[3] = {"test split", "uniform noise", "shuffled pixels"};
    const char *metrics[3] = {"fd_test_split", "fd_uniform_noise", "fd_shuffled_pixels"};
    EvalRecord rs[3];
    int rc = 0;
    printf("Frechet distance against the training split (%ld images), n = %d, feature network %s (sha256 %.16s...)\n",
           ref.n, n, f->path, f->hash);
    for (int b = 0; b < 3 && rc == 0; b++) {
        eval_dataset_images(&test, 0, n, f->H, f->W, x);
        Rng r = {(uint64_t)seed, STREAM_EVAL, (uint32_t)b};
        if (b == 1) {
            rng_uniform(&r, x, n, 0, dim);
            for (size_t k = 0; k < (size_t)n * dim; k++) x[k] = 2 * x[k] - 1;
            quantize(x, (size_t)n * dim);
        } else if (b == 2) {
            /* Fisher-Yates per image with the image's own random numbers: the same pixels, no
             * structure. */
            uint32_t *u = cm_malloc(dim * sizeof(uint32_t));
            for (int i = 0; i < n; i++) {
                rng_u32(&r, u, 1, i, dim);
                float *img = x + (size_t)i * dim;
                for (size_t k = dim - 1; k > 0; k--) {
                    size_t j = u[k] % (k + 1);
                    float t = img[k];
                    img[k] = img[j];
                    img[j] = t;
                }
            }
            free(u);
        }
        eval_features(f, x, n, test.c, f->H, f->W, ctx, feat);
        FdStats s;
        fd_stats_compute(feat, n, D, &s);
        EvalRecord *e = &rs[b];
        memset(e, 0, sizeof *e);
        snprintf(e->metric, sizeof e->metric, "%s", metrics[b]);
        rc = fd_distance(&s, &ref, &e->value);
        fd_stats_free(&s);
        snprintf(e->checkpoint, sizeof e->checkpoint, "%s", test.source);
        snprintf(e->method, sizeof e->method, "baseline");
        snprintf(e->feature_net, sizeof e->feature_net, "%s", f->path);
        snprintf(e->feature_hash, sizeof e->feature_hash, "sha256:%s", f->hash);
        snprintf(e->feature_weights, sizeof e->feature_weights, "%s", f->weights);
        snprintf(e->dataset, sizeof e->dataset, "%s", kind);
        snprintf(e->reference, sizeof e->reference, "train");
        e->reference_n = ref.n;
        e->n = n;
        e->seed = seed;
        e->step = -1;
        now_utc(e->date, sizeof e->date);
        if (rc == 0) printf("  %-16s FD %10.4f\n", names[b], e->value);
    }
    char dir[1024], path[1100];
    rundir_of_checkpoint(f->path, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/eval.json", dir);
    if (rc == 0) rc = eval_json_append(path, rs, 3);
    free(x);
    free(feat);
    dataset_free(&test);
    fd_stats_free(&ref);
    return rc;
}

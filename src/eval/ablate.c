/* ablate.c: `cmlab ablate` (ablate.h): variants, their runs and evaluations, results.csv,
 * results.md and report.html. */
#include "ablate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/atomic.h"
#include "io/checkpoint.h"
#include "eval/eval.h"
#include "train/model.h"
#include "train/trainer.h"

enum { CURVE_MAX = 4096 };

typedef struct Variant {
    Config cfg;
    char label[320];             /* "ct.loss=l2,ct.weighting=ict", or "base" */
    char name[64];               /* its directory under the ablation's */
    char run_dir[512];
    char values[CFG_SWEEP_MAX][CFG_SWEEP_TEXT];   /* the swept keys' values in this variant */
    /* results */
    char status[96];
    char ckpt[700];              /* the checkpoint evaluated */
    long steps;
    double loss, seconds;
    int nnfe;
    int nfe[CFG_LIST_MAX];
    double fd[CFG_LIST_MAX];
    char grid[CFG_LIST_MAX][EVAL_TEXT];
} Variant;

/* ---- variants ---- */

/* s with every character a run name cannot hold replaced by '_'. */
static void sanitize(char *s)
{
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._-", *s)) *s = '_';
}

static void variant_finish(Variant *v, const Config *base, int index, const char *dir)
{
    v->loss = v->seconds = NAN;   /* until metrics.jsonl says (never, for eval.checkpoint) */
    size_t len = (size_t)snprintf(v->name, sizeof v->name, "%02d", index);
    for (int s = 0; s < base->sweep.count; s++) {
        config_format(&v->cfg, base->sweep.keys[s].key, v->values[s], sizeof v->values[s]);
        char part[CFG_SWEEP_TEXT];
        snprintf(part, sizeof part, "%s", v->values[s]);
        sanitize(part);
        if (len < sizeof v->name - 1) len += (size_t)snprintf(v->name + len, sizeof v->name - len, "-%s", part);
    }
    v->name[CFG_NAME_MAX - 1] = '\0';
    memset(v->cfg.experiment.name, 0, sizeof v->cfg.experiment.name);
    snprintf(v->cfg.experiment.name, sizeof v->cfg.experiment.name, "%s", v->name);
    memset(v->cfg.experiment.out_dir, 0, sizeof v->cfg.experiment.out_dir);
    snprintf(v->cfg.experiment.out_dir, sizeof v->cfg.experiment.out_dir, "%s", dir);
    snprintf(v->run_dir, sizeof v->run_dir, "%s/%s", dir, v->name);
    memset(&v->cfg.sweep, 0, sizeof v->cfg.sweep);
}

/* The variants of base as ablate.h describes; malloc'd array, count returned, -1 after cm_fail(). */
static int variants_make(const Config *base, const char *dir, Variant **out)
{
    if (strlen(dir) + 1 + CFG_NAME_MAX > CFG_PATH_MAX - 1)
        return cm_fail("%s: too long for the variants' experiment.out_dir (at most %d characters)", dir,
                       CFG_PATH_MAX - 2 - CFG_NAME_MAX);
    int count = 0;
    Variant *vs;
    if (base->eval.sweep == CFG_SWEEP_GRID) {
        count = config_sweep_count(base);
        vs = cm_calloc((size_t)count, sizeof *vs);
        for (int i = 0; i < count; i++) {
            if (config_sweep_variant(base, i, &vs[i].cfg, vs[i].label, sizeof vs[i].label)) {
                free(vs);
                return -1;
            }
            if (!vs[i].label[0]) snprintf(vs[i].label, sizeof vs[i].label, "base");
        }
    } else {
        int most = 2;
        for (int s = 0; s < base->sweep.count; s++) most += base->sweep.keys[s].count;
        vs = cm_calloc((size_t)most, sizeof *vs);
        vs[count].cfg = *base;
        snprintf(vs[count++].label, sizeof vs[0].label, "base");
        const CfgKey *keys = config_keys(&(int){0});
        for (int s = 0; s < base->sweep.count; s++) {
            const CfgKey *k = &keys[base->sweep.keys[s].key];
            char own[CFG_SWEEP_TEXT], value[CFG_SWEEP_TEXT], assign[CFG_SWEEP_TEXT + 64];
            config_format(base, base->sweep.keys[s].key, own, sizeof own);
            for (int j = 0; j < base->sweep.keys[s].count; j++) {
                config_sweep_value(base, s, j, value, sizeof value);
                Variant *v = &vs[count];
                v->cfg = *base;
                snprintf(assign, sizeof assign, "%s.%s=%s", k->section, k->key, value);
                if (config_set(&v->cfg, assign)) {
                    free(vs);
                    return -1;
                }
                char now[CFG_SWEEP_TEXT];
                config_format(&v->cfg, base->sweep.keys[s].key, now, sizeof now);
                if (strcmp(now, own) == 0) continue;   /* the base already has this value */
                snprintf(v->label, sizeof v->label, "%s.%s=%s", k->section, k->key, now);
                count++;
            }
        }
        /* With several keys, last the combination of every key at its last value (the full
         * method of a table that adds its changes one at a time: CT -> iCT). */
        if (base->sweep.count > 1) {
            Variant *v = &vs[count];
            v->cfg = *base;
            size_t len = (size_t)snprintf(v->label, sizeof v->label, "all:");
            for (int s = 0; s < base->sweep.count; s++) {
                const CfgKey *k = &keys[base->sweep.keys[s].key];
                char value[CFG_SWEEP_TEXT], assign[CFG_SWEEP_TEXT + 64];
                config_sweep_value(base, s, base->sweep.keys[s].count - 1, value, sizeof value);
                snprintf(assign, sizeof assign, "%s.%s=%s", k->section, k->key, value);
                if (config_set(&v->cfg, assign)) {
                    free(vs);
                    return -1;
                }
                if (len < sizeof v->label)
                    len += (size_t)snprintf(v->label + len, sizeof v->label - len, "%s%s", s ? "," : " ", assign);
            }
            count++;
        }
    }
    for (int i = 0; i < count; i++) variant_finish(&vs[i], base, i, dir);
    *out = vs;
    return count;
}

/* ---- one variant: train, evaluate ---- */

/* The newest valid checkpoint of the variant's run into path; its step, or -1 when there is none. */
static long newest_checkpoint(const Variant *v, char *path, size_t len)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ckpt", v->run_dir);
    DIR *d = opendir(dir);
    if (!d) return -1;
    long steps[256];
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < (int)CM_ARRAY_LEN(steps);) {
        long step;
        char tail[8];
        if (sscanf(e->d_name, "step_%ld.%7s", &step, tail) == 2 && !strcmp(tail, "h5")) steps[n++] = step;
    }
    closedir(d);
    long best = -1;
    while (best < 0 && n > 0) {
        int k = 0;
        for (int i = 1; i < n; i++)
            if (steps[i] > steps[k]) k = i;
        snprintf(path, len, "%s/step_%08ld.h5", dir, steps[k]);
        if (ckpt_verify(path) == 0) best = steps[k];
        steps[k] = steps[--n];
    }
    return best;
}

/* 0 when the variant's run directory holds no config.ini or this variant's own resolved
 * configuration: a finished or half-finished run of another configuration must not pass for it. */
static int variant_same_config(const Variant *v)
{
    char path[600];
    snprintf(path, sizeof path, "%s/config.ini", v->run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char *want = config_to_string(&v->cfg), *have = cm_calloc(strlen(want) + 2, 1);
    size_t n = fread(have, 1, strlen(want) + 1, f);
    fclose(f);
    int rc = n == strlen(want) && memcmp(have, want, n) == 0 ? 0
           : cm_fail("%s holds a run of another configuration than this variant's (the experiment file or "
                     "a --set changed since it ran): remove that directory to rerun the variant, or restore "
                     "the settings it was run with", path);
    free(want);
    free(have);
    return rc;
}

/* Trains the variant unless its final checkpoint exists: CM_EXIT_*. */
static int variant_train(Variant *v)
{
    if (variant_same_config(v)) return CM_EXIT_INPUT;
    char path[700];
    long step = newest_checkpoint(v, path, sizeof path);
    if (step == v->cfg.train.iterations) {
        printf("ablate: %s: trained (%s)\n", v->name, path);
        return CM_EXIT_OK;
    }
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ckpt", v->run_dir);
    struct stat st;
    bool resume = stat(dir, &st) == 0;
    printf("ablate: %s: %s (%s)\n", v->name, resume ? "resuming" : "training", v->label);
    fflush(stdout);
    return trainer_run(&v->cfg, resume);
}

/* Whether r is the evaluation the variant asks for at this NFE of checkpoint ckpt. */
static bool record_matches(const EvalRecord *r, const Variant *v, const Config *mcfg, const char *ckpt,
                           const char *weights, int nfe)
{
    EvalRecord want;
    const Method *m = method_find(mcfg->experiment.method);
    if (!m || eval_sampler(mcfg, &v->cfg, nfe, m->model, &want)) return false;
    return !strcmp(r->metric, "fd") && !strcmp(r->checkpoint, ckpt) && r->n == v->cfg.eval.n &&
           r->seed == v->cfg.eval.seed && r->nfe == nfe && !strcmp(r->sampler, want.sampler) &&
           !strcmp(r->schedule, want.schedule) && !strcmp(r->times, want.times) &&
           !strcmp(r->options, want.options) &&
           !strcmp(r->feature_net, v->cfg.eval.features) && !strcmp(r->weights, weights) && isfinite(r->value);
}

/* The NFEs the variant evaluates (eval.h's defaults). */
static int variant_nfes(const Variant *v, const Config *mcfg, int *nfe)
{
    int n = v->cfg.eval.nfe.n;
    for (int i = 0; i < n; i++) nfe[i] = v->cfg.eval.nfe.v[i];
    const Method *m = method_find(mcfg->experiment.method);
    if (n == 0 && m) n = sample_default_nfes(m->model, &v->cfg, nfe);
    return n;
}

/* Fills the variant's FD columns from its eval.json; returns how many NFEs have a record. */
static int variant_results(Variant *v, const Config *mcfg)
{
    char path[600], group[64];
    snprintf(path, sizeof path, "%s/eval.json", v->run_dir);
    v->nnfe = variant_nfes(v, mcfg, v->nfe);
    for (int i = 0; i < v->nnfe; i++) v->fd[i] = NAN, v->grid[i][0] = '\0';
    if (model_weights_group(v->ckpt, v->cfg.eval.weights, group)) return 0;
    EvalRecord *rs = NULL;
    int n = eval_json_read(path, &rs), found = 0;
    for (int i = 0; i < v->nnfe; i++)
        for (int k = n - 1; k >= 0; k--)   /* the newest record of a setting counts */
            if (record_matches(&rs[k], v, mcfg, v->ckpt, group, v->nfe[i])) {
                v->fd[i] = rs[k].value;
                snprintf(v->grid[i], sizeof v->grid[i], "%s", rs[k].grid);
                found++;
                break;
            }
    free(rs);
    return found;
}

/* The last logged step, loss and time of metrics.jsonl. */
static void variant_metrics(Variant *v)
{
    char path[600], line[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", v->run_dir);
    FILE *f = fopen(path, "r");
    v->loss = v->seconds = NAN;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        const char *l = strstr(line, "\"loss\": "), *s = strstr(line, "\"step\": "), *t = strstr(line, "\"time\": ");
        if (!l || !s) continue;
        v->loss = atof(l + 8);
        v->steps = atol(s + 8);
        if (t) v->seconds = atof(t + 8);
    }
    fclose(f);
}

/* Trains (unless eval.checkpoint is set), evaluates what is missing and fills the results. */
static int variant_run(Variant *v, const AblateOpts *o)
{
    bool external = v->cfg.eval.checkpoint[0] != 0;
    if (cm_mkdir_p(v->run_dir)) return CM_EXIT_INPUT;
    if (external) {
        snprintf(v->ckpt, sizeof v->ckpt, "%s", v->cfg.eval.checkpoint);
        char path[600];
        snprintf(path, sizeof path, "%s/config.ini", v->run_dir);
        char tmp[700];
        FILE *f = atomic_open(path, tmp, sizeof tmp);
        if (!f || atomic_commit(f, tmp, path, config_write(&v->cfg, f) == 0) != 0) return CM_EXIT_INPUT;
    } else {
        if (!o->report_only) {
            int rc = variant_train(v);
            if (trainer_stop_requested) return CM_EXIT_RUNTIME;
            if (rc == CM_EXIT_INPUT) return rc;
            if (rc != CM_EXIT_OK) {
                snprintf(v->status, sizeof v->status, "training failed (exit %d)", rc);
                variant_metrics(v);
                return CM_EXIT_RUNTIME;
            }
        }
        long step = newest_checkpoint(v, v->ckpt, sizeof v->ckpt);
        variant_metrics(v);
        if (step < 0) {
            snprintf(v->status, sizeof v->status, "not trained");
            return CM_EXIT_OK;
        }
        if (step < v->cfg.train.iterations)
            snprintf(v->status, sizeof v->status, "stopped at step %ld", step);
    }
    Config mcfg;
    if (model_read_config(v->ckpt, &mcfg)) return CM_EXIT_INPUT;
    if (external) v->steps = eval_checkpoint_step(v->ckpt);
    int have = variant_results(v, &mcfg);
    if (have < v->nnfe && !o->report_only) {
        if (!v->cfg.eval.features[0]) {
            cm_fail("%s: no feature network to evaluate with: set eval.features (a method = classifier "
                    "checkpoint)", v->name);
            return CM_EXIT_INPUT;
        }
        /* Only the NFEs without a record; train.threads also sets the evaluation's threads. */
        Config ev = v->cfg;
        ev.eval.nfe.n = 0;
        for (int i = 0; i < v->nnfe; i++)
            if (!isfinite(v->fd[i])) ev.eval.nfe.v[ev.eval.nfe.n++] = v->nfe[i];
        printf("ablate: %s: evaluating %s (%d NFE)\n", v->name, v->ckpt, ev.eval.nfe.n);
        fflush(stdout);
        cm_set_threads(v->cfg.train.threads);
        int count;
        if (eval_checkpoint(v->ckpt, &ev, v->run_dir, true, NULL, 0, &count)) return CM_EXIT_INPUT;
        have = variant_results(v, &mcfg);
    } else if (have == v->nnfe) {
        printf("ablate: %s: evaluated\n", v->name);
    }
    if (!v->status[0]) snprintf(v->status, sizeof v->status, have == v->nnfe ? "done" : "not evaluated");
    return CM_EXIT_OK;
}

/* ---- tables ---- */

static void csv_field(FILE *f, const char *s)
{
    bool quote = strpbrk(s, ",\"\n") != NULL;
    if (!quote) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void fmt_num(char *buf, size_t n, double v, const char *fmt)
{
    if (isfinite(v)) snprintf(buf, n, fmt, v);
    else snprintf(buf, n, "-");
}

/* The NFE columns: the union of every variant's NFEs, in first-seen order. */
static int nfe_columns(const Variant *vs, int n, int *cols)
{
    int nc = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < vs[i].nnfe; k++) {
            bool seen = false;
            for (int c = 0; c < nc; c++) seen |= cols[c] == vs[i].nfe[k];
            if (!seen && nc < CFG_LIST_MAX * 4) cols[nc++] = vs[i].nfe[k];
        }
    return nc;
}

static double fd_at(const Variant *v, int nfe)
{
    for (int k = 0; k < v->nnfe; k++)
        if (v->nfe[k] == nfe) return v->fd[k];
    return NAN;
}

static int write_csv(const char *path, const Config *base, const Variant *vs, int n)
{
    char tmp[800];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    const CfgKey *keys = config_keys(&(int){0});
    int cols[CFG_LIST_MAX * 4], nc = nfe_columns(vs, n, cols);
    fprintf(f, "index,variant,status");
    for (int s = 0; s < base->sweep.count; s++)
        fprintf(f, ",%s.%s", keys[base->sweep.keys[s].key].section, keys[base->sweep.keys[s].key].key);
    fprintf(f, ",steps,final_loss,train_seconds");
    for (int c = 0; c < nc; c++) fprintf(f, ",fd_nfe%d", cols[c]);
    fprintf(f, "\n");
    for (int i = 0; i < n; i++) {
        const Variant *v = &vs[i];
        char num[64];
        fprintf(f, "%d,", i);
        csv_field(f, v->name);
        fputc(',', f);
        csv_field(f, v->status);
        for (int s = 0; s < base->sweep.count; s++) {
            fputc(',', f);
            csv_field(f, v->values[s]);
        }
        fmt_num(num, sizeof num, v->loss, "%.6g");
        fprintf(f, ",%ld,%s", v->steps, num);
        fmt_num(num, sizeof num, v->seconds, "%.1f");
        fprintf(f, ",%s", num);
        for (int c = 0; c < nc; c++) {
            fmt_num(num, sizeof num, fd_at(v, cols[c]), "%.6g");
            fprintf(f, ",%s", num);
        }
        fprintf(f, "\n");
    }
    return atomic_commit(f, tmp, path, !ferror(f));
}

/* The leading comment block of the experiment file (its claim), without the comment marks. */
static char *header_comment(const char *exp_path)
{
    FILE *f = fopen(exp_path, "r");
    char *out = cm_calloc(1, 1);
    size_t len = 0;
    if (!f) return out;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (*p != '#' && *p != ';') break;
        p++;
        if (*p == ' ') p++;
        size_t n = strlen(p);
        out = realloc(out, len + n + 1);
        CM_ASSERT(out, "out of memory");
        memcpy(out + len, p, n + 1);
        len += n;
    }
    fclose(f);
    return out;
}

static int write_md(const char *path, const char *exp_path, const char *claim, const Config *base,
                    const Variant *vs, int n)
{
    char tmp[800];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    const CfgKey *keys = config_keys(&(int){0});
    int cols[CFG_LIST_MAX * 4], nc = nfe_columns(vs, n, cols);
    fprintf(f, "# Ablation %s\n\nExperiment file: `%s`; %d variants (%s); FD: Frechet distance in the "
               "features of `%s`, n = %d generated samples against the training split.\n\n",
            base->experiment.name, exp_path, n, base->eval.sweep == CFG_SWEEP_GRID ? "grid" : "one at a time",
            base->eval.features, base->eval.n);
    if (claim[0]) {
        for (const char *p = claim; *p;) {
            const char *nl = strchr(p, '\n');
            int len = nl ? (int)(nl - p) : (int)strlen(p);
            fprintf(f, "> %.*s\n", len, p);
            p += len + (nl != NULL);
        }
        fprintf(f, "\n");
    }
    fprintf(f, "| # | variant | status |");
    for (int s = 0; s < base->sweep.count; s++)
        fprintf(f, " %s.%s |", keys[base->sweep.keys[s].key].section, keys[base->sweep.keys[s].key].key);
    fprintf(f, " steps | final loss |");
    for (int c = 0; c < nc; c++) fprintf(f, " FD NFE %d |", cols[c]);
    fprintf(f, "\n|---|---|---|");
    for (int s = 0; s < base->sweep.count; s++) fprintf(f, "---|");
    fprintf(f, "---|---|");
    for (int c = 0; c < nc; c++) fprintf(f, "---|");
    fprintf(f, "\n");
    for (int i = 0; i < n; i++) {
        const Variant *v = &vs[i];
        char num[64];
        fprintf(f, "| %d | %s | %s |", i, v->label, v->status);
        for (int s = 0; s < base->sweep.count; s++) fprintf(f, " %s |", v->values[s]);
        fmt_num(num, sizeof num, v->loss, "%.4g");
        fprintf(f, " %ld | %s |", v->steps, num);
        for (int c = 0; c < nc; c++) {
            fmt_num(num, sizeof num, fd_at(v, cols[c]), "%.3f");
            fprintf(f, " %s |", num);
        }
        fprintf(f, "\n");
    }
    return atomic_commit(f, tmp, path, !ferror(f));
}

/* ---- report.html ---- */

static void html_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

typedef struct Series {
    const char *name;
    const double *x, *y;
    int n;
} Series;

static const char *const PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                                      "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"};

/* A line chart as inline SVG: one polyline per series, axes with five ticks each, a legend.
 * logy: the y axis in log10 (non-positive values are left out). */
static void svg_chart(FILE *f, const char *title, const char *xlabel, const char *ylabel, const Series *s, int ns,
                      bool logy)
{
    const double W = 640, H = 360, L = 70, R = 170, T = 30, B = 50;
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int i = 0; i < ns; i++)
        for (int k = 0; k < s[i].n; k++) {
            double y = s[i].y[k];
            if (!isfinite(y) || (logy && y <= 0)) continue;
            y = logy ? log10(y) : y;
            x0 = fmin(x0, s[i].x[k]), x1 = fmax(x1, s[i].x[k]);
            y0 = fmin(y0, y), y1 = fmax(y1, y);
        }
    fprintf(f, "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"11\">\n", W, H, W, H);
    fprintf(f, "<text x=\"%.0f\" y=\"18\" font-size=\"13\" font-weight=\"bold\">", L);
    html_text(f, title);
    fprintf(f, "</text>\n");
    if (!(x0 <= x1)) {
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\">no data yet</text></svg>\n", L, H / 2);
        return;
    }
    if (x1 == x0) x0 -= 1, x1 += 1;
    if (y1 == y0) y0 -= 0.5, y1 += 0.5;
    double pad = 0.05 * (y1 - y0);
    y0 -= pad, y1 += pad;
#define PX(x) (L + ((x) - x0) / (x1 - x0) * (W - L - R))
#define PY(y) (H - B - ((y) - y0) / (y1 - y0) * (H - T - B))
    fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", L, T,
            W - L - R, H - T - B);
    for (int k = 0; k <= 4; k++) {
        double xv = x0 + (x1 - x0) * k / 4, yv = y0 + (y1 - y0) * k / 4;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.0f\" x2=\"%.1f\" y2=\"%.0f\" stroke=\"#ddd\"/>", PX(xv), T, PX(xv), H - B);
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.4g</text>\n", PX(xv), H - B + 15, xv);
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#ddd\"/>", L, PY(yv), W - R, PY(yv));
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n", L - 5, PY(yv) + 4,
                logy ? pow(10, yv) : yv);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", (L + W - R) / 2, H - 12);
    html_text(f, xlabel);
    fprintf(f, "</text>\n<text transform=\"translate(16 %.0f) rotate(-90)\" text-anchor=\"middle\">", (T + H - B) / 2);
    html_text(f, ylabel);
    fprintf(f, "%s</text>\n", logy ? " (log scale)" : "");
    for (int i = 0; i < ns; i++) {
        const char *color = PALETTE[i % CM_ARRAY_LEN(PALETTE)];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
        for (int k = 0; k < s[i].n; k++) {
            double y = s[i].y[k];
            if (!isfinite(y) || (logy && y <= 0)) continue;
            fprintf(f, "%.1f,%.1f ", PX(s[i].x[k]), PY(logy ? log10(y) : y));
        }
        fprintf(f, "\"/>\n");
        for (int k = 0; k < s[i].n && s[i].n <= 16; k++) {
            double y = s[i].y[k];
            if (!isfinite(y) || (logy && y <= 0)) continue;
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>", PX(s[i].x[k]), PY(logy ? log10(y) : y),
                    color);
        }
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                   "<text x=\"%.0f\" y=\"%.0f\">", W - R + 10, T + 8 + 16.0 * i, color, W - R + 27, T + 12 + 16.0 * i);
        html_text(f, s[i].name);
        fprintf(f, "</text>\n");
    }
#undef PX
#undef PY
    fprintf(f, "</svg>\n");
}

/* The logged (step, loss) pairs of a variant, at most CURVE_MAX (evenly thinned). */
static int loss_curve(const Variant *v, double *x, double *y)
{
    char path[600], line[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", v->run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0, stride = 1;
    long seen = 0;
    while (fgets(line, sizeof line, f)) {
        const char *l = strstr(line, "\"loss\": "), *s = strstr(line, "\"step\": ");
        if (!l || !s) continue;
        if (n == CURVE_MAX) {   /* keep every other point and double the stride */
            for (int k = 0; k < n / 2; k++) x[k] = x[2 * k], y[k] = y[2 * k];
            n /= 2;
            stride *= 2;
        }
        if (seen++ % stride) continue;
        x[n] = atof(s + 8);
        y[n++] = atof(l + 8);
    }
    fclose(f);
    return n;
}

static int write_html(const char *path, const char *exp_path, const char *claim, const Config *base,
                      const Variant *vs, int n)
{
    char tmp[800];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    const CfgKey *keys = config_keys(&(int){0});
    int cols[CFG_LIST_MAX * 4], nc = nfe_columns(vs, n, cols);
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cmlab ablation ");
    html_text(f, base->experiment.name);
    fprintf(f, "</title>\n<style>body{font-family:sans-serif;margin:24px;max-width:1400px}"
               "table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #bbb;padding:4px 8px;"
               "text-align:right}td.l,th.l{text-align:left}th{background:#eee}"
               "pre.claim{background:#f6f6f0;padding:10px;border-left:4px solid #aa8;white-space:pre-wrap}"
               "td.v{max-width:320px;overflow-wrap:anywhere}div.wide{overflow-x:auto}svg.chart{max-width:100%%;height:auto}"
               ".grids{display:flex;flex-wrap:wrap;gap:16px}.grid{text-align:center;font-size:12px;max-width:260px;"
               "overflow-wrap:anywhere}"
               ".grid img{image-rendering:pixelated;width:240px;border:1px solid #ccc}"
               "</style></head><body>\n<h1>Ablation ");
    html_text(f, base->experiment.name);
    fprintf(f, "</h1>\n<p>Experiment file <code>");
    html_text(f, exp_path);
    fprintf(f, "</code>, %d variants (%s). FD: Fr&eacute;chet distance in the features of <code>", n,
            base->eval.sweep == CFG_SWEEP_GRID ? "grid" : "one at a time");
    html_text(f, base->eval.features);
    fprintf(f, "</code>, n = %d samples (seed %d) against the training split; lower is better.</p>\n",
            base->eval.n, base->eval.seed);
    if (claim[0]) {
        fprintf(f, "<pre class=\"claim\">");
        html_text(f, claim);
        fprintf(f, "</pre>\n");
    }
    /* In a scrolling box: a sweep of many keys and NFEs is wider than the page. */
    fprintf(f, "<div class=\"wide\"><table id=\"results\"><tr><th>#</th><th class=\"l\">variant</th><th class=\"l\">status</th>");
    for (int s = 0; s < base->sweep.count; s++)
        fprintf(f, "<th class=\"l\">%s.%s</th>", keys[base->sweep.keys[s].key].section, keys[base->sweep.keys[s].key].key);
    fprintf(f, "<th>steps</th><th>final loss</th><th>train s</th>");
    for (int c = 0; c < nc; c++) fprintf(f, "<th>FD NFE %d</th>", cols[c]);
    fprintf(f, "</tr>\n");
    for (int i = 0; i < n; i++) {
        const Variant *v = &vs[i];
        char num[64];
        fprintf(f, "<tr class=\"variant\"><td>%d</td><td class=\"l v\">", i);
        html_text(f, v->label);
        fprintf(f, "</td><td class=\"l\">");
        html_text(f, v->status);
        fprintf(f, "</td>");
        for (int s = 0; s < base->sweep.count; s++) {
            fprintf(f, "<td class=\"l\">");
            html_text(f, v->values[s]);
            fprintf(f, "</td>");
        }
        fmt_num(num, sizeof num, v->loss, "%.4g");
        fprintf(f, "<td>%ld</td><td>%s</td>", v->steps, num);
        fmt_num(num, sizeof num, v->seconds, "%.0f");
        fprintf(f, "<td>%s</td>", num);
        for (int c = 0; c < nc; c++) {
            fmt_num(num, sizeof num, fd_at(v, cols[c]), "%.3f");
            fprintf(f, "<td>%s</td>", num);
        }
        fprintf(f, "</tr>\n");
    }
    fprintf(f, "</table></div>\n<h2>Samples</h2>\n");
    for (int c = 0; c < nc; c++) {
        fprintf(f, "<h3>NFE %d</h3>\n<div class=\"grids\">\n", cols[c]);
        for (int i = 0; i < n; i++)
            for (int k = 0; k < vs[i].nnfe; k++) {
                if (vs[i].nfe[k] != cols[c] || !vs[i].grid[k][0]) continue;
                fprintf(f, "<div class=\"grid\"><img src=\"");
                html_text(f, vs[i].name);
                fputc('/', f);
                html_text(f, vs[i].grid[k]);
                fprintf(f, "\" alt=\"");
                html_text(f, vs[i].label);
                fprintf(f, "\"><br>%d: ", i);
                html_text(f, vs[i].label);
                char num[32];
                fmt_num(num, sizeof num, vs[i].fd[k], "%.3f");
                fprintf(f, "<br>FD %s</div>\n", num);
            }
        fprintf(f, "</div>\n");
    }
    fprintf(f, "<h2>Curves</h2>\n");
    Series *ser = cm_calloc((size_t)n, sizeof *ser);
    double *xs = cm_malloc((size_t)n * CURVE_MAX * sizeof(double)), *ys = cm_malloc((size_t)n * CURVE_MAX * sizeof(double));
    int nser = 0;
    for (int i = 0; i < n; i++) {
        int m = loss_curve(&vs[i], xs + (size_t)nser * CURVE_MAX, ys + (size_t)nser * CURVE_MAX);
        if (m == 0) continue;
        ser[nser] = (Series){vs[i].label, xs + (size_t)nser * CURVE_MAX, ys + (size_t)nser * CURVE_MAX, m};
        nser++;
    }
    if (nser) svg_chart(f, "Training loss", "step", "loss", ser, nser, true);
    /* FD against NFE, one line per variant. */
    double nfx[CFG_LIST_MAX * 4];
    for (int c = 0; c < nc; c++) nfx[c] = cols[c];
    double *fy = cm_malloc((size_t)n * (nc ? nc : 1) * sizeof(double));
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < nc; c++) fy[(size_t)i * nc + c] = fd_at(&vs[i], cols[c]);
        ser[i] = (Series){vs[i].label, nfx, fy + (size_t)i * nc, nc};
    }
    if (nc) svg_chart(f, "Frechet distance against NFE", "NFE", "FD", ser, n, true);
    fprintf(f, "<p>Written by cmlab ablate; results.csv and results.md hold the same table.</p>\n</body></html>\n");
    free(ser);
    free(xs);
    free(ys);
    free(fy);
    return atomic_commit(f, tmp, path, !ferror(f));
}

static int write_outputs(const char *dir, const char *exp_path, const char *claim, const Config *base,
                         const Variant *vs, int n)
{
    char p[700];
    snprintf(p, sizeof p, "%s/results.csv", dir);
    if (write_csv(p, base, vs, n)) return -1;
    snprintf(p, sizeof p, "%s/results.md", dir);
    if (write_md(p, exp_path, claim, base, vs, n)) return -1;
    snprintf(p, sizeof p, "%s/report.html", dir);
    return write_html(p, exp_path, claim, base, vs, n);
}

int ablate_run(const char *exp_path, const Config *base, const AblateOpts *o)
{
    char dir[CFG_PATH_MAX + CFG_NAME_MAX + 2];
    snprintf(dir, sizeof dir, "%s/%s", base->experiment.out_dir, base->experiment.name);
    Variant *vs = NULL;
    int n = variants_make(base, dir, &vs);
    if (n < 0) {
        fprintf(stderr, "cmlab ablate: %s\n", cm_errmsg());
        return CM_EXIT_INPUT;
    }
    printf("ablate %s: %d variants (%s) in %s\n", exp_path, n,
           base->eval.sweep == CFG_SWEEP_GRID ? "grid" : "one at a time", dir);
    for (int i = 0; i < n; i++) printf("  %s  %s\n", vs[i].name, vs[i].label);
    if (o->list_only) {
        free(vs);
        return CM_EXIT_OK;
    }
    if (cm_mkdir_p(dir)) {
        fprintf(stderr, "cmlab ablate: %s\n", cm_errmsg());
        free(vs);
        return CM_EXIT_INPUT;
    }
    char *claim = header_comment(exp_path);
    int rc = CM_EXIT_OK;
    trainer_stop_requested = 0;
    for (int i = 0; i < n; i++) {
        bool chosen = o->nonly == 0;
        for (int k = 0; k < o->nonly; k++) chosen |= o->only[k] == i;
        AblateOpts oi = *o;
        oi.report_only |= !chosen;
        int r = variant_run(&vs[i], &oi);
        if (r == CM_EXIT_INPUT) {
            fprintf(stderr, "cmlab ablate: %s: %s\n", vs[i].name, cm_errmsg());
            rc = CM_EXIT_INPUT;
            break;
        }
        if (r != CM_EXIT_OK) rc = CM_EXIT_RUNTIME;
        if (write_outputs(dir, exp_path, claim, base, vs, i + 1)) {
            fprintf(stderr, "cmlab ablate: %s\n", cm_errmsg());
            rc = CM_EXIT_INPUT;
            break;
        }
        if (trainer_stop_requested) {
            printf("ablate: stopped on request after %s; run it again to go on\n", vs[i].name);
            break;
        }
    }
    if (rc != CM_EXIT_INPUT) printf("ablate: %s/results.csv, results.md, report.html\n", dir);
    free(claim);
    free(vs);
    return rc;
}

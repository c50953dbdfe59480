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
#include "eval/ablate_report.h"


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
        /* An empty value (eval.predictor of a plain solver) adds nothing: such a variant keeps the
         * name it had before the line was swept. */
        if (part[0] && len < sizeof v->name - 1) len += (size_t)snprintf(v->name + len, sizeof v->name - len, "-%s", part);
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
    if (base->eval.sweep != CFG_SWEEP_ONE_AT_A_TIME) {   /* grid or zip */
        count = config_sweep_count(base);
        if (count < 0) return -1;
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

/* Fills the variant's FD columns from its eval.json; returns how many NFEs have a record, or -1
 * after cm_fail() when its NFEs cannot be known (an unreadable eval.predictor). */
static int variant_results(Variant *v, const Config *mcfg)
{
    char path[600], group[64];
    snprintf(path, sizeof path, "%s/eval.json", v->run_dir);
    const Method *m = method_find(mcfg->experiment.method);
    v->nnfe = m ? eval_nfes(mcfg, &v->cfg, m->model, v->nfe) : 0;
    if (v->nnfe < 0) {
        v->nnfe = 0;
        return -1;
    }
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
    if (have < 0) return CM_EXIT_INPUT;
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
    printf("ablate %s: %d variants (%s) in %s\n", exp_path, n, ablate_mode_text(base->eval.sweep), dir);
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
        if (ablate_report_write(dir, exp_path, claim, base, vs, i + 1)) {
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

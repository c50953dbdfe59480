/* ablate_report.c: results.csv, results.md and report.html of an ablation (ablate_report.h). */
#include "ablate_report.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "eval/chart.h"
#include "io/atomic.h"

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
            base->experiment.name, exp_path, n, ablate_mode_text(base->eval.sweep),
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

/* report.html: the table, the sample grids, the curves, and with trajectories (a pca.svg of
 * `cmlab trajectories` in <dir>/trajectories/) that chart. */
static int write_html(const char *path, const char *exp_path, const char *claim, const Config *base,
                      const Variant *vs, int n, bool trajectories)
{
    char tmp[800];
    FILE *f = atomic_open(path, tmp, sizeof tmp);
    if (!f) return -1;
    const CfgKey *keys = config_keys(&(int){0});
    int cols[CFG_LIST_MAX * 4], nc = nfe_columns(vs, n, cols);
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>cmlab ablation ");
    chart_text(f, base->experiment.name);
    fprintf(f, "</title>\n<style>body{font-family:sans-serif;margin:24px;max-width:1400px}"
               "table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #bbb;padding:4px 8px;"
               "text-align:right}td.l,th.l{text-align:left}th{background:#eee}"
               "pre.claim{background:#f6f6f0;padding:10px;border-left:4px solid #aa8;white-space:pre-wrap}"
               "td.v{max-width:320px;overflow-wrap:anywhere}div.wide{overflow-x:auto}svg.chart{max-width:100%%;height:auto}"
               ".grids{display:flex;flex-wrap:wrap;gap:16px}.grid{text-align:center;font-size:12px;max-width:260px;"
               "overflow-wrap:anywhere}"
               ".grid img{image-rendering:pixelated;width:240px;border:1px solid #ccc}"
               "</style></head><body>\n<h1>Ablation ");
    chart_text(f, base->experiment.name);
    fprintf(f, "</h1>\n<p>Experiment file <code>");
    chart_text(f, exp_path);
    fprintf(f, "</code>, %d variants (%s). FD: Fr&eacute;chet distance in the features of <code>", n,
            ablate_mode_text(base->eval.sweep));
    chart_text(f, base->eval.features);
    fprintf(f, "</code>, n = %d samples (seed %d) against the training split; lower is better.</p>\n",
            base->eval.n, base->eval.seed);
    if (claim[0]) {
        fprintf(f, "<pre class=\"claim\">");
        chart_text(f, claim);
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
        chart_text(f, v->label);
        fprintf(f, "</td><td class=\"l\">");
        chart_text(f, v->status);
        fprintf(f, "</td>");
        for (int s = 0; s < base->sweep.count; s++) {
            fprintf(f, "<td class=\"l\">");
            chart_text(f, v->values[s]);
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
                chart_text(f, vs[i].name);
                fputc('/', f);
                chart_text(f, vs[i].grid[k]);
                fprintf(f, "\" alt=\"");
                chart_text(f, vs[i].label);
                fprintf(f, "\"><br>%d: ", i);
                chart_text(f, vs[i].label);
                char num[32];
                fmt_num(num, sizeof num, vs[i].fd[k], "%.3f");
                fprintf(f, "<br>FD %s</div>\n", num);
            }
        fprintf(f, "</div>\n");
    }
    fprintf(f, "<h2>Curves</h2>\n");
    ChartSeries *ser = cm_calloc((size_t)n, sizeof *ser);
    double *xs = cm_malloc((size_t)n * CURVE_MAX * sizeof(double)), *ys = cm_malloc((size_t)n * CURVE_MAX * sizeof(double));
    int nser = 0;
    for (int i = 0; i < n; i++) {
        int m = loss_curve(&vs[i], xs + (size_t)nser * CURVE_MAX, ys + (size_t)nser * CURVE_MAX);
        if (m == 0) continue;
        ser[nser] = (ChartSeries){vs[i].label, xs + (size_t)nser * CURVE_MAX, ys + (size_t)nser * CURVE_MAX, m};
        nser++;
    }
    if (nser) chart_svg(f, "Training loss", "step", "loss", ser, nser, true);
    /* FD against NFE, one line per variant. */
    double nfx[CFG_LIST_MAX * 4];
    for (int c = 0; c < nc; c++) nfx[c] = cols[c];
    double *fy = cm_malloc((size_t)n * (nc ? nc : 1) * sizeof(double));
    for (int i = 0; i < n; i++) {
        for (int c = 0; c < nc; c++) fy[(size_t)i * nc + c] = fd_at(&vs[i], cols[c]);
        ser[i] = (ChartSeries){vs[i].label, nfx, fy + (size_t)i * nc, nc};
    }
    if (nc) chart_svg(f, "Frechet distance against NFE", "NFE", "FD", ser, n, true);
    if (trajectories)
        fprintf(f, "<h2>Trajectories</h2>\n<p>The PCA of the teacher's sampling trajectories, written by <code>cmlab "
                   "trajectories TEACHER.h5 --pca --out &lt;this directory&gt;/trajectories</code> (numbers in <a "
                   "href=\"trajectories/pca.json\">pca.json</a>): the fraction of each trajectory's variance its top "
                   "k principal components explain.</p>\n<img src=\"trajectories/pca.svg\" alt=\"trajectory PCA\">\n");
    fprintf(f, "<p>Written by cmlab ablate; results.csv and results.md hold the same table.</p>\n</body></html>\n");
    free(ser);
    free(xs);
    free(ys);
    free(fy);
    return atomic_commit(f, tmp, path, !ferror(f));
}

const char *ablate_mode_text(CfgSweepMode mode)
{
    static const char *const text[CFG_SWEEP_MODE_COUNT] = {
        [CFG_SWEEP_GRID] = "grid", [CFG_SWEEP_ONE_AT_A_TIME] = "one at a time",
        [CFG_SWEEP_ZIP] = "zip: the swept keys vary together",
    };
    return text[mode];
}

int ablate_report_write(const char *dir, const char *exp_path, const char *claim, const Config *base,
                         const Variant *vs, int n)
{
    char p[700];
    snprintf(p, sizeof p, "%s/results.csv", dir);
    if (write_csv(p, base, vs, n)) return -1;
    snprintf(p, sizeof p, "%s/results.md", dir);
    if (write_md(p, exp_path, claim, base, vs, n)) return -1;
    struct stat st;
    snprintf(p, sizeof p, "%s/trajectories/pca.svg", dir);
    bool trajectories = stat(p, &st) == 0;
    snprintf(p, sizeof p, "%s/report.html", dir);
    return write_html(p, exp_path, claim, base, vs, n, trajectories);
}


/* ablate_report.h: the variants of `cmlab ablate` (ablate.h) and the files that report them:
 * results.csv, results.md and report.html (tables, sample grids, loss curves and FD against NFE as
 * inline SVG, and the trajectory PCA chart when trajectories/pca.svg is there), each published
 * atomically. Internal to src/eval/ablate*.c. */
#ifndef CM_ABLATE_REPORT_H
#define CM_ABLATE_REPORT_H

#include "eval/records.h"
#include "io/experiment.h"

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

/* How the variants were made, for the tables' headers: "grid", "one at a time", "zip: ...". */
const char *ablate_mode_text(CfgSweepMode mode);

/* Writes results.csv, results.md and report.html of the n variants vs into dir; exp_path's
 * leading comment (claim) heads the Markdown and the report. -1 after cm_fail(). */
int ablate_report_write(const char *dir, const char *exp_path, const char *claim, const Config *base,
                        const Variant *vs, int n);

#endif

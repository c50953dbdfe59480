/* cmd_ablate.c: `cmlab ablate EXP.ini [--set section.key=value ...] [--list] [--report]`: the
 * runs of an experiment file's [sweep] grid, their evaluation, and the tables and report of the
 * results (src/eval/ablate.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "common.h"
#include "eval/ablate.h"
#include "io/experiment.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: cmlab ablate EXP.ini [--set section.key=value ...] [--list] [--report] [--only I,J]\n"
               "Runs every variant of the file's [sweep] (eval.sweep = grid: every combination;\n"
               "one_at_a_time: the file's own configuration, then each swept value on its own; zip:\n"
               "variant i takes value i of every line, for settings that go together), one run\n"
               "directory each under <experiment.out_dir>/<experiment.name>/, evaluates each as [eval]\n"
               "says, and writes results.csv, results.md and report.html there. Run it again to go on:\n"
               "finished variants are not trained or evaluated again, a half-finished one resumes.\n"
               "  --set K=V   override a key (repeatable), e.g. --set eval.n=2000 or --set sweep.ct.loss=l2,l1\n"
               "  --list      only print the variants\n"
               "  --report    only rewrite the tables and the report from what the runs hold\n"
               "  --only I,J  run only these variants (the indices --list prints); report all\n");
}

int ablate_main(int argc, char **argv)
{
    ExpArgs e = {0};
    AblateOpts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return CM_EXIT_OK;
        } else if (!strcmp(a, "--list")) {
            o.list_only = true;
        } else if (!strcmp(a, "--report")) {
            o.report_only = true;
        } else if (!strcmp(a, "--only")) {
            char *end = NULL;
            for (const char *p = i + 1 < argc ? argv[++i] : ""; *p; p = *end ? end + 1 : end) {
                long k = strtol(p, &end, 10);
                if (end == p || (*end && *end != ',') || k < 0 || o.nonly == (int)CM_ARRAY_LEN(o.only)) {
                    fprintf(stderr, "cmlab ablate: --only expects variant indices like 0,3,7\n");
                    return CM_EXIT_INPUT;
                }
                o.only[o.nonly++] = (int)k;
            }
            if (o.nonly == 0) {
                fprintf(stderr, "cmlab ablate: --only expects variant indices like 0,3,7\n");
                return CM_EXIT_INPUT;
            }
        } else if (exp_args_take("cmlab ablate", usage, &e, argc, argv, &i) != 0) {
            return CM_EXIT_INPUT;
        }
    }
    if (!e.path) {
        usage(stderr);
        return CM_EXIT_INPUT;
    }
    Config cfg;
    if (exp_args_load("cmlab ablate", &e, &cfg) != 0) return CM_EXIT_INPUT;
    return ablate_run(e.path, &cfg, &o);
}
